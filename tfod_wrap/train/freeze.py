"""Which variables train: presets and regexes over TF2 variable names, and freezing that really freezes.

The TF2 training loop of the TFOD API ignores `train_config.freeze_variables`, and the TF1 names people copy
(`FeatureExtractor/MobilenetV2/...`) do not exist in TF2 models: a Keras backbone's variables have bare layer
names (`Conv1/kernel:0`, `block_1_expand/kernel:0`, `conv2_block1_1_conv/kernel:0`), only the neck carries
the extractor's scope (`ssd_mobile_net_v2_fpn_keras_feature_extractor/...`), and CenterNet's heads are plain
`conv2d_7/kernel:0`. So parts are found from the objects that own the variables, not from their names.

Parts (one per trainable variable; the owning sub-object decides, the name only where no known object does):
- backbone: the classification network inside the feature extractor (MobileNet, ResNet, EfficientNet), top
  layers it holds but the detector does not use included. Faster R-CNN: the whole ResNet, including conv5,
  which the second stage uses for its box-classifier features.
- fpn: the neck between backbone and heads: FPN top-down and extra bottom-up layers, EfficientDet's BiFPN,
  CenterNet's upsampling (or FPN) decoder. A plain SSD extractor has none (its extra layers are `other`).
- box_head: box regression, and the head layers box and class predictions share: a shared prediction tower
  (`share_prediction_tower`, the FPNLite templates), SSD's extra convolutions before the predictors, all of
  Faster R-CNN's RPN (objectness scores included) and its second-stage box encodings, CenterNet's box size
  and offset heads.
- class_head: layers that serve class scores only: class towers and predictors, Faster R-CNN's second-stage
  class predictions, CenterNet's object-center heatmap.
- other: the rest, e.g. a plain SSD extractor's extra feature-map layers, mask or keypoint heads.

Blocks (backbone variables only). Block N is the backbone's own block or stage number in its Keras layer
names; the stem joins block 1 and layers after the last block join the last one:
- MobileNetV2: `block_N_*`, 1..16; block 1 also holds `Conv1` and `expanded_conv` (Keras block 0), block 16
  also `Conv_1`.
- MobileNetV1: `conv_dw_N`/`conv_pw_N`, 1..13; block 1 also holds the `conv1` stem.
- ResNet v1/v2: block 1 is the `conv1` stem, blocks 2..5 the stages `conv2`..`conv5` (v2's `post_bn`: 5).
- EfficientNet: Keras `blockN` = Model Garden `stack_{N-1}`, 1..7; block 1 also holds the stem, 7 the top.
`backbone:N` freezes blocks 1..N, e.g. `backbone:4` on MobileNetV2 freezes Conv1, expanded_conv, block_1..4.

Specs (`--freeze` / `--train-only`): a preset from PRESETS, or else a Python regular expression searched
(re.search) in the variable name, with and without its `:0`. `--freeze` freezes the union of its matches;
`--train-only` freezes everything none of its specs matches. The pipeline's train_config is honoured too:
`freeze_variables` freezes, and a non-empty `update_trainable_variables` trains only what it matches. Those
are regexes matched as TFOD's variables_helper did: re.match (anchored at the start) against the name without
`:0`. All rules add to the frozen set; a variable trains only if no rule freezes it. A spec or pattern that
matches nothing is an error, not a silent no-op, since that is how TF1 names fail in TF2; blank specs are
skipped, as TFOD skips empty patterns.

Batch norm: apply_freeze makes a batch-norm layer whose gamma and beta are all frozen non-trainable and runs it
in inference mode, so its moving mean and variance stay as restored and it normalises with them. For a Keras v2
layer `trainable = False` does both. TFOD's FreezableBatchNorm is a Keras *v1* BatchNormalization: there it only
stops the statistics updating, and the layer still normalises with batch statistics in a training step (learning
phase 1), so its own `training=False` switch is set as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import tensorflow as tf

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.model import ensure_built
from tfod_wrap.core.recipe import PRESETS

PARTS = ("backbone", "fpn", "box_head", "class_head", "other")
HEADS = ("box_head", "class_head")

# Keys of the TFOD box predictors' head dicts (object_detection.core.box_predictor).
BOX_ENCODINGS = "box_encodings"
CLASS_PREDICTIONS = "class_predictions_with_background"

# Where a feature extractor keeps its classification network (SSD and Faster R-CNN Keras extractors,
# CenterNet ResNet / MobileNet-FPN, CenterNet MobileNet / Hourglass), first found wins.
BACKBONE_ATTRIBUTES = ("classification_backbone", "_base_model", "_network", "_resnet_model")
NECK_ATTRIBUTES = ("_fpn_features_generator", "_bifpn_stage", "_fpn_model")

# Keras layer-name patterns that number backbone blocks, with the offset that makes them 1-based.
BLOCK_PATTERNS = (
    (re.compile(r"(?:^|/)stack_(\d+)/"), 1),  # EfficientNet (Model Garden): stack_0..stack_6
    (re.compile(r"(?:^|/)block(\d+)[a-z]_"), 0),  # EfficientNet (Keras applications): block1a..block7a
    (re.compile(r"(?:^|/)block_(\d+)_"), 0),  # MobileNetV2: block_1..block_16
    (re.compile(r"(?:^|/)conv_(?:dw|pw)_(\d+)"), 0),  # MobileNetV1: conv_dw_1..conv_pw_13
    (re.compile(r"(?:^|/)conv(\d)_"), 0),  # ResNet: conv1 stem, stages conv2..conv5
)

# Only for variables no known sub-object owns (an architecture this module was not written for).
NAME_PARTS = (
    ("box_head", re.compile(r"FirstStageBoxPredictor|RPNConv")),  # Faster R-CNN's RPN, objectness included
    ("class_head", re.compile(r"ClassPredictionTower|ClassPredictor|class_head|object_center")),
    ("box_head", re.compile(r"PredictionTower|BoxPredictor|BoxEncodingPredictor|box_head|box_encodings")),
    ("fpn", re.compile(r"(?i)fpn|top_down|bottom_up")),
)

# TF1 scope names that match nothing in TF2 models.
TF1_NAMES = re.compile(r"FeatureExtractor|Mobilenet|resnet_v\d|InceptionResnet")

BLOCKS_HELP = (
    "block N is the backbone's own Keras block number (MobileNetV2 block_N, MobileNetV1 conv_dw_N/conv_pw_N, "
    "ResNet stage convN, EfficientNet blockN), the stem joins block 1; backbone:N freezes blocks 1..N"
)


class FreezeError(UserError, ValueError):
    """A freeze spec or pipeline pattern that cannot apply; the message names it and what to use instead."""


@dataclass(frozen=True)
class VariableInfo:
    name: str
    shape: tuple[int, ...]
    parameters: int
    part: str
    block: int | None


def describe_variables(model) -> list[VariableInfo]:
    """Every trainable variable with its part and backbone block, in model order.

    Variables of batch-norm layers that apply_freeze switched off stay listed (after the others), so the
    same table can be printed before and after freezing.
    """
    variables = _trainable_variables(model)
    parts = _parts(model, variables)
    blocks = _blocks(model)
    infos = []
    for variable in variables:
        part = parts[id(variable)]
        infos.append(
            VariableInfo(
                name=variable.name,
                shape=tuple(int(d) for d in variable.shape),
                parameters=int(variable.shape.num_elements()),
                part=part,
                block=blocks.get(id(variable)) if part == "backbone" else None,
            )
        )
    return infos


def resolve_frozen(model, pipeline_config, freeze: Iterable[str] = (), train_only: Iterable[str] = ()) -> set[str]:
    """Names of the trainable variables to freeze: --freeze, --train-only and the pipeline's train_config."""
    if not model.trainable_variables:
        ensure_built(model, pipeline_config)
    infos = describe_variables(model)
    everything = {info.name for info in infos}
    frozen: set[str] = set()
    for spec in _specs(freeze):
        frozen |= _select(infos, spec, "--freeze")
    train_only = _specs(train_only)
    if train_only:
        frozen |= everything - set().union(*(_select(infos, spec, "--train-only") for spec in train_only))
    train_config = getattr(pipeline_config, "train_config", None)
    if train_config is not None:
        for pattern in filter(None, train_config.freeze_variables):
            frozen |= _match_pipeline(infos, pattern, "train_config.freeze_variables")
        patterns = list(filter(None, train_config.update_trainable_variables))
        if patterns:
            kept = (_match_pipeline(infos, p, "train_config.update_trainable_variables") for p in patterns)
            frozen |= everything - set().union(*kept)
    if everything and frozen >= everything:
        raise FreezeError(f"every one of the {len(everything)} trainable variables would be frozen: nothing to train")
    return frozen


def apply_freeze(model, frozen: set[str]) -> list:
    """The variables to train, in model order; batch-norm layers wholly frozen switch to inference mode.

    Call it before the training step is traced: the switch is read when the layers are called.
    """
    variables = _trainable_variables(model)
    unknown = set(frozen) - {v.name for v in variables}
    if unknown:
        raise FreezeError(f"not variables of this model: {', '.join(sorted(unknown)[:5])}")
    for layer in _batch_norm_layers(model):
        # getattr: a layer never called (the class tower beside a shared one) has no weights at all.
        weights = [w for w in (getattr(layer, "gamma", None), getattr(layer, "beta", None)) if w is not None]
        if weights and all(w.name in frozen for w in weights):
            _freeze_batch_norm(layer)
    return [v for v in variables if v.name not in frozen]


def variables_table(infos: list[VariableInfo], frozen: set[str], verbose: bool = True) -> str:
    """One line per variable (when verbose), then variables and parameters per part: trainable vs frozen."""
    lines = _variable_lines(infos, frozen) + [""] if verbose else []
    header = ("part", "variables", "parameters", "trainable", "trainable params", "frozen", "frozen params")
    rows = [header]
    for part in [*(p for p in PARTS if any(i.part == p for i in infos)), "total"]:
        members = [i for i in infos if part in ("total", i.part)]
        train = [i for i in members if i.name not in frozen]
        held = [i for i in members if i.name in frozen]
        rows.append((part, *_counts(members), *_counts(train), *_counts(held)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines += [_align(row, widths) for row in rows]
    return "\n".join(lines)


# --- input size and building -------------------------------------------------------------------------------


def _trainable_variables(model) -> list:
    # Not model.trainable_variables: that drops the gamma/beta of batch-norm layers made non-trainable.
    return [v for v in model.variables if v.trainable]


# --- parts -------------------------------------------------------------------------------------------------


def _parts(model, variables: list) -> dict[int, str]:
    """id(variable) -> part: the first owner that holds a variable decides, its name only as a fallback."""
    parts: dict[int, str] = {}
    for part, owner in _owners(model):
        for variable in _variables(owner):
            parts.setdefault(id(variable), _part_from_name(variable.name) if part == "name" else part)
    for variable in variables:
        parts.setdefault(id(variable), _part_from_name(variable.name))
    return parts


def _owners(model) -> list[tuple[str, object]]:
    """(part, sub-object) pairs, heads first; 'name' means: classify that object's variables by name."""
    extractor = getattr(model, "_feature_extractor", None)
    neck = "fpn" if _has_neck(model, extractor) else "other"
    return [
        *_predictor_owners(getattr(model, "_box_predictor", None)),  # SSD
        ("box_head", getattr(model, "_first_stage_box_predictor_first_conv", None)),  # Faster R-CNN RPN
        ("box_head", getattr(model, "_first_stage_box_predictor", None)),
        *_predictor_owners(getattr(model, "_mask_rcnn_box_predictor", None)),  # Faster R-CNN second stage
        *_center_net_owners(getattr(model, "_prediction_head_dict", None)),
        ("backbone", _backbone(model)),
        (neck, extractor),
        (neck, getattr(model, "_feature_extractor_for_proposal_features", None)),
        (neck, getattr(model, "_feature_extractor_for_box_classifier_features", None)),
    ]


def _predictor_owners(predictor) -> list[tuple[str, object]]:
    """Box vs class heads of TFOD's Keras box predictors (convolutional, weight-shared, Mask R-CNN)."""
    if predictor is None:
        return []
    heads = dict(getattr(predictor, "_prediction_heads", {}))
    towers = dict(getattr(predictor, "_base_tower_layers_for_heads", {}))
    box = [
        getattr(predictor, "_box_prediction_head", None),
        heads.pop(BOX_ENCODINGS, None),
        towers.pop(BOX_ENCODINGS, None),  # the shared 'PredictionTower' when share_prediction_tower is set
        getattr(predictor, "_shared_nets", None),
        getattr(predictor, "_additional_projection_layers", None),
    ]
    cls = [
        getattr(predictor, "_class_prediction_head", None),
        heads.pop(CLASS_PREDICTIONS, None),
        towers.pop(CLASS_PREDICTIONS, None),
    ]
    others = [*heads.values(), *towers.values(), getattr(predictor, "_third_stage_heads", None)]
    return [("box_head", box), ("class_head", cls), ("other", others), ("name", predictor)]


def _center_net_owners(heads) -> list[tuple[str, object]]:
    """CenterNet: box/scale and box/offset -> box_head, object_center -> class_head, other tasks -> other."""
    if heads is None:
        return []
    return [(_center_net_part(key), head) for key, head in dict(heads).items()]


def _center_net_part(key: str) -> str:
    if key.startswith("box/"):
        return "box_head"
    return "class_head" if key.startswith("object_center") else "other"


def _backbone(model):
    extractor = getattr(model, "_feature_extractor", None)
    for attribute in BACKBONE_ATTRIBUTES:
        network = getattr(extractor, attribute, None)
        if network is not None and _variables(network):
            return network
    return None


def _has_neck(model, extractor) -> bool:
    # CenterNet's extractors always end in an upsampling or FPN decoder.
    return hasattr(model, "_prediction_head_dict") or any(hasattr(extractor, a) for a in NECK_ATTRIBUTES)


def _variables(owner) -> list:
    """Variables of a Keras layer / tf.Module, or of every such object in (nested) lists and dicts."""
    if isinstance(owner, tf.Module):
        return list(owner.variables)
    if isinstance(owner, Mapping):
        return [v for item in owner.values() for v in _variables(item)]
    if isinstance(owner, list | tuple):
        return [v for item in owner for v in _variables(item)]
    return []


def _part_from_name(name: str) -> str:
    return next((part for part, pattern in NAME_PARTS if pattern.search(name)), "other")


# --- blocks ------------------------------------------------------------------------------------------------


def _blocks(model) -> dict[int, int]:
    """id(variable) -> backbone block, walking the backbone's layers in network order."""
    backbone = _backbone(model)
    blocks: dict[int, int] = {}
    current = 1  # the stem, before any numbered block, joins block 1
    for layer in _layers(backbone):
        current = _block_number(layer.name) or current
        for weight in layer.weights:
            blocks.setdefault(id(weight), current)
    return blocks


def _layers(network) -> list:
    """Leaf layers of a Keras model in order, nested models flattened."""
    if network is None:
        return []
    found = []
    for layer in getattr(network, "layers", []):
        found += _layers(layer) if getattr(layer, "layers", None) else [layer]
    return found


def _block_number(name: str) -> int | None:
    for pattern, offset in BLOCK_PATTERNS:
        match = pattern.search(name)
        if match:
            return max(1, int(match.group(1)) + offset)  # MobileNetV2's block 0 (expanded_conv) joins block 1
    return None


# --- specs -------------------------------------------------------------------------------------------------


def _specs(specs: Iterable[str]) -> list[str]:
    """A lone string is one spec, not its characters; blank ones (an unset Makefile variable) are skipped."""
    specs = [specs] if isinstance(specs, str) else specs
    return [spec.strip() for spec in specs if spec.strip()]


def _select(infos: list[VariableInfo], spec: str, option: str) -> set[str]:
    """Names a --freeze / --train-only spec (preset or regex) selects; an empty selection is an error."""
    predicate = _preset(infos, spec, option)
    if predicate is not None:
        return {info.name for info in infos if predicate(info)}
    pattern = _compile(spec, option)
    selected = {i.name for i in infos if pattern.search(i.name) or pattern.search(_bare(i.name))}
    if not selected:
        raise FreezeError(_no_match(infos, spec, f"{option} {spec!r}", "searched"))
    return selected


def _preset(infos: list[VariableInfo], spec: str, option: str) -> Callable[[VariableInfo], bool] | None:
    """The predicate of a preset, None for anything else (a regex); a preset this model lacks is an error."""
    if spec == "all-but-heads":
        return lambda info: info.part not in HEADS
    if spec in PARTS and spec != "other":
        if not any(info.part == spec for info in infos):
            raise FreezeError(
                f"{option} {spec}: this model has no {spec} variables (its parts: {_parts_summary(infos)}); "
                f"presets: {', '.join(PRESETS)}"
            )
        return lambda info: info.part == spec
    if spec.startswith("backbone:"):
        limit = _block_limit(infos, spec, option)
        return lambda info: info.part == "backbone" and info.block is not None and info.block <= limit
    return None


def _block_limit(infos: list[VariableInfo], spec: str, option: str) -> int:
    blocks = [info.block for info in infos if info.part == "backbone" and info.block is not None]
    if not blocks:
        raise FreezeError(f"{option} {spec}: this model's backbone has no numbered blocks; use backbone or a regex")
    count = max(blocks)
    text = spec.partition(":")[2]
    if not text.isdigit() or not 1 <= int(text) <= count:
        raise FreezeError(f"{option} {spec}: N must be a whole number from 1 to {count} ({BLOCKS_HELP})")
    return int(text)


def _match_pipeline(infos: list[VariableInfo], pattern: str, field: str) -> set[str]:
    """TFOD's semantics: re.match against the name without ':0' (variables_helper used var.op.name)."""
    compiled = _compile(pattern, field, presets=False)
    selected = {info.name for info in infos if compiled.match(_bare(info.name))}
    if not selected:
        raise FreezeError(_no_match(infos, pattern, f"{field} {pattern!r}", "matched at the start (re.match)"))
    return selected


def _compile(pattern: str, source: str, presets: bool = True) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        what = f"neither a preset ({', '.join(PRESETS)}) nor" if presets else "not"
        raise FreezeError(f"{source} {pattern!r} is {what} a valid regular expression: {error}") from None


def _no_match(infos: list[VariableInfo], pattern: str, source: str, how: str) -> str:
    """Why a pattern matched nothing, with example names and, for TF1 scopes, the preset to use instead."""
    message = f"{source} matches no trainable variable (regular expression, {how} in the variable names)."
    if TF1_NAMES.search(pattern):
        message += (
            " TF1 scope names such as FeatureExtractor/... do not exist in TF2 models, whose backbone variables "
            "have bare Keras names; to freeze the feature extractor's backbone use the `backbone` preset "
            "(or backbone:N for its first N blocks)."
        )
    examples = {}
    for info in infos:
        examples.setdefault(info.part, info.name)
    listed = ", ".join(f"{name} ({part})" for part, name in examples.items())
    return f"{message} Presets: {', '.join(PRESETS)}. Example names: {listed}."


def _parts_summary(infos: list[VariableInfo]) -> str:
    counts = {part: sum(i.part == part for i in infos) for part in PARTS}
    return ", ".join(f"{part} {count}" for part, count in counts.items() if count)


def _bare(name: str) -> str:
    return name.rsplit(":", 1)[0]


# --- batch norm --------------------------------------------------------------------------------------------


def _batch_norm_layers(model) -> list:
    # Keras v1 and v2 batch norm (and their synchronised variants) share this base.
    base = tf.keras.layers.BatchNormalization.__mro__[1]
    return [layer for layer in model.submodules if isinstance(layer, base)]


def _freeze_batch_norm(layer) -> None:
    layer.trainable = False  # a v2 layer now runs in inference mode whatever `training` it is given
    if hasattr(layer, "_training"):
        layer._training = False  # noqa: SLF001  TFOD's FreezableBatchNorm: its own inference switch
    elif not layer._USE_V2_BEHAVIOR:  # noqa: SLF001
        layer._USE_V2_BEHAVIOR = True  # noqa: SLF001  a plain v1 layer: let trainable=False win over `training`


# --- table -------------------------------------------------------------------------------------------------


def _variable_lines(infos: list[VariableInfo], frozen: set[str]) -> list[str]:
    rows = [("variable", "shape", "parameters", "part", "block", "state")]
    for info in infos:
        block = "" if info.block is None else str(info.block)
        state = "frozen" if info.name in frozen else "trainable"
        rows.append((info.name, str(info.shape), f"{info.parameters:,}", info.part, block, state))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [_align(row, widths, numeric=(2, 4)) for row in rows]


def _counts(infos: list[VariableInfo]) -> tuple[str, str]:
    return str(len(infos)), f"{sum(i.parameters for i in infos):,}"


def _align(row: tuple[str, ...], widths: list[int], numeric: tuple[int, ...] | None = None) -> str:
    """Left-align text columns, right-align numbers (every column but the first unless `numeric` says)."""
    cells = []
    for column, (cell, width) in enumerate(zip(row, widths)):
        right = column in numeric if numeric is not None else column > 0
        cells.append(cell.rjust(width) if right else cell.ljust(width))
    return "  ".join(cells).rstrip()


def backbone_blocks(model) -> int:
    """How many numbered blocks the backbone has (the stem counts as block 1); 0 when none are numbered."""
    return max(_blocks(model).values(), default=0)
