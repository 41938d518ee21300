"""Turn one annotated image into one framed TFRecord entry (runs in the worker processes).

Images end up as what TensorFlow decodes with the right size and three channels:
- an RGB or grayscale JPEG / 8-bit PNG whose pixels already match the annotation is passed through
  byte for byte (no quality loss, no encode time);
- EXIF orientation is applied when the annotation's size matches the displayed (rotated) image, since
  TensorFlow's decoders ignore EXIF and would otherwise hand the model pixels the boxes do not fit;
- CMYK, RGBA/LA/P (flattened onto white), 16-bit and other formats are converted: JPEG stays JPEG
  (quality 95), everything else becomes PNG (lossless).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from tfod_wrap.core.records import build_example, frame_record
from tfod_wrap.data.annotations import Box, ImageAnnotation, Problem, describe
from tfod_wrap.data.tiling import RecordTiling, tile_records

PASS_THROUGH_MODES = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "L")}
EXIF_ORIENTATION = 0x0112
JPEG_START = b"\xff\xd8"
START_OF_FRAME = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
JPEG_QUALITY = 95
MAX_IMAGE_BYTES = 1 << 30  # a regular file larger than this is no training image; never read it into memory


class ImageProblem(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Encoded:
    """What a worker reports about one image; the record itself goes straight to a part file."""

    split: str
    written: bool
    action: str = ""
    classes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tiles: Counter | None = None  # with --tile: tiling.COUNTS of this image (its records are its tiles)


@dataclass
class _Image:
    encoded: bytes
    format: str
    width: int
    height: int
    action: str


@dataclass
class Chunk:
    """A run of images of one split and shard, encoded by one worker into one part file."""

    images: list[ImageAnnotation]
    split: str
    shard_file: str
    part: Path
    tiling: RecordTiling | None = None


def encode_chunk(chunk: Chunk, class_ids: dict[str, int], check_labels: bool) -> list[Encoded]:
    """Encode a chunk into its part file. Records never travel back through the pool's pipes, which
    would copy every image once more; only the small summaries do."""
    results = []
    with open(chunk.part, "wb") as part:
        for annotation in chunk.images:
            if chunk.tiling is None:
                record, result = encode(annotation, chunk.split, class_ids, check_labels)
                if record is not None:
                    part.write(record)
            else:
                result = encode_tiles(annotation, chunk.split, class_ids, check_labels, chunk.tiling, part)
            results.append(result)
    return results


def encode_tiles(
    annotation: ImageAnnotation, split: str, class_ids: dict[str, int], check_labels: bool, tiling: RecordTiling, part
) -> Encoded:
    """Write the records of one image's tiles to `part` (see tiling.py); skipped as `encode` skips, with nothing
    written: a failure part way through an image drops the records of its tiles written so far."""
    where = str(annotation.image_path)
    start, counts, classes = part.tell(), Counter(), []
    try:
        image = prepare_image(annotation)
        boxes, problems = check_boxes(annotation.boxes, image.width, image.height, class_ids, check_labels)
        for record, names in tile_records(annotation, image, boxes, class_ids, tiling, counts, JPEG_QUALITY):
            part.write(record)
            classes += names
    except Exception as error:  # any type, as in `encode`
        part.seek(start)
        part.truncate()
        kind, reason = image_problem(error)
        return Encoded(split, False, problems=[Problem(where, kind, reason)])
    problems = [Problem(where, kind, reason) for kind, reason in problems]
    return Encoded(split, True, image.action, classes, problems, counts)


def encode(
    annotation: ImageAnnotation, split: str, class_ids: dict[str, int], check_labels: bool
) -> tuple[bytes | None, Encoded]:
    """Read, fix and check one image and its boxes: (framed record or None if skipped, summary).
    Never raises for bad input: this is the one place where an exception of any type, from reading,
    decoding, converting or encoding one image, becomes a skip with a reason."""
    where = str(annotation.image_path)
    try:
        image = prepare_image(annotation)
        boxes, problems = check_boxes(annotation.boxes, image.width, image.height, class_ids, check_labels)
        record = frame_record(_example(annotation, image, boxes, class_ids))
    except Exception as error:  # any type: one bad image must not end a lenient run
        kind, reason = image_problem(error)
        return None, Encoded(split, False, problems=[Problem(where, kind, reason)])
    problems = [Problem(where, kind, reason) for kind, reason in problems]
    return record, Encoded(split, True, image.action, [box.name for box in boxes], problems)


def image_problem(error: Exception) -> tuple[str, str]:
    """(kind, reason) for whatever stopped one image."""
    if isinstance(error, ImageProblem):
        return error.kind, error.reason
    if isinstance(error, Image.DecompressionBombError):
        return "image too large", str(error)
    if isinstance(error, (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)):
        return "corrupt image", f"corrupt or unsupported image: {describe(error)}"
    return "corrupt image", f"cannot read or convert the image: {describe(error)}"


def read_image_file(path: Path, annotation_file: str) -> bytes:
    """The bytes of a regular file. Opened without blocking (a FIFO would wait for a writer forever)
    and checked with fstat after opening, so a device (/dev/zero never ends) is never read."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageProblem("missing image", f"image not found (annotated in {annotation_file})") from None
    except OSError as error:
        raise ImageProblem("missing image", f"cannot read image: {error.strerror}") from None
    with os.fdopen(handle, "rb") as stream:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise ImageProblem("not a regular file", f"{path}: not a regular file (a device, FIFO or folder)")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ImageProblem("image too large", f"{info.st_size:,} bytes, more than {MAX_IMAGE_BYTES:,}")
        return stream.read(info.st_size + 1)  # (+1 notices a file that grows while read)


def prepare_image(annotation: ImageAnnotation) -> _Image:
    data = read_image_file(annotation.image_path, annotation.annotation_file)
    if data[:2] == JPEG_START:
        # Most datasets are JPEGs that pass through: read what we need from the header segments
        # (a tenth of the cost of PIL's parser) and open PIL only to convert.
        image, fmt, transparent = None, "JPEG", False
        (width, height), mode, orientation = jpeg_header(data)
        _check_pixels(width, height)
        check_jpeg_decodes(data, mode)
    else:
        image = Image.open(io.BytesIO(data))
        fmt, (width, height), mode = image.format, image.size, image.mode
        _check_pixels(width, height)
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        transparent = image.info.get("transparency") is not None  # a colour key needs flattening
        if fmt == "PNG":
            Image.open(io.BytesIO(data)).verify()  # every chunk's CRC, which libpng checks and Pillow's load does not
        image.load()  # every pixel, so a short or corrupt stream is found here, not in training
        if fmt == "PNG" and data[24] != 8:
            mode = f"{data[24]}-bit {mode}"  # 16 bits a channel (48-bit RGB): TF would not read it as 8-bit
    rotate = _needs_rotation(annotation, (width, height), orientation)
    if not rotate and not transparent and mode in PASS_THROUGH_MODES.get(fmt, ()):
        return _Image(data, fmt.lower(), width, height, "passed through")
    return _convert(image or Image.open(io.BytesIO(data)), rotate, mode)


def _check_pixels(width: int, height: int) -> None:
    """Pillow's decompression-bomb limit, for the JPEGs we read without Pillow too."""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if limit and width * height > limit:
        raise ImageProblem(
            "image too large", f"{width}x{height} is {width * height:,} pixels, more than the limit of {limit:,}"
        )


def check_jpeg_decodes(data: bytes, mode: str) -> None:
    """Entropy-decode every block, treating libjpeg's warnings as errors. The end-of-image marker
    check in `jpeg_header` cannot see a truncated file with FF D9 appended: TensorFlow decodes that
    without an error, the missing part grey. DCT scaling to 1/8 and one grey channel skip most of
    the work after the entropy decoding, which is what finds such damage."""
    colorspace = "CMYK" if mode == "CMYK" else "GRAY"
    try:
        simplejpeg.decode_jpeg(data, colorspace=colorspace, min_factor=8, min_width=1, min_height=1, strict=True)
    except ValueError as error:
        raise ImageProblem("corrupt image", f"corrupt JPEG data: {describe(error)}") from None


def _needs_rotation(annotation: ImageAnnotation, raw_size: tuple[int, int], orientation: int) -> bool:
    """Apply EXIF orientation when the annotation fits the displayed image; keep the raw pixels when
    it fits those (a tool that ignored EXIF); anything else is a size mismatch."""
    displayed = raw_size[::-1] if orientation in SWAPS_AXES else raw_size
    annotated = (annotation.width, annotation.height)
    if annotation.width is None or annotation.height is None or annotated == displayed:
        return orientation != 1
    if annotated == raw_size:
        return False
    detail = f" ({displayed[0]}x{displayed[1]} after EXIF rotation)" if displayed != raw_size else ""
    raise ImageProblem(
        "size mismatch",
        f"annotation says {annotation.width}x{annotation.height} but the image is {raw_size[0]}x{raw_size[1]}{detail}",
    )


def jpeg_header(data: bytes) -> tuple[tuple[int, int], str, int]:
    """((width, height), mode, EXIF orientation) of a JPEG, checking that it is complete.

    Walks the header segments to the start of scan, then requires the end-of-image marker after it:
    entropy-coded data never contains FF D9, and walking the segments skips the complete JPEG
    thumbnail that EXIF often embeds, so a truncated file cannot hide behind the thumbnail's marker.
    Decoding pixels to find truncation would cost more than all the rest of the conversion.
    """
    position, size, mode, orientation = 2, None, None, 1
    while True:
        if position + 4 > len(data) or data[position] != 0xFF:
            raise ValueError("broken JPEG header segments")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xDA:
            break
        if marker in START_OF_FRAME and len(segment) >= 6:
            size = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"))
            mode = JPEG_MODES.get(segment[5], "unknown")
        elif marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(segment[6:])
        position += 2 + length
    if size is None or 0 in size:
        raise ValueError("JPEG without a frame header")
    if data.rfind(b"\xff\xd9", position) < 0:
        raise ValueError("truncated JPEG: no end-of-image marker after the image data")
    return size, mode, orientation


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in an EXIF TIFF block; 1 when absent or unreadable."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        if int.from_bytes(tiff[entry : entry + 2], order) == EXIF_ORIENTATION:
            value = int.from_bytes(tiff[entry + 8 : entry + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _convert(image: Image.Image, rotate: bool, mode: str) -> _Image:
    source_format = image.format
    if rotate:
        image = ImageOps.exif_transpose(image)
    actions = ["EXIF orientation applied"] if rotate else []
    if mode.startswith("16-bit") and image.mode in ("RGB", "L"):
        actions.append(f"{mode} PNG converted to 8 bits")  # Pillow reads 16-bit RGB as RGB, high bytes
    if image.mode not in ("RGB", "L") or "transparency" in image.info:
        actions.append(f"{image.mode} converted to RGB")
        image = _to_rgb(image)
    elif source_format not in PASS_THROUGH_MODES:
        actions.append(f"{source_format} converted")
    target = "JPEG" if source_format == "JPEG" else "PNG"
    buffer = io.BytesIO()
    if target == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, "PNG")
    return _Image(buffer.getvalue(), target.lower(), image.width, image.height, "; ".join(actions) or "re-encoded")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits rather than clip.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def check_boxes(
    boxes: list[Box], width: int, height: int, class_ids: dict[str, int], check_labels: bool
) -> tuple[list[Box], list[tuple[str, str]]]:
    """Clip boxes that stick out, drop boxes with no area and (with a label map) unknown classes."""
    kept: list[Box] = []
    problems: list[tuple[str, str]] = []
    for box in boxes:
        label = f"{box.name} [{box.xmin:g}, {box.ymin:g}, {box.xmax:g}, {box.ymax:g}]"
        if box.name not in class_ids:
            if check_labels:
                problems.append(("unknown class", f"box {label}: class {box.name!r} is not in the label map"))
            continue
        if box.xmax <= box.xmin or box.ymax <= box.ymin:
            problems.append(("dropped box", f"box {label} has no area"))
            continue
        clipped = Box(
            box.name,
            min(max(box.xmin, 0.0), width),
            min(max(box.ymin, 0.0), height),
            min(max(box.xmax, 0.0), width),
            min(max(box.ymax, 0.0), height),
            box.difficult,
            box.truncated,
            box.is_crowd,
            box.pose,
        )
        if clipped.xmax <= clipped.xmin or clipped.ymax <= clipped.ymin:
            problems.append(("dropped box", f"box {label} lies outside the {width}x{height} image"))
            continue
        if clipped != box:
            problems.append(("clipped box", f"box {label} sticks out of the {width}x{height} image; clipped"))
        kept.append(clipped)
    return kept, problems


def _example(annotation: ImageAnnotation, image: _Image, boxes: list[Box], class_ids: dict[str, int]) -> bytes:
    return build_example(
        bytes_features={
            "image/encoded": [image.encoded],
            "image/format": [image.format.encode()],
            "image/filename": [annotation.filename.encode()],
            "image/source_id": [annotation.source_id.encode()],
            "image/key/sha256": [hashlib.sha256(image.encoded).hexdigest().encode()],
            "image/object/class/text": [box.name.encode() for box in boxes],
            "image/object/view": [box.pose.encode() for box in boxes],
        },
        int64_features={
            "image/height": [image.height],
            "image/width": [image.width],
            "image/object/class/label": [class_ids[box.name] for box in boxes],
            "image/object/difficult": [box.difficult for box in boxes],
            "image/object/truncated": [box.truncated for box in boxes],
            "image/object/is_crowd": [box.is_crowd for box in boxes],
        },
        float_features={
            "image/object/bbox/xmin": [box.xmin / image.width for box in boxes],
            "image/object/bbox/xmax": [box.xmax / image.width for box in boxes],
            "image/object/bbox/ymin": [box.ymin / image.height for box in boxes],
            "image/object/bbox/ymax": [box.ymax / image.height for box in boxes],
        },
    )
