"""The adaptive recipe of `train --time-budget`: what to train with, chosen from the model, the batch and the
boxes in the training records rather than from one dataset. Each choice comes with one line saying why; a field
the user set (a flag, a recipe) is never changed.

- Input size (SSD with a fixed-shape resizer): objects whose side is under 32 px at the model's input (COCO's
  "small") fall below the stride of SSD's finest feature maps, so the input grows to the smallest size where the
  median box reaches 32 px, up to 640 px (a step at 640 costs about 4x one at 320 on a CPU) and never past the
  images' own size.
- Anchors (SSD's ssd_anchor_generator and multiscale_anchor_generator), as YOLOv5's auto-anchor: the share of
  training boxes that some anchor shape overlaps at the matcher's IoU threshold (the best possible recall, BPR) is
  computed for the template's anchors and for a grid of scales and aspect-ratio sets (the template's, common sets
  and quantiles of the boxes' own aspect ratios). Where the template's already match 90% of the boxes they stay
  (a refit that matched more boxes trained worse on the demo's data: see KEEP_ANCHORS_RECALL); otherwise the
  best set replaces them when it matches more boxes. Anchors and boxes are compared as shapes, centred, in the
  image's normalised coordinates.
- Freezing: with pretrained weights, the stem and the first 60% of the backbone's blocks (80% below batch 8, where
  the batch-norm statistics of the trained blocks are noisy); nothing where the boxes are small (median side
  under 32 px at the pipeline's input): the pretrained features were learnt on larger objects, and on small ones
  the whole backbone must adapt (measured: `freeze_spec`); from random weights nothing is frozen.
- Rates (momentum SGD): 0.00125 x batch with a quarter of it as warm-up, the rate measured best on the sample
  data at batch 8 (0.01; docs/BENCHMARKS.md), scaled linearly with the batch like the templates' own. Other
  optimizers keep the template's rates scaled with the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.overrides import override
from tfod_wrap.core.pipeline import learning_rate, meta_architecture
from tfod_wrap.core.records import expand_record_paths, feature_values, read_examples

SMALL_SIDE_PX = 32  # COCO's small-object limit (area 32 x 32)
LARGEST_INPUT = 640
INPUT_SIZES = (320, 384, 448, 512, 640)
FROZEN_SHARE = {True: 0.6, False: 0.8}  # by "batch of 8 or more"
RATE_PER_IMAGE = 0.00125  # 0.01 at batch 8, the demo's measured rate
# The template's anchors stay while they match this share of the boxes (YOLOv5 refits only below 0.98 of its
# looser measure). Best-anchor recall is not all that training needs: on the demo's sample the template matches
# 0.92, a refitted set 0.99, and in the same 8 minutes the refitted set reached mAP@0.5 0.83 against the
# template's 0.91 (docs/BENCHMARKS.md, "The adaptive recipe")
KEEP_ANCHORS_RECALL = 0.9
MAX_BOXES = 20000  # boxes sampled for the anchor fit (a fixed seed, so the choice is repeatable)
SCALES = (0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2)
TOP_SCALES = (0.4, 0.6, 0.8, 0.95)
ANCHOR_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
COMMON_ASPECTS = ((1.0, 2.0, 0.5), (1.0, 2.0, 0.5, 3.0, 0.3333))
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


class AdaptError(UserError):
    """Training records the adaptive recipe cannot work from (no boxes); the message names the records."""


@dataclass(frozen=True)
class Boxes:
    """The training boxes as normalised widths and heights (0..1 of the image), their class ids, and the images'
    sizes in px."""

    widths: np.ndarray
    heights: np.ndarray
    labels: np.ndarray
    image_sizes: np.ndarray  # [images, 2]: width, height


@dataclass(frozen=True)
class Adaptation:
    changes: dict[str, object]  # recipe fields
    reasons: list[str]  # one line per choice
    median_side: float | None = None  # the boxes' median side in px at the pipeline's input (fixed-shape SSDs)


def read_boxes(patterns: Iterable[str], classes: dict[str, int]) -> Boxes:
    """Every box of the training records (file patterns as in train_input_reader). No records, no boxes or a
    class of the label map (name -> id) without a box is an AdaptError: the run could not learn it."""
    widths, heights, labels, sizes = [], [], [], []
    files = expand_record_paths(list(patterns))
    where = ", ".join(files)
    for _, example in read_examples(files):
        features = example.features.feature
        sizes.append([(feature_values(features, f"image/{side}") or [0])[0] for side in ("width", "height")])
        xmin, ymin, xmax, ymax = (feature_values(features, f"image/object/bbox/{key}") for key in BOX_KEYS)
        widths += [right - left for left, right in zip(xmin, xmax)]
        heights += [bottom - top for top, bottom in zip(ymin, ymax)]
        labels += feature_values(features, "image/object/class/label")
    if not sizes:
        raise AdaptError(f"{where}: the training split holds no records")
    if not widths:
        raise AdaptError(f"{where}: no boxes in the training records; there is nothing to learn from")
    missing = [f"{name!r} (id {class_id})" for name, class_id in classes.items() if class_id not in set(labels)]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        raise AdaptError(
            f"{where}: no training boxes of class {', '.join(missing)}; the model cannot learn {them}. Annotate "
            f"some, or drop {them} from the label map"
        )
    return Boxes(*(np.asarray(values, np.float64) for values in (widths, heights, labels, sizes)))


def adapt(config, boxes: Boxes, explicit: set[str], batch_size: int, given: Iterable[str] = ()) -> Adaptation:
    """The recipe fields the adaptive recipe sets on this pipeline: input size and anchors as --set overrides (to
    go before the user's own), and the rates unless `explicit` names them; freezing needs the built model (see
    `freeze_spec`). `config` has the user's --set applied already; `given` are their resolved paths, and an input
    size or anchor generator the user set is kept as given."""
    changes: dict[str, object] = {}
    given = tuple(given)
    if _touches(given, f"model.{config.model.WhichOneof('model')}.image_resizer"):
        size, size_reason = None, "input size: as given (--set)"
    else:
        size, size_reason = input_size(config, boxes)
    overrides = [f"{resizer_path(config)}.{side}={size}" for side in ("height", "width")] if size else []
    if _touches(given, "model.ssd.anchor_generator"):
        anchor_overrides, anchor_reason = [], "anchors: as given (--set)"
    else:
        anchor_overrides, anchor_reason = fit_anchors(config, boxes, size)
    overrides += anchor_overrides
    reasons = [size_reason, anchor_reason]
    if overrides:
        changes["overrides"] = tuple(overrides)  # the user's own --set come after them, and win
    rates, line = pick_rates(config, batch_size, explicit)
    changes |= rates
    reasons.append(line)
    return Adaptation(changes, reasons, median_side(config, boxes))


def _touches(paths: Iterable[str], prefix: str) -> bool:
    return any(path == prefix or path.startswith(prefix + ".") for path in paths)


# --- input size --------------------------------------------------------------------------------------------


def resizer_path(config) -> str:
    return f"model.{config.model.WhichOneof('model')}.image_resizer.fixed_shape_resizer"


def _fixed_input(config) -> tuple[int, int] | None:
    resizer = meta_architecture(config).image_resizer
    if resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        return None
    return resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width


def _input_multiple(config) -> int:
    """FPN feature maps halve down to level max_level, so the input must divide by 2**max_level."""
    generator = _anchor_generator(config)
    if generator is not None and generator.DESCRIPTOR.name == "MultiscaleAnchorGenerator":
        return 2**generator.max_level
    return 32


def _box_sides(config, boxes: Boxes) -> np.ndarray | None:
    """Each box's side (square root of its area) in px at the pipeline's input; None but for fixed-shape SSDs."""
    current = _fixed_input(config)
    if config.model.WhichOneof("model") != "ssd" or current is None:
        return None
    height, width = current
    return np.sqrt(boxes.widths * width * boxes.heights * height)


def median_side(config, boxes: Boxes) -> float | None:
    """The boxes' median side in px at the pipeline's input (None but for fixed-shape SSDs)."""
    sides = _box_sides(config, boxes)
    return None if sides is None else float(np.median(sides))


def input_size(config, boxes: Boxes) -> tuple[int | None, str]:
    """The square input size to train at (None: keep the template's) and why."""
    sides = _box_sides(config, boxes)
    if sides is None:
        return None, "input size: kept (chosen for SSDs with a fixed-shape resizer only)"
    height, width = _fixed_input(config)
    median = float(np.median(sides))
    described = _describe_sides(sides, f"{width}x{height}")
    if median >= SMALL_SIDE_PX:
        return None, f"input size: kept at {width}x{height} ({described})"
    limit = min(LARGEST_INPUT, int(np.median(boxes.image_sizes.max(axis=1))))
    multiple = _input_multiple(config)
    candidates = [size for size in INPUT_SIZES if max(height, width) < size <= limit and size % multiple == 0]
    for size in candidates:
        if median * size / max(height, width) >= SMALL_SIDE_PX:
            why = f"the smallest where the median box is {SMALL_SIDE_PX} px"
            return size, f"input size: {width}x{height} -> {size}x{size}, {why} ({described})"
    if candidates:
        size = candidates[-1]
        return size, (
            f"input size: {width}x{height} -> {size}x{size}, the largest this model trains at here; warning: boxes "
            f"stay small ({described}, median {median * size / max(height, width):.0f} px at {size})"
            + _tile_hint(boxes, size)
        )
    return None, (
        f"input size: kept at {width}x{height}; warning: the boxes are small for it ({described})"
        + _tile_hint(boxes, max(height, width))
    )


def _tile_hint(boxes: Boxes, side: int) -> str:
    """Where the images are well over the input size, tiles of the input's size keep their own resolution."""
    width, height = np.median(boxes.image_sizes, axis=0)
    if max(width, height) < 1.5 * side:
        return ""
    native = float(np.median(np.sqrt(boxes.widths * width * boxes.heights * height)))
    return (
        f"; tiles of {side} px keep the images' resolution (median box {native:.0f} px): `tfrecords --tile {side}`"
        ", README 'Large images, small objects'"
    )


def _describe_sides(sides: np.ndarray, at: str) -> str:
    low, median, high = np.percentile(sides, [5, 50, 95])
    return f"box side at {at}: median {median:.0f} px, 5-95% {low:.0f}-{high:.0f} px"


# --- anchors -----------------------------------------------------------------------------------------------


def _anchor_generator(config):
    if config.model.WhichOneof("model") != "ssd":
        return None
    generator = config.model.ssd.anchor_generator
    kind = generator.WhichOneof("anchor_generator_oneof")
    return getattr(generator, kind) if kind in ("ssd_anchor_generator", "multiscale_anchor_generator") else None


def anchor_shapes(generator, input_hw: tuple[int, int]) -> np.ndarray:
    """[anchors, 2] normalised (width, height) of every anchor shape the generator makes, as TFOD's
    create_ssd_anchors and multiscale_grid_anchor_generator lay them out."""
    shapes = []
    if generator.DESCRIPTOR.name == "SsdAnchorGenerator":
        layers = generator.num_layers
        scales = list(generator.scales) or [
            generator.min_scale + (generator.max_scale - generator.min_scale) * index / max(layers - 1, 1)
            for index in range(layers)
        ]
        scales.append(1.0)
        for layer in range(layers):
            if layer == 0 and generator.reduce_boxes_in_lowest_layer:
                specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
            else:
                specs = [(scales[layer], aspect) for aspect in generator.aspect_ratios]
                if generator.interpolated_scale_aspect_ratio > 0:
                    interpolated = math.sqrt(scales[layer] * scales[layer + 1])
                    specs.append((interpolated, generator.interpolated_scale_aspect_ratio))
            base_width, base_height = generator.base_anchor_width, generator.base_anchor_height
            shapes += [
                (scale * math.sqrt(aspect) * base_width, scale / math.sqrt(aspect) * base_height)
                for scale, aspect in specs
            ]
    else:
        height, width = input_hw
        for level in range(generator.min_level, generator.max_level + 1):
            for octave in range(generator.scales_per_octave):
                size = generator.anchor_scale * 2**level * 2 ** (octave / generator.scales_per_octave)
                shapes += [
                    (size * math.sqrt(aspect) / width, size / math.sqrt(aspect) / height)
                    for aspect in generator.aspect_ratios
                ]
    return np.asarray(shapes, np.float64)


def shape_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[boxes, anchors] IoU of (width, height) pairs placed on one centre."""
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = boxes[:, 0:1] * boxes[:, 1:2] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def best_possible_recall(boxes: np.ndarray, anchors: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share of boxes some anchor overlaps at >= threshold, mean best IoU)."""
    best = shape_iou(boxes, anchors).max(axis=1)
    return float(np.mean(best >= threshold)), float(np.mean(best))


def _aspect_sets(generator, boxes: np.ndarray) -> list[tuple[float, ...]]:
    """The template's aspect ratios, common sets, and quantiles of the boxes' own (always with 1.0)."""
    aspects = boxes[:, 0] / boxes[:, 1]
    sets = [tuple(generator.aspect_ratios), *COMMON_ASPECTS]
    for count in (3, 5):
        quantiles = np.exp(np.quantile(np.log(aspects), [(index + 0.5) / count for index in range(count)]))
        sets.append(tuple(sorted({1.0, *(round(float(value), 2) for value in quantiles)})))
    return list(dict.fromkeys(sets))


def fit_anchors(config, boxes: Boxes, input_side: int | None) -> tuple[list[str], str]:
    """--set overrides for a better anchor set (none when the template's matches as many boxes), and why."""
    generator = _anchor_generator(config)
    if generator is None:
        return [], "anchors: kept (auto-anchor fits SSD anchor generators)"
    current = _fixed_input(config) or (LARGEST_INPUT, LARGEST_INPUT)
    input_hw = (input_side, input_side) if input_side else current
    threshold = _matched_threshold(config)
    shapes = _sample(np.stack([boxes.widths, boxes.heights], axis=1))
    template = best_possible_recall(shapes, anchor_shapes(generator, input_hw), threshold)
    recall = f"best possible recall at IoU {threshold:g}"
    if template[0] >= KEEP_ANCHORS_RECALL:  # decided before the candidate search, which it makes moot
        why = f"they match {KEEP_ANCHORS_RECALL:.0%} of the boxes or more"
        return [], f"anchors: kept, {why} ({recall} {template[0]:.2f}, mean best IoU {template[1]:.2f})"
    path = f"model.ssd.anchor_generator.{config.model.ssd.anchor_generator.WhichOneof('anchor_generator_oneof')}"
    best, best_settings = template, {}
    for settings in _anchor_candidates(generator, shapes):
        # each candidate scored as the --set overrides it becomes, applied as `config --set` applies them
        candidate = type(config)()
        candidate.CopyFrom(config)
        override(candidate, _overrides(path, settings))
        score = best_possible_recall(shapes, anchor_shapes(_anchor_generator(candidate), input_hw), threshold)
        if score > best:
            best, best_settings = score, settings
    if not best_settings or best[0] <= template[0] + 0.01:
        return [], f"anchors: kept ({recall} {template[0]:.2f}, mean best IoU {template[1]:.2f})"
    overrides = _overrides(path, best_settings)
    changed = ", ".join(f"{name} {_value_text(value)}" for name, value in best_settings.items())
    gain = f"{recall} {template[0]:.2f} -> {best[0]:.2f}, mean best IoU {template[1]:.2f} -> {best[1]:.2f}"
    return overrides, f"anchors: {changed} ({gain})"


def _anchor_candidates(generator, shapes: np.ndarray) -> Iterable[dict[str, object]]:
    aspect_sets = _aspect_sets(generator, shapes)
    if generator.DESCRIPTOR.name == "SsdAnchorGenerator":
        if generator.scales:  # explicit scales: only the aspect ratios are fitted
            yield from ({"aspect_ratios": aspects} for aspects in aspect_sets)
            return
        for low in SCALES:
            for high in TOP_SCALES:
                if high > low:
                    yield from ({"min_scale": low, "max_scale": high, "aspect_ratios": a} for a in aspect_sets)
    else:
        for scale in ANCHOR_SCALES:
            yield from ({"anchor_scale": scale, "aspect_ratios": aspects} for aspects in aspect_sets)


def _overrides(path: str, settings: dict[str, object]) -> list[str]:
    return [f"{path}.{name}={_value_text(value)}" for name, value in settings.items()]


def _value_text(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{item:g}" for item in value) + "]"
    return f"{value:g}"


def _matched_threshold(config) -> float:
    matcher = config.model.ssd.matcher
    if matcher.WhichOneof("matcher_oneof") == "argmax_matcher" and matcher.argmax_matcher.matched_threshold:
        return matcher.argmax_matcher.matched_threshold
    return 0.5


def _sample(shapes: np.ndarray) -> np.ndarray:
    shapes = shapes[(shapes[:, 0] > 0) & (shapes[:, 1] > 0)]
    if len(shapes) <= MAX_BOXES:
        return shapes
    return shapes[np.random.default_rng(0).choice(len(shapes), MAX_BOXES, replace=False)]


# --- rates and freezing ------------------------------------------------------------------------------------


def pick_rates(config, batch_size: int, explicit: set[str]) -> tuple[dict[str, float], str]:
    schedule = learning_rate(config)
    optimizer = config.train_config.optimizer.WhichOneof("optimizer")
    if "learning_rate" in explicit or schedule is None:
        return {}, "rates: as given"
    if optimizer != "momentum_optimizer":
        return {}, f"rates: the template's, scaled with the batch ({optimizer})"
    base = RATE_PER_IMAGE * batch_size
    changes = {"learning_rate": base}
    if "warmup_rate" not in explicit and schedule.DESCRIPTOR.name == "CosineDecayLearningRate":
        changes["warmup_rate"] = base / 4
    warmup = f", warm-up {changes['warmup_rate']:g}" if "warmup_rate" in changes else ""
    return changes, f"rates: base {base:g}{warmup} (0.00125 per image of the batch of {batch_size})"


def freeze_spec(
    blocks: int, batch_size: int, pretrained: bool, median_side: float | None = None
) -> tuple[tuple[str, ...], str]:
    """The freeze specs for a backbone of `blocks` blocks, and why; `median_side`: the boxes' median side in px at
    the pipeline's input, where known."""
    if not pretrained:
        return (), "freezing: nothing (no pretrained weights to keep)"
    # On 3x3 mosaics of the sample data (median box 24 px at 300), with the same input (448), anchors and rates for
    # 10 minutes: backbone:10 frozen reached mAP@0.5 0.72 (1,204 steps), nothing frozen 0.81-0.84 in three runs of
    # half the steps (docs/BENCHMARKS.md, "The adaptive recipe against fixed recipes")
    if median_side is not None and median_side < SMALL_SIDE_PX:
        return (), (
            f"freezing: nothing, the boxes are small for the pretrained features (median {median_side:.0f} px at "
            "the pipeline's input) and the whole backbone adapts to them"
        )
    if blocks < 2:
        return ("backbone",), "freezing: the backbone (its blocks are not numbered)"
    share = FROZEN_SHARE[batch_size >= 8]
    depth = max(1, min(blocks - 1, round(blocks * share)))
    return (f"backbone:{depth}",), (
        f"freezing: backbone:{depth} (the stem and {depth} of {blocks} blocks, {share:.0%} at batch {batch_size})"
    )
