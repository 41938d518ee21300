"""Sliced inference: any `Detector` run on overlapping tiles of a large image (and, optionally, on the whole image
resized), its boxes mapped back to the image and merged (`tiles.merge`). What `detect --tile` and `eval --tile`
run; the webcam page and TF.js stay full-frame.

Small objects on a large image shrink to a few pixels when the whole image is resized to the model's input; a tile
keeps them at the size the model was trained on. TFOD returns at most max_total_detections (100) boxes per call;
each tile is a call of its own, so an image gets up to that many per tile, and the merge caps nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tfod_wrap.core.detections import Detections
from tfod_wrap.core.detector import Detector
from tfod_wrap.core.tiles import (
    DEFAULT_OVERLAP,
    MERGE_THRESHOLD,
    MERGES,
    Tile,
    TileError,
    check_tiling,
    cut_by_tile,
    merge,
    tile_grid,
    to_image,
)

# Tiles per model call: same-sized crops batch where the model takes a batch; a bound keeps memory flat
TILES_PER_CALL = 8


@dataclass(frozen=True)
class Tiling:
    """How to slice: square tiles of `size` pixels overlapping by `overlap` of a tile, plus the whole image resized
    with `full_image`, merged with `merge` (nms or fuse) at `threshold`."""

    size: int
    overlap: float = DEFAULT_OVERLAP
    merge: str = "nms"
    full_image: bool = False
    threshold: float = MERGE_THRESHOLD

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap)
        if self.merge not in MERGES:
            raise TileError(f"--tile-merge {self.merge!r}: one of {', '.join(MERGES)}")
        if not 0 < self.threshold <= 1:
            raise TileError(f"tile merge threshold {self.threshold}: above 0 and at most 1")

    def to_json(self) -> dict:
        return asdict(self)


def describe_tiling(tiling: dict) -> str:
    """A tiling as reports print it, from its JSON (summary.json's or metrics.json's `tiling`)."""
    whole = " plus the whole image" if tiling["full_image"] else ""
    return f"tiles of {tiling['size']} px{whole}, overlap {tiling['overlap']:g}, merged by {tiling['merge']}"


class SlicedDetector(Detector):
    """`detector` on the tiles of each image; the same Detections out, boxes normalised to the whole image."""

    def __init__(self, detector: Detector, tiling: Tiling):
        self.detector, self.tiling = detector, tiling
        self.tiles_run = 0  # model calls on tiles so far (plus whole-image passes), for reports

    def __call__(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        tiles = tile_grid(width, height, self.tiling.size, self.tiling.overlap)
        boxes, scores, classes, cut = [], [], [], []
        for start in range(0, len(tiles), TILES_PER_CALL):
            chunk = tiles[start : start + TILES_PER_CALL]
            # crops are views until the backend copies them into its batch
            found = self.detector.batch([image[t.y : t.y + t.height, t.x : t.x + t.width] for t in chunk])
            for tile, detections in zip(chunk, found):
                pixels = to_image(detections.boxes, tile)
                boxes.append(pixels)
                scores.append(detections.scores)
                classes.append(detections.classes)
                cut.append(cut_by_tile(pixels, tile, width, height))
        self.tiles_run += len(tiles)
        if self.tiling.full_image and len(tiles) > 1:
            whole = self.detector(image)
            boxes.append(to_image(whole.boxes, Tile(0, 0, width, height)))
            scores.append(whole.scores)
            classes.append(whole.classes)
            cut.append(np.zeros(len(whole), bool))
            self.tiles_run += 1
        merged, merged_scores, merged_classes = merge(
            np.concatenate(boxes),
            np.concatenate(scores),
            np.concatenate(classes),
            np.concatenate(cut),
            method=self.tiling.merge,
            threshold=self.tiling.threshold,
        )
        normalised = merged[:, [1, 0, 3, 2]] / np.array([height, width, height, width], dtype=np.float64)
        return Detections(np.clip(normalised, 0.0, 1.0), merged_classes, merged_scores)

    def batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self(image) for image in images]
