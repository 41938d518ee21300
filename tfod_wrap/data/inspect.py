"""`tfod-wrap inspect`: what is in TFRecords, and a picture of what training will see.

Statistics come from the raw tf.train.Example features; the preview decodes records with the TFOD
API's own `TfExampleDecoder`, the decoder `object_detection.inputs` uses for training, so the drawn
pixels and boxes are exactly those the model gets before augmentation.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tfod_wrap.core.files import atomic_write_bytes
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.records import expand_record_paths, read_examples
from tfod_wrap.data.annotations import DataError

CELL = 320  # preview thumbnail size in pixels
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    percentiles = np.percentile(array, [0, 5, 50, 95, 100])
    return {key: round(float(value), 4) for key, value in zip(("min", "p5", "median", "p95", "max"), percentiles)}


def record_stats(paths: list[str]) -> dict:
    """Counts per class, image sizes, and box size and aspect statistics (in pixels)."""
    files = expand_record_paths(paths)
    images = negatives = 0
    per_class: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    widths, heights, aspects = [], [], []
    coco_sizes: Counter[str] = Counter()
    for _, example in read_examples(files):
        feature = example.features.feature
        width = feature["image/width"].int64_list.value[0]
        height = feature["image/height"].int64_list.value[0]
        images += 1
        sizes[f"{width}x{height}"] += 1
        names = [name.decode() for name in feature["image/object/class/text"].bytes_list.value]
        labels = feature["image/object/class/label"].int64_list.value
        names = names or [f"id {label}" for label in labels]
        negatives += not names
        per_class.update(names)
        boxes = zip(*(feature[f"image/object/bbox/{key}"].float_list.value for key in ("xmin", "ymin", "xmax", "ymax")))
        for xmin, ymin, xmax, ymax in boxes:
            box_width, box_height = (xmax - xmin) * width, (ymax - ymin) * height
            widths.append(box_width)
            heights.append(box_height)
            aspects.append(box_width / box_height if box_height > 0 else math.inf)
            area = box_width * box_height
            coco_sizes["small" if area < 32**2 else "medium" if area < 96**2 else "large"] += 1
    if not images:  # statistics of nothing: an empty file is a failed or misdirected write, not a data set
        raise DataError(f"{', '.join(files)}: no records in {'it' if len(files) == 1 else 'them'}")
    return {
        "files": files,
        "images": images,
        "negatives": negatives,
        "boxes": sum(per_class.values()),
        "boxes_per_class": dict(sorted(per_class.items())),
        "image_sizes": dict(sizes.most_common()),
        "box_width_px": _summary(widths),
        "box_height_px": _summary(heights),
        "box_aspect_w_over_h": _summary([a for a in aspects if math.isfinite(a)]),
        "box_sizes_coco": {key: coco_sizes[key] for key in ("small", "medium", "large")},
    }


def _find_label_map(files: list[str]) -> Path | None:
    beside = Path(files[0]).parent / "label_map.pbtxt"
    return beside if beside.is_file() else None


def preview_grid(
    paths: list[str], output: Path, *, count: int = 16, columns: int = 4, label_map: Path | None = None
) -> Path:
    """Draw the first `count` records, decoded by TFOD's TfExampleDecoder, with boxes and labels."""
    import tensorflow as tf
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders import tf_example_decoder

    files = expand_record_paths(paths)
    label_map = label_map or _find_label_map(files)
    names = {class_id: name for name, class_id in read_label_map(label_map).items()} if label_map else {}
    decoder = tf_example_decoder.TfExampleDecoder()
    cells = []
    for record in tf.data.TFRecordDataset(files).take(count):
        decoded = decoder.decode(record)
        image = Image.fromarray(decoded[fields.InputDataFields.image].numpy())
        boxes = decoded[fields.InputDataFields.groundtruth_boxes].numpy()
        classes = decoded[fields.InputDataFields.groundtruth_classes].numpy()
        filename = decoded[fields.InputDataFields.filename].numpy().decode()
        cells.append(_draw(image, boxes, classes, names, filename))
    if not cells:
        raise DataError(f"{paths[0]}: the records hold no examples")
    rows = math.ceil(len(cells) / columns)
    grid = Image.new("RGB", (CELL * min(columns, len(cells)), CELL * rows), "white")
    for index, cell in enumerate(cells):
        grid.paste(cell, ((index % columns) * CELL, (index // columns) * CELL))
    buffer = io.BytesIO()
    grid.save(buffer, "PNG")
    atomic_write_bytes(Path(output), buffer.getvalue())
    return Path(output)


def _draw(image: Image.Image, boxes: np.ndarray, classes: np.ndarray, names: dict[int, str], caption: str):
    """One thumbnail: boxes are normalised [ymin, xmin, ymax, xmax], as the decoder returns them."""
    scale = min(CELL / image.width, (CELL - 14) / image.height)
    thumbnail = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    cell = Image.new("RGB", (CELL, CELL), "white")
    cell.paste(thumbnail, (0, 14))
    draw = ImageDraw.Draw(cell)
    font = ImageFont.load_default()
    draw.text((2, 1), caption[:48], fill="black", font=font)
    for (ymin, xmin, ymax, xmax), class_id in zip(boxes, classes):
        colour = COLOURS[(int(class_id) - 1) % len(COLOURS)]
        left, top = xmin * thumbnail.width, 14 + ymin * thumbnail.height
        right, bottom = xmax * thumbnail.width, 14 + ymax * thumbnail.height
        draw.rectangle((left, top, right, bottom), outline=colour, width=2)
        label = names.get(int(class_id), str(int(class_id)))
        text_box = draw.textbbox((left, top), label, font=font)
        draw.rectangle(text_box, fill=colour)
        draw.text((left, top), label, fill="white", font=font)
    return cell
