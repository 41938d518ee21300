"""Drawing primitives of the sample images: background crops, colour jitter, placing a cut-out (scale, rotate,
flip), per-object lighting, blur, shadows, pasting, and the tight box of a mask. Each takes the image's
random generator, so the order of the calls fixes the bytes of an image."""

from __future__ import annotations

import math

import cv2
import numpy as np

from tfod_wrap.sample.photos import BACKGROUNDS, GRAYSCALE, Cutout, photo


def loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _tint(rng: np.random.Generator, rgb: np.ndarray, metal: bool = False) -> np.ndarray:
    """A grayscale photo given a random colour: bronze to silver for `metal`, any muted colour otherwise."""
    tint = np.array([rng.uniform(0.8, 1.15), rng.uniform(0.7, 1.05), rng.uniform(0.5, 1.0)], np.float32)
    if metal:
        tint = np.array([1.1, 1.0 - 0.2 * (shade := rng.uniform()), 1.0 - 0.45 * shade], np.float32)
    elif rng.random() < 0.5:
        tint = tint[rng.permutation(3)]
    return np.clip(rgb * tint, 0, 255)


def jitter_colour(rng: np.random.Generator, rgb: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Saturation, contrast, brightness and a slight colour cast (rgb is float32 0..255): one affine colour map."""
    saturation = 1 + strength * rng.uniform(-0.4, 0.3)
    contrast = 1 + strength * rng.uniform(-0.3, 0.25)
    brightness = 1 + strength * rng.uniform(-0.3, 0.2)
    cast = 1 + strength * rng.uniform(-0.06, 0.06, 3)
    rgb = np.ascontiguousarray(rgb, np.float32)
    mean = float(np.mean(cv2.mean(rgb)[:3]))
    # gray + (rgb - gray) * saturation keeps the image mean; then (x - mean) * contrast + mean, then gains.
    matrix = np.full((3, 3), (1 - saturation) / 3) + np.eye(3) * saturation
    matrix = matrix * contrast * brightness * cast[:, None]
    offset = mean * (1 - contrast) * brightness * cast
    transform = np.concatenate([matrix, offset[:, None]], axis=1).astype(np.float32)
    return np.clip(cv2.transform(rgb, transform), 0, 255)


def background_crop(rng: np.random.Generator, width: int, height: int, exclude: str | None = None) -> np.ndarray:
    """A random crop of a background region, flipped and jittered, resized to width x height (float32)."""
    choices = [entry for entry in BACKGROUNDS if entry[0] != exclude]
    weights = np.array([entry[2] for entry in choices])
    name, (x0, y0, x1, y1), _ = choices[rng.choice(len(choices), p=weights / weights.sum())]
    region_w, region_h = x1 - x0, y1 - y0
    aspect = width / height
    max_w = min(region_w, region_h * aspect)
    crop_w = rng.uniform(min(0.45 * max_w, 0.8 * width, max_w), max_w) if max_w > 8 else max_w
    crop_h = crop_w / aspect
    left = x0 + rng.uniform(0, region_w - crop_w)
    top = y0 + rng.uniform(0, region_h - crop_h)
    # An affine map from the crop to the output: sub-pixel crops, one resampling.
    sx, sy = width / crop_w, height / crop_h
    matrix = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]], np.float64)
    source = photo(name)
    if sx < 0.8:  # shrinking a lot: area-average first so fine texture does not alias
        factor = sx / 0.8
        source = cv2.resize(source, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix[:, :2] /= factor
    crop = cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    crop = crop.astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if name in GRAYSCALE:
        crop = _tint(rng, crop)
    return jitter_colour(rng, crop)


def warp(
    cut: Cutout,
    rng: np.random.Generator,
    size: tuple[int, int],
    length: float,
    truncate: bool,
    centre: tuple[float, float] | None = None,
):
    """Scale `cut` so its longer side is `length` pixels, rotate, flip, and place it (at `centre`, else at
    random: inside the image, or, with `truncate`, sticking out by up to half its size); returns the warped
    rgb, alpha, full area, and whether the image border cuts it."""
    width, height = size
    h, w = cut.alpha.shape
    factor = length / max(h, w)
    new_w, new_h = max(2, round(w * factor)), max(2, round(h * factor))
    fx, fy = new_w / w, new_h / h
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(cut.rgb, (new_w, new_h), interpolation=interpolation)
    alpha = cv2.resize(cut.alpha, (new_w, new_h), interpolation=interpolation)
    area = float(alpha.sum())
    # Hull points in the resized cut-out's pixel-centre coordinates.
    hull = np.stack([(cut.hull[:, 0] + 0.5) * fx - 0.5, (cut.hull[:, 1] + 0.5) * fy - 0.5], axis=1)
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        hull[:, 0] = new_w - 1 - hull[:, 0]
    angle = rng.uniform(-20, 20)
    pivot = ((new_w - 1) / 2, (new_h - 1) / 2)
    matrix = cv2.getRotationMatrix2D(pivot, angle, 1.0)
    matrix[:, 2] -= pivot  # now maps the cut-out's centre to (0, 0)
    corners = hull @ matrix[:, :2].T + matrix[:, 2]
    low, high = corners.min(axis=0) - 0.5, corners.max(axis=0) + 0.5  # pixel edges, relative to the centre
    box_w, box_h = high - low
    fits = box_w <= width and box_h <= height
    if centre is not None:
        cx, cy = centre
    elif fits and not truncate:
        cx, cy = rng.uniform(-low[0], width - high[0]), rng.uniform(-low[1], height - high[1])
    else:  # let it stick out by up to half its size on any side
        cx = rng.uniform(-low[0] - 0.5 * box_w, width - high[0] + 0.5 * box_w)
        cy = rng.uniform(-low[1] - 0.5 * box_h, height - high[1] + 0.5 * box_h)
    matrix[:, 2] += (cx, cy)
    full = (low[0] + cx, low[1] + cy, high[0] + cx, high[1] + cy)
    truncated = int(full[0] < -1 or full[1] < -1 or full[2] > width + 1 or full[3] > height + 1)  # by > 1 pixel
    # Warp only into the part of the image the object can reach (its box and its soft edge, 2 source
    # pixels wide); the rest stays empty (alpha 0).
    margin = 2 + math.ceil(2 * max(factor, 1))
    x0, y0 = max(math.floor(full[0]) - margin, 0), max(math.floor(full[1]) - margin, 0)
    x1, y1 = min(math.ceil(full[2]) + margin, width), min(math.ceil(full[3]) + margin, height)
    out_rgb = np.zeros((height, width, 3), np.float32)
    out_alpha = np.zeros((height, width), np.float32)
    if x1 > x0 and y1 > y0:
        matrix[:, 2] -= (x0, y0)
        part = (x1 - x0, y1 - y0)
        flags = cv2.INTER_LINEAR
        rgb = np.ascontiguousarray(rgb)
        out_rgb[y0:y1, x0:x1] = cv2.warpAffine(rgb, matrix, part, flags=flags, borderMode=cv2.BORDER_REFLECT)
        alpha = np.ascontiguousarray(alpha)
        out_alpha[y0:y1, x0:x1] = cv2.warpAffine(alpha, matrix, part, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    return out_rgb, out_alpha, area, truncated


def region_of(alpha: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns where `alpha` is not zero: the only part of the image an object touches."""
    x, y, w, h = cv2.boundingRect((alpha > 0).view(np.uint8))
    return slice(y, y + h), slice(x, x + w)


def light(rng: np.random.Generator, rgb: np.ndarray, alpha: np.ndarray, tint: bool) -> np.ndarray:
    """Per-object lighting: contrast, brightness, gamma (and a colour for grayscale cut-outs); in place."""
    region = region_of(alpha)
    part, weight = rgb[region], alpha[region]
    if tint:
        part = _tint(rng, part, metal=True)
    mean = float((part.mean(axis=2) * weight).sum() / (weight.sum() or 1.0))
    part = (part - mean) * rng.uniform(0.75, 1.2) + mean
    part = np.clip(part * rng.uniform(0.7, 1.25), 0, 255)
    rgb[region] = 255 * (part / 255) ** rng.uniform(0.75, 1.35)
    return rgb


def blur(rng: np.random.Generator, rgb: np.ndarray, alpha: np.ndarray):
    if rng.random() < 0.2:  # out of focus or moving
        sigma = rng.uniform(0.6, 1.6)
        return cv2.GaussianBlur(rgb, (0, 0), sigma), cv2.GaussianBlur(alpha, (0, 0), sigma)
    return rgb, alpha


def shadow(rng: np.random.Generator, canvas: np.ndarray, alpha: np.ndarray, length: float) -> None:
    if rng.random() < 0.4:
        shift = np.float32([[1, 0, rng.uniform(-0.06, 0.06) * length], [0, 1, rng.uniform(0.02, 0.08) * length]])
        shadow = cv2.warpAffine(alpha, shift, (alpha.shape[1], alpha.shape[0]))
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, 0.04 * length)) * rng.uniform(0.25, 0.5)
        canvas *= (1 - shadow)[..., None]


def paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> None:
    region = region_of(alpha)
    canvas[region] += (rgb[region] - canvas[region]) * alpha[region][..., None]


def tight_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def iou(a: tuple, b: tuple) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
