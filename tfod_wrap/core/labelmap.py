"""Label maps (`label_map.pbtxt`): read, check, build and write them with the TFOD proto itself (every stage reads
them; data writes them)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_text
from tfod_wrap.core.textfiles import read_text


class LabelMapError(UserError):
    """A label map that cannot be used; the message names the file and every problem."""


def _proto_module():
    from object_detection.protos import string_int_label_map_pb2  # rebuilt by tfod_wrap.compat

    return string_int_label_map_pb2


def check_label_map(path: Path) -> list[str]:
    """Every problem of a label map file, as messages; an empty list means it is valid for TFOD. A file that
    cannot be read as text at all (missing, a folder or device, binary) raises LabelMapError instead."""
    try:
        text = read_text(path, "label map")
    except UserError as error:
        raise LabelMapError(str(error)) from None
    label_map = _proto_module().StringIntLabelMap()
    try:
        text_format.Parse(text, label_map)
    except text_format.ParseError as error:
        return [f"{path}: not a label map: {error}"]
    problems = []
    if not label_map.item:
        problems.append(f"{path}: no items")
    seen_ids: dict[int, str] = {}
    seen_names: set[str] = set()
    for item in label_map.item:
        name = item.name or item.display_name
        if not name:
            problems.append(f"{path}: item with id {item.id} has no name")
        if not item.HasField("id"):
            problems.append(f"{path}: item {name!r} has no id")
        elif item.id == 0:
            problems.append(
                f"{path}: item {name!r} has id 0, but id 0 is reserved for the background class; class ids start at 1"
            )
        elif item.id < 0:
            problems.append(f"{path}: item {name!r} has negative id {item.id}; class ids start at 1")
        if item.id in seen_ids:
            problems.append(f"{path}: id {item.id} is used by both {seen_ids[item.id]!r} and {name!r}")
        seen_ids.setdefault(item.id, name)
        if name in seen_names:
            problems.append(f"{path}: name {name!r} appears twice")
        seen_names.add(name)
    return problems


def read_label_map(path: Path) -> dict[str, int]:
    """{class name: id} of a valid label map; raises LabelMapError listing every problem otherwise."""
    problems = check_label_map(path)
    if problems:
        raise LabelMapError("\n".join(problems))
    label_map = _proto_module().StringIntLabelMap()
    text_format.Parse(read_text(path, "label map"), label_map)
    return {item.name or item.display_name: item.id for item in label_map.item}


def label_map_from_names(names: list[str]) -> dict[str, int]:
    """Ids 1..N in the given order."""
    return {name: index for index, name in enumerate(names, start=1)}


def label_map_text(class_ids: dict[str, int]) -> str:
    label_map = _proto_module().StringIntLabelMap()
    for name, class_id in sorted(class_ids.items(), key=lambda item: item[1]):
        label_map.item.add(name=name, id=class_id, display_name=name)
    return text_format.MessageToString(label_map)


def write_label_map(class_ids: dict[str, int], path: Path) -> None:
    atomic_write_text(Path(path), label_map_text(class_ids))
