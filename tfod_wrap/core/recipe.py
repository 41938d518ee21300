"""A training run's recipe as data: everything `tfod-wrap train` takes beyond the pipeline.config, as one typed
object. `train` saves it as recipe.json in the run folder next to the pipeline.config it trained, so a run can be
repeated (`train --recipe RUN/recipe.json`) and `--resume` continues with the same settings. Named recipes (the
demo's) are registered here, not in the Makefile. No TensorFlow here: the command line builds its `train` options
from these fields (tfod_wrap.core.options: the type, markers and docstring of each), and `tfod-wrap --help` stays
fast."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_json
from tfod_wrap.core.manifests import RunFolder
from tfod_wrap.core.options import Choices, Flag, Metavar
from tfod_wrap.core.textfiles import read_json

KIND = "tfod-wrap train recipe"
STRATEGIES = ("default", "mirrored", "multi_worker")
PRESETS = ("backbone", "backbone:N", "fpn", "box_head", "class_head", "all-but-heads")


class RecipeError(UserError):
    """A recipe that cannot be read or holds a value that cannot train; the message names the file and field."""


# Metavars of the `train` options (tfod_wrap.core.options).
N, RATE, SPEC = Metavar("N"), Metavar("RATE"), Metavar("SPEC")


@dataclass(frozen=True)
class TrainRecipe:
    """Freezing, the pipeline edits made before training (in this order: batch size, num_steps, rates, then
    `overrides`), and the loop's own settings. None: the pipeline's value."""

    freeze: Annotated[tuple[str, ...], SPEC] = ()
    """freeze variables: a preset (backbone, backbone:N, fpn, box_head, class_head, all-but-heads) or a regular
    expression searched in variable names (see `tfod-wrap variables`)"""
    train_only: Annotated[tuple[str, ...], SPEC] = ()
    """train only the variables these specs match (as --freeze)"""
    keep_box_head: bool = False
    """SSD: also restore the box-regression head from the fine-tune checkpoint (class-agnostic; a detection
    fine-tune otherwise starts it from random)"""
    allow_random_frozen: bool = False
    """freeze variables even where no checkpoint restored them (refused by default: frozen random weights stay
    random); for timing runs and tests"""
    batch_size: Annotated[int | None, N] = None
    """set train_config.batch_size; the learning rates scale linearly with it (as config does)"""
    num_steps: Annotated[int | None, N] = None
    """set train_config.num_steps and stretch the learning-rate schedule to it (as `config --steps` does)"""
    learning_rate: Annotated[float | None, RATE] = None
    """the schedule's base rate (cosine learning_rate_base, constant learning_rate, exponential or manual
    initial_learning_rate), set after the batch-size scaling"""
    warmup_rate: Annotated[float | None, RATE] = None
    """the schedule's warm-up rate (cosine warmup_learning_rate, exponential burnin_learning_rate)"""
    overrides: Annotated[tuple[str, ...], Flag("--set"), Metavar("PATH=VALUE")] = ()
    """override a pipeline field after the settings above, as `config --set`"""
    time_budget: Annotated[str | None, Metavar("DURATION")] = None
    """train for this long (90s, 10m, 1h30m; tracing and checkpoint writes included): a warm-up measures the step
    time, the step count fills the budget and the schedule stretches to it; fields not given are chosen from the
    model, the batch and the training records' boxes (anchors, input size, freezing, rates), and the run folder's
    recipe.json and pipeline.config hold what was chosen"""
    fixed_recipe: bool = False
    """with --time-budget, only the number of steps fills the budget: anchors, input size, rates and freezing stay
    as the pipeline and the other options give them (to compare the adaptive recipe with a fixed one)"""
    seed: Annotated[int | None, N] = None
    """seed Python, NumPy, TensorFlow and TFOD's augmentation, and read the input on one thread: the same data
    order, augmentation and weights on the same machine and thread count (README, 'Repeatable runs')"""
    steps: Annotated[int | None, N] = None
    """train to this step (default: train_config.num_steps); the schedule stays as it is (see --num-steps)"""
    checkpoint_every: Annotated[int, N] = 500
    """steps between checkpoints (500)"""
    keep_checkpoints: Annotated[int, Flag("--keep"), N] = 5
    """checkpoints to keep (5)"""
    strategy: Annotated[str, Choices(STRATEGIES)] = "default"
    """tf.distribute strategy: one device, all local GPUs, or the TF_CONFIG cluster"""

    # The loop's speed settings (docs/BENCHMARKS.md, "Training step levers"): none changes what is trained.
    steps_per_call: Annotated[int, N] = 1
    """training steps per call of the compiled step (1: more measured no faster, docs/BENCHMARKS.md); the
    history, summaries, checkpoints, NaN checks and time budget still see every step"""
    jit_compile: bool = False
    """compile the training step with XLA (jit_compile=True)"""
    xla_loss: bool = False
    """compile the loss (anchor matching, target assignment, losses) with XLA; the network stays on oneDNN"""
    cache_images: bool = False
    """decode the training records once and keep them in memory (when they fit); the random augmentation still
    runs every step"""
    inter_op_threads: Annotated[int | None, N] = None
    """TensorFlow's inter-op thread pool size (default: TensorFlow's choice)"""
    bfloat16: bool = False
    """let oneDNN run float32 ops in bfloat16 where the CPU supports it (auto mixed precision)"""

    def __post_init__(self) -> None:
        for name, hint in _hints().items():
            object.__setattr__(self, name, _checked(name, hint, getattr(self, name)))
        for name in (
            "batch_size",
            "num_steps",
            "steps",
            "checkpoint_every",
            "keep_checkpoints",
            "steps_per_call",
            "inter_op_threads",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"{name} must be at least 1, got {value}")
        for name in ("learning_rate", "warmup_rate"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise RecipeError(f"{name} is {value:g}; a learning rate must be a finite number >= 0")
        if self.time_budget is not None:
            budget_seconds(self.time_budget)
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise RecipeError(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.strategy not in STRATEGIES:
            raise RecipeError(f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")

    def replace(self, **changes: Any) -> TrainRecipe:
        """A copy with these fields changed (checked like a new recipe)."""
        unknown = sorted(set(changes) - set(_hints()))
        if unknown:
            raise RecipeError(f"no recipe field {', '.join(unknown)}; fields: {', '.join(_hints())}")
        return dataclasses.replace(self, **changes)

    def pipeline_changes(self) -> bool:
        """Whether the recipe edits the pipeline before training."""
        edits = (self.batch_size, self.num_steps, self.learning_rate, self.warmup_rate)
        return any(value is not None for value in edits) or bool(self.overrides)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND} | {name: _plain(getattr(self, name)) for name in _hints()}

    def save(self, folder: Path) -> Path:
        path = RunFolder(folder).recipe
        atomic_write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> TrainRecipe:
        """Read a recipe.json; anything but a recipe object of known fields is a RecipeError naming the file."""
        data = read_json(path, "recipe")
        if not isinstance(data, dict) or data.pop("kind", None) != KIND:
            raise RecipeError(f'{path}: not a tfod-wrap recipe (no "kind": "{KIND}")')
        try:
            return cls().replace(**{name: _from_json(value) for name, value in data.items()})
        except RecipeError as error:
            raise RecipeError(f"{path}: {error}") from None


def explicit_fields(recipe: TrainRecipe, changes: dict[str, Any]) -> set[str]:
    """The fields a user chose: those given as changes, and those the recipe holds at other than their default."""
    default = TrainRecipe()
    return set(changes) | {name for name in _hints() if getattr(recipe, name) != getattr(default, name)}


DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def budget_seconds(text: str) -> float:
    """Seconds in a duration such as 600, 90s, 10m, 1.5h or 1h30m."""
    match = DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise RecipeError(f"time_budget {text!r} is not a duration; write e.g. 90s, 10m or 1h30m")
    hours, minutes, seconds = (float(group or 0) for group in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise RecipeError(f"time_budget {text!r} is not a positive duration")
    return total


def _hints() -> dict[str, Any]:
    return {item.name: get_type_hints(TrainRecipe)[item.name] for item in dataclasses.fields(TrainRecipe)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_json(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _checked(name: str, hint: Any, value: Any) -> Any:
    """The value in the field's type (a list becomes a tuple, an int a float), or a RecipeError naming both."""
    if value is None and type(None) in getattr(hint, "__args__", ()):
        return None
    kind = field_type(hint)
    if kind is str and isinstance(value, str):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    wanted = "a list of strings" if kind is tuple else f"{'an' if kind is int else 'a'} {kind.__name__}"
    raise RecipeError(f"{name} must be {wanted}, got {value!r}")


def field_type(hint: Any) -> type:
    """The one type a field holds: int for `int | None`, tuple for `tuple[str, ...]`."""
    if getattr(hint, "__origin__", None) is tuple:
        return tuple
    for kind in (bool, int, float, str):
        if hint is kind or kind in getattr(hint, "__args__", ()):
            return kind
    raise TypeError(f"unsupported recipe field type {hint}")


RECIPES: dict[str, TrainRecipe] = {
    # The demo's fixed recipe: the imported pretrained SSD MobileNet V2 on the sample data, tuned there over many
    # runs. `make demo` trains the adaptive recipe for a time budget instead (it chooses the same freezing and
    # rates on this data) and this one with DEMO_STEPS; bench_demo and bench_adaptive compare against it.
    "demo": TrainRecipe(
        # The stem and the first 10 of MobileNet V2's 17 blocks stay as pretrained; blocks 10-16, the extra layers
        # and the new heads train. Freezing the whole backbone leaves only 1x1 heads on fixed features and plateaus
        # at mAP@0.5 0.80; backbone:12 steps faster but ends lower (docs/BENCHMARKS.md, "demo").
        freeze=("backbone:10",),
        # 1300 steps keep training under 15 minutes on the 2-core CPU.
        num_steps=1300,
        batch_size=8,
        # Momentum with cosine decay (the imported pipeline's schedule) from 0.01: the template's rate scaled to
        # batch 8 (0.00125) barely moves the new heads, and 0.04 diverges once backbone blocks train (with
        # nothing frozen, 0.01 can diverge too).
        learning_rate=0.01,
        warmup_rate=0.0025,
    ),
}


def find_recipe(name_or_file: str | Path) -> TrainRecipe:
    """A registered recipe by name, or a recipe.json file (a run folder's, to repeat that run)."""
    if str(name_or_file) in RECIPES:
        return RECIPES[str(name_or_file)]
    path = Path(name_or_file)
    if path.is_dir():
        path = RunFolder(path).recipe
    if path.is_file() or path.suffix == ".json":
        return TrainRecipe.load(path)
    raise RecipeError(f"unknown recipe {name_or_file!r}: neither a registered recipe ({', '.join(RECIPES)}) nor a file")


def saved_recipe(run: Path) -> TrainRecipe | None:
    """The recipe a run folder was trained with, or None for a run without one."""
    path = RunFolder(run).recipe
    return TrainRecipe.load(path) if path.exists() else None
