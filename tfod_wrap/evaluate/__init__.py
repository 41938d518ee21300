"""Stage 4: COCO metrics with per-class AP, precision, recall and plots (`tfod-wrap eval`)."""

from tfod_wrap.evaluate.run import (
    EvalError,
    eval_folder,
    evaluate_checkpoints,
    metrics_table,
    score,
    watch,
    write_scalars,
)
from tfod_wrap.evaluate.stored import detections_file, score_detections

__all__ = [
    "EvalError",
    "detections_file",
    "eval_folder",
    "evaluate_checkpoints",
    "metrics_table",
    "score",
    "score_detections",
    "watch",
    "write_scalars",
]
