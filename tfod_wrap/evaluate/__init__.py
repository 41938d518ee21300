"""Stage 4: COCO metrics with per-class AP, precision, recall and plots (`tfod-wrap eval`)."""

from tfod_wrap.evaluate.run import (
    EvalError,
    checkpoint_detector,
    evaluate_checkpoints,
    metrics_table,
    saved_model_detector,
    score,
    watch,
    write_scalars,
)

__all__ = [
    "EvalError",
    "checkpoint_detector",
    "evaluate_checkpoints",
    "metrics_table",
    "saved_model_detector",
    "score",
    "watch",
    "write_scalars",
]
