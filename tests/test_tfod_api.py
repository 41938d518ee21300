"""The TFOD API itself, through tfod_wrap.compat: fast protobuf runtime, model builder, decoder, inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, checkpoint_values, tiny_voc

from tfod_wrap.data import convert

TEMPLATE = REPO / "pipelines" / "ssd_mobilenet_v2.config"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfod")
    voc = tiny_voc(root / "voc", 4, box=(10, 8, 60, 50))
    convert(voc, root / "out", workers=1)
    return root / "out"


@pytest.fixture(scope="module")
def configs(records):
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(str(TEMPLATE))
    configs["model"].ssd.num_classes = 2
    configs["train_config"].batch_size = 2
    reader = configs["train_input_config"]
    reader.label_map_path = str(records / "label_map.pbtxt")
    reader.tf_record_input_reader.input_path[:] = [str(records / "train.record")]
    return configs


def test_protos_use_the_fast_runtime_and_parse_templates():
    from google.protobuf.internal import api_implementation
    from object_detection.protos import pipeline_pb2

    assert api_implementation.Type() == "upb"
    from google.protobuf import text_format

    config = text_format.Parse(TEMPLATE.read_text(), pipeline_pb2.TrainEvalPipelineConfig())
    assert config.model.WhichOneof("model") == "ssd"
    assert config.model.ssd.feature_extractor.type == "ssd_mobilenet_v2_keras"


def test_model_builder_forward_pass_and_loss(configs):
    from object_detection.builders import model_builder

    model = model_builder.build(configs["model"], is_training=True)
    images = tf.random.uniform([2, 320, 320, 3], maxval=255.0)
    preprocessed, shapes = model.preprocess(images)
    prediction = model.predict(preprocessed, shapes)
    num_anchors = prediction["box_encodings"].shape[1]
    assert prediction["class_predictions_with_background"].shape == (2, num_anchors, 3)
    model.provide_groundtruth(
        groundtruth_boxes_list=[tf.constant([[0.1, 0.1, 0.6, 0.5]]), tf.constant([[0.2, 0.3, 0.9, 0.8]])],
        groundtruth_classes_list=[tf.one_hot([0], 2), tf.one_hot([1], 2)],
    )
    losses = model.loss(prediction, shapes)
    assert set(losses) >= {"Loss/localization_loss", "Loss/classification_loss"}
    assert all(np.isfinite(value.numpy()) and value.numpy() > 0 for value in losses.values())
    detections = model.postprocess(prediction, shapes)
    assert detections["detection_boxes"].shape[0] == 2


def test_records_decode_with_tfod_decoder(records):
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder()
    record = next(iter(tf.data.TFRecordDataset(str(records / "train.record"))))
    decoded = decoder.decode(record)
    assert decoded[fields.InputDataFields.image].shape == (72, 96, 3)
    np.testing.assert_allclose(
        decoded[fields.InputDataFields.groundtruth_boxes].numpy(), [[8 / 72, 10 / 96, 50 / 72, 60 / 96]], rtol=1e-6
    )
    assert decoded[fields.InputDataFields.groundtruth_classes].numpy().tolist() == [1]
    assert decoded[fields.InputDataFields.source_id].numpy() == b"0.jpg"


def test_train_input_gives_a_real_batch(configs):
    """object_detection.inputs.train_input reads our records (this needs the tf-slim fix)."""
    from object_detection import inputs
    from object_detection.builders import model_builder
    from object_detection.core import standard_fields as fields

    model = model_builder.build(configs["model"], is_training=True)
    dataset = inputs.train_input(configs["train_config"], configs["train_input_config"], configs["model"], model=model)
    features, labels = next(iter(dataset))
    resizer = configs["model"].ssd.image_resizer.fixed_shape_resizer
    assert features[fields.InputDataFields.image].shape == (2, resizer.height, resizer.width, 3)
    boxes = labels[fields.InputDataFields.groundtruth_boxes].numpy()
    classes = labels[fields.InputDataFields.groundtruth_classes].numpy()
    assert boxes.shape[0] == 2 and classes.shape[-1] == 2
    assert np.all(labels[fields.InputDataFields.num_groundtruth_boxes].numpy() >= 1)


def test_fpn_upsamples_with_a_native_resize_and_the_same_outputs(monkeypatch, tmp_path):
    """compat.hooks.native_fpn_resize: FPNLite's top-down upsampling is ResizeNearestNeighbor (not reshape + stack,
    which Grappler makes a `Tile` that TF.js's wasm backend runs slowly), and the model restored from a checkpoint
    of TFOD's own construction gives the very same outputs."""
    from object_detection.builders import model_builder
    from object_detection.models import ssd_mobilenet_v2_fpn_keras_feature_extractor as fpn
    from object_detection.utils import config_util

    template = REPO / "pipelines" / "ssd_mobilenet_v2_fpnlite_320.config"
    model_config = config_util.get_configs_from_pipeline_file(str(template))["model"]
    image = tf.constant(np.random.RandomState(0).uniform(0, 255, (1, 320, 320, 3)), tf.float32)

    def run(model) -> tuple[dict, list[str]]:
        predict = tf.function(lambda pixels: model.predict(*model.preprocess(pixels)))
        ops = [op.type for op in predict.get_concrete_function(image).graph.get_operations()]
        return predict(image), ops

    native = model_builder.build(model_config, is_training=False)
    native_out, native_ops = run(native)
    checkpoint = tf.train.Checkpoint(model=native).save(str(tmp_path / "ckpt"))

    patched = fpn.SSDMobileNetV2FpnKerasFeatureExtractor.__init__
    monkeypatch.setattr(fpn.SSDMobileNetV2FpnKerasFeatureExtractor, "__init__", patched.__wrapped__)
    reshaped = model_builder.build(model_config, is_training=False)
    reshaped_out, reshaped_ops = run(reshaped)  # builds the variables, then the checkpoint overwrites them
    tf.train.Checkpoint(model=reshaped).restore(checkpoint).assert_existing_objects_matched()
    reshaped_out, _ = run(reshaped)

    assert native_ops.count("ResizeNearestNeighbor") == 2 and reshaped_ops.count("ResizeNearestNeighbor") == 0
    for key in ("box_encodings", "class_predictions_with_background"):
        np.testing.assert_array_equal(native_out[key].numpy(), reshaped_out[key].numpy())


def test_autograph_leaves_the_tfod_api_as_written():
    """compat.hooks.no_autograph_for_tfod: TFOD's and tf-slim's functions are traced as written (AutoGraph's
    conversion of them cost seconds per process and changed nothing); tfod-wrap's own are converted as before."""
    import tf_slim
    from object_detection.core import post_processing
    from object_detection.meta_architectures import ssd_meta_arch
    from tensorflow.python.autograph.impl import conversion

    from tfod_wrap.core import detector

    assert conversion.is_allowlisted(post_processing.batch_multiclass_non_max_suppression)
    assert conversion.is_allowlisted(ssd_meta_arch.SSDMetaArch.predict)
    assert conversion.is_allowlisted(tf_slim.conv2d)
    assert not conversion.is_allowlisted(detector.CheckpointDetector._forward)


@pytest.mark.long
def test_training_without_autograph_for_tfod_trains_the_same_bits(small_run, tmp_path):
    """The session's 2-step run (trained with the TFOD API traced as written) again in a fresh process with
    AutoGraph converting the TFOD API as TensorFlow does by default: the same checkpoint, to the bit."""
    script = """
import sys
import tfod_wrap
import tensorflow as tf
from tensorflow.python.autograph.core import config, config_lib
from tfod_wrap.compat import hooks
ours = [rule for rule in config.CONVERSION_RULES if isinstance(rule, config_lib.DoNotConvert)
        and any(rule.matches(name) for name in hooks.NOT_CONVERTED)]
assert len(ours) == len(hooks.NOT_CONVERTED)
config.CONVERSION_RULES = tuple(rule for rule in config.CONVERSION_RULES if rule not in ours)
from tfod_wrap import train
train.train(sys.argv[1], sys.argv[2], seed=0, log=lambda *_: None)
"""
    model_dir = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-c", script, str(small_run / "pipeline.config"), str(model_dir)], check=True, env=env
    )
    checkpoints = [str(folder / "ckpt-2") for folder in (small_run / "model", model_dir)]
    assert tf.train.list_variables(checkpoints[0]) == tf.train.list_variables(checkpoints[1])
    ours, default = (checkpoint_values(checkpoint) for checkpoint in checkpoints)
    assert ours.keys() == default.keys() and len(ours) > 100
    for name, value in ours.items():
        np.testing.assert_array_equal(default[name], value, err_msg=name)
