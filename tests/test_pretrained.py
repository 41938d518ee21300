"""`tfod-wrap pretrained import-tflite`: @mediapipe/objectron's TFLite SSD MobileNet V2 rebuilt as a TF2 checkpoint.

Parity with the TFLite interpreter on real photos, the cat in `chelsea`, and the checkpoint restored by our trainer
as a detection fine-tune checkpoint. Needs the npm package from `make install` (never fetched by the tests)."""

from __future__ import annotations

import json
import re
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_voc

from tfod_wrap import config, train
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import OWNER_FILE, check_output
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.data import convert
from tfod_wrap.pretrained import objectron
from tfod_wrap.pretrained.tflite_import import (
    CHECKPOINT,
    IMPORT_KIND,
    PARITY_ATOL,
    TF1_BACKBONE_SCOPE,
    cat_score,
    earlier_import,
    import_objectron,
    keras_name,
    sample_photos,
    verify_import,
)


def installed_package() -> Path | None:
    try:
        return objectron.locate_package(fetch=False)
    except UserError:
        return None


PACKAGE = installed_package()
needs_package = pytest.mark.skipif(PACKAGE is None, reason=f"{objectron.PACKAGE} not installed (make install)")
BACKBONE = "model/_feature_extractor/classification_backbone/"


@pytest.fixture(scope="module")
def imported(objectron_import):
    return objectron_import, json.loads((objectron_import / "report.json").read_text())


@pytest.fixture(scope="module")
def verified(imported):
    output, _ = imported
    return verify_import(output, sample_photos(("chelsea", "astronaut")))


@needs_package
def test_import_writes_checkpoint_config_label_map_and_report(imported):
    output, report = imported
    assert Path(f"{output / CHECKPOINT}.index").is_file() and (output / "checkpoint" / "checkpoint").is_file()
    labels = read_label_map(output / "label_map.pbtxt")
    assert len(labels) == 23 and labels["Bicycle"] == 1 and labels["Cat"] == 8 and labels["Car"] == 23
    pipeline = config.load(output / "pipeline.config")
    assert pipeline.model.ssd.num_classes == 23 and pipeline.model.ssd.freeze_batchnorm
    assert pipeline.train_config.fine_tune_checkpoint_type == "detection"
    assert report["source"]["byte_range"] == [184, 9_987_912]
    assert report["source"]["sha256"] == objectron.MODEL_SHA256
    weights = report["weights"]
    assert weights["keras_variables"] == 324 and weights["keras_variables_from_tflite"] == 144
    assert weights["tflite_tensors"] == 144 and weights["identity_batch_norms"] == 60
    assert json.loads((output / "report.json").read_text())["verification"]["photos"]["chelsea"]
    assert not [path for path in output.parent.iterdir() if path.name.startswith(".")], "staging left behind"


@needs_package
def test_rebuilt_model_matches_the_tflite_interpreter_on_two_photos(verified):
    assert set(verified["photos"]) == {"chelsea", "astronaut"}
    for name, result in verified["photos"].items():
        assert result["max_abs_diff_box_encodings"] <= PARITY_ATOL, name
        assert result["max_abs_diff_class_logits"] <= PARITY_ATOL, name
        assert result["max_abs_class_logit"] > 5  # real logits, not a model of zeros


@needs_package
def test_rebuilt_model_finds_the_cat_in_chelsea(verified):
    chelsea = verified["photos"]["chelsea"]
    assert chelsea["detections"][0]["class"] == "Cat"
    assert cat_score(chelsea) > 0.5
    ymin, xmin, ymax, xmax = chelsea["detections"][0]["box"]
    assert ymax - ymin > 0.5 and xmax - xmin > 0.5  # the cat fills most of the photo
    assert verified["photos"]["astronaut"]["detections"][0]["class"] == "Person"


def fine_tune_pipeline(imported, folder: Path, overrides: tuple[str, ...] = ()) -> Path:
    """A 1-step, 160 px fine-tune pipeline of the imported checkpoint on 4 tiny VOC images."""
    output, _ = imported
    convert(tiny_voc(folder / "voc", 4), folder / "records", split="train=0.5,val=0.5", workers=1)
    pipeline = folder / "pipeline.config"
    configured, _ = config.configure(
        output / "pipeline.config",
        data=folder / "records",
        checkpoint=output / CHECKPOINT,
        steps=1,
        batch_size=2,
        overrides=[  # smaller images, a faster step; the weights do not depend on the input size
            "model.image_resizer.fixed_shape_resizer.height=160",
            "model.image_resizer.fixed_shape_resizer.width=160",
            *overrides,
        ],
        check=False,
    )
    del configured.train_config.data_augmentation_options[:]  # not what this test is about: a faster input pipeline
    config.save(configured, pipeline)
    return pipeline


@needs_package
def test_trainer_restores_it_as_a_detection_fine_tune_checkpoint(imported, tmp_path):
    """Feature extractor restored (a detection checkpoint), box-regression head too with keep_box_head, class
    head new; the frozen backbone unchanged by a step, the heads changed."""
    output, _ = imported
    pipeline = fine_tune_pipeline(imported, tmp_path)
    result = train.train(pipeline, tmp_path / "model", log=lambda *_: None, freeze=["backbone"], keep_box_head=True)
    assert result.step == 1
    source = tf.train.load_checkpoint(str(output / CHECKPOINT))
    start = tf.train.load_checkpoint(str(tmp_path / "model" / "ckpt-0"))
    end = tf.train.load_checkpoint(str(tmp_path / "model" / "ckpt-1"))
    restored = [key for key in source.get_variable_to_shape_map() if key.startswith("model/_feature_extractor/")]
    assert len(restored) == 300
    box_head = [key for key in source.get_variable_to_shape_map() if "/_prediction_heads/box_encodings/" in key]
    assert len(box_head) == 12  # kernel and bias on each of the 6 feature maps
    for key in restored + box_head:  # everything asked for was restored, not left random
        np.testing.assert_array_equal(start.get_tensor(key), source.get_tensor(key), err_msg=key)
    class_head = [key for key in start.get_variable_to_shape_map() if "/class_predictions_with_background/" in key]
    assert class_head and all(
        start.get_variable_to_shape_map()[key] != source.get_variable_to_shape_map()[key]
        for key in class_head
        if key.endswith("bias/.ATTRIBUTES/VARIABLE_VALUE")
    )
    backbone = [key for key in restored if key.startswith(BACKBONE)]
    assert len(backbone) == 260
    for key in backbone:  # and the frozen backbone is still exactly the imported one after a training step
        np.testing.assert_array_equal(end.get_tensor(key), source.get_tensor(key), err_msg=key)
    heads = [key for key in end.get_variable_to_shape_map() if "/_box_predictor/" in key and "OPTIMIZER" not in key]
    assert any(not np.array_equal(end.get_tensor(key), start.get_tensor(key)) for key in heads), "nothing trained"


@needs_package
def test_box_head_of_other_anchors_is_refused(imported, tmp_path):
    """Four aspect ratios instead of five: 5 anchors a location instead of 6, so the box head cannot carry over."""
    anchors = "model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios=[1.0, 2.0, 0.5, 3.0]"
    pipeline = fine_tune_pipeline(imported, tmp_path, (anchors,))
    with pytest.raises(train.TrainError, match="has no box head that fits this model"):
        train.train(pipeline, tmp_path / "model", log=lambda *_: None, keep_box_head=True)


@needs_package
def test_corrupt_data_file_is_refused_naming_the_file(tmp_path):
    copy = tmp_path / "objectron"
    copy.mkdir()
    for name in (objectron.DATA_FILE, objectron.LOADER_FILE, "package.json"):
        shutil.copyfile(PACKAGE / name, copy / name)
    data = copy / objectron.DATA_FILE
    data.chmod(data.stat().st_mode | stat.S_IWUSR)
    with data.open("r+b") as stream:
        stream.seek(5_000_000)
        byte = stream.read(1)
        stream.seek(5_000_000)
        stream.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(
        UserError,
        match=rf"{re.escape(str(data))}: bytes 184\.\.9987912 .* sha256 .*, expected {objectron.MODEL_SHA256}",
    ):
        import_objectron(tmp_path / "out", package_dir=copy, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_loader_byte_ranges_are_parsed(tmp_path):
    loader = tmp_path / objectron.LOADER_FILE
    loader.write_text(
        'x = 1;\nloadPackage({"files": [{"filename": "/a.txt", "start": 0, "end": 184}, '
        '{"filename": "/third_party/b.tflite", "start": 184, "end": 9987912}], "remote_package_size": 9987912});\n'
    )
    assert objectron.packed_files(loader) == {"a.txt": (0, 184), "b.tflite": (184, 9987912)}


def test_refuses_to_replace_a_folder_that_is_not_an_import(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=f"^{tmp_path / 'mine'}: a non-empty folder not written by tfod-wrap"):
        import_objectron(tmp_path / "mine", log=lambda *_: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a report.json of the previous version's import beside the user's own file: not an import to replace whole
    (tmp_path / "mine" / "report.json").write_text(json.dumps({"kind": IMPORT_KIND}))
    with pytest.raises(UserError, match="a non-empty folder not written by tfod-wrap"):
        import_objectron(tmp_path / "mine", log=lambda *_: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@needs_package
def test_replaces_its_own_earlier_import_and_the_previous_versions(imported, tmp_path):
    output, _ = imported
    assert json.loads((output / OWNER_FILE).read_text())["kind"] == "pretrained import-tflite"
    again = shutil.copytree(output, tmp_path / "again", symlinks=True)
    (again / "pipeline.config").write_text("stale")
    import_objectron(again, photos=("chelsea",), log=lambda *_: None)
    assert str((again / CHECKPOINT).resolve()) in (again / "pipeline.config").read_text()
    # the previous version marked an import by report.json's kind only; such a folder still counts
    (again / OWNER_FILE).unlink()
    check_output(again, "pretrained import-tflite", legacy=earlier_import)


def test_missing_package_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error code ENOTFOUND registry.npmjs.org' >&2\nexit 1\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("TFOD_WRAP_NODE_MODULES", str(tmp_path / "empty"))
    monkeypatch.setenv("TFOD_WRAP_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(UserError, match=r"npm pack @mediapipe/objectron@.* failed \(offline.*ENOTFOUND"):
        objectron.locate_package(log=lambda *_: None)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "cache" / "npm" / f"mediapipe-objectron-{objectron.VERSION}").exists()


def test_tf1_scopes_name_the_keras_layers():
    scope = TF1_BACKBONE_SCOPE
    assert keras_name(scope + "Conv") == "Conv1"
    assert keras_name(scope + "expanded_conv/depthwise") == "expanded_conv_depthwise"
    assert keras_name(scope + "expanded_conv_13/expand") == "block_13_expand"
    assert keras_name(scope + "Conv_1") == "Conv_1"
    assert keras_name(scope + "layer_19_2_Conv2d_5_3x3_s2_128") == "layer_19_2_Conv2d_5_3x3_s2_128"
    assert keras_name("BoxPredictor_3/ClassPredictor") == "BoxPredictor_3/ClassPredictor"
