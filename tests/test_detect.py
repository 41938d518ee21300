"""`tfod-wrap detect` on the exported test detector (`trained_detector`): images, folders and videos through the
real SavedModel, OpenCV and pycocotools; the comparison grid; the eval of its output; offline Hub handles."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import tensorflow as tf
from conftest import photo, snapshot
from PIL import Image
from pycocotools.coco import COCO

from tfod_wrap import cli, detect, evaluate
from tfod_wrap.core.detector import SavedModelDetector
from tfod_wrap.core.files import OWNER_FILE
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.records import expand_record_paths
from tfod_wrap.detect import draw
from tfod_wrap.detect.models import load_model
from tfod_wrap.evaluate.metrics import COCO_METRIC_NAMES
from tfod_wrap.web.browser import play_video

CLI = str(Path(sys.executable).parent / "tfod-wrap")
QUIET = {"log": lambda *_: None}


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two [ymin, xmin, ymax, xmax] boxes."""
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = height * width
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def class_id(trained_detector) -> int:
    return read_label_map(trained_detector.export_dir / "label_map.pbtxt")[trained_detector.class_name]


def top_detection(results: list[dict], image: dict) -> tuple[int, list[float], float]:
    """(class, normalised [ymin, xmin, ymax, xmax], score) of an image's best COCO result."""
    best = max((r for r in results if r["image_id"] == image["id"]), key=lambda r: r["score"])
    x, y, w, h = best["bbox"]
    box = [y / image["height"], x / image["width"], (y + h) / image["height"], (x + w) / image["width"]]
    return best["category_id"], box, best["score"]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    return frames


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def photos(trained_detector, tmp_path) -> Path:
    """The known image and two more training images in a folder, with a file that only pretends to be a PNG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        shutil.copy(trained_detector.image.parent / f"{index}.png", folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (folder / "notes.txt").write_text("not an image, and not listed")
    return folder


@pytest.fixture
def clip(trained_detector, tmp_path) -> tuple[Path, int]:
    """A 12-frame 160x120 MP4 of the known image, shifting a little each frame."""
    image = cv2.resize(cv2.imread(str(trained_detector.image)), (160, 120), interpolation=cv2.INTER_AREA)
    frames = [np.roll(image, shift, axis=1) for shift in range(12)]
    return write_video(tmp_path / "clip.mp4", frames), len(frames)


def test_images_and_folders_find_the_known_object(trained_detector, photos, tmp_path):
    before = snapshot(photos)
    summary = detect.detect([trained_detector.export_dir], [photos], tmp_path / "out", **QUIET)
    out = tmp_path / "out"
    assert snapshot(photos) == before, "an input was changed"
    assert summary["frames"] == 3 and summary["images"] == 3
    assert summary["skipped"] == [
        {
            "path": str(photos / "broken.png"),
            "reason": "not an image OpenCV can decode (corrupt, truncated, empty or another format)",
        }
    ]
    assert json.loads((out / "summary.json").read_text()) == summary
    [model] = summary["models"]
    assert model["kind"] == "export" and model["labels"] == str(trained_detector.export_dir / "label_map.pbtxt")
    assert model["images"] == 3 and model["latency_ms"]["median"] > 0
    assert model["batch"] == 1, "TFOD's uint8 export fixes the batch at 1; detect must not batch it"

    # valid COCO results, loaded by pycocotools against the image list written beside them
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in images] == [
        (1, "0.png", 320, 240),
        (2, "1.png", 320, 240),
        (3, "2.png", 320, 240),
    ]
    truth = COCO()
    truth.dataset = {"images": images, "annotations": [], "categories": [{"id": 1}, {"id": 2}]}
    truth.createIndex()
    results = json.loads((out / "detections.json").read_text())
    assert len(truth.loadRes(str(out / "detections.json")).getAnnIds()) == len(results) > 0

    # the known object, at its box and class
    label, box, score = top_detection(results, images[0])
    assert label == class_id(trained_detector) and score > 0.5
    assert iou(box, trained_detector.box) > 0.7

    # drawn: same size as the input, the box's left edge in the class colour, the rest of the picture kept
    drawn = cv2.imread(str(out / "images" / "0.png"))
    original = cv2.imread(str(photos / "0.png"))
    assert drawn.shape == original.shape
    ymin, xmin, ymax, xmax = (round(v * s) for v, s in zip(box, (240, 320, 240, 320)))
    assert tuple(drawn[(ymin + ymax) // 2, xmin]) == draw.COLOURS[label % len(draw.COLOURS)]
    assert (drawn == original).all(axis=2).mean() > 0.8

    # a second run into the same folder replaces the earlier output whole
    detect.detect([trained_detector.export_dir], [photos / "1.png"], out, **QUIET)
    assert sorted(path.name for path in (out / "images").iterdir()) == ["1.png"]
    assert len(json.loads((out / "images.json").read_text())) == 1


def test_the_onnx_export_finds_the_known_object(trained_detector, photos, tmp_path, capsys):
    """detect --model EXPORT/onnx runs the ONNX file in onnxruntime with the export's label map."""
    argv = ["detect", str(photos / "0.png"), "--model", str(trained_detector.export_dir / "onnx")]
    assert cli.main([*argv, "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    [model] = summary["models"]
    assert model["kind"] == "onnx" and model["name"] == "export-onnx" and model["batch"] == 1
    assert model["labels"] == str(trained_detector.export_dir / "label_map.pbtxt")
    images = json.loads((tmp_path / "out" / "images.json").read_text())
    label, box, score = top_detection(json.loads((tmp_path / "out" / "detections.json").read_text()), images[0])
    assert label == class_id(trained_detector) and score > 0.9 and iou(box, trained_detector.box) > 0.7

    # a file that is not ONNX: one line naming it
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    capsys.readouterr()
    assert cli.main([*argv[:2], "--model", str(broken), "--output", str(tmp_path / "again")]) == 2
    refused = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(refused) == 1 and refused[0].startswith(f"error: {broken}: onnxruntime cannot load it (")
    assert not (tmp_path / "again").exists()


def test_video_frames_in_equal_frames_out(trained_detector, clip, tmp_path):
    video, count = clip
    summary = detect.detect([trained_detector.export_dir], [video], tmp_path / "out", **QUIET)
    out = tmp_path / "out"
    assert summary["videos"] == [
        {"input": str(video), "output": "videos/clip.mp4", "frames": count, "fps": 10.0, "codec": "h264"}
    ]
    written = read_video(out / "videos" / "clip.mp4")
    assert len(written) == count and written[0].shape == (120, 160, 3)
    # in order, although two frames are in the model at once: each written frame is closest to its own input
    frames = [frame.astype(np.int16) for frame in read_video(video)]
    nearest = [int(np.argmin([np.abs(w.astype(np.int16) - f).mean() for f in frames])) for w in written]
    assert nearest == list(range(count))
    assert cv2.VideoCapture(str(out / "videos" / "clip.mp4")).get(cv2.CAP_PROP_FPS) == 10.0
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["frame"], i["file_name"]) for i in images] == [
        (n, n, f"clip.mp4#{n}") for n in range(1, count + 1)
    ]
    results = json.loads((out / "detections.json").read_text())
    for image in images[:: count // 3]:  # the rectangle moves 1 px a frame: the box of frame 1 still fits
        label, box, _ = top_detection(results, image)
        assert label == class_id(trained_detector) and iou(box, trained_detector.box) > 0.6


def test_video_is_h264_that_chromium_plays_to_its_end(trained_detector, tmp_path):
    """The default MP4: H.264 in yuv420p with the index in front, which Chromium's <video> plays to its end; an odd
    frame size is padded to even by one repeated column and row."""
    image = cv2.resize(cv2.imread(str(trained_detector.image)), (159, 119), interpolation=cv2.INTER_AREA)
    frames = [np.roll(image, shift, axis=1) for shift in range(12)]
    video = tmp_path / "odd.mkv"  # lossless FFV1, which keeps the odd size (OpenCV's mp4v writer would round it)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 159, 119, "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode(None))
    summary = detect.detect([trained_detector.export_dir], [video], tmp_path / "out", **QUIET)
    written = tmp_path / "out" / "videos" / "odd.mp4"
    assert summary["videos"][0] | {"input": None} == {
        "input": None,
        "output": "videos/odd.mp4",
        "frames": 12,
        "fps": 10.0,
        "codec": "h264",
    }
    with av.open(str(written)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height, stream.average_rate) == (160, 120, 10)
        decoded = [frame.to_ndarray(format="bgr24").astype(np.int16) for frame in container.decode(stream)]
    assert len(decoded) == 12
    # each frame is its own input, drawn (a box over the known object), in order; the padding repeats the edge
    inputs = [frame.astype(np.int16) for frame in frames]
    nearest = [int(np.argmin([np.abs(d[:119, :159] - f).mean() for f in inputs])) for d in decoded]
    assert nearest == list(range(12))
    assert np.abs(decoded[0][:, 159] - decoded[0][:, 158]).mean() < 8
    assert np.abs(decoded[0][119] - decoded[0][118]).mean() < 8
    data = written.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "no faststart: the index is behind the frames"

    played = play_video(written, timeout=30)
    assert played["canPlayType"] == "probably" and played["error"] is None, played
    assert played["ended"] and not played["timedOut"], played
    assert (played["videoWidth"], played["videoHeight"]) == (160, 120)
    assert played["duration"] == pytest.approx(1.2, abs=0.05) and played["framesDecoded"] == 12, played


def test_video_codec_mp4v_keeps_the_old_writer(trained_detector, clip, tmp_path):
    video, count = clip
    with pytest.raises(detect.DetectError, match="--video-codec h265: one of h264, mp4v"):
        detect.detect([trained_detector.export_dir], [video], tmp_path / "bad", video_codec="h265", **QUIET)
    assert not (tmp_path / "bad").exists()
    summary = detect.detect([trained_detector.export_dir], [video], tmp_path / "out", video_codec="mp4v", **QUIET)
    written = tmp_path / "out" / "videos" / "clip.mp4"
    assert summary["videos"][0]["codec"] == "mp4v"
    with av.open(str(written)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4" and (stream.width, stream.height) == (160, 120)
        assert sum(1 for _ in container.decode(stream)) == count
    # what the H.264 default is for: Chromium does not play MPEG-4 Part 2
    played = play_video(written, 'video/mp4; codecs="mp4v.20.9"', timeout=10)
    assert played["canPlayType"] == "" and played["error"] is not None and not played["ended"], played


def test_two_models_side_by_side(trained_detector, photos, tmp_path):
    models = [trained_detector.export_dir, trained_detector.export_dir / "saved_model"]
    label_map = trained_detector.export_dir.parent / "records" / "label_map.pbtxt"
    summary = detect.detect(models, [photos / "0.png"], tmp_path / "out", label_map=label_map, **QUIET)
    out = tmp_path / "out"
    assert [model["name"] for model in summary["models"]] == ["export", "export-2"]
    assert [model["labels"] for model in summary["models"]] == [str(label_map)] * 2
    assert summary["concurrent_calls"] == 1, "several models run one call at a time, so latencies compare"
    assert all(model["images"] == 1 and model["latency_ms"]["first"] > 0 for model in summary["models"])
    table = detect.summary_table(summary)
    assert "export-2" in table and "median ms" in table
    grid = cv2.imread(str(out / "images" / "0.png"))
    assert grid.shape == (240 + draw.HEADER, 2 * 320, 3)  # one 320-wide column per model, under a header band
    left, right = grid[draw.HEADER :, :320], grid[draw.HEADER :, 320:]
    assert np.array_equal(left, right), "the same model drew different columns"
    assert not np.array_equal(left, cv2.imread(str(photos / "0.png"))), "nothing drawn"
    header = grid[: draw.HEADER]
    assert (header < 128).any(axis=2)[:, :320].sum() > 20 and (header < 128).any(axis=2)[:, 330:].sum() > 20
    for name in ("export", "export-2"):
        assert json.loads((out / name / "detections.json").read_text())
        assert json.loads((out / name / "images.json").read_text())[0]["file_name"] == "0.png"


def test_without_a_label_map_boxes_get_class_ids(trained_detector, tmp_path):
    bare = shutil.copytree(trained_detector.export_dir / "saved_model", tmp_path / "models" / "bare")
    model = load_model(bare)
    assert model.kind == "saved_model" and model.class_names == {}
    assert model.labels.startswith("class ids: no label_map.pbtxt beside the model")


def coco_model(folder: Path) -> Path:
    """A SavedModel with TFOD's outputs and COCO's 90 classes (91 scores with background) that finds one person."""

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
        def __call__(self, images):
            scores = tf.one_hot([[1]], 91)  # background is column 0, so class id 1: person
            return {
                "detection_boxes": tf.constant([[[0.1, 0.2, 0.6, 0.7]]]),
                "detection_classes": tf.constant([[1.0]]),
                "detection_scores": tf.constant([[0.9]]),
                "num_detections": tf.constant([1.0]),
                "detection_multiclass_scores": scores,
            }

    detector = Detector()
    tf.saved_model.save(detector, str(folder), signatures={"serving_default": detector.__call__})
    return folder


def test_coco_models_get_coco_names(tmp_path):
    """A model with COCO's 90 class ids and no label map is named with the COCO label map tfod-wrap ships, whose
    80 names are those tf-models-official lists for COCO."""
    model = load_model(coco_model(tmp_path / "zoo"))
    assert model.labels == "COCO" and len(model.class_names) == 80
    assert (model.class_names[1], model.class_names[18], model.class_names[90]) == ("person", "dog", "toothbrush")
    official = importlib.util.find_spec("official.vision.data.process_coco_few_shot_json_files").origin
    listed = next(
        node.value
        for node in ast.parse(Path(official).read_text()).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CATEGORIES"
    )
    assert sorted(model.class_names.values()) == sorted(ast.literal_eval(listed))


def test_eval_scores_detect_output_like_the_saved_model(trained_detector, tmp_path, capsys):
    """detect over the images of the records, then `eval --detections`: the same numbers as `eval --saved-model`."""
    records = expand_record_paths([str(trained_detector.export_dir.parent / "records" / "train.record")])
    label_map = trained_detector.export_dir.parent / "records" / "label_map.pbtxt"
    detect.detect([trained_detector.export_dir], [trained_detector.image.parent], tmp_path / "out", **QUIET)
    code = cli.main(["eval", "--detections", str(tmp_path / "out"), "--data", *records, "--label-map", str(label_map)])
    assert code == 0, capsys.readouterr().err
    stored = json.loads((tmp_path / "out" / "eval" / "metrics.json").read_text())
    direct = evaluate.score(
        records, SavedModelDetector(trained_detector.export_dir / "saved_model"), label_map, tmp_path / "e"
    )
    assert stored["images"] == direct["images"] == 16
    for name in COCO_METRIC_NAMES:
        assert stored["coco"][name] == pytest.approx(direct["coco"][name], abs=1e-6), name
    assert stored["coco"][COCO_METRIC_NAMES[1]] > 0.5


def test_eval_refuses_detections_that_miss_record_images(trained_detector, tmp_path):
    records = expand_record_paths([str(trained_detector.export_dir.parent / "records" / "train.record")])
    label_map = trained_detector.export_dir.parent / "records" / "label_map.pbtxt"
    detect.detect([trained_detector.export_dir], [trained_detector.image], tmp_path / "out", **QUIET)
    with pytest.raises(evaluate.EvalError, match=r"15 record images have no entry in .*images.json"):
        evaluate.score_detections(tmp_path / "out", records, label_map, tmp_path / "eval")


@pytest.fixture(scope="module")
def float_export(trained_detector, tmp_path_factory) -> Path:
    """The same checkpoint exported with float_image_tensor input: its batch dimension is open."""
    from tfod_wrap import export

    folder = tmp_path_factory.mktemp("float") / "export"
    export.export(
        trained_detector.pipeline,
        trained_detector.model_dir,
        folder,
        formats=("saved_model",),
        input_type="float_image_tensor",
        log=lambda *_: None,
    )
    return folder


def test_batches_when_the_model_takes_them(float_export, photos, tmp_path):
    summary = detect.detect([float_export], [photos], tmp_path / "out", batch=3, **QUIET)
    assert summary["models"][0]["batch"] == 3
    batched = json.loads((tmp_path / "out" / "detections.json").read_text())
    model = load_model(float_export)
    for image in json.loads((tmp_path / "out" / "images.json").read_text()):
        rgb = cv2.cvtColor(cv2.imread(str(photos / image["file_name"])), cv2.COLOR_BGR2RGB)
        one_by_one = model(rgb).to_coco(image["id"], image["width"], image["height"])
        assert len([r for r in batched if r["image_id"] == image["id"]]) == len(one_by_one)
        # the same best detection either way (lower down, near-equal scores may swap places)
        label, box, score = top_detection(batched, image)
        expected_label, expected_box, expected_score = top_detection(one_by_one, image)
        assert label == expected_label and score == pytest.approx(expected_score, abs=1e-4)
        assert box == pytest.approx(expected_box, abs=1e-4)


def test_offline_hub_handle_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("TFOD_WRAP_HUB_URL", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    started = time.monotonic()
    with pytest.raises(detect.DetectError, match=r"ssd_mobilenet_v2/2: cannot reach .* looks offline"):
        load_model("https://tfhub.dev/tensorflow/ssd_mobilenet_v2/2")
    assert time.monotonic() - started < 15


def test_never_writes_into_or_over_inputs(trained_detector, photos, tmp_path):
    before = snapshot(photos)
    with pytest.raises(detect.DetectError, match="inside the input folder"):
        detect.detect([trained_detector.export_dir], [photos], photos / "out", **QUIET)
    with pytest.raises(detect.DetectError, match="inside --output"):
        detect.detect([trained_detector.export_dir], [photos / "0.png"], tmp_path, **QUIET)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(detect.DetectError, match="a non-empty folder not written by tfod-wrap"):
        detect.detect([trained_detector.export_dir], [photos / "0.png"], tmp_path / "mine", **QUIET)
    with pytest.raises(detect.DetectError, match="no such file or folder"):
        detect.detect([trained_detector.export_dir], [tmp_path / "missing.jpg"], tmp_path / "out", **QUIET)
    assert snapshot(photos) == before and (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    assert not (photos / "out").exists() and not (tmp_path / "out").exists()


def test_refuses_a_user_folder_with_a_summary_json_and_replaces_its_own_output(tmp_path, capsys):
    """Issue 18.7: a folder of the user's that happens to hold a summary.json is not an earlier output."""
    model = coco_model(tmp_path / "zoo")
    image = tmp_path / "x.jpg"
    photo(64, 48).save(image)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"my": "results"}')
    (mine / "thesis.tex").write_text("keep me")
    code = cli.main(["detect", str(image), "--model", str(model), "--output", str(mine)])
    refused = capsys.readouterr().err
    assert code == 2 and "Traceback" not in refused
    assert [line for line in refused.splitlines() if "error" in line.lower()] == [  # TensorFlow's log aside
        f"error: {mine}: a non-empty folder not written by tfod-wrap (no {OWNER_FILE}); refusing to replace it: "
        "choose a new or empty output folder, or remove it yourself"
    ]
    assert snapshot(mine) == {"summary.json": b'{"my": "results"}', "thesis.tex": b"keep me"}

    out = tmp_path / "out"
    detect.detect([model], [image], out, **QUIET)
    marker = json.loads((out / OWNER_FILE).read_text())
    assert marker["kind"] == "detect"
    assert marker["entries"] == ["detections.json", "images", "images.json", "summary.json"]
    detect.detect([model], [image], out, **QUIET)  # its own earlier output: replaced
    # an output of the previous version (no marker; summary.json as detect wrote it, only detect's files) too
    (out / OWNER_FILE).unlink()
    detect.detect([model], [image], out, **QUIET)
    assert (out / OWNER_FILE).is_file()


def test_two_inputs_with_the_same_file_name_get_unique_names(tmp_path):
    """Issue 18.12: a/x.jpg and b/x.jpg are two images: two names in images.json, two drawn images."""
    model = coco_model(tmp_path / "zoo")
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        photo(64, 48, seed=seed).save(tmp_path / folder / "x.png")
    summary = detect.detect([model], [tmp_path / "a", tmp_path / "b"], tmp_path / "out", **QUIET)
    images = json.loads((tmp_path / "out" / "images.json").read_text())
    names = [image["file_name"] for image in images]
    assert summary["images"] == 2 and len(set(names)) == 2, names
    assert names == ["x.png", "b/x.png"]
    for name, folder in zip(names, ("a", "b")):
        drawn = cv2.imread(str(tmp_path / "out" / "images" / name))
        assert drawn is not None and drawn.shape == (48, 64, 3)
        assert (drawn == cv2.imread(str(tmp_path / folder / "x.png"))).mean() > 0.5  # that input, not the other


def test_cli_end_to_end_with_a_gif(trained_detector, clip, tmp_path):
    video, count = clip
    out = tmp_path / "out"
    command = [CLI, "detect", "--model", str(trained_detector.export_dir), str(trained_detector.image), str(video)]
    command += ["--output", str(out), "--gif", "--video-fps", "5", "--min-score", "0.3"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "median ms" in done.stdout and f"{count + 1} frames in" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    # a fresh process with one model: two calls at once, the cores split between them
    cores = os.cpu_count() or 1
    assert summary["concurrent_calls"] == 2
    assert summary["tensorflow_threads"] == {"intra_op": max(1, cores // 2), "inter_op": 2}
    gif = Image.open(out / "videos" / "clip.gif")
    assert gif.n_frames == count and gif.size == (160, 120) and gif.info["duration"] == 200
    assert len(read_video(out / "videos" / "clip.gif")) == count  # OpenCV reads it back too
    listed = sorted(path.name for path in out.iterdir())
    assert listed == [OWNER_FILE, "detections.json", "images", "images.json", "summary.json", "videos"]
    assert (out / "images" / "0.png").is_file()


def test_sigterm_ends_detect_like_ctrl_c_with_nothing_left(trained_detector, tmp_path):
    """SIGTERM (a service manager stopping it, `timeout`) ends detect as Ctrl-C does: one line, exit 130, its threads
    ended and its staging folder removed (it killed the process and left the folder to the next run's sweep)."""
    images = tmp_path / "images"
    images.mkdir()
    for index in range(400):
        shutil.copyfile(trained_detector.image, images / f"{index}.png")
    out = tmp_path / "out"
    command = [CLI, "detect", "--model", str(trained_detector.export_dir), str(images), "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.partial-*/images/*.png")) and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    lines = stderr.decode().replace("\r", "\n").splitlines()
    assert process.returncode == 130 and lines[-1] == "interrupted; nothing was written", lines[-5:]
    assert not any("Traceback" in line for line in lines)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images"]


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_is_complete(capsys):
    detect_help = help_text(capsys, "detect")
    for option in (
        "--model",
        "--output",
        "--min-score",
        "--label-map",
        "--batch",
        "--video-fps",
        "--gif",
        "--video-codec",
    ):
        assert option in detect_help
    for word in ("detections.json", "images.json", "summary.json", "TFOD_WRAP_HUB_URL", "GIF", "MP4", "H.264"):
        assert word in detect_help
    assert "--detections" in help_text(capsys, "eval")
