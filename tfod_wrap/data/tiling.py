"""`tfrecords --tile`: one record per tile of each image (runs in the worker processes, as encode.py does).

Each image is read and checked as `encode.prepare_image` does for whole images, decoded once, and cut into the
tiles of `core.tiles.tile_grid`; each tile is cropped, encoded (JPEG stays JPEG at quality 95, anything else PNG)
and written before the next is cut, so only the decoded image and one tile are in memory at a time. An image no
larger than a tile is one record of its own bytes.

Boxes are clipped to each tile. A box shown less than `min_visible` (of what a tile can show of it, see
`core.tiles.visible_part`) is left out of that tile's record: a sliver of an object would teach the model to fire
on fragments, and with overlapping tiles such an object is whole, or mostly, in a neighbouring tile. A clipped box
that is kept is marked truncated. Tiles without boxes are kept with probability `negative_ratio`, drawn per tile
from the seed, the image and the tile (the same tiles whatever the workers).

Every tile records where it came from in keys the TFOD decoder does not read: image/tile/source_filename,
image/tile/source_id, image/tile/x, image/tile/y (the offset in the source, pixels), image/tile/source_width and
image/tile/source_height.
"""

from __future__ import annotations

import hashlib
import io
import random
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import simplejpeg
from PIL import Image

from tfod_wrap.core.records import build_example, frame_record
from tfod_wrap.core.tiles import DEFAULT_OVERLAP, Tile, check_tiling, tile_grid, visible_part
from tfod_wrap.data.annotations import Box, DataError, ImageAnnotation

COUNTS = (
    "source_images",
    "tiles",
    "negative_tiles",
    "negative_tiles_left_out",
    "boxes_whole",
    "boxes_clipped",
    "boxes_dropped",
    "objects_in_no_tile",
)


@dataclass(frozen=True)
class RecordTiling:
    """The options of `tfrecords --tile`."""

    size: int
    overlap: float = DEFAULT_OVERLAP
    min_visible: float = 0.5
    negative_ratio: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            check_tiling(self.size, self.overlap)
        except Exception as error:
            raise DataError(str(error)) from None
        if not 0 < self.min_visible <= 1:
            raise DataError(f"--min-visible {self.min_visible}: a fraction above 0 and at most 1")
        if not 0 <= self.negative_ratio <= 1:
            raise DataError(f"--negative-ratio {self.negative_ratio}: the fraction of empty tiles kept, 0 to 1")


def tile_records(
    annotation: ImageAnnotation,
    image,  # encode._Image: the checked, oriented image and its bytes
    boxes: list[Box],
    class_ids: dict[str, int],
    tiling: RecordTiling,
    counts: Counter,
    jpeg_quality: int,
) -> Iterator[tuple[bytes, list[str]]]:
    """(framed record, class names of its boxes) of each kept tile; `counts` gathers the COUNTS."""
    tiles = tile_grid(image.width, image.height, tiling.size, tiling.overlap)
    counts["source_images"] += 1
    seen = [False] * len(boxes)
    decoded = None
    for tile in tiles:
        local = _tile_boxes(boxes, tile, tiling.min_visible, counts, seen)
        if not local and not _keep_empty(tiling, annotation.source_id, tile):
            counts["negative_tiles_left_out"] += 1
            continue
        if len(tiles) == 1:
            encoded = image.encoded  # the whole image is the tile: its bytes as they are
        else:
            if decoded is None:
                decoded = _decode(image.encoded, image.format)
            encoded = _encode(_crop(decoded, tile), image.format, jpeg_quality)
        counts["tiles"] += 1
        counts["negative_tiles"] += not local
        example = _example(annotation, image, tile, encoded, local, class_ids)
        yield frame_record(example), [box.name for box in local]
    counts["objects_in_no_tile"] += seen.count(False)


def _tile_boxes(boxes: list[Box], tile: Tile, min_visible: float, counts: Counter, seen: list[bool]) -> list[Box]:
    local = []
    for index, box in enumerate(boxes):
        part, visible = visible_part((box.xmin, box.ymin, box.xmax, box.ymax), tile)
        if part is None:
            continue
        if visible < min_visible:
            counts["boxes_dropped"] += 1
            continue
        whole = part == (box.xmin - tile.x, box.ymin - tile.y, box.xmax - tile.x, box.ymax - tile.y)
        counts["boxes_whole" if whole else "boxes_clipped"] += 1
        seen[index] = True
        local.append(
            box._replace(
                xmin=part[0], ymin=part[1], xmax=part[2], ymax=part[3], truncated=box.truncated or int(not whole)
            )
        )
    return local


def _keep_empty(tiling: RecordTiling, source_id: str, tile: Tile) -> bool:
    if tiling.negative_ratio >= 1:
        return True
    return random.Random(f"{tiling.seed}:{source_id}:{tile.x}:{tile.y}").random() < tiling.negative_ratio


def _decode(encoded: bytes, fmt: str) -> np.ndarray | Image.Image:
    """The image's pixels, decoded once; each crop is then a copy of one tile's pixels. JPEGs decode to a NumPy
    array of 3 bytes a pixel (Pillow keeps RGB in 4: a third more memory on a 10,000 x 10,000 image). The size
    was checked against twice Pillow's bomb limit (encode._check_pixels): Pillow's warning beyond its own limit
    is not news."""
    if fmt == "jpeg":
        colorspace = "GRAY" if simplejpeg.decode_jpeg_header(encoded)[2] == "Gray" else "RGB"
        pixels = simplejpeg.decode_jpeg(encoded, colorspace=colorspace)
        return pixels[..., 0] if colorspace == "GRAY" else pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        decoded = Image.open(io.BytesIO(encoded))
        decoded.load()
    return decoded


def _crop(decoded: np.ndarray | Image.Image, tile: Tile) -> Image.Image:
    if isinstance(decoded, Image.Image):
        return decoded.crop(tile.box)
    return Image.fromarray(np.ascontiguousarray(decoded[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]))


def _encode(crop: Image.Image, fmt: str, jpeg_quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        crop.save(buffer, "JPEG", quality=jpeg_quality)
    else:
        crop.save(buffer, "PNG")
    return buffer.getvalue()


def tile_name(filename: str, tile: Tile) -> str:
    """photo.jpg -> photo.tile-x512-y0.jpg: unique per tile, still naming the source."""
    path = PurePath(filename)
    return str(path.with_name(f"{path.stem}.tile-x{tile.x}-y{tile.y}{path.suffix}"))


def _example(
    annotation: ImageAnnotation, image, tile: Tile, encoded: bytes, boxes: list[Box], class_ids: dict[str, int]
) -> bytes:
    width, height = tile.width, tile.height
    return build_example(
        bytes_features={
            "image/encoded": [encoded],
            "image/format": [image.format.encode()],
            "image/filename": [tile_name(annotation.filename, tile).encode()],
            "image/source_id": [f"{annotation.source_id}#x{tile.x}y{tile.y}".encode()],
            "image/key/sha256": [hashlib.sha256(encoded).hexdigest().encode()],
            "image/object/class/text": [box.name.encode() for box in boxes],
            "image/object/view": [box.pose.encode() for box in boxes],
            "image/tile/source_filename": [annotation.filename.encode()],
            "image/tile/source_id": [annotation.source_id.encode()],
        },
        int64_features={
            "image/height": [height],
            "image/width": [width],
            "image/object/class/label": [class_ids[box.name] for box in boxes],
            "image/object/difficult": [box.difficult for box in boxes],
            "image/object/truncated": [box.truncated for box in boxes],
            "image/object/is_crowd": [box.is_crowd for box in boxes],
            "image/tile/x": [tile.x],
            "image/tile/y": [tile.y],
            "image/tile/source_width": [image.width],
            "image/tile/source_height": [image.height],
        },
        float_features={
            "image/object/bbox/xmin": [box.xmin / width for box in boxes],
            "image/object/bbox/xmax": [box.xmax / width for box in boxes],
            "image/object/bbox/ymin": [box.ymin / height for box in boxes],
            "image/object/bbox/ymax": [box.ymax / height for box in boxes],
        },
    )
