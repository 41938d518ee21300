"""One sample image: a background, distractors, 1-3 objects of the classes placed so each stays visible,
occluders in front of some, then global lighting and noise; its JPEG bytes and its objects' boxes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from tfod_wrap.sample.drawing import (
    background_crop,
    blur,
    iou,
    jitter_colour,
    light,
    loguniform,
    paste,
    region_of,
    shadow,
    tight_box,
    warp,
)
from tfod_wrap.sample.photos import CLASSES, DISTRACTORS, OBJECTS, cutout

JPEG_QUALITY = 90
MIN_VISIBLE = 0.4  # the least visible fraction of an object kept in an image (rejection sampling keeps above it)
MAX_OCCLUDED = 0.3  # the most of an object that one occluder may hide


@dataclass
class Placed:
    label: str
    area: float  # its full area in pixels, inside the image or not
    visible: np.ndarray  # H x W: what of it is still seen (alpha less what covers it)
    truncated: int


def _hide(placed: list[Placed], alpha: np.ndarray) -> None:
    """What `alpha` now covers of the placed objects is no longer seen."""
    region = region_of(alpha)
    for obj in placed:
        obj.visible[region] *= 1 - alpha[region]


def _covers(placed: list[Placed], alpha: np.ndarray, max_loss: float) -> bool:
    """Whether putting `alpha` over the placed objects would hide too much of one of them."""
    region = region_of(alpha)
    for obj in placed:
        hidden = float((obj.visible[region] * alpha[region]).sum())
        if hidden > max_loss * obj.area or (obj.visible.sum() - hidden) < (MIN_VISIBLE + 0.05) * obj.area:
            return True
    return False


def _occluder(rng: np.random.Generator, size: tuple[int, int], box: tuple[int, int, int, int]):
    """A patch over part of `box`: a board, post or slab of some other photo, or a distractor."""
    width, height = size
    bw, bh = box[2] - box[0], box[3] - box[1]
    if rng.random() < 0.4:
        cut = cutout(DISTRACTORS[rng.integers(len(DISTRACTORS))])
        length = rng.uniform(0.3, 0.7) * max(bw, bh)
        # Over the object: centred on a random point of its box.
        target = (box[0] + rng.uniform(0, 1) * bw, box[1] + rng.uniform(0, 1) * bh)
        rgb, alpha, _, _ = warp(cut, rng, size, length, truncate=True, centre=target)
        return light(rng, rgb, alpha, cut.tint), alpha
    texture = background_crop(rng, width, height)
    if rng.random() < 0.5:  # a post or a strip crossing the object
        if rng.random() < 0.5:
            pw, ph = rng.uniform(0.12, 0.3) * bw, rng.uniform(1.0, 2.0) * bh
        else:
            pw, ph = rng.uniform(1.0, 2.0) * bw, rng.uniform(0.12, 0.3) * bh
    else:  # a slab over one side or corner
        pw, ph = rng.uniform(0.25, 0.6) * bw, rng.uniform(0.25, 0.6) * bh
    side = rng.integers(4)
    cx = box[0] + (rng.uniform(0, 1) if side in (0, 1) else float(side == 3)) * bw
    cy = box[1] + (rng.uniform(0, 1) if side in (2, 3) else float(side == 1)) * bh
    if pw > bw or ph > bh:  # a strip: across the middle part of the object
        cx, cy = box[0] + rng.uniform(0.2, 0.8) * bw, box[1] + rng.uniform(0.2, 0.8) * bh
    angle = rng.uniform(-25, 25)
    points = cv2.boxPoints(((cx, cy), (pw, ph), angle))
    factor = 4
    big = np.zeros((height * factor, width * factor), np.uint8)
    cv2.fillPoly(big, [np.round((points + 0.5) * factor - 0.5).astype(np.int32)], 255)
    alpha = cv2.resize(big, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.7)
    return texture, alpha


def render(index: int, seed: int, size: tuple[int, int]) -> tuple[bytes, list[dict]]:
    """Image `index` of the dataset for `seed`: its JPEG bytes and its objects (label, box, truncated)."""
    rng = np.random.default_rng([seed, index])
    width, height = size
    short = min(width, height)
    canvas = background_crop(rng, width, height)

    # Distractors first: behind the objects, so they never hide them.
    for _ in range(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1])):
        cut = cutout(DISTRACTORS[rng.integers(len(DISTRACTORS))])
        length = loguniform(rng, *cut.scale) * short
        rgb, alpha, _, _ = warp(cut, rng, size, length, truncate=rng.random() < 0.3)
        rgb = light(rng, rgb, alpha, cut.tint)
        rgb, alpha = blur(rng, rgb, alpha)
        shadow(rng, canvas, alpha, length)
        paste(canvas, rgb, alpha)

    placed: list[Placed] = []
    boxes: list[tuple] = []
    wanted = 0 if rng.random() < 0.05 else int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    for _ in range(wanted):
        label = CLASSES[rng.integers(len(CLASSES))]
        specs = OBJECTS[label]
        cut = cutout(specs[rng.integers(len(specs))])
        truncate = rng.random() < 0.15
        for _attempt in range(12):
            length = loguniform(rng, *cut.scale) * short
            rgb, alpha, area, truncated = warp(cut, rng, size, length, truncate)
            box = tight_box(alpha)
            if box is None or alpha.sum() < 0.55 * area:
                continue
            if any(iou(box, other) > 0.4 for other in boxes) or _covers(placed, alpha, 0.35):
                continue
            break
        else:
            continue  # no room for it: leave it out (nothing is drawn)
        rgb = light(rng, rgb, alpha, cut.tint)
        rgb, alpha = blur(rng, rgb, alpha)
        shadow(rng, canvas, alpha, length)
        paste(canvas, rgb, alpha)
        _hide(placed, alpha)
        placed.append(Placed(label, area, alpha.copy(), truncated))
        boxes.append(tight_box(alpha) or box)

    # Occlusion: something in front of some of the objects, hiding at most MAX_OCCLUDED of each.
    for position in range(len(placed)):
        if rng.random() >= 0.3:
            continue
        for _attempt in range(6):
            rgb, alpha = _occluder(rng, size, boxes[position])
            hidden = float((placed[position].visible * alpha).sum())
            if hidden < 0.05 * placed[position].area or _covers(placed, alpha, MAX_OCCLUDED):
                continue
            paste(canvas, rgb, alpha)
            _hide(placed, alpha)
            break

    # Global: lighting, colour cast, sometimes blur, sensor noise.
    canvas = jitter_colour(rng, canvas, strength=0.5)
    canvas = 255 * (canvas / 255) ** rng.uniform(0.85, 1.2)
    if rng.random() < 0.1:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 0.9))
    if rng.random() < 0.6:
        canvas = canvas + rng.uniform(1, 4) * rng.standard_normal(canvas.shape, np.float32)
    pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    objects = []
    for obj, box in zip(placed, boxes):
        visible = float(obj.visible.sum()) / obj.area
        assert visible >= MIN_VISIBLE, (index, obj.label, visible)  # by construction
        objects.append({"name": obj.label, "box": box, "truncated": obj.truncated, "visible": round(visible, 3)})
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buffer.getvalue(), objects
