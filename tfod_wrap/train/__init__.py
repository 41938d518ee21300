"""Stage 3: training with variable freezing that works in TF2 (`tfod-wrap train`, `tfod-wrap variables`)."""

from __future__ import annotations

from pathlib import Path

from tfod_wrap.train.freeze import (
    PRESETS,
    FreezeError,
    VariableInfo,
    apply_freeze,
    describe_variables,
    ensure_built,
    resolve_frozen,
    variables_table,
)
from tfod_wrap.train.loop import STRATEGIES, TrainError, TrainResult, make_strategy, train

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "FreezeError",
    "TrainError",
    "TrainResult",
    "VariableInfo",
    "apply_freeze",
    "describe_variables",
    "ensure_built",
    "list_variables",
    "make_strategy",
    "resolve_frozen",
    "train",
    "variables_table",
]


def list_variables(
    pipeline: str | Path, freeze: list[str] = (), train_only: list[str] = ()
) -> tuple[list[VariableInfo], set[str]]:
    """Every trainable variable of the pipeline's model, and which of them the specs freeze."""
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    pipeline_proto = config_util.create_pipeline_proto_from_configs(configs)
    model = model_builder.build(configs["model"], is_training=True)
    ensure_built(model, pipeline_proto)
    return describe_variables(model), resolve_frozen(model, pipeline_proto, list(freeze), list(train_only))
