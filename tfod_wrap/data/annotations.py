"""Read Pascal VOC XML, COCO JSON and TFOD-tutorial CSV into one in-memory form.

Everything is kept in the annotation's own pixel coordinates; checking boxes against the real image
happens later, when the image has been opened (see `encode.py`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lxml import etree

from tfod_wrap.errors import UserError

FORMATS = ("voc", "coco", "csv")
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


class DataError(UserError):
    """Input that cannot be converted; the message names the file and the problem."""


@dataclass(slots=True)
class Problem:
    """Something wrong with one input; `kind` groups problems for the report's counts."""

    file: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class Box(NamedTuple):
    """One object, in the annotation's pixel coordinates. (Named tuples, not dataclasses, for this
    and ImageAnnotation: they cross process boundaries by the thousand and pickle 5x faster.)"""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: int = 0
    truncated: int = 0
    is_crowd: int = 0
    pose: str = "Unspecified"


class ImageAnnotation(NamedTuple):
    """One image and its boxes. `width`/`height` are what the annotation says (None if it does not)."""

    image_path: Path
    filename: str
    source_id: str
    annotation_file: str
    width: int | None
    height: int | None
    boxes: list[Box]

    @property
    def classes(self) -> set[str]:
        return {box.name for box in self.boxes}


@dataclass
class Dataset:
    """What a reader found: the images, the problems, and the class names in label-map order."""

    images: list[ImageAnnotation]
    problems: list[Problem]
    class_names: list[str]


def detect_format(path: Path) -> str:
    """'voc', 'coco' or 'csv' from what the input path holds."""
    if path.is_dir():
        if next(path.rglob("*.xml"), None) is not None:
            return "voc"
        for suffix, fmt in ((".json", "coco"), (".csv", "csv")):
            found = sorted(path.glob(f"*{suffix}"))
            if len(found) == 1:
                return fmt
        raise DataError(f"{path}: cannot tell the format: no .xml files, and not exactly one .json or .csv")
    suffix = path.suffix.lower()
    formats = {".xml": "voc", ".json": "coco", ".csv": "csv"}
    if suffix not in formats:
        raise DataError(f"{path}: cannot tell the format from the suffix; pass --format voc|coco|csv")
    return formats[suffix]


def annotation_files(path: Path, fmt: str) -> list[Path]:
    """The files to read for `fmt`: every .xml under a VOC folder, else the one .json/.csv."""
    if not path.is_dir():
        return [path]
    if fmt == "voc":
        return sorted(path.rglob("*.xml"))
    found = sorted(path.glob("*.json" if fmt == "coco" else "*.csv"))
    if len(found) != 1:
        raise DataError(f"{path}: expected exactly one {fmt} file in this folder, found {len(found)}")
    return found


def _resolve_image(filename: str, candidates_dirs: list[Path]) -> Path:
    """The first existing candidate, else the first one (so the encoder reports it as missing)."""
    candidates = [directory / filename for directory in candidates_dirs]
    return next((path for path in candidates if path.is_file()), candidates[0])


def _positive_int(text: str | None) -> int | None:
    """A size field; LabelImg writes 0 when it did not know the size, which means 'unknown'."""
    if text is None or not text.strip():
        return None
    value = int(float(text))
    return value if value > 0 else None


def _finite(value: object, what: str) -> float:
    number = float(value)  # raises ValueError/TypeError for junk
    if not math.isfinite(number):
        raise ValueError(f"{what} is {value}")
    return number


def _flag(text: str | None) -> int:
    return 1 if text is not None and text.strip().lower() in ("1", "true", "yes") else 0


# --- Pascal VOC --------------------------------------------------------------------------------


def read_voc_file(xml_path: Path, images_dir: Path | None) -> ImageAnnotation | Problem:
    """One VOC XML file. Tags are looked up by name, so their order does not matter. (Plain string
    paths here: this runs once per image, and pathlib would cost more than the XML parse.)"""
    where = str(xml_path)
    try:
        root = etree.parse(where, etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except (etree.XMLSyntaxError, OSError) as error:
        return Problem(where, "malformed annotation", f"malformed XML: {error}")
    if root.tag != "annotation":
        return Problem(where, "malformed annotation", f"not a Pascal VOC file: root is <{root.tag}>")
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        filename = os.path.basename((root.findtext("path") or "").strip().replace("\\", "/"))
    if not filename:
        return Problem(where, "malformed annotation", "no <filename> (nor <path>)")
    try:
        width = _positive_int(root.findtext("size/width"))
        height = _positive_int(root.findtext("size/height"))
        boxes = [_voc_box(obj, index) for index, obj in enumerate(root.iterfind("object"), start=1)]
    except ValueError as error:
        return Problem(where, "malformed annotation", str(error))
    xml_dir = os.path.dirname(where)
    parent = os.path.dirname(xml_dir)
    search = [str(images_dir)] if images_dir else [xml_dir, f"{parent}/JPEGImages", f"{parent}/images"]
    candidates = [os.path.join(directory, filename) for directory in search]
    image_path = next((path for path in candidates if os.path.isfile(path)), candidates[0])
    # Named relative to where it was looked for first; found elsewhere (../JPEGImages), by its file name.
    relative = os.path.normpath(filename) if image_path == candidates[0] else os.path.basename(image_path)
    return ImageAnnotation(Path(image_path), relative, relative, where, width, height, boxes)


def _voc_box(obj: etree._Element, index: int) -> Box:
    tags = {child.tag: child for child in obj}
    name = (_text(tags, "name") or "").strip()
    if not name:
        raise ValueError(f"object {index} has no <name>")
    if "bndbox" not in tags:
        raise ValueError(f"object {index} ({name}) has no <bndbox>")
    corners = {child.tag: child.text for child in tags["bndbox"]}
    coordinates = {}
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = corners.get(tag)
        if text is None:
            raise ValueError(f"object {index} ({name}) has no <{tag}>")
        try:
            coordinates[tag] = _finite(text.strip(), tag)
        except ValueError:
            raise ValueError(f"object {index} ({name}): <{tag}> is not a number: {text!r}") from None
    return Box(
        name,
        **coordinates,
        difficult=_flag(_text(tags, "difficult")),
        truncated=_flag(_text(tags, "truncated")),
        pose=(_text(tags, "pose") or "").strip() or "Unspecified",
    )


def _text(tags: dict, tag: str) -> str | None:
    element = tags.get(tag)
    return None if element is None else element.text


# --- COCO --------------------------------------------------------------------------------------


def read_coco(json_path: Path, images_dir: Path | None) -> Dataset:
    """A COCO detection file. Category ids (any, often non-contiguous) map to 1..N in id order;
    images without annotations are kept as negatives."""
    try:
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"{json_path}: malformed JSON: {error}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DataError(f"{json_path}: not a COCO detection file: needs 'images', 'annotations', 'categories' lists")
    category_names = _coco_categories(json_path, data["categories"])
    search = [images_dir] if images_dir else [json_path.parent, json_path.parent / "images"]
    images: dict[object, ImageAnnotation] = {}
    problems: list[Problem] = []
    for entry in data["images"]:
        try:
            image_id, file_name = entry["id"], str(entry["file_name"])
            width, height = (
                _positive_int(str(entry.get("width", ""))),
                _positive_int(str(entry.get("height", ""))),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{json_path}: image entry {entry!r:.80} is malformed: {error}") from None
        if image_id in images:
            raise DataError(f"{json_path}: image id {image_id} appears twice")
        image_path = _resolve_image(file_name, search)
        images[image_id] = ImageAnnotation(image_path, file_name, str(image_id), str(json_path), width, height, [])
    broken: set[object] = set()
    for entry in data["annotations"]:
        problem = _add_coco_box(entry, images, category_names, str(json_path))
        if problem:
            problems.append(problem)
            if isinstance(entry, dict) and entry.get("image_id") in images:
                broken.add(entry["image_id"])  # skipped whole, as in read_csv
    kept = [image for image_id, image in images.items() if image_id not in broken]
    # Label-map order is category-id order, whatever the ids are.
    ordered = sorted(category_names.items())
    return Dataset(kept, problems, [name for _, name in ordered])


def _coco_categories(json_path: Path, categories: list) -> dict[int, str]:
    names: dict[int, str] = {}
    for category in categories:
        try:
            category_id, name = category["id"], str(category["name"]).strip()
        except (KeyError, TypeError):
            raise DataError(f"{json_path}: category {category!r:.80} needs 'id' and 'name'") from None
        if not isinstance(category_id, int) or isinstance(category_id, bool):
            raise DataError(f"{json_path}: category id {category_id!r} is not an integer")
        if category_id in names:
            raise DataError(f"{json_path}: category id {category_id} appears twice")
        if name in names.values():
            raise DataError(f"{json_path}: category name {name!r} appears twice (ids must map to unique names)")
        names[category_id] = name
    return names


def _add_coco_box(
    entry: dict, images: dict[object, ImageAnnotation], category_names: dict[object, str], source: str
) -> Problem | None:
    annotation_id = entry.get("id", "?") if isinstance(entry, dict) else "?"
    where = f"{source} (annotation {annotation_id})"
    try:
        image = images[entry["image_id"]]
    except (KeyError, TypeError):
        return Problem(where, "malformed annotation", "refers to an image id that is not in 'images'")
    if entry.get("category_id") not in category_names:
        return Problem(where, "malformed annotation", f"unknown category_id {entry.get('category_id')!r}")
    try:
        x, y, w, h = (_finite(value, "bbox value") for value in entry["bbox"])
    except (KeyError, TypeError, ValueError):
        return Problem(
            where,
            "malformed annotation",
            f"bbox must be 4 numbers [x, y, width, height], got {entry.get('bbox')!r}",
        )
    name = category_names[entry["category_id"]]
    image.boxes.append(Box(name, x, y, x + w, y + h, is_crowd=1 if entry.get("iscrowd") else 0))
    return None


# --- CSV ---------------------------------------------------------------------------------------


def read_csv(csv_path: Path, images_dir: Path | None) -> Dataset:
    """The TFOD tutorial CSV: filename,width,height,class,xmin,ymin,xmax,ymax, one row per box."""
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{csv_path}: malformed CSV: {error}") from None
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected header {','.join(CSV_COLUMNS)}")
    search = [images_dir] if images_dir else [csv_path.parent, csv_path.parent / "images"]
    images: dict[str, ImageAnnotation] = {}
    broken: dict[str, Problem] = {}
    for row_number, row in enumerate(table[list(CSV_COLUMNS)].itertuples(index=False), start=2):
        filename = row.filename.strip()
        if not filename:
            broken[f"<row {row_number}>"] = Problem(
                f"{csv_path}:{row_number}", "malformed annotation", "empty filename"
            )
            continue
        try:
            box = Box(row[3].strip(), *(_finite(value, CSV_COLUMNS[i + 4]) for i, value in enumerate(row[4:])))
            if not box.name:
                raise ValueError("empty class")
            size = (_positive_int(row.width), _positive_int(row.height))
        except ValueError as error:
            broken[filename] = Problem(f"{csv_path}:{row_number}", "malformed annotation", f"{filename}: {error}")
            continue
        image = images.get(filename)
        if image is None:
            image = images[filename] = ImageAnnotation(
                _resolve_image(filename, search), filename, filename, str(csv_path), *size, []
            )
        elif (image.width, image.height) != size:
            broken[filename] = Problem(
                f"{csv_path}:{row_number}",
                "malformed annotation",
                f"{filename}: size {size[0]}x{size[1]} differs from an earlier row's {image.width}x{image.height}",
            )
        image.boxes.append(box)
    # An image with one bad row is skipped whole: training on half its boxes would teach the model
    # that the other objects are background.
    kept = [image for name, image in images.items() if name not in broken]
    return Dataset(kept, list(broken.values()), sorted({box.name for image in kept for box in image.boxes}))
