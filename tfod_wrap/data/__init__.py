"""Stage 1: annotations (Pascal VOC, COCO, CSV) -> TFRecords, label maps, and record inspection."""

from tfod_wrap.data.annotations import DataError
from tfod_wrap.data.convert import annotated_classes, convert, record_files, record_pattern, summary_table
from tfod_wrap.data.inspect import preview_grid, record_stats

__all__ = [
    "annotated_classes",
    "preview_grid",
    "record_stats",
    "summary_table",
    "DataError",
    "convert",
    "record_files",
    "record_pattern",
]
