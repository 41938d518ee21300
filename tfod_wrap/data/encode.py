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
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError

from tfod_wrap.data.annotations import Box, ImageAnnotation, Problem
from tfod_wrap.data.example import build_example, frame_record

PASS_THROUGH_MODES = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "L")}
EXIF_ORIENTATION = 0x0112
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
JPEG_QUALITY = 95


class ImageProblem(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Encoded:
    """What a worker sends back: the framed record (None if the image was skipped) and its story."""

    record: bytes | None
    split: str
    width: int = 0
    height: int = 0
    action: str = ""
    classes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class _Image:
    encoded: bytes
    format: str
    width: int
    height: int
    action: str


def encode(annotation: ImageAnnotation, split: str, class_ids: dict[str, int], check_labels: bool) -> Encoded:
    """Read, fix and check one image and its boxes. Never raises for bad input: problems are returned."""
    where = str(annotation.image_path)
    try:
        image = prepare_image(annotation)
    except ImageProblem as problem:
        return Encoded(None, split, problems=[Problem(where, problem.kind, problem.reason)])
    boxes, problems = check_boxes(annotation.boxes, image.width, image.height, class_ids, check_labels)
    problems = [Problem(where, kind, reason) for kind, reason in problems]
    record = frame_record(_example(annotation, image, boxes, class_ids))
    classes = [box.name for box in boxes]
    return Encoded(record, split, image.width, image.height, image.action, classes, problems)


def prepare_image(annotation: ImageAnnotation) -> _Image:
    try:
        data = annotation.image_path.read_bytes()
    except FileNotFoundError:
        raise ImageProblem("missing image", f"image not found (annotated in {annotation.annotation_file})") from None
    except OSError as error:
        raise ImageProblem("missing image", f"cannot read image: {error.strerror}") from None
    try:
        image = Image.open(io.BytesIO(data))
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        _check_complete(data, image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageProblem("corrupt image", f"corrupt or unsupported image: {error}") from None

    raw_size = image.size
    displayed = raw_size[::-1] if orientation in SWAPS_AXES else raw_size
    annotated = (annotation.width, annotation.height)
    if annotation.width is None or annotation.height is None or annotated == displayed:
        rotate = orientation != 1
    elif annotated == raw_size:
        rotate = False  # annotated on the raw pixels (a tool that ignored EXIF): keep them
    else:
        detail = f" ({displayed[0]}x{displayed[1]} after EXIF rotation)" if displayed != raw_size else ""
        raise ImageProblem(
            "size mismatch",
            f"annotation says {annotation.width}x{annotation.height} but the image is "
            f"{raw_size[0]}x{raw_size[1]}{detail}",
        )

    # An RGB/L PNG with a transparent colour key still needs flattening.
    transparent = image.info.get("transparency") is not None
    if not rotate and not transparent and image.mode in PASS_THROUGH_MODES.get(image.format, ()):
        return _Image(data, image.format.lower(), raw_size[0], raw_size[1], "passed through")
    return _convert(image, rotate)


def _check_complete(data: bytes, image: Image.Image) -> None:
    """Catch truncated and corrupt files without decoding pixels, which would cost more than all the
    rest of the conversion. JPEG: walk the header segments to the start of scan, then require the
    end-of-image marker after it (entropy-coded data never contains FF D9, and walking the segments
    skips the complete JPEG thumbnail that EXIF often embeds). PNG: PIL checks every chunk's CRC up to
    IEND. Other formats are decoded in full, since they are converted anyway."""
    if image.format == "JPEG":
        position = 2
        while True:
            if position + 4 > len(data) or data[position] != 0xFF:
                raise ValueError("broken JPEG header segments")
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte before a marker
                position += 1
                continue
            if marker == 0xDA:
                break
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if data.find(b"\xff\xd9", position) < 0:
            raise ValueError("truncated JPEG: no end-of-image marker after the image data")
    elif image.format == "PNG":
        Image.open(io.BytesIO(data)).verify()
    else:
        image.load()


def _convert(image: Image.Image, rotate: bool) -> _Image:
    source_format = image.format
    if rotate:
        image = ImageOps.exif_transpose(image)
    actions = ["EXIF orientation applied"] if rotate else []
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
