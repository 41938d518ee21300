"""`tfod-wrap export`: a trained checkpoint to SavedModel, TF.js and TFLite, each run for real (TensorFlow, Node with
@tensorflow/tfjs on its wasm backend, the TFLite interpreter) and compared with the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfod_wrap import cli, config, export
from tfod_wrap.core.detections import Detections
from tfod_wrap.core.files import OWNER_FILE
from tfod_wrap.export import parity
from tfod_wrap.export.tfjs import FLOAT16_UNDER_UINT8, float16_weights, repair_float_to_bool_casts
from tfod_wrap.export.tflite import check_supported


def test_every_format_is_written_and_matches_the_checkpoint(trained_detector):
    report, folder = trained_detector.report, trained_detector.export_dir
    assert set(report["formats"]) == {"saved_model", "tfjs", "tflite", "onnx"}
    for name in ("saved_model/saved_model.pb", "checkpoint/ckpt-0.index", "pipeline.config", "label_map.pbtxt"):
        assert (folder / name).is_file(), name
    assert (folder / "tfjs" / "model.json").is_file() and list((folder / "tfjs").glob("group1-shard*.bin"))
    assert (folder / "tflite" / "model.tflite").stat().st_size > 1_000_000
    assert (folder / "onnx" / "model.onnx").stat().st_size > 1_000_000
    assert json.loads((folder / "export.json").read_text()) == report
    assert not list(folder.parent.glob(".export.partial-*")), "the staging folder is left behind"

    verified = report["verify"]
    assert verified["images"] == 4
    assert set(verified["formats"]) == {"saved_model", "tfjs", "tflite", "onnx"}
    for name, result in verified["formats"].items():
        assert result["passed"], (name, result)
        assert result["max_difference"]["raw_detection_scores"] <= result["tolerance"]
    for result in verified["formats"].values():
        assert set(result["max_difference"]) == {
            "raw_detection_scores",
            "raw_detection_boxes",
            "detection_boxes",
            "detection_scores",
        }
    assert "tfjs" in export.verify_table(report) and "ok" in export.verify_table(report)

    # mAP@0.5 on the whole eval split (the fixture evaluates on its 16 training images), the checkpoint's and each
    # format's: float32 conversions cost no accuracy
    accuracy = verified["accuracy"]
    assert accuracy["metric"] == "mAP@0.5" and accuracy["images"] == 16
    assert set(accuracy["formats"]) == {"saved_model", "tfjs", "tflite", "onnx"}
    assert accuracy["checkpoint"] > 0.8, accuracy
    for name, value in accuracy["formats"].items():
        assert abs(value - accuracy["checkpoint"]) <= 0.02, (name, accuracy)
    assert f"mAP@0.5 on the 16 eval images: checkpoint {accuracy['checkpoint']:.4f}, saved_model" in (
        export.verify_table(report)
    )


def test_the_saved_model_is_tfods_without_the_layer_functions(small_run, tmp_path):
    """export's SavedModel against TFOD's own exporter_lib_v2 on the same checkpoint (the small run's export/):
    the same signature and the same outputs bit for bit, called both ways the TFOD tutorials call it, but without
    the function Keras stores for each layer, which made it about 2x slower to write and 4x slower to load."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from tfod_wrap.export.savedmodel import export_saved_model

    ours = export_saved_model(config.load(small_run / "pipeline.config"), str(small_run / "model" / "ckpt-2"), tmp_path)
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (1, 120, 200, 3), dtype=np.uint8))
    outputs = {}
    for name, folder in (("tfod", small_run / "export" / "saved_model"), ("ours", ours)):
        loaded = tf.saved_model.load(str(folder))
        signature = loaded.signatures["serving_default"](input_tensor=image)
        called = loaded(image)
        assert set(signature) == set(called)
        for key in signature:
            np.testing.assert_array_equal(signature[key].numpy(), called[key].numpy())
        outputs[name] = {key: value.numpy() for key, value in signature.items()}
        saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
        outputs[name + " functions"] = len(saved.meta_graphs[0].graph_def.library.function)
    assert set(outputs["ours"]) == set(outputs["tfod"]) and "raw_detection_scores" in outputs["ours"]
    for key, value in outputs["tfod"].items():
        np.testing.assert_array_equal(outputs["ours"][key], value, err_msg=key)
    assert outputs["ours functions"] < 20 < 500 < outputs["tfod functions"], outputs


def test_tfjs_metadata_names_every_output_by_tensor(trained_detector):
    folder = trained_detector.export_dir / "tfjs"
    metadata = json.loads((folder / "metadata.json").read_text())
    model = json.loads((folder / "model.json").read_text())
    assert metadata["classes"] == [{"id": 1, "name": "ellipse"}, {"id": 2, "name": "rectangle"}]
    assert metadata["input"] == {
        "name": "input_tensor",
        "dtype": "int32",
        "shape": [1, -1, -1, 3],
        "resize_to": [160, 160],
        "color": "RGB",
        "value_range": [0, 255],
    }
    assert metadata["execute"] == "executeAsync"
    signature_tensors = {item["name"] for item in model["signature"]["outputs"].values()}
    for name in ("detection_boxes", "detection_classes", "detection_scores", "num_detections"):
        assert metadata["outputs"][name]["tensor"] in signature_tensors
    assert metadata["outputs"]["detection_boxes"]["shape"] == [1, 100, 4]
    assert metadata["outputs"]["raw_detection_scores"]["shape"][-1] == 3  # background + 2 classes
    # the wasm Cast(float -> bool) fix is in the graph: no such Cast reads its input directly any more
    casts = [n for n in model["modelTopology"]["node"] if n["op"] == "Cast"]
    to_bool = [n for n in casts if n["attr"].get("DstT", {}).get("type") == "DT_BOOL"]
    assert to_bool and all(n["input"][0].endswith("/tfod_wrap_sign") for n in to_bool)


def test_tflite_metadata_gives_the_preprocessing(trained_detector):
    metadata = json.loads((trained_detector.export_dir / "tflite" / "metadata.json").read_text())
    assert metadata["input"]["shape"] == [1, 160, 160, 3]
    # MobileNet's preprocessing: x * 2/255 - 1
    assert metadata["input"]["scale"] == pytest.approx([2 / 255] * 3, rel=1e-5)
    assert metadata["input"]["offset"] == pytest.approx([-1.0] * 3)
    assert set(metadata["outputs"]) == {"detection_boxes", "detection_classes", "detection_scores", "num_detections"}


def test_onnx_runs_in_plain_onnxruntime_and_finds_the_known_object(trained_detector):
    """The README's three lines of onnxruntime on the training photo, with the graph's own resize and NMS; the
    metadata names the input and every output of the graph."""
    import onnxruntime as ort
    from PIL import Image

    folder = trained_detector.export_dir / "onnx"
    image = np.asarray(Image.open(trained_detector.image).convert("RGB"))  # 320x240: the graph resizes it
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input_tensor": image[np.newaxis]})))
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["classes"] == [{"id": 1, "name": "ellipse"}, {"id": 2, "name": "rectangle"}]
    assert metadata["input"]["name"] == "input_tensor" and metadata["input"]["dtype"] == "uint8"
    assert metadata["input"]["shape"] == [1, -1, -1, 3] and metadata["input"]["resize_to"] == [160, 160]
    assert set(metadata["outputs"]) == set(names) and metadata["outputs"]["raw_detection_scores"]["shape"] == [
        1,
        540,
        3,
    ]
    assert trained_detector.report["formats"]["onnx"]["opset"] == metadata["opset"] == 17

    classes = {item["id"]: item["name"] for item in metadata["classes"]}
    assert classes[int(outputs["detection_classes"][0, 0])] == trained_detector.class_name
    assert outputs["detection_scores"][0, 0] > 0.9
    np.testing.assert_allclose(outputs["detection_boxes"][0, 0], trained_detector.box, atol=0.06)


def test_a_graph_with_an_op_onnx_lacks_is_refused_in_one_line(tmp_path, capsys):
    """No template has such an op (SSD, EfficientDet, Faster R-CNN and CenterNet all convert), so a stand-in
    SavedModel with TensorFlow's Igamma, which tf2onnx cannot map, shows the refusal."""
    import tensorflow as tf

    from tfod_wrap.export.onnx import convert_to_onnx

    class Stand(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
        def serve(self, input_tensor):
            pixels = tf.cast(input_tensor, tf.float32) / 255.0 + 1.0
            return {"detection_scores": tf.reduce_mean(tf.math.igamma(pixels, pixels), axis=[1, 2])}

    stand = Stand()
    tf.saved_model.save(stand, str(tmp_path / "saved_model"), signatures={"serving_default": stand.serve})
    capsys.readouterr()
    with pytest.raises(export.ExportError) as refused:
        convert_to_onnx(tmp_path / "saved_model", tmp_path / "model.onnx")
    assert str(refused.value) == (
        "ONNX export: tf2onnx has no ONNX form for TensorFlow ops Igamma of this model; "
        "export --formats saved_model (or tflite for an SSD) instead"
    )
    assert not (tmp_path / "model.onnx").exists() and "Igamma" not in capsys.readouterr().err


def test_the_weights_kept_float16_under_uint8_are_the_depthwise_kernels(trained_detector):
    topology = json.loads((trained_detector.export_dir / "tfjs" / "model.json").read_text())
    depthwise = [node for node in topology["modelTopology"]["node"] if node["op"] in FLOAT16_UNDER_UINT8]
    kept = float16_weights(topology)
    assert len(depthwise) == 17  # MobileNet V2's depthwise convolutions, each a kernel and a folded offset
    assert kept == sorted(name for node in depthwise for name in node["input"][1:]) and len(kept) == 34
    assert all("depthwise" in name for name in kept)


@pytest.mark.long  # a minute of real exports
def test_uint8_tfjs_keeps_the_depthwise_kernels_float16_and_the_accuracy(trained_detector, tmp_path):
    report = export.export(
        trained_detector.pipeline,
        trained_detector.model_dir,
        tmp_path / "uint8",
        formats=("tfjs",),
        quantize="uint8",
        verify=True,
        verify_images=2,
        log=lambda *_: None,
    )
    written = report["formats"]["tfjs"]
    dtypes = written["weight_dtypes"]  # weights by stored type: every float one quantised (int32 ones are indices)
    assert dtypes["float16"] == 34 and dtypes["uint8"] > 100 and set(dtypes) == {"float16", "uint8", "int32"}
    # the weights stored as float16 are exactly the depthwise ops' (layer names differ between processes that build
    # models, so the export is compared with its own graph, not with the fixture's)
    uint8 = json.loads((tmp_path / "uint8" / "tfjs" / "model.json").read_text())
    stored = {w["name"]: w.get("quantization", {}).get("dtype") for g in uint8["weightsManifest"] for w in g["weights"]}
    assert sorted(name for name, dtype in stored.items() if dtype == "float16") == float16_weights(uint8)
    assert written["bytes"] < 0.35 * trained_detector.report["formats"]["tfjs"]["bytes"]
    assert report["verify"]["formats"]["tfjs"]["passed"]
    accuracy = report["verify"]["accuracy"]
    assert accuracy["checkpoint"] - accuracy["formats"]["tfjs"] <= 0.02, accuracy


@pytest.mark.long  # a minute and more of real exports
def test_quantised_exports_stay_within_their_tolerances(trained_detector, tmp_path):
    report = export.export(
        trained_detector.pipeline,
        trained_detector.model_dir,
        tmp_path / "float16",
        formats=("tfjs", "tflite"),
        quantize="float16",
        verify=True,
        verify_images=2,
        log=lambda *_: None,
    )
    sizes = {name: written["bytes"] for name, written in report["formats"].items()}
    full = {name: trained_detector.report["formats"][name]["bytes"] for name in ("tfjs", "tflite")}
    assert sizes["tfjs"] < 0.6 * full["tfjs"] and sizes["tflite"] < 0.6 * full["tflite"]
    for name in ("tfjs", "tflite"):
        result = report["verify"]["formats"][name]
        assert result["passed"] and result["tolerance"] == parity.TOLERANCE[(name, "float16")]
    assert json.loads((tmp_path / "float16" / "tfjs" / "metadata.json").read_text())["quantization"] == "float16"
    accuracy = report["verify"]["accuracy"]
    assert set(accuracy["formats"]) == {"saved_model", "tfjs", "tflite"}
    for name in ("tfjs", "tflite"):  # float16 weights cost the fixture's eval split no accuracy to speak of
        assert abs(accuracy["formats"][name] - accuracy["checkpoint"]) <= 0.02, (name, accuracy)


def test_verify_table_says_why_map_was_not_measured():
    unmeasured = {"metric": "mAP@0.5", "error": "val.record, image 3.jpg: class 'cat' is not in the label map x"}
    report = {"pipeline": "p", "checkpoint": "c", "formats": {}, "verify": {"formats": {}, "accuracy": unmeasured}}
    assert export.verify_table(report).splitlines()[-1] == f"mAP@0.5 not measured: {unmeasured['error']}"


@pytest.mark.long  # a minute and more of real exports
def test_cli_export_of_an_older_checkpoint_replaces_only_exports(trained_detector, tmp_path, capsys):
    output = tmp_path / "export"
    argv = ["export", "--pipeline", str(trained_detector.pipeline), "--model-dir"]
    argv += [str(trained_detector.model_dir), "--output", str(output), "--checkpoint", "ckpt-0"]
    # an export of the previous version (no marker; its export.json, only what export writes) is replaced
    (output / "tflite").mkdir(parents=True)
    (output / "tflite" / "model.tflite").write_bytes(b"stale")
    (output / "export.json").write_text(json.dumps({"pipeline": "p", "checkpoint": "c", "formats": {}}))
    assert cli.main([*argv, "--formats", "saved_model"]) == 0, capsys.readouterr().err
    assert not (output / "tflite").exists() and json.loads((output / OWNER_FILE).read_text())["kind"] == "export"
    # and so is its own earlier output; with --site (and no --quantize) the TF.js weights are float16, in the export
    # and in the site alike (tests/test_site.py checks the site itself)
    capsys.readouterr()
    site = tmp_path / "site"
    assert cli.main([*argv, "--formats", "tfjs", "--site", str(site)]) == 0
    done = capsys.readouterr().out
    assert "tfod-wrap serve --model" in done and "saved_model" in done
    assert f"in {site} (float16 weights, runs tfjs)" in done
    assert json.loads((output / "export.json").read_text())["checkpoint"].endswith("ckpt-0")
    assert json.loads((output / "tfjs" / "metadata.json").read_text())["quantization"] == "float16"
    assert (site / "model" / "model.json").read_bytes() == (output / "tfjs" / "model.json").read_bytes()

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    argv[argv.index(str(output))] = str(foreign)
    assert cli.main([*argv, "--formats", "bogus"]) == 2
    assert "unknown format bogus" in capsys.readouterr().err
    assert cli.main(argv) == 2
    assert f"{foreign}: a non-empty folder not written by tfod-wrap" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_refuses_a_user_folder_with_an_export_json_before_any_work(tmp_path, capsys):
    """Issue 18.7: an export.json of the user's does not make a folder an earlier export (a stand-in checkpoint:
    the refusal comes before anything reads it)."""
    (tmp_path / "model").mkdir()
    state = 'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
    (tmp_path / "model" / "checkpoint").write_text(state)
    (tmp_path / "label_map.pbtxt").write_text("item { id: 1 name: 'a' }\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "export.json").write_text("{}")
    (mine / "notes.txt").write_text("keep me")
    pipeline = Path(config.__file__).parents[1] / "pipelines" / "ssd_mobilenet_v2.config"
    argv = ["export", "--pipeline", str(pipeline), "--model-dir", str(tmp_path / "model")]
    argv += ["--label-map", str(tmp_path / "label_map.pbtxt"), "--output", str(mine)]
    assert cli.main(argv) == 2
    refused = capsys.readouterr().err
    assert "Traceback" not in refused
    assert [line for line in refused.splitlines() if "error" in line.lower()] == [  # TensorFlow's log aside
        f"error: {mine}: a non-empty folder not written by tfod-wrap (no {OWNER_FILE}); refusing to replace it: "
        "choose a new or empty output folder, or remove it yourself"
    ]
    assert sorted(path.name for path in mine.iterdir()) == ["export.json", "notes.txt"]


def test_unknown_checkpoint_and_unsupported_tflite_are_clear_errors(trained_detector, tmp_path):
    with pytest.raises(export.ExportError, match="unknown quantisation"):
        export.export(trained_detector.pipeline, trained_detector.model_dir, tmp_path / "x", quantize="int4")
    with pytest.raises(Exception, match="no checkpoint 'ckpt-7'; kept: ckpt-0, ckpt-300"):
        export.export(trained_detector.pipeline, trained_detector.model_dir, tmp_path / "x", checkpoint="ckpt-7")
    with pytest.raises(Exception, match="TFLite export supports SSD models.*faster_rcnn"):
        check_supported(config.load("faster_rcnn_resnet50_v1_640"))
    assert not (tmp_path / "x").exists()


def test_cast_repair_rewrites_only_float_to_bool():
    def cast(name, source, target):
        return {
            "name": name,
            "op": "Cast",
            "input": ["x"],
            "attr": {"SrcT": {"type": source}, "DstT": {"type": target}},
        }

    topology = {"modelTopology": {"node": [cast("a", "DT_FLOAT", "DT_BOOL"), cast("b", "DT_INT32", "DT_BOOL")]}}
    assert repair_float_to_bool_casts(topology) == 1
    nodes = {node["name"]: node for node in topology["modelTopology"]["node"]}
    assert nodes["a"]["input"] == ["a/tfod_wrap_sign"]
    assert nodes["a/tfod_wrap_sign"]["input"] == ["a/tfod_wrap_abs"] and nodes["a/tfod_wrap_abs"]["input"] == ["x"]
    assert nodes["b"]["input"] == ["x"]


def test_parity_of_a_model_without_anchors_compares_its_detections():
    """CenterNet gives no raw_* outputs (it has no anchors): its formats are compared on their detections alone."""
    reference = Detections([[0.1, 0.1, 0.5, 0.5]], [1], [0.9])
    candidate = Detections([[0.1, 0.1, 0.5, 0.52]], [1], [0.89])
    differences = parity.compare(reference, candidate)
    assert set(differences) == {"detection_boxes", "detection_scores"}
    assert differences["detection_boxes"] == pytest.approx(0.02) and differences["detection_scores"] == pytest.approx(
        0.01
    )


def test_tflite_reference_keeps_one_class_per_anchor():
    """TFLite's fast NMS keeps each anchor's best class and suppresses across classes; TFOD's NMS would also keep
    anchor 0's second class and anchor 1 (another class over the same place). Anchor 2 stands apart."""
    from types import SimpleNamespace

    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9]], np.float32)
    scores = np.array([[0.0, 0.9, 0.6], [0.0, 0.1, 0.8], [0.0, 0.7, 0.2]], np.float32)  # column 0: background
    reference = Detections(np.zeros([0, 4]), [], [], {"raw_detection_boxes": boxes, "raw_detection_scores": scores})
    nms = SimpleNamespace(iou_threshold=0.6, score_threshold=0.01)
    expected = parity.one_class_per_anchor(reference, nms, max_detections=10)
    assert len(expected) == 2
    assert expected.classes.tolist() == [1, 1]
    np.testing.assert_allclose(expected.scores, [0.9, 0.7])
    np.testing.assert_allclose(expected.boxes, boxes[[0, 2]])
