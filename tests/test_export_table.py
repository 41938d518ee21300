"""The export formats as one table: every row has its backend, requests are checked against the rows (names,
quantisations, architectures) before any work, and the table loads without TensorFlow (the command line reads it)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tfod_wrap import config
from tfod_wrap.export import formats
from tfod_wrap.export.formats import FORMATS, ExportError, check_architecture, check_request


def test_every_format_has_a_backend_and_a_model_file():
    from tfod_wrap.export.exporter import BACKENDS

    assert set(BACKENDS) == set(FORMATS)
    for name, entry in FORMATS.items():
        assert entry.name == name and entry.model_file and set(entry.quantize) <= set(formats.QUANTIZE)
        assert callable(BACKENDS[name].write) and callable(BACKENDS[name].run)


def test_every_verified_format_has_a_tolerance_for_each_quantisation_it_stores():
    from tfod_wrap.export.verify import TOLERANCE

    wanted = {(name, mode) for name, entry in FORMATS.items() if entry.verify for mode in entry.quantize}
    assert wanted == set(TOLERANCE)


def test_full_integer_tflite_holds_raw_outputs_to_their_own_tolerance():
    from tfod_wrap.export.verify import RAW_TOLERANCE, TOLERANCE, summarise

    assert set(RAW_TOLERANCE) <= set(TOLERANCE)
    moved = {
        "raw_detection_scores": 0.15,
        "raw_detection_boxes": 0.05,
        "detection_boxes": 0.03,
        "detection_scores": 0.05,
    }
    result = summarise("tflite", "uint8", [moved])
    assert result["passed"] and (result["tolerance"], result["raw_tolerance"]) == (0.1, 0.2)
    assert not summarise("tflite", "uint8", [moved | {"detection_scores": 0.11}])["passed"]  # what a user sees
    assert not summarise("tfjs", "uint8", [moved])["passed"]  # weights-only uint8: raw outputs at 0.1
    assert "raw_tolerance" not in summarise("tfjs", "uint8", [moved])


def test_quantised_formats_pass_on_accuracy_where_it_was_measured():
    from tfod_wrap.export.verify import MAP_KEPT, judge_quantised

    def report(tfjs_map: float) -> dict:
        beyond = {"max_difference": {"detection_scores": 0.26}, "tolerance": 0.1, "passed": False}
        accuracy = {"metric": "mAP@0.5", "checkpoint": 0.92, "formats": {"saved_model": 0.92, "tfjs": tfjs_map}}
        return {"formats": {"saved_model": {"passed": True}, "tfjs": beyond}, "accuracy": accuracy}

    kept = report(0.92 - MAP_KEPT + 0.001)
    judge_quantised(kept, "uint8")
    assert kept["formats"]["tfjs"]["passed"] and kept["formats"]["tfjs"]["map_change"] == -0.019
    assert "judged_by" not in kept["formats"]["saved_model"]
    lost = report(0.92 - MAP_KEPT - 0.001)
    judge_quantised(lost, "float16")
    assert not lost["formats"]["tfjs"]["passed"] and "mAP@0.5" in lost["formats"]["tfjs"]["judged_by"]
    float32 = report(0.95)
    judge_quantised(float32, "none")  # a conversion: parity decides
    assert not float32["formats"]["tfjs"]["passed"] and "judged_by" not in float32["formats"]["tfjs"]
    unscored = report(0.92) | {"accuracy": {"metric": "mAP@0.5", "error": "val.record: class 'cat' is unknown"}}
    judge_quantised(unscored, "uint8")
    assert not unscored["formats"]["tfjs"]["passed"]


def test_the_table_loads_without_tensorflow():
    code = "import sys, tfod_wrap.export as e; print(sorted(e.FORMATS), e.QUANTIZE, 'tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "['onnx', 'saved_model', 'tfjs', 'tflite'] ('none', 'float16', 'uint8') False"
    assert done.stdout.split("\n")[0] == expected


def test_requests_come_back_in_table_order_once_each():
    assert check_request(["tflite", "saved_model", "tfjs", "tflite"], "none", "image_tensor") == (
        "saved_model",
        "tfjs",
        "tflite",
    )
    assert check_request(["tfjs"], "uint8", "float_image_tensor") == ("tfjs",)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ((["coreml"], "none", "image_tensor"), "unknown format coreml; choose from saved_model, tfjs, tflite, onnx"),
        (([], "none", "image_tensor"), r"unknown format \(none\)"),
        ((["tfjs"], "int4", "image_tensor"), "unknown quantisation 'int4'; choose from none, float16, uint8"),
        ((["tfjs"], "none", "jpeg"), "unknown input type 'jpeg'"),
        # the SavedModel is float32: asked for alone, a quantisation is refused, not silently ignored
        ((["saved_model"], "float16", "image_tensor"), "--quantize float16: SavedModel cannot store it; formats"),
    ],
)
def test_bad_requests_are_one_line_refusals(request_, message):
    with pytest.raises(ExportError, match=message) as refused:
        check_request(*request_)
    assert "\n" not in str(refused.value)


def test_a_format_that_stores_no_quantisation_refuses_one():
    """The ONNX row takes float32 only: asked for with a quantisation, it is refused, not silently ignored."""
    assert FORMATS["onnx"].quantize == ("none",)
    assert check_request(["onnx", "saved_model"], "none", "image_tensor") == ("saved_model", "onnx")
    with pytest.raises(ExportError, match="--quantize uint8: ONNX cannot store it; formats that can: tfjs, tflite"):
        check_request(["tfjs", "onnx"], "uint8", "image_tensor")


def test_architecture_refusals_name_the_format_and_the_model():
    assert FORMATS["tflite"].refusal("ssd") is None and FORMATS["tfjs"].refusal("center_net") is None
    expected = "TFLite export supports SSD models (TFOD's TFLite graph); this pipeline's model is faster_rcnn"
    with pytest.raises(ExportError) as refused:
        check_architecture(("saved_model", "tflite"), "faster_rcnn")
    assert str(refused.value) == expected
    wider = dataclasses.replace(FORMATS["tflite"], architectures=("ssd", "center_net"), why="")
    assert wider.refusal("faster_rcnn") == (
        "TFLite export supports SSD, CenterNet models; this pipeline's model is faster_rcnn"
    )


def test_tflite_check_uses_the_table_then_asks_for_a_fixed_size():
    from tfod_wrap.export.tflite import check_supported

    with pytest.raises(ExportError, match="TFLite export supports SSD models.*center_net"):
        check_supported(config.load("centernet_resnet50_v2_512"))
    with pytest.raises(ExportError, match="needs model.ssd.image_resizer.fixed_shape_resizer"):
        check_supported(config.load("efficientdet_d0"))
    check_supported(config.load("ssd_mobilenet_v2"))


def test_export_refuses_tflite_for_faster_rcnn_before_writing_anything(tmp_path):
    """A stand-in checkpoint state and label map: the refusal comes before anything reads the checkpoint."""
    from tfod_wrap import export

    model = tmp_path / "model"
    model.mkdir()
    (model / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    (tmp_path / "label_map.pbtxt").write_text("item { id: 1 name: 'a' }\n")
    pipeline = Path(config.__file__).parents[1] / "pipelines" / "faster_rcnn_resnet50_v1_640.config"
    with pytest.raises(ExportError, match="^TFLite export supports SSD models .*faster_rcnn$"):
        export.export(
            pipeline,
            model,
            tmp_path / "out",
            formats=("saved_model", "tflite"),
            label_map=tmp_path / "label_map.pbtxt",
            log=lambda *_: None,
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["label_map.pbtxt", "model"]
