"""Where a TrainRecipe meets the pipeline and the run folder: its pipeline edits (batch size, num_steps, rates,
overrides) applied to the pipeline in one place, and the run folder's record of what trained (pipeline.config and
recipe.json side by side)."""

from __future__ import annotations

from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_bytes, atomic_write_text
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.manifests import RunFolder
from tfod_wrap.core.overrides import override
from tfod_wrap.core.pipeline import load, to_text
from tfod_wrap.core.recipe import TrainRecipe, saved_recipe
from tfod_wrap.core.schedule import set_batch_size, set_rates, set_steps
from tfod_wrap.train.adapt import Adaptation, adapt, read_boxes


def run_recipe(recipe: TrainRecipe | None, model_dir: Path, resume: bool, changes: dict) -> TrainRecipe:
    """The recipe a run trains with: the one given, else on resume the run's saved one, else the defaults; with
    `changes` (field=value) applied over it."""
    if recipe is None:
        recipe = (saved_recipe(model_dir) if resume else None) or TrainRecipe()
    return recipe.replace(**changes)


def edited_pipeline(pipeline: Path, recipe: TrainRecipe, log) -> tuple[object, str | None]:
    """The pipeline with the recipe's edits, and its text when they changed it (None: train the file as it is).
    Applying a recipe twice gives what applying it once does (a batch size or step count already set scales
    nothing), so a run folder's pipeline and recipe can be trained again or resumed together."""
    config = load(pipeline)
    if not recipe.pipeline_changes():
        return config, None
    before = to_text(config)
    try:
        notes = edit_pipeline(config, recipe)
    except UserError as error:
        raise UserError(f"{pipeline}: {error}") from None
    text = to_text(config)
    if text == before:
        return config, None
    for note in notes:
        log(f"recipe: {note}")
    return config, text


def edit_pipeline(config, recipe: TrainRecipe) -> list[str]:
    """Batch size (rates scaled), num_steps (schedule stretched), then the rates, then the overrides, so each
    later setting wins over what an earlier one derived. Returns notes of what changed."""
    notes = []
    if recipe.batch_size is not None:
        notes += set_batch_size(config, recipe.batch_size)
    if recipe.num_steps is not None:
        notes += set_steps(config, recipe.num_steps)
    notes += set_rates(config, recipe.learning_rate, recipe.warmup_rate)
    return notes + [f"set {path}" for path in override(config, list(recipe.overrides))]


def record_run(model_dir: Path, pipeline: Path, recipe: TrainRecipe, edited: str | None) -> None:
    """Write what this run trains into its folder: pipeline.config (the edited text, or a copy of a pipeline from
    elsewhere) and recipe.json. A run folder's own unedited pipeline.config is left as it is."""
    target = RunFolder(model_dir).pipeline
    if edited is not None:
        if not target.is_file() or target.read_text() != edited:
            atomic_write_text(target, edited)
    elif not (target.exists() and target.samefile(pipeline)):
        atomic_write_bytes(target, Path(pipeline).read_bytes())
    recipe.save(model_dir)


def adaptive_recipe(pipeline: Path, recipe: TrainRecipe, explicit: set[str], log) -> tuple[TrainRecipe, Adaptation]:
    """The recipe with the adaptive choices (train/adapt.py) for this pipeline's training records filled in where
    the user chose nothing, each logged with its reason; and the adaptation (freezing is chosen from it once the
    model is built)."""
    config = load(pipeline)
    given = override(config, list(recipe.overrides))  # the user's --set, applied first and never refitted
    reader = config.train_input_reader
    classes = read_label_map(Path(reader.label_map_path)) if reader.label_map_path else {}
    boxes = read_boxes(reader.tf_record_input_reader.input_path, classes)
    adaptation = adapt(config, boxes, explicit, recipe.batch_size or config.train_config.batch_size, given)
    for reason in adaptation.reasons:
        log(f"adaptive recipe: {reason}")
    changes = dict(adaptation.changes)
    if "overrides" in changes:
        changes["overrides"] = (*changes["overrides"], *recipe.overrides)
    return recipe.replace(**changes), adaptation


def resolved_text(pipeline: Path, recipe: TrainRecipe) -> str | None:
    """The pipeline text a recipe trains (None: the file as it is), for the run folder's record."""
    return edited_pipeline(pipeline, recipe, lambda *_: None)[1]
