"""Tiles of large images, shared by tiled training records (`tfrecords --tile`) and sliced inference (`detect
--tile`, `eval --tile`): where the tiles lie, how a box shows in a tile, and how detections from overlapping tiles
become one set. NumPy only: the tfrecords workers never import TensorFlow.

Boxes here are pixels, (xmin, ymin, xmax, ymax) rows of a float array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tfod_wrap.core.errors import UserError

MERGES = ("nms", "fuse")
DEFAULT_OVERLAP = 0.2
MERGE_THRESHOLD = 0.5
# A detection whose side lies within this many pixels of a tile edge inside the image was cut by that edge
CUT_MARGIN = 2.0


class TileError(UserError):
    """Tiling options that cannot work; the message names the option."""


@dataclass(frozen=True)
class Tile:
    """One tile: its top-left corner in the source image and its size, in pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.width, self.y + self.height


def check_tiling(size: int, overlap: float) -> None:
    if size < 32:
        raise TileError(f"--tile {size}: tiles of at least 32 pixels")
    if not 0 <= overlap < 1:
        raise TileError(f"--tile-overlap {overlap}: a fraction of the tile, at least 0 and below 1")


def tile_grid(width: int, height: int, size: int, overlap: float = DEFAULT_OVERLAP) -> list[Tile]:
    """Tiles of `size` x `size` covering the image, row by row, neighbours overlapping by at least `overlap` of a
    tile. The last tile of a row or column ends at the image's edge (no padding: every tile holds only real pixels),
    the others spread evenly between. A side shorter than a tile gets one tile of its own length, so an image
    smaller than a tile is one tile: the whole image."""
    check_tiling(size, overlap)
    columns, rows = _starts(width, size, overlap), _starts(height, size, overlap)
    return [Tile(x, y, min(size, width), min(size, height)) for y in rows for x in columns]


def _starts(length: int, size: int, overlap: float) -> list[int]:
    if length <= size:
        return [0]
    stride = max(1, math.floor(size * (1 - overlap)))
    count = math.ceil((length - size) / stride) + 1
    return [round(index * (length - size) / (count - 1)) for index in range(count)]


def visible_part(box: tuple[float, float, float, float], tile: Tile) -> tuple[tuple[float, ...] | None, float]:
    """(the box clipped to the tile, in the tile's pixels, or None; its visibility). Visibility is the clipped area
    over the most of the box a tile can show: min(box side, tile side) on each axis. A box that fits in a tile is
    fully visible only when whole; a box larger than a tile counts as fully visible where it fills the tile, so it
    is not lost from every tile of a training set."""
    xmin, ymin, xmax, ymax = box
    left, top, right, bottom = tile.box
    clipped = (max(xmin, left), max(ymin, top), min(xmax, right), min(ymax, bottom))
    width, height = clipped[2] - clipped[0], clipped[3] - clipped[1]
    if width <= 0 or height <= 0:
        return None, 0.0
    most = min(xmax - xmin, tile.width) * min(ymax - ymin, tile.height)
    local = (clipped[0] - left, clipped[1] - top, clipped[2] - left, clipped[3] - top)
    return local, min(1.0, width * height / most)


def to_image(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """Normalised (ymin, xmin, ymax, xmax) boxes of a tile, as TFOD gives them -> pixel (xmin, ymin, xmax, ymax) in
    the source image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack(
        [
            tile.x + boxes[:, 1] * tile.width,
            tile.y + boxes[:, 0] * tile.height,
            tile.x + boxes[:, 3] * tile.width,
            tile.y + boxes[:, 2] * tile.height,
        ],
        axis=1,
    )


def cut_by_tile(boxes: np.ndarray, tile: Tile, width: int, height: int) -> np.ndarray:
    """Which pixel boxes (in the source image) touch an edge of `tile` that lies inside the image: the tile saw only
    part of those objects, or could have."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    left, top, right, bottom = tile.box
    return (
        ((boxes[:, 0] <= left + CUT_MARGIN) & (left > 0))
        | ((boxes[:, 1] <= top + CUT_MARGIN) & (top > 0))
        | ((boxes[:, 2] >= right - CUT_MARGIN) & (right < width))
        | ((boxes[:, 3] >= bottom - CUT_MARGIN) & (bottom < height))
    )


def _intersections(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one pixel box with each of `others`."""
    inter = _intersections(box, others)
    union = _areas(box[np.newaxis])[0] + _areas(others) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def ios(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over the smaller of the two areas: 1 when one box holds the other, as a part of an object cut
    by a tile edge lies inside the whole object's box."""
    inter = _intersections(box, others)
    smaller = np.minimum(_areas(box[np.newaxis])[0], _areas(others))
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def merge(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    cut: np.ndarray | None = None,
    *,
    method: str = "nms",
    threshold: float = MERGE_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One detection per object from the detections of overlapping tiles (pixel boxes), class by class; returns
    (boxes, scores, classes), best score first. No cap on the count.

    Both methods group alike, greedily by score: a box joins the group of a better box when their IoU is at least
    `threshold` (non-maximum suppression), or, where either box was cut by a tile edge (`cut`), when their
    intersection over the smaller box is: the part of an object that one tile saw lies inside the whole object
    another tile saw, and the two parts of an object cut by an edge overlap mostly in the tiles' overlap.
    nms:  each group is its best box, or its best box that no tile edge cut where that one scores at least half
          as much (the whole object rather than a better-scoring part of it).
    fuse: each group is the box enclosing its best box and the members scoring at least half as much: the parts
          of an object that no tile saw whole join into one box, where nms keeps the best part.
    Each group scores its best box's score; of equal scores, an uncut box counts as the better."""
    if method not in MERGES:
        raise TileError(f"--tile-merge {method!r}: one of {', '.join(MERGES)}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    cut = np.zeros(len(boxes), bool) if cut is None else np.asarray(cut, bool).reshape(-1)
    kept_boxes, kept_scores, kept_classes = [], [], []
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        members = members[np.lexsort((cut[members], -scores[members]))]
        for group in _groups(boxes[members], cut[members], threshold):
            best, strong = members[group[0]], members[group]
            strong = strong[scores[strong] >= scores[best] / 2]
            if method == "fuse":
                box = np.concatenate([boxes[strong, :2].min(axis=0), boxes[strong, 2:].max(axis=0)])
            else:
                whole = strong[~cut[strong]]
                box = boxes[whole[0] if whole.size else best]
            kept_boxes.append(box)
            kept_scores.append(scores[best])
            kept_classes.append(label)
    if not kept_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(kept_scores), kind="stable")
    return np.asarray(kept_boxes)[order], np.asarray(kept_scores)[order], np.asarray(kept_classes, np.int64)[order]


def _groups(boxes: np.ndarray, cut: np.ndarray, threshold: float) -> list[list[int]]:
    """Indices of each group, its best box first; `boxes` come best score first. Each box, from the best, takes the
    boxes after it that are still free and match it. Only boxes that overlap can match: the pairs are found with
    one sort by xmin (a box's partners start inside its x range), so thousands of boxes from many tiles merge in
    milliseconds instead of comparing every box with every other."""
    first, second = _overlapping_pairs(boxes)
    a, b = boxes[first], boxes[second]
    inter = _pair_intersections(a, b)
    area_a, area_b = _areas(a), _areas(b)
    union = area_a + area_b - inter
    smaller = np.minimum(area_a, area_b)
    overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    inside = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    matched = (overlap >= threshold) | ((cut[first] | cut[second]) & (inside >= threshold))
    partners: dict[int, list[int]] = {}
    for one, other in zip(first[matched].tolist(), second[matched].tolist()):
        low, high = min(one, other), max(one, other)  # the better box (lower index) takes the other
        partners.setdefault(low, []).append(high)
    alive = np.ones(len(boxes), bool)
    groups = []
    for index in range(len(boxes)):
        if not alive[index]:
            continue
        taken = sorted(other for other in partners.get(index, ()) if alive[other])
        alive[taken] = False
        groups.append([index, *taken])
    return groups


def _overlapping_pairs(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs of the boxes whose x ranges overlap, each pair once."""
    order = np.argsort(boxes[:, 0], kind="stable")
    starts = boxes[order, 0]
    ends = np.searchsorted(starts, boxes[order, 2], side="left")  # partners: the boxes starting before its xmax
    counts = np.maximum(ends - np.arange(len(order)) - 1, 0)
    left = np.repeat(np.arange(len(order)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[left], order[left + 1 + offsets]


def _pair_intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    width = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)
