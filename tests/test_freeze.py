"""Variable freezing on real TFOD models: parts, presets, regexes, the pipeline's train_config, batch norm."""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from tfod_wrap import config
from tfod_wrap.core.model import ensure_built
from tfod_wrap.train.freeze import (
    PARTS,
    FreezeError,
    apply_freeze,
    describe_variables,
    resolve_frozen,
    variables_table,
)

FPN = "ssd_mobilenet_v2_fpnlite_320"
TEMPLATES = [
    "ssd_mobilenet_v2",
    "ssd_mobilenet_v2_fpnlite_320",
    "ssd_mobilenet_v2_fpnlite_640",
    "ssd_mobilenet_v1_fpn_640",
    "ssd_resnet50_v1_fpn_640",
    "efficientdet_d0",
    "centernet_resnet50_v2_512",
    "faster_rcnn_resnet50_v1_640",
]
NO_FPN = {"ssd_mobilenet_v2", "faster_rcnn_resnet50_v1_640"}


def build(template: str, num_classes: int | None = None, side: int | None = None):
    """A built model of a template; `side` shrinks the input, which changes no variable, to save time."""
    from object_detection.builders import model_builder

    pipeline = config.load(template)
    arch = config.meta_architecture(pipeline)
    if num_classes:
        arch.num_classes = num_classes
    if side:
        resizer = arch.image_resizer
        if resizer.HasField("fixed_shape_resizer"):
            resizer.fixed_shape_resizer.height = resizer.fixed_shape_resizer.width = side
        else:
            resizer.keep_aspect_ratio_resizer.min_dimension = resizer.keep_aspect_ratio_resizer.max_dimension = side
    if pipeline.model.HasField("faster_rcnn"):
        arch.first_stage_max_proposals = arch.second_stage_batch_size = 8  # a cheaper second stage, same variables
    model = model_builder.build(pipeline.model, is_training=True)
    ensure_built(model, pipeline)
    return model, pipeline


@functools.cache
def small(template: str):
    """Shared by the tests that only read a model (apply_freeze changes one, so it builds its own)."""
    model, pipeline = build(template, side=256)
    return model, pipeline, describe_variables(model)


@pytest.fixture(scope="module")
def fpnlite():
    tf.keras.backend.clear_session()  # Keras numbers scope names per process: a model built before adds "_1"
    model, pipeline = build(FPN)  # the stock template: 320x320, 90 classes
    return model, pipeline, describe_variables(model)


def names(infos, part=None) -> list[str]:
    return [i.name for i in infos if part in (None, i.part)]


def with_train_config(pipeline, freeze_variables=(), update_trainable_variables=()):
    copy = type(pipeline)()
    copy.CopyFrom(pipeline)
    copy.train_config.freeze_variables.extend(freeze_variables)
    copy.train_config.update_trainable_variables.extend(update_trainable_variables)
    return copy


def test_fpnlite_counts_parts_and_blocks(fpnlite):
    model, _, infos = fpnlite
    assert names(infos) == [v.name for v in model.trainable_variables]
    assert len(infos) == 232
    assert sum(i.parameters for i in infos) == 2_626_746
    assert Counter(i.part for i in infos) == {"backbone": 156, "fpn": 22, "box_head": 51, "class_head": 3}
    # TF2 names: a bare Keras backbone, only the FPN under the extractor's scope, heads under the predictor's.
    assert all(re.fullmatch(r"[A-Za-z0-9_]+/\w+:0", n) for n in names(infos, "backbone"))
    assert all(n.startswith("ssd_mobile_net_v2_fpn_keras_feature_extractor/") for n in names(infos, "fpn"))
    heads = [i for i in infos if i.part in ("box_head", "class_head")]
    assert len(heads) == 54 and all(i.name.startswith("WeightSharedConvolutionalBoxPredictor/") for i in heads)
    assert all("ClassPredictor" in n for n in names(infos, "class_head"))
    blocks = {i.name: i.block for i in infos}
    expected = {"Conv1/kernel:0": 1, "expanded_conv_project/kernel:0": 1, "block_1_expand/kernel:0": 1}
    expected |= {"block_2_expand/kernel:0": 2, "block_16_project/kernel:0": 16, "Conv_1/kernel:0": 16}
    assert {name: blocks[name] for name in expected} == expected
    assert all(i.block is None for i in infos if i.part != "backbone")


def test_presets(fpnlite):
    model, pipeline, infos = fpnlite
    backbone = names(infos, "backbone")
    assert resolve_frozen(model, pipeline, ["backbone"]) == set(backbone)
    assert resolve_frozen(model, pipeline, ["fpn"]) == set(names(infos, "fpn"))
    assert resolve_frozen(model, pipeline, ["class_head"]) == set(names(infos, "class_head"))
    assert resolve_frozen(model, pipeline, ["all-but-heads"]) == set(backbone + names(infos, "fpn"))
    # backbone:4 = the stem, expanded_conv and block_1..block_4: a prefix of the backbone in block order.
    first = resolve_frozen(model, pipeline, ["backbone:4"])
    assert first < set(backbone) and set(backbone[: len(first)]) == first
    assert "block_4_project/kernel:0" in first and "block_5_expand/kernel:0" not in first
    assert resolve_frozen(model, pipeline, ["backbone:16"]) == set(backbone)
    for bad in ("backbone:0", "backbone:17", "backbone:x"):
        with pytest.raises(FreezeError, match="from 1 to 16"):
            resolve_frozen(model, pipeline, [bad])


def test_regexes_and_train_only(fpnlite):
    model, pipeline, infos = fpnlite
    assert resolve_frozen(model, pipeline, ["^block_1_"]) == {n for n in names(infos) if n.startswith("block_1_")}
    kernels = resolve_frozen(model, pipeline, ["kernel$"])  # matched with and without ':0'
    assert kernels and all("kernel" in n for n in kernels)
    union = resolve_frozen(model, pipeline, ["^Conv1/", "backbone:1"])
    assert union == {i.name for i in infos if i.block == 1}
    everything = set(names(infos))
    assert resolve_frozen(model, pipeline, train_only=["class_head"]) == everything - set(names(infos, "class_head"))
    trained = set(names(infos, "class_head")) | {n for n in everything if "BoxPredictor/" in n}
    assert resolve_frozen(model, pipeline, train_only=["class_head", "BoxPredictor/"]) == everything - trained
    assert resolve_frozen(model, pipeline, "fpn", train_only=["", " "]) == set(names(infos, "fpn"))
    both = resolve_frozen(model, pipeline, ["fpn"], train_only=["fpn", "class_head"])
    assert both == everything - set(names(infos, "class_head"))


def test_pipeline_train_config(fpnlite):
    model, pipeline, infos = fpnlite
    frozen = resolve_frozen(model, with_train_config(pipeline, freeze_variables=["Conv1", "block_1_"]))
    # re.match, as TFOD: anchored at the start, so bn_Conv1 stays trainable.
    assert frozen == {n for n in names(infos) if n.startswith(("Conv1/", "block_1_"))}
    frozen = resolve_frozen(model, with_train_config(pipeline, update_trainable_variables=["WeightShared"]))
    assert frozen == set(names(infos, "backbone") + names(infos, "fpn"))
    frozen = resolve_frozen(model, with_train_config(pipeline, ["Conv1"]), ["fpn"])  # adds to --freeze
    assert frozen == set(names(infos, "fpn")) | {"Conv1/kernel:0"}


def test_errors_name_the_spec_and_the_way_out(fpnlite):
    model, pipeline, _ = fpnlite
    with pytest.raises(FreezeError, match=r"'FeatureExtractor'.*TF1.*`backbone` preset.*Conv1/kernel:0"):
        resolve_frozen(model, pipeline, ["FeatureExtractor"])
    with pytest.raises(FreezeError, match=r"freeze_variables 'FeatureExtractor/\.\*'.*`backbone` preset"):
        resolve_frozen(model, with_train_config(pipeline, ["FeatureExtractor/.*"]))
    with pytest.raises(FreezeError, match=r"--train-only 'nothing_like_this'.*Presets: backbone"):
        resolve_frozen(model, pipeline, train_only=["nothing_like_this"])
    with pytest.raises(FreezeError, match=r"'block_\(' is neither a preset .* nor a valid regular expression"):
        resolve_frozen(model, pipeline, ["block_("])
    with pytest.raises(FreezeError, match=r"freeze_variables '\[' is not a valid regular expression"):
        resolve_frozen(model, with_train_config(pipeline, ["["]))
    with pytest.raises(FreezeError, match="nothing to train"):
        resolve_frozen(model, pipeline, ["backbone", "fpn", "box_head", "class_head"])


def test_fpn_preset_on_a_model_without_fpn():
    model, pipeline, infos = small("ssd_mobilenet_v2")
    assert Counter(i.part for i in infos)["other"] == 24  # its extra feature-map layers are no FPN
    with pytest.raises(FreezeError, match=r"--freeze fpn: this model has no fpn variables.*backbone 156"):
        resolve_frozen(model, pipeline, ["fpn"])


def test_variables_table(fpnlite):
    _, _, infos = fpnlite
    frozen = {n for n in names(infos, "backbone")}
    table = variables_table(infos, frozen)
    lines = table.splitlines()
    assert len(lines) == 1 + 232 + 1 + 1 + 4 + 1
    assert re.search(r"^block_3_expand/kernel:0 +\(1, 1, 24, 144\) +3,456 +backbone +3 +frozen$", table, re.M)
    assert re.search(r"^WeightShared\S+ClassPredictor/bias:0 +\(546,\) +546 +class_head +trainable$", table, re.M)
    totals = variables_table(infos, frozen, verbose=False).splitlines()
    assert totals[0].split()[:2] == ["part", "variables"] and len(totals) == 6
    backbone_params = sum(i.parameters for i in infos if i.part == "backbone")
    assert totals[1].split() == ["backbone", "156", f"{backbone_params:,}", "0", "0", "156", f"{backbone_params:,}"]
    assert totals[-1].split()[:4] == ["total", "232", "2,626,746", "76"]


def moving_means(layers) -> list[np.ndarray]:
    return [layer.moving_mean.numpy().copy() for layer in layers]


@contextlib.contextmanager
def training_phase():
    """Learning phase 1, as the training loop sets it (deprecated, but what TFOD's layers read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tf.keras.backend.learning_phase_scope(1):
            yield


def train_forward(model, side: int) -> None:
    with training_phase():
        model.predict(*model.preprocess(tf.random.uniform([2, side, side, 3], 0, 255, seed=1)))


def normalises_like_inference(layer) -> bool:
    channels = layer.moving_mean.shape[-1]
    inputs = tf.random.uniform([4, 3, 3, channels], -5, 5, seed=2)
    return np.allclose(layer(inputs), layer(inputs, training=False), atol=1e-5)


@pytest.mark.parametrize(
    "template, side, classes, parameters",
    [(FPN, 320, 3, 2_559_408), ("centernet_resnet50_v2_512", 256, 3, None)],
    ids=["FreezableBatchNorm", "keras-v2-BatchNormalization"],
)
def test_apply_freeze_keeps_frozen_batch_norm_statistics(template, side, classes, parameters):
    model, pipeline = build(template, num_classes=classes, side=side)
    infos = describe_variables(model)
    if parameters:
        assert (len(infos), sum(i.parameters for i in infos)) == (232, parameters)
    frozen = resolve_frozen(model, pipeline, ["backbone"])
    trained = apply_freeze(model, frozen)
    assert [v.name for v in trained] == [n for n in names(infos) if n not in frozen]
    assert describe_variables(model) and {i.name for i in describe_variables(model)} == set(names(infos))
    norms = [m for m in model.submodules if hasattr(m, "moving_mean") and hasattr(m, "gamma")]
    held = [m for m in norms if m.gamma.name in frozen]
    free = [m for m in norms if m.gamma.name not in frozen]
    assert held and free and not any(m.trainable for m in held) and all(m.trainable for m in free)
    before_held, before_free = moving_means(held), moving_means(free)
    model._is_training = True
    train_forward(model, side)
    assert all(np.array_equal(a, b) for a, b in zip(before_held, moving_means(held)))
    assert sum(not np.array_equal(a, b) for a, b in zip(before_free, moving_means(free))) > len(free) // 2
    # Not only kept statistics: a frozen layer normalises with them (inference mode) in a training step too.
    with training_phase():
        assert all(normalises_like_inference(layer) for layer in held)
        assert not any(normalises_like_inference(layer) for layer in free[:3])


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_has_backbone_heads_and_blocks(template):
    model, pipeline, infos = small(template)
    assert names(infos) == [v.name for v in model.trainable_variables]
    parts = Counter(i.part for i in infos)
    assert set(parts) <= set(PARTS) and parts["backbone"] and parts["box_head"] and parts["class_head"]
    assert bool(parts["fpn"]) == (template not in NO_FPN)
    backbone = names(infos, "backbone")
    blocks = [i.block for i in infos if i.part == "backbone"]
    assert None not in blocks and min(blocks) == 1
    first = resolve_frozen(model, pipeline, ["backbone:2"])
    assert first and first < set(backbone)
    assert resolve_frozen(model, pipeline, ["all-but-heads"]) == set(names(infos)) - set(
        names(infos, "box_head") + names(infos, "class_head")
    )
