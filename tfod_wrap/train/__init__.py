"""Stage 3: training with variable freezing that works in TF2 (`tfod-wrap train`, `tfod-wrap variables`)."""

from __future__ import annotations

from pathlib import Path

from tfod_wrap.core.recipe import PRESETS, RECIPES, STRATEGIES, TrainRecipe, find_recipe
from tfod_wrap.train.freeze import (
    FreezeError,
    VariableInfo,
    apply_freeze,
    describe_variables,
    resolve_frozen,
    variables_table,
)
from tfod_wrap.train.loop import TrainError, TrainResult, make_strategy, train

__all__ = [
    "PRESETS",
    "RECIPES",
    "STRATEGIES",
    "FreezeError",
    "TrainError",
    "TrainRecipe",
    "TrainResult",
    "VariableInfo",
    "apply_freeze",
    "describe_variables",
    "find_recipe",
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
    from tfod_wrap.core.model import build_model
    from tfod_wrap.core.pipeline import load

    pipeline_proto = load(pipeline)
    model = build_model(pipeline_proto, is_training=True, built=True)
    return describe_variables(model), resolve_frozen(model, pipeline_proto, list(freeze), list(train_only))
