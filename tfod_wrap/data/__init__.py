"""Stage 1: annotations (Pascal VOC, COCO, CSV) -> TFRecords, label maps, and record inspection."""

from tfod_wrap.data.annotations import DataError
from tfod_wrap.data.convert import convert, record_files, record_pattern
from tfod_wrap.data.labelmap import (
    check_label_map,
    label_map_from_names,
    read_label_map,
    write_label_map,
)

__all__ = [
    "DataError",
    "check_label_map",
    "convert",
    "label_map_from_names",
    "read_label_map",
    "record_files",
    "record_pattern",
    "write_label_map",
]
