"""Stage 2: pipeline.config templates rewritten as protos, every override checked against the schema."""

from __future__ import annotations

from pathlib import Path

from tfod_wrap.config.compare import diff, flatten, format_diff, summary
from tfod_wrap.config.overrides import ConfigError
from tfod_wrap.config.pipeline import (
    PIPELINES,
    is_template,
    load,
    meta_architecture,
    override,
    resolve,
    save,
    set_checkpoint,
    set_data,
    templates,
    to_text,
)
from tfod_wrap.config.schedule import check_learning_rates, schedule_end, set_batch_size, set_steps

__all__ = [
    "PIPELINES",
    "ConfigError",
    "check_learning_rates",
    "configure",
    "diff",
    "flatten",
    "format_diff",
    "is_template",
    "load",
    "meta_architecture",
    "override",
    "save",
    "schedule_end",
    "set_batch_size",
    "set_checkpoint",
    "set_data",
    "set_steps",
    "summary",
    "templates",
    "to_text",
    "validate",
]


def _set_pretrained_start(config, template: str) -> list[str]:
    from tfod_wrap.pretrained import NoPretrainedStart, default_start

    try:
        start = default_start(template)
    except NoPretrainedStart as error:
        raise ConfigError(str(error)) from None
    notes = set_checkpoint(config, start.folder, start.checkpoint_type)
    return notes + [f"pretrained start: {start.origin} (--checkpoint none for random weights)"]


def configure(
    model_or_file: str | Path,
    output: str | Path | None = None,
    *,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_type: str = "detection",
    batch_size: int | None = None,
    scale_learning_rate: bool = True,
    steps: int | None = None,
    overrides: list[str] = (),
    check: bool = True,
):
    """Template or file -> rewritten config (written to `output` if given). Returns (config, notes).

    Order: --data, --checkpoint, --batch-size, --steps, then --set, so explicit overrides win. Nothing
    is written unless every step succeeds and (with `check`) the TFOD API accepts the result.

    `checkpoint`: a prefix or model-zoo folder, or "none" for random weights. Left out, a template gets its
    pretrained weights (tfod_wrap.pretrained.default_start; an error naming the options where there are
    none) and a pipeline file keeps its own fine_tune_checkpoint.
    """
    config = load(model_or_file)
    notes: list[str] = []
    if data is not None:
        notes += set_data(config, data)
    if checkpoint is None and is_template(model_or_file):
        notes += _set_pretrained_start(config, str(model_or_file))
    elif checkpoint is not None:
        notes += set_checkpoint(config, checkpoint, checkpoint_type)
    if batch_size is not None:
        notes += set_batch_size(config, batch_size, scale_learning_rate)
    if steps is not None:
        notes += set_steps(config, steps)
    notes += [f"set {path}" for path in override(config, list(overrides))]
    check_learning_rates(config)  # cheap, so even with --no-check
    if check:
        validate(config)
    if output is not None:
        save(config, output, source=resolve(model_or_file))
    return config, notes


def validate(config) -> None:
    """Build the model the way training will, so a config that the TFOD API rejects is never written."""
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    configs = config_util.create_configs_from_pipeline_proto(config)
    try:
        model_builder.build(configs["model"], is_training=True)
    except (ValueError, KeyError, TypeError, NotImplementedError) as error:
        raise ConfigError(f"the TFOD model builder rejects this config: {error}") from None
