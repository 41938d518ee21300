"""Stage 2: pipeline.config templates rewritten as protos, every override checked against the schema."""

from __future__ import annotations

from pathlib import Path

from tfod_wrap.config.compare import summary
from tfod_wrap.config.pipeline import set_checkpoint, set_data
from tfod_wrap.core.overrides import override
from tfod_wrap.core.pipeline import (  # the README's config.load, config.save, ...
    PIPELINES,
    ConfigError,
    check_learning_rates,
    diff,
    flatten,
    format_diff,
    is_template,
    load,
    meta_architecture,
    resolve,
    save,
    schedule_end,
    templates,
    to_text,
)
from tfod_wrap.core.schedule import set_batch_size, set_steps
from tfod_wrap.core.weights import NoPretrainedStart, default_start

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
    pretrained weights (tfod_wrap.core.weights.default_start; an error naming the options where there are
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
    elif is_template(model_or_file):
        notes.append(
            f"batch_size {config.train_config.batch_size}: the template's, for the TPU slice its rates were tuned "
            "on; a CPU or one GPU wants --batch-size 8-32 (the demo's is 8 on 2 cores), which scales the rates with it"
        )
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
    from tfod_wrap.core.model import build_model  # TensorFlow: only when a config is checked

    try:
        build_model(config, is_training=True)
    except (ValueError, KeyError, TypeError, NotImplementedError) as error:
        raise ConfigError(f"the TFOD model builder rejects this config: {error}") from None
