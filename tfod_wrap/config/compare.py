"""`config show` and `config diff`: read a pipeline.config as fields, not as text."""

from __future__ import annotations

from google.protobuf import descriptor

from tfod_wrap.config.pipeline import meta_architecture

_F = descriptor.FieldDescriptor


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


def summary(config) -> str:
    """What a user checks before training: model, classes, input size, schedule, data, checkpoint."""
    model = meta_architecture(config)
    flat = flatten(config)
    train = config.train_config
    lines = [
        f"model: {config.model.WhichOneof('model')} ({model.feature_extractor.type})",
        f"num_classes: {model.num_classes}",
        f"image resizer: {_resizer(model)}",
        f"batch size: {train.batch_size}, steps: {train.num_steps}",
        f"learning rate: {_learning_rate(flat)}",
        f"augmentations: {', '.join(_augmentations(train)) or 'none'}",
        f"fine-tune checkpoint: {_checkpoint(train)}",
        f"freeze: {', '.join(train.freeze_variables) or 'nothing'}",
        f"train input: {', '.join(config.train_input_reader.tf_record_input_reader.input_path)}",
        f"eval input: {', '.join(p for r in config.eval_input_reader for p in r.tf_record_input_reader.input_path)}",
        f"label map: {config.train_input_reader.label_map_path}",
    ]
    return "\n".join(lines)


def _checkpoint(train) -> str:
    if not train.fine_tune_checkpoint or train.fine_tune_checkpoint.startswith("PATH_TO_BE_CONFIGURED"):
        return "none (random initialisation)"
    from tfod_wrap.pretrained import checkpoint_origin

    kind = train.fine_tune_checkpoint_type or "detection"
    return f"{train.fine_tune_checkpoint} ({kind}; {checkpoint_origin(train.fine_tune_checkpoint)})"


def _resizer(model) -> str:
    resizer = model.image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        return f"fixed {resizer.fixed_shape_resizer.height}x{resizer.fixed_shape_resizer.width}"
    if kind == "keep_aspect_ratio_resizer":
        keep = resizer.keep_aspect_ratio_resizer
        return f"keep aspect ratio, {keep.min_dimension}..{keep.max_dimension}"
    return kind or "none"


def _learning_rate(flat: dict[str, object]) -> str:
    prefix = "train_config.optimizer."
    parts = [f"{path.split('.')[-1]}={value}" for path, value in flat.items() if path.startswith(prefix)]
    return ", ".join(parts) or "none"


def _augmentations(train) -> list[str]:
    return [option.WhichOneof("preprocessing_step") for option in train.data_augmentation_options]
