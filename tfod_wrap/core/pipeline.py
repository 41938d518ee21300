"""Reading pipeline.config files, for every stage: load and save them as `TrainEvalPipelineConfig` protos (never as
text), the templates shipped in the package, the active model, the learning-rate schedule, field-by-field diffs.
Rewriting them (data, checkpoint, batch size, steps, overrides) is the config stage's."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor, text_format

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_text
from tfod_wrap.core.resources import package_file
from tfod_wrap.core.textfiles import read_text

# The templates ship in the package; the checkout's top-level pipelines/ is a link to this folder.
PIPELINES = package_file("pipelines")
_F = descriptor.FieldDescriptor


class ConfigError(UserError):
    """A pipeline.config problem; the message says where and what."""


def _pipeline_pb2():
    from object_detection.protos import pipeline_pb2  # rebuilt by tfod_wrap.compat

    return pipeline_pb2


def templates() -> list[str]:
    """Names of the templates in pipelines/ (the MODEL of `make train MODEL=...`)."""
    return sorted(path.stem for path in PIPELINES.glob("*.config"))


def is_template(model_or_file: str | Path) -> bool:
    """A template name (not a file of that name)."""
    return not Path(model_or_file).is_file() and (PIPELINES / f"{model_or_file}.config").is_file()


def resolve(model_or_file: str | Path) -> Path:
    """A template name or a pipeline.config path -> the file to read."""
    path = Path(model_or_file)
    if path.is_file():
        return path
    template = PIPELINES / f"{model_or_file}.config"
    if template.is_file():
        return template
    raise ConfigError(f"{model_or_file}: neither a pipeline.config file nor a template ({', '.join(templates())})")


def load(model_or_file: str | Path):
    """Parse a template or file into a TrainEvalPipelineConfig; errors name the file, line and column."""
    path = resolve(model_or_file)
    config = _pipeline_pb2().TrainEvalPipelineConfig()
    try:
        text_format.Parse(read_text(path, "pipeline.config"), config)
    except text_format.ParseError as error:
        raise ConfigError(f"{path}:{error}") from None
    if config.model.WhichOneof("model") is None:  # an empty file parses, as a config of nothing
        raise ConfigError(f"{path}: no model {{ ... }} in it; not a pipeline.config")
    return config


def to_text(config) -> str:
    return text_format.MessageToString(config)


def save(config, output: str | Path, *, source: str | Path | None = None) -> Path:
    """Write atomically. Refuses to write over the file the config was read from."""
    output = Path(output)
    if source is not None and Path(source).is_file() and output.resolve() == Path(source).resolve():
        raise ConfigError(f"{output}: refusing to overwrite the input config in place; choose another --output")
    if output.is_dir():
        raise ConfigError(f"{output}: is a folder; --output takes the pipeline.config file to write")
    atomic_write_text(output, to_text(config))
    return output


PLACEHOLDER = "PATH_TO_BE_CONFIGURED"  # the zoo templates' stand-in for a path


def fine_tune_checkpoint(train_config) -> str | None:
    """train_config.fine_tune_checkpoint, or None when it is unset or still the template's placeholder."""
    path = train_config.fine_tune_checkpoint
    return path if path and not path.startswith(PLACEHOLDER) else None


def meta_architecture(config):
    """The active model message (ssd, faster_rcnn, center_net, ...) of a pipeline or model config."""
    model = config.model if config.DESCRIPTOR.name == "TrainEvalPipelineConfig" else config
    name = model.WhichOneof("model")
    if name is None:
        raise ConfigError("the config has no model")
    return getattr(model, name)


def learning_rate(config):
    """The active LearningRate message of the active optimizer, or None (e.g. no optimizer set)."""
    optimizer = config.train_config.optimizer
    kind = optimizer.WhichOneof("optimizer")
    if kind is None:
        return None
    rate = getattr(optimizer, kind).learning_rate
    schedule = rate.WhichOneof("learning_rate")
    return None if schedule is None else getattr(rate, schedule)


def check_learning_rates(config) -> None:
    """Every learning rate of the optimizer (base, warmup, schedule steps, ...) must be a finite number >= 0: a
    NaN trains nothing and a negative rate climbs the loss, yet the TFOD model builder accepts both."""
    optimizer = config.train_config.optimizer
    for path, value in _rates(optimizer, "train_config.optimizer"):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{path} is {value:g}; a learning rate must be a finite number >= 0")


def _rates(message, path: str) -> Iterator[tuple[str, float]]:
    """(path, value) of every float field named like a learning rate, in every set sub-message."""
    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        if field.type == field.TYPE_MESSAGE:
            items = value if field.label == field.LABEL_REPEATED else [value]
            for index, item in enumerate(items):
                yield from _rates(item, f"{where}[{index}]" if field.label == field.LABEL_REPEATED else where)
        elif field.cpp_type in (field.CPPTYPE_FLOAT, field.CPPTYPE_DOUBLE) and "learning_rate" in field.name:
            yield where, value


def schedule_end(config) -> int | None:
    """The last step at which the schedule gives a rate above 0 (cosine decay returns 0 past total_steps); None
    for schedules that hold their last rate."""
    schedule = learning_rate(config)
    if schedule is not None and schedule.DESCRIPTOR.name == "CosineDecayLearningRate" and schedule.total_steps:
        return schedule.total_steps
    return None


def flatten(message, prefix: str = "") -> dict[str, object]:
    """{'model.ssd.num_classes': 2, 'train_config.data_augmentation_options[0].random_horizontal_flip': {}, ...}
    Every set field, leaves only; enums by name; an empty set message (a flag, like an augmentation
    with default options) appears as {}."""
    flat: dict[str, object] = {}
    fields = message.ListFields()
    if not fields and prefix:
        flat[prefix] = {}
    for field, value in fields:
        path = f"{prefix}.{field.name}" if prefix else field.name
        items = list(enumerate(value)) if field.label == _F.LABEL_REPEATED else [(None, value)]
        for index, item in items:
            item_path = path if index is None else f"{path}[{index}]"
            if field.type == _F.TYPE_MESSAGE:
                flat.update(flatten(item, item_path))
            elif field.type == _F.TYPE_ENUM:
                flat[item_path] = field.enum_type.values_by_number[item].name
            elif field.type == _F.TYPE_FLOAT:
                flat[item_path] = float(f"{item:.7g}")  # float32 as written (0.08, not 0.07999999821)
            else:
                flat[item_path] = item
    return flat


def diff(first, second) -> list[tuple[str, object, object]]:
    """(path, value in first, value in second) for every leaf that differs; None means absent."""
    a, b = flatten(first), flatten(second)
    return [(path, a.get(path), b.get(path)) for path in sorted(a.keys() | b.keys()) if a.get(path) != b.get(path)]


def format_diff(changes: list[tuple[str, object, object]]) -> str:
    lines = []
    for path, before, after in changes:
        if before is None:
            lines.append(f"+ {path}: {after!r}")
        elif after is None:
            lines.append(f"- {path}: {before!r}")
        else:
            lines.append(f"~ {path}: {before!r} -> {after!r}")
    return "\n".join(lines) or "no differences"
