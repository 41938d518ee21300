"""The TFLite export's embedded metadata (labels, input normalisation, output meanings) read by a real client:
MediaPipe Tasks' ObjectDetector, in the MediaPipe venv (`make install-mediapipe`; mediapipe cannot share the
project's venv), must return what the TFLite interpreter returns on the same images, for the trained detector."""

from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tfod_wrap.core.tflite import interpreter, postprocess_tensors
from tfod_wrap.export import card
from tfod_wrap.export.tflite_metadata import LABELS_FILE, METADATA_IDENTIFIER, METADATA_NAME
from tfod_wrap.export.verify import TOLERANCE

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("mediapipe_detect.py")
# Each pixel of the model-sized image becomes an odd-sided block: MediaPipe's bilinear resize back to the model's
# size then samples every block at its centre, giving the model the very pixels the interpreter gets, and its
# whole-pixel boxes are fine enough for the parity tolerance (a pixel is 1/1440 of the side).
UPSCALE = 9
# compared down to this score: the confident detections and the weak ones below them, which test the labels and
# boxes of more than the one object per image
LOWEST_SCORE = 0.05


def mediapipe_python() -> str:
    python = os.environ.get("TFOD_WRAP_MEDIAPIPE_PYTHON") or str(ROOT / ".venv-mediapipe" / "bin" / "python")
    if not Path(python).is_file():
        pytest.skip(f"no MediaPipe venv at {python}: make install-mediapipe (or set TFOD_WRAP_MEDIAPIPE_PYTHON)")
    return python


def as_mediapipe_reports(box: np.ndarray) -> np.ndarray:
    """A [ymin, xmin, ymax, xmax] box as MediaPipe's rectangle gives it: the origin (top left) moved into the image,
    the height and width kept, so a box reaching above or left of the image shifts down or right."""
    top_left = np.maximum(box[:2], 0.0)
    return np.concatenate([top_left, top_left + box[2:] - box[:2]])


def test_metadata_and_labels_are_embedded(trained_detector):
    from tensorflow.lite.python import schema_py_generated as schema

    data = (trained_detector.export_dir / "tflite" / "model.tflite").read_bytes()
    assert zipfile.ZipFile(trained_detector.export_dir / "tflite" / "model.tflite").read(LABELS_FILE) == (
        b"ellipse\nrectangle\n"
    )
    model = schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    assert METADATA_NAME in entries and "min_runtime_version" in entries, entries  # the converter's entries kept
    metadata = model.Buffers(entries[METADATA_NAME]).DataAsNumpy().tobytes()
    assert metadata[4:8] == METADATA_IDENTIFIER
    for text in (b"location", b"category", b"score", b"number of detections", LABELS_FILE.encode(), b"1.2.0"):
        assert text in metadata, text
    # the interpreter still runs the file, metadata and appended zip included
    assert len(interpreter(str(trained_detector.export_dir / "tflite" / "model.tflite")).get_output_details()) == 4


def test_mediapipe_object_detector_matches_the_tflite_interpreter(trained_detector, tmp_path):
    python = mediapipe_python()
    folder = trained_detector.export_dir / "tflite"
    metadata = json.loads((folder / "metadata.json").read_text())
    _, height, width, _ = metadata["input"]["shape"]
    labels = [item["name"] for item in metadata["classes"]]
    images, paths = [], []
    for index in range(4):
        image = cv2.imread(str(trained_detector.image.parent / f"{index}.png"))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        paths.append(tmp_path / f"{index}.png")
        big = cv2.resize(image, (width * UPSCALE, height * UPSCALE), interpolation=cv2.INTER_NEAREST)
        assert cv2.imwrite(str(paths[-1]), big)
    done = subprocess.run(
        [python, str(RUNNER), str(folder / "model.tflite"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])

    loaded = interpreter(str(folder / "model.tflite"))
    tensors = postprocess_tensors(loaded)
    scale, offset = (np.asarray(metadata["input"][key], np.float32) for key in ("scale", "offset"))
    tolerance = TOLERANCE[("tflite", "none")]
    compared = 0
    for image, result in zip(images, found):
        loaded.set_tensor(loaded.get_input_details()[0]["index"], (image * scale + offset)[None].astype(np.float32))
        loaded.invoke()
        out = {key: loaded.get_tensor(tensor["index"])[0] for key, tensor in tensors.items()}
        expected = [
            (labels[int(label)], float(score), as_mediapipe_reports(box))
            for label, score, box in zip(out["detection_classes"], out["detection_scores"], out["detection_boxes"])
            if score >= LOWEST_SCORE
        ]
        size = np.asarray([result["height"], result["width"]] * 2, np.float64)
        got = [
            (item["label"], item["score"], np.asarray(item["box"]) / size)
            for item in result["detections"]
            if item["score"] >= LOWEST_SCORE
        ]
        assert [label for label, _, _ in got] == [label for label, _, _ in expected], result["image"]
        compared += len(got)
        for (_, score, box), (_, want_score, want_box) in zip(got, expected):
            assert abs(score - want_score) <= tolerance, (result["image"], score, want_score)
            assert np.abs(box - want_box).max() <= tolerance, (result["image"], box, want_box)

    assert compared >= 2 * len(images), "too few detections compared"
    # the known object of image 0, found by MediaPipe under its class name
    best = max(found[0]["detections"], key=lambda item: item["score"])
    assert best["label"] == trained_detector.class_name and best["score"] > 0.5
    box = np.asarray(best["box"]) / np.asarray([found[0]["height"], found[0]["width"]] * 2)
    assert np.abs(box - np.asarray(trained_detector.box)).max() < 0.1


def test_the_model_cards_mediapipe_code_runs_and_finds_the_object(trained_detector):
    python = mediapipe_python()
    text = (trained_detector.export_dir / card.FILE).read_text()
    code = re.search(r"^mediapipe:\n\n```python\n(.*?)```", text, flags=re.S | re.M).group(1)
    script = (
        "import cv2, os\n"
        f"image = cv2.cvtColor(cv2.imread({str(trained_detector.image)!r}), cv2.COLOR_BGR2RGB)\n"
        f"os.chdir({str(trained_detector.export_dir)!r})\n"
        + code
        + "best = max(detections, key=lambda found: found.categories[0].score).categories[0]\n"
        "print(best.category_name, best.score)\n"
    )
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    name, score = done.stdout.strip().splitlines()[-1].split()
    assert name == trained_detector.class_name and float(score) > 0.5
