"""`config show`: what a user checks in a pipeline.config before training, read as fields, not as text."""

from __future__ import annotations

from tfod_wrap.core.pipeline import fine_tune_checkpoint, flatten, meta_architecture
from tfod_wrap.core.weights import checkpoint_origin


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
    if not fine_tune_checkpoint(train):
        return "none (random initialisation)"
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
