"""Batch size, training length and rates, with the learning-rate schedule kept consistent with them."""

from __future__ import annotations

from tfod_wrap.core.pipeline import ConfigError, learning_rate

# schedule message -> (its base rate field, its warm-up rate field or None)
RATE_FIELDS = {
    "ConstantLearningRate": ("learning_rate", None),
    "CosineDecayLearningRate": ("learning_rate_base", "warmup_learning_rate"),
    "ExponentialDecayLearningRate": ("initial_learning_rate", "burnin_learning_rate"),
    "ManualStepLearningRate": ("initial_learning_rate", None),
}


def set_rates(config, base: float | None = None, warmup: float | None = None) -> list[str]:
    """Set the active schedule's base and warm-up rates (None: leave it); a schedule without such a rate (a
    constant one has no warm-up) is a ConfigError naming the option."""
    notes = []
    for index, option, value in ((0, "--learning-rate", base), (1, "--warmup-rate", warmup)):
        if value is None:
            continue
        schedule = learning_rate(config)
        name = schedule.DESCRIPTOR.name if schedule is not None else "no"
        field = RATE_FIELDS.get(name, (None, None))[index]
        if field is None:
            raise ConfigError(f"{option}: the pipeline's {name} learning-rate schedule has no such rate")
        notes.append(f"{field} {getattr(schedule, field):g} -> {value:g}")
        setattr(schedule, field, value)
    return notes


def set_batch_size(config, batch_size: int, scale_learning_rate: bool = True) -> list[str]:
    """Set train_config.batch_size; by default scale the learning rate linearly with it (Goyal et al.,
    2017), since the model-zoo rates were tuned for TPU batches of 64 to 512."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    train = config.train_config
    old = train.batch_size or 1
    _set_count(train, "batch_size", batch_size, "--batch-size")
    notes = [f"batch_size {old} -> {batch_size}"]
    schedule = learning_rate(config)
    if not scale_learning_rate or schedule is None or batch_size == old:
        return notes
    factor = batch_size / old
    for name in ("learning_rate", "learning_rate_base", "warmup_learning_rate", "initial_learning_rate"):
        if name in schedule.DESCRIPTOR.fields_by_name and getattr(schedule, name):
            before = getattr(schedule, name)
            setattr(schedule, name, before * factor)
            notes.append(f"{name} {before:g} -> {getattr(schedule, name):g} (scaled x{factor:g} with the batch size)")
    if schedule.DESCRIPTOR.name == "ManualStepLearningRate":
        for step in schedule.schedule:
            step.learning_rate *= factor
        if schedule.schedule:
            notes.append(f"manual schedule learning rates scaled x{factor:g}")
    return notes


def _set_count(message, field: str, value: int, option: str) -> None:
    """Protobuf refuses a value its field cannot hold (uint32: at most 4294967295) with a ValueError."""
    try:
        setattr(message, field, value)
    except ValueError:
        raise ConfigError(f"{option} {value} is out of range for train_config.{field}") from None


def set_steps(config, steps: int) -> list[str]:
    """Set train_config.num_steps and stretch or shrink the schedule to the new length, so warmup and
    decay keep their proportions and warmup never outlasts training."""
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    train = config.train_config
    schedule = learning_rate(config)
    old = train.num_steps or _schedule_length(schedule) or steps
    _set_count(train, "num_steps", steps, "--steps")
    notes = [f"num_steps {old} -> {steps}"]
    if schedule is None:
        return notes
    ratio = steps / old
    name = schedule.DESCRIPTOR.name
    if name == "CosineDecayLearningRate":
        schedule.total_steps = steps
        schedule.warmup_steps = min(round(schedule.warmup_steps * ratio), steps)
        if schedule.hold_base_rate_steps:
            schedule.hold_base_rate_steps = min(
                round(schedule.hold_base_rate_steps * ratio), steps - schedule.warmup_steps
            )
        notes.append(f"cosine decay: total_steps {steps}, warmup_steps {schedule.warmup_steps}")
    elif name == "ExponentialDecayLearningRate":
        schedule.decay_steps = max(1, round(schedule.decay_steps * ratio))
        if schedule.burnin_steps:
            schedule.burnin_steps = min(round(schedule.burnin_steps * ratio), steps)
        notes.append(f"exponential decay: decay_steps {schedule.decay_steps}")
    elif name == "ManualStepLearningRate":
        boundaries, previous = [], 0
        for step in schedule.schedule:  # TFOD requires strictly increasing boundaries
            step.step = previous = max(previous + 1, round(step.step * ratio))
            boundaries.append(step.step)
        if boundaries:
            notes.append(f"manual schedule boundaries: {', '.join(map(str, boundaries))}")
    return notes


def _schedule_length(schedule) -> int:
    if schedule is None:
        return 0
    if schedule.DESCRIPTOR.name == "CosineDecayLearningRate":
        return schedule.total_steps
    return 0
