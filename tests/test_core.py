"""The core the stages share: Detections and its COCO results, the TFRecord reader beside the writer, the Detector
backends (a checkpoint, a SavedModel, TFLite, TF.js in Node) agreeing on the session's trained detector, and the
rule that stages import the core, never each other."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, photo
from PIL import Image
from pycocotools.coco import COCO

from tfod_wrap.core.detections import Detections
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.records import (
    RecordsError,
    build_example,
    decode_image,
    expand_record_paths,
    feature_values,
    frame_record,
    read_examples,
)

PACKAGE = REPO / "tfod_wrap"
SHARED = {"core", "compat"}  # what every stage may import
# The one way up from the core: a template's default start may have to make new weights (the zoo download, the
# offline import), which is the pretrained stage's work; core.weights imports it inside default_start only.
CORE_REACHES_UP = {("core/weights.py", "pretrained")}


# --- Detections --------------------------------------------------------------------------------------------------


def test_detections_are_typed_and_checked():
    found = Detections([[0.1, 0.2, 0.5, 0.6]], [2.0], [0.75])
    assert found.boxes.dtype == np.float32 and found.boxes.shape == (1, 4)
    assert found.classes.dtype == np.int64 and found.classes.tolist() == [2]
    assert found.scores.dtype == np.float32 and len(found) == 1
    empty = Detections(np.zeros([0, 4]), [], [])
    assert len(empty) == 0 and empty.to_coco(1, 10, 10) == []
    with pytest.raises(ValueError, match="2 boxes, 1 classes and 1 scores"):
        Detections(np.zeros([2, 4]), [1], [0.5])


def test_detections_from_tfod_outputs_keep_the_counted_ones_and_the_raw_rest():
    outputs = {
        "detection_boxes": np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0, 0, 0, 0]], np.float32),
        "detection_classes": np.array([0.0, 1.0, 0.0], np.float32),  # 0-based, as the model's postprocess gives
        "detection_scores": np.array([0.9, 0.6, 0.0], np.float32),
        "num_detections": np.float32(2),
        "raw_detection_scores": np.full([5, 3], 0.25, np.float32),
    }
    found = Detections.from_outputs(outputs, class_offset=1)
    assert found.classes.tolist() == [1, 2]
    np.testing.assert_array_equal(found.boxes, outputs["detection_boxes"][:2])
    assert set(found.raw) == {"raw_detection_scores"}
    confident = found.above(0.7)
    assert confident.classes.tolist() == [1] and confident.raw is found.raw


def test_coco_results_are_pixels_that_pycocotools_loads():
    found = Detections([[0.25, 0.1, 0.75, 0.6], [0.0, 0.0, 1.0, 1.0]], [3, 1], [0.8, 0.4])
    results = found.to_coco(image_id=7, width=200, height=100)
    assert {key: results[0][key] for key in ("image_id", "category_id")} == {"image_id": 7, "category_id": 3}
    assert results[0]["score"] == pytest.approx(0.8)
    assert results[0]["bbox"] == pytest.approx([20.0, 25.0, 100.0, 50.0])  # the boxes are float32
    assert results[1]["bbox"] == [0.0, 0.0, 200.0, 100.0]
    assert all(type(value) is float for result in results for value in [result["score"], *result["bbox"]])
    assert all(type(result["category_id"]) is int for result in results)
    truth = COCO()
    truth.dataset = {
        "images": [{"id": 7, "width": 200, "height": 100}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "c"}],
    }
    truth.createIndex()
    loaded = truth.loadRes(results)
    assert [round(a["area"]) for a in loaded.dataset["annotations"]] == [5000, 20000]


# --- TFRecords: the writer's records read back ------------------------------------------------------------------


def test_records_written_by_the_core_read_back(tmp_path):
    encoded = _png(tmp_path / "a.png")
    record = build_example(
        bytes_features={"image/encoded": [encoded], "image/object/class/text": [b"cat"]},
        int64_features={"image/width": [48], "image/object/class/label": [1]},
        float_features={"image/object/bbox/xmin": [0.25]},
    )
    (tmp_path / "records").mkdir()
    for shard in range(2):
        (tmp_path / "records" / f"train.record-{shard:05d}-of-00002").write_bytes(frame_record(record) * (shard + 1))
    files = expand_record_paths([str(tmp_path / "records")])
    assert files == expand_record_paths([str(tmp_path / "records" / "train.record-?????-of-00002")])
    examples = list(read_examples(files))
    assert [file for file, _ in examples] == [files[0], files[1], files[1]]
    features = examples[0][1].features.feature
    assert feature_values(features, "image/object/class/text") == [b"cat"]
    assert feature_values(features, "image/object/bbox/xmin") == [0.25]
    assert feature_values(features, "image/height") == []
    image = decode_image(features)
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8


def test_unreadable_records_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(RecordsError, match="nothing.record: no such TFRecord file"):
        expand_record_paths([str(tmp_path / "nothing.record")])
    junk = tmp_path / "junk.record"
    junk.write_bytes(b"not a record at all, just some bytes")
    with pytest.raises(RecordsError, match="junk.record: not a TFRecord file"):
        list(read_examples([str(junk)]))
    other = tmp_path / "other.record"
    other.write_bytes(frame_record(b"\xff\xff\xff"))
    with pytest.raises(RecordsError, match="other.record: its records are not tf.train.Example"):
        list(read_examples([str(other)]))


def _png(path: Path) -> bytes:
    photo(48, 32).save(path)
    return path.read_bytes()


# --- the Detector backends on the session's trained detector ---------------------------------------------------


def iou(a, b) -> float:
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = height * width
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def best_of_class(found: Detections, class_id: int) -> tuple[np.ndarray, float]:
    """(box, score) of the class's highest-scoring detection."""
    index = int(np.flatnonzero(found.classes == class_id)[0])  # best first, as every backend returns them
    return found.boxes[index], float(found.scores[index])


def test_every_backend_finds_the_same_object(trained_detector):
    """The training photo through the checkpoint, the SavedModel, TFLite (preprocessed as its metadata.json says),
    ONNX in onnxruntime and TF.js in Node (wasm and cpu backends): the rectangle where it is, and each format's box
    and score within its float32 parity tolerance of the checkpoint's."""
    from tfod_wrap import config
    from tfod_wrap.core.detector import (
        CheckpointDetector,
        ONNXDetector,
        SavedModelDetector,
        TFJSDetector,
        TFLiteDetector,
    )
    from tfod_wrap.core.labelmap import read_label_map
    from tfod_wrap.export.tflite import MAX_DETECTIONS
    from tfod_wrap.export.verify import TOLERANCE, detection_differences, one_class_per_anchor

    image = np.asarray(Image.open(trained_detector.image).convert("RGB"))
    wanted = read_label_map(trained_detector.export_dir / "label_map.pbtxt")[trained_detector.class_name]
    folder = trained_detector.export_dir
    checkpoint = CheckpointDetector(trained_detector.pipeline, trained_detector.model_dir / "ckpt-300")
    expected = checkpoint(image)
    box, score = best_of_class(expected, wanted)
    assert score > 0.5 and iou(box, trained_detector.box) > 0.6, (score, box)

    wasm, cpu = TFJSDetector(folder / "tfjs"), TFJSDetector(folder / "tfjs", backend="cpu")
    backends = {
        "saved_model": SavedModelDetector(folder / "saved_model"),
        "tflite": TFLiteDetector(folder / "tflite" / "model.tflite"),
        "onnx": ONNXDetector(folder / "onnx" / "model.onnx"),
        "tfjs": wasm,
        "tfjs-cpu": cpu,
    }
    # TFLite's post-processing keeps one class per anchor and suppresses across classes: its reference follows
    # that rule, as export --verify's does
    nms = config.load(trained_detector.pipeline).model.ssd.post_processing.batch_non_max_suppression
    tflite_reference = one_class_per_anchor(expected, nms, MAX_DETECTIONS)
    for name, detector in backends.items():
        found = detector(image)
        tolerance = TOLERANCE[(name.split("-")[0], "none")]
        reference = tflite_reference if name == "tflite" else expected
        # each confident detection against the format's detection of its class that overlaps it most, as export
        # --verify compares them (among near-equal scores the order may differ between kernels)
        box_difference, score_difference = detection_differences(reference, found)
        assert box_difference <= tolerance and score_difference <= tolerance, (name, box_difference, score_difference)
        assert iou(best_of_class(found, wanted)[0], trained_detector.box) > 0.6, name
        if name != "tflite":  # TFLite's op keeps no per-anchor scores of its own in this shape
            difference = np.abs(found.raw["raw_detection_scores"] - expected.raw["raw_detection_scores"]).max()
            assert difference <= tolerance, (name, difference)
    assert wasm.last_run["backend"] == "wasm" and cpu.last_run["backend"] == "cpu"
    assert wasm.last_run["tfjs"] == "4.22.0"


def test_backends_run_a_batch_like_single_images(trained_detector):
    """One Node process for several images, and the SavedModel's batch (one image per call for a uint8 export)."""
    from tfod_wrap.core.detector import SavedModelDetector, TFJSDetector

    images = [np.asarray(photo(96, 72, seed)) for seed in range(2)]
    images.append(np.asarray(Image.open(trained_detector.image).convert("RGB")))
    saved_model = SavedModelDetector(trained_detector.export_dir / "saved_model")
    assert not saved_model.batchable
    batched = saved_model.batch(images)
    tfjs = TFJSDetector(trained_detector.export_dir / "tfjs").batch(images)
    assert len(batched) == len(tfjs) == 3
    for single, image, other in zip(batched, images, tfjs):
        np.testing.assert_allclose(saved_model(image).scores, single.scores, atol=1e-6)
        np.testing.assert_allclose(other.scores[:5], single.scores[:5], atol=2e-3)


def test_a_folder_without_the_model_is_one_line(trained_detector, tmp_path):
    from tfod_wrap.core.detector import SavedModelDetector, TFLiteDetector

    with pytest.raises(UserError, match="no saved_model.pb; pass the `saved_model` folder"):
        SavedModelDetector(trained_detector.export_dir)
    shutil.copy(trained_detector.export_dir / "tflite" / "model.tflite", tmp_path / "model.tflite")
    with pytest.raises(UserError, match=r"metadata.json: no input description of an export"):
        TFLiteDetector(tmp_path / "model.tflite")
    (tmp_path / "metadata.json").write_text(json.dumps({"input": {"shape": [1, 160, 160, 3]}}))
    with pytest.raises(UserError, match="metadata.json"):
        TFLiteDetector(tmp_path / "model.tflite")


# --- stages import the core, never each other --------------------------------------------------------------------


def imported_packages(path: Path) -> set[str]:
    """The tfod_wrap packages a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tfod_wrap" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
    return found


def test_stages_import_only_the_core_never_each_other():
    packages = sorted(path.parent for path in PACKAGE.glob("*/__init__.py"))
    assert {"core", "data", "detect", "evaluate", "export", "pretrained", "train"} <= {p.name for p in packages}
    reaches = []
    for package in packages:
        for module in sorted(package.rglob("*.py")):
            where = str(module.relative_to(PACKAGE))
            for imported in imported_packages(module) - {package.name}:
                if imported not in SHARED and (where, imported) not in CORE_REACHES_UP:
                    reaches.append(f"{where} imports tfod_wrap.{imported}")
    assert not reaches, "\n".join(reaches)
