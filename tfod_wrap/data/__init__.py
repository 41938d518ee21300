"""Stage 1: annotations (Pascal VOC, COCO, CSV) -> TFRecords, label maps, and record inspection."""

from tfod_wrap.data.annotations import DataError
from tfod_wrap.data.convert import annotated_classes, convert, record_files, record_pattern, summary_table
from tfod_wrap.data.inspect import expand_record_paths, preview_grid, record_stats
from tfod_wrap.data.labelmap import (
    check_label_map,
    label_map_from_names,
    read_label_map,
    write_label_map,
)

__all__ = [
    "annotated_classes",
    "expand_record_paths",
    "preview_grid",
    "record_stats",
    "summary_table",
    "DataError",
    "check_label_map",
    "convert",
    "label_map_from_names",
    "read_label_map",
    "record_files",
    "record_pattern",
    "write_label_map",
]
