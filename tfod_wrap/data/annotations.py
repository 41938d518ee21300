"""Read Pascal VOC XML, COCO JSON and TFOD-tutorial CSV into one in-memory form.

Everything is kept in the annotation's own pixel coordinates; checking boxes against the real image
happens later, when the image has been opened (see `encode.py`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lxml import etree

from tfod_wrap.core.errors import UserError

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
    root: str = ""  # the image folder `filename` is relative to; the image must resolve inside it

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


def _resolve_image(filename: str, candidates_dirs: list[Path]) -> tuple[Path, str]:
    """(the first existing candidate, else the first one so the encoder reports it missing; its folder)."""
    candidates = [(directory / filename, directory) for directory in candidates_dirs]
    path, root = next((pair for pair in candidates if pair[0].is_file()), candidates[0])
    return path, str(root)


def describe(error: Exception) -> str:
    """One line for any exception: our own messages as they are, others with their type (a bare KeyError or
    OverflowError message says little)."""
    message = " ".join(str(error).split())
    if isinstance(error, (ValueError, UserError)) and not isinstance(error, UnicodeError) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _positive_int(value: object, what: str) -> int | None:
    """A size field; LabelImg writes 0 when it did not know the size, which means 'unknown'."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} {value!r} is not a number")
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return int(number) if number >= 1 else None


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} is {value}")
    number = float(value)  # raises ValueError/TypeError for junk
    if not math.isfinite(number):
        raise ValueError(f"{what} is {value}")
    return number


def _flag(text: str | None) -> int:
    return 1 if text is not None and text.strip().lower() in ("1", "true", "yes") else 0


# --- Pascal VOC --------------------------------------------------------------------------------


def read_voc_file(xml_path: Path, images_dir: Path | None) -> ImageAnnotation | Problem:
    """One VOC XML file, or the Problem that skips it: whatever goes wrong in one file (an exception of
    any type) skips that file with a reason and never ends the run."""
    try:
        return _read_voc_file(xml_path, images_dir)
    except Exception as error:  # any type: one bad file must not end a lenient run
        return Problem(str(xml_path), "malformed annotation", describe(error))


def _read_voc_file(xml_path: Path, images_dir: Path | None) -> ImageAnnotation | Problem:
    """Tags are looked up by name, so their order does not matter. (Plain string paths here: this runs
    once per image, and pathlib would cost more than the XML parse.)"""
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
        width = _positive_int(root.findtext("size/width"), "<width>")
        height = _positive_int(root.findtext("size/height"), "<height>")
        boxes = [_voc_box(obj, index) for index, obj in enumerate(root.iterfind("object"), start=1)]
    except ValueError as error:
        return Problem(where, "malformed annotation", str(error))
    xml_dir = os.path.dirname(where)
    parent = os.path.dirname(xml_dir)
    search = [str(images_dir)] if images_dir else [xml_dir, f"{parent}/JPEGImages", f"{parent}/images"]
    candidates = [os.path.join(directory, filename) for directory in search]
    found = next((index for index, path in enumerate(candidates) if os.path.isfile(path)), 0)
    image_path = candidates[found]
    # Named relative to where it was looked for first; found elsewhere (../JPEGImages), by its file name.
    relative = os.path.normpath(filename) if found == 0 else os.path.basename(image_path)
    return ImageAnnotation(Path(image_path), relative, relative, where, width, height, boxes, search[found])


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
    images without annotations are kept as negatives. Ids are matched by value: `7` and `"7"` are the
    same id (exports differ in which they write); an id of another type (1.5, true, null) is a problem.
    A malformed image entry or annotation skips its image with a reason; only a file that is not COCO
    at all, or ids that are ambiguous (an image or category id twice), stop the run."""
    data = _load_coco(json_path)
    category_names = _coco_categories(json_path, data["categories"])
    search = [images_dir] if images_dir else [json_path.parent, json_path.parent / "images"]
    images: dict[int | str, ImageAnnotation] = {}
    problems: list[Problem] = []
    for index, entry in enumerate(data["images"]):
        try:
            image_id, image = _coco_image(entry, search, str(json_path))
        except Exception as error:  # any type: one bad entry skips its image, never the run
            reason = f"image {index} {_brief(entry)}: {describe(error)}"
            problems.append(Problem(str(json_path), "malformed annotation", reason))
            continue
        if image_id in images:
            raise DataError(f"{json_path}: image id {image_id!r} appears twice")
        images[image_id] = image
    broken: set[int | str] = set()
    for entry in data["annotations"]:
        problem = _add_coco_box(entry, images, category_names, str(json_path))
        if problem:
            problems.append(problem)
            image_id = _coco_id_or_none(entry.get("image_id") if isinstance(entry, dict) else None)
            if image_id in images:
                broken.add(image_id)  # skipped whole, as in read_csv
    kept = [image for image_id, image in images.items() if image_id not in broken]
    # Label-map order is category-id order, whatever the ids are.
    ordered = sorted(category_names.items())
    return Dataset(kept, problems, [name for _, name in ordered])


def _load_coco(json_path: Path) -> dict:
    try:
        with open(json_path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark, as Windows tools write
            data = json.load(handle)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise DataError(f"{json_path}: malformed JSON: {describe(error)}") from None
    except OSError as error:
        raise DataError(f"{json_path}: cannot read: {error.strerror}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DataError(f"{json_path}: not a COCO detection file: needs 'images', 'annotations', 'categories' lists")
    return data


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")


def coco_id(value: object, what: str = "id") -> int | str:
    """An id as compared: an integer, or the integer a string spells exactly ("7" -> 7, not "07" or
    "7.0"), or any other non-empty string as it is. Other types raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} {value!r} is not an integer or a string")
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text:
        raise ValueError(f"{what} is an empty string")
    return int(text) if _CANONICAL_INT.fullmatch(text) else text


def _coco_id_or_none(value: object) -> int | str | None:
    try:
        return coco_id(value)
    except ValueError:
        return None


def _coco_image(entry: object, search: list[Path], source: str) -> tuple[int | str, ImageAnnotation]:
    if not isinstance(entry, dict):
        raise ValueError("is not an object")
    if "id" not in entry:
        raise ValueError("has no 'id'")
    image_id = coco_id(entry["id"])
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError(f"'file_name' {file_name!r} is not a file name")
    width, height = _positive_int(entry.get("width"), "width"), _positive_int(entry.get("height"), "height")
    image_path, root = _resolve_image(file_name, search)
    return image_id, ImageAnnotation(image_path, file_name, str(image_id), source, width, height, [], root)


def _coco_categories(json_path: Path, categories: list) -> dict[int, str]:
    names: dict[int, str] = {}
    for category in categories:
        try:
            category_id, name = category["id"], str(category["name"]).strip()
        except (KeyError, TypeError, IndexError):
            raise DataError(f"{json_path}: category {_brief(category)} needs 'id' and 'name'") from None
        if not isinstance(category_id, int) or isinstance(category_id, bool):
            raise DataError(f"{json_path}: category id {category_id!r} is not an integer")
        if category_id in names:
            raise DataError(f"{json_path}: category id {category_id} appears twice")
        if name in names.values():
            raise DataError(f"{json_path}: category name {name!r} appears twice (ids must map to unique names)")
        names[category_id] = name
    return names


def _add_coco_box(
    entry: object, images: dict[int | str, ImageAnnotation], category_names: dict[int, str], source: str
) -> Problem | None:
    """Add one annotation's box to its image, or return the Problem (of any cause) that skips it."""
    annotation_id = entry.get("id", "?") if isinstance(entry, dict) else "?"
    where = f"{source} (annotation {_brief(annotation_id)})"
    try:
        image, box = _coco_box(entry, images, category_names)
    except Exception as error:  # any type: skips its image, never the run
        return Problem(where, "malformed annotation", describe(error))
    image.boxes.append(box)
    return None


def _coco_box(
    entry: object, images: dict[int | str, ImageAnnotation], category_names: dict[int, str]
) -> tuple[ImageAnnotation, Box]:
    if not isinstance(entry, dict):
        raise ValueError(f"annotation {_brief(entry)} is not an object")
    image = images.get(_coco_id_or_none(entry.get("image_id")))
    if image is None:
        raise ValueError(f"refers to an image id that is not in 'images': {_brief(entry.get('image_id'))}")
    category_id = entry.get("category_id")
    try:
        name = category_names[coco_id(category_id, "category_id")]
    except (KeyError, ValueError):
        raise ValueError(f"unknown category_id {_brief(category_id)} (category ids are integers)") from None
    try:
        x, y, w, h = (_finite(value, "bbox value") for value in entry["bbox"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"bbox must be 4 numbers [x, y, width, height], got {_brief(entry.get('bbox'))}") from None
    return image, Box(name, x, y, x + w, y + h, is_crowd=_coco_flag(entry.get("iscrowd"), "iscrowd"))


def _coco_flag(value: object, what: str) -> int:
    """0 or 1, by value: "0" is not crowd (a non-empty string is truthy, which made it crowd)."""
    if value is None:
        return 0
    for flag in (0, 1):
        if isinstance(value, (bool, int)) and value == flag or value == str(flag):
            return flag
    raise ValueError(f"{what} {_brief(value)} is not 0 or 1")


# --- CSV ---------------------------------------------------------------------------------------


def read_csv(csv_path: Path, images_dir: Path | None) -> Dataset:
    """The TFOD tutorial CSV: filename,width,height,class,xmin,ymin,xmax,ymax, one row per box."""
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, pd.errors.EmptyDataError) as error:  # ParserError and UnicodeDecodeError among them
        raise DataError(f"{csv_path}: malformed CSV: {describe(error)}") from None
    except OSError as error:
        raise DataError(f"{csv_path}: cannot read: {error.strerror}") from None
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
            box, size = _csv_row(row)
        except Exception as error:  # any type: one bad row skips its image, never the run
            reason = f"{filename}: {describe(error)}"
            broken[filename] = Problem(f"{csv_path}:{row_number}", "malformed annotation", reason)
            continue
        image = images.get(filename)
        if image is None:
            image_path, root = _resolve_image(filename, search)
            image = images[filename] = ImageAnnotation(image_path, filename, filename, str(csv_path), *size, [], root)
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


def _csv_row(row: tuple) -> tuple[Box, tuple[int | None, int | None]]:
    box = Box(row[3].strip(), *(_finite(value, CSV_COLUMNS[i + 4]) for i, value in enumerate(row[4:])))
    if not box.name:
        raise ValueError("empty class")
    return box, (_positive_int(row[1], "width"), _positive_int(row[2], "height"))
