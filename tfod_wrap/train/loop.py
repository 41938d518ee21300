"""`tfod-wrap train`: a TF2 training loop on the TFOD API's own parts that actually freezes variables.

It follows model_lib_v2.train_loop (model_builder, inputs.train_input with the config's augmentations,
optimizer_builder, the model's losses plus regularisation, gradient clipping, TFOD's fine-tune
checkpoint restore, tf.distribute) with these differences:
- only the variables left trainable by `freeze.py` get gradients and optimizer slots, and batch-norm
  layers that are wholly frozen run in inference mode, so their moving statistics stay put;
- progress bar, TensorBoard scalars as model_main_tf2 writes them plus a training batch with its boxes,
  a loss history (train_history.csv) and loss-curve PNG in the model dir;
- `resume` continues from the latest checkpoint with the same step, schedule and optimizer state; a
  model dir that already holds checkpoints is never trained over silently;
- a non-finite loss or gradient stops the run before it is applied, and no checkpoint holding a NaN or inf
  (batch-norm statistics included) is ever saved: the last good checkpoint stays the latest;
- `keep_box_head` also restores an SSD's box-regression head from a `detection` fine-tune checkpoint,
  which TFOD discards with the class head although it does not depend on the classes;
- freezing a variable that no checkpoint restored (the fine-tune checkpoint, or the run's own one on
  `resume`) is refused unless `allow_random_frozen`: frozen random weights never learn anything.
- the run's settings are a TrainRecipe (tfod_wrap.core.recipe): its pipeline edits apply before training, and
  the run folder gets the pipeline.config it trains and recipe.json, which `resume` reads back.
- the recipe's speed settings (several steps per compiled call, XLA for the step or its loss, a cache of the
  decoded records, inter-op threads, oneDNN bfloat16) are all off by default: none made the demo's step
  measurably cheaper on a 2-core CPU (docs/BENCHMARKS.md, "Training step levers").
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
from tqdm import tqdm

from tfod_wrap.core.errors import Interrupted, UserError
from tfod_wrap.core.files import atomic_write_text
from tfod_wrap.core.model import end_training_phase, ensure_built
from tfod_wrap.core.pipeline import fine_tune_checkpoint
from tfod_wrap.core.processes import caused_by_interrupt
from tfod_wrap.core.recipe import STRATEGIES, TrainRecipe, explicit_fields
from tfod_wrap.core.schedule import set_steps
from tfod_wrap.train.adapt import freeze_spec
from tfod_wrap.train.budget import Budget, BudgetTooShort, Undo
from tfod_wrap.train.freeze import apply_freeze, backbone_blocks, describe_variables, resolve_frozen, variables_table
from tfod_wrap.train.inputs import train_dataset
from tfod_wrap.train.recipe import adaptive_recipe, edited_pipeline, record_run, resolved_text, run_recipe

HISTORY = "train_history.csv"
BUDGET_SCHEDULE_STEPS = 1_000_000  # the schedule's own steps under a time budget (see train())
LOSS_CURVE = "loss_curve.png"


class TrainError(UserError, RuntimeError):
    """A training run that cannot start or go on; the message says why and what to do."""


@dataclass
class TrainResult:
    step: int
    losses: dict[str, float]
    checkpoint: str | None
    steps_per_second: float
    frozen: int
    trainable: int
    history: list[dict] = field(default_factory=list)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default: one device; mirrored: every local GPU; multi_worker: the cluster in TF_CONFIG."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise TrainError("--strategy multi_worker reads the cluster from the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")


def _ends_training_phase(function):
    """`function`, leaving Keras's learning phase at 0 however it ends (core.model.end_training_phase)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            end_training_phase()

    return wrapper


@_ends_training_phase
def train(
    pipeline: str | Path,
    model_dir: str | Path,
    recipe: TrainRecipe | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    log=print,
    **changes: Any,
) -> TrainResult:
    """Train the model of a pipeline.config into `model_dir` with a recipe; see the module docstring.

    `recipe`: the run's settings; left out, the run's saved recipe.json on `resume`, else the defaults. Keywords
    named like its fields (freeze=["backbone"], steps=3, allow_random_frozen=True, ...) change those fields."""
    from object_detection.builders import model_builder, optimizer_builder
    from object_detection.utils import config_util

    model_dir = Path(model_dir)
    recipe = run_recipe(recipe, model_dir, resume, changes)
    budget = _budget(recipe, resume, changes)
    _runtime(recipe, log)
    if recipe.seed is not None:
        _seed(recipe.seed, log)
    chosen = explicit_fields(recipe, changes)  # before the adaptive recipe fills in the rest
    adaptive = budget is not None and not recipe.fixed_recipe
    if adaptive:
        recipe, adaptation = adaptive_recipe(Path(pipeline), recipe, chosen, log)
    pipeline_proto, edited = edited_pipeline(Path(pipeline), recipe, log)
    if budget:
        # The budget stretches the schedule by scaling the step it reads (`stretch` below); on a grid of its own
        # as fine as BUDGET_SCHEDULE_STEPS, so that a pipeline's short schedule (num_steps: 3) gives a smooth
        # rate over however many steps fit, not a staircase. The run folder's pipeline.config is stretched to the
        # steps trained instead (`_stretch`).
        set_steps(pipeline_proto, BUDGET_SCHEDULE_STEPS)
    configs = config_util.create_configs_from_pipeline_proto(pipeline_proto)
    train_config = configs["train_config"]
    if train_config.use_bfloat16:
        # The TFOD API applies it on TPUs only (model_lib_v2); elsewhere it would only cast the input images to
        # bfloat16, which the float32 layers cast back, so the model trains in float32 either way.
        train_config.use_bfloat16 = False
        log("use_bfloat16: true is a TPU setting; training in float32 (docs: README, 'Templates')")
    schedule_steps = train_config.num_steps
    total_steps = recipe.steps or schedule_steps
    if not total_steps and not budget:
        raise TrainError(f"{pipeline}: train_config.num_steps is 0; pass --steps N")
    _check_schedule(pipeline_proto, pipeline, None if budget else total_steps, log)
    strategy = make_strategy(recipe.strategy)
    is_chief = strategy.extended.should_checkpoint
    # Non-chief workers must save too (saving is collective), but into a folder of their own.
    save_dir = model_dir if is_chief else model_dir / f"worker-{strategy.extended._task_id}"  # noqa: SLF001
    latest = tf.train.latest_checkpoint(str(save_dir))
    if latest and not resume:
        raise TrainError(
            f"{model_dir} already holds checkpoints ({Path(latest).name}); pass --resume to continue, "
            "or choose a new --model-dir"
        )
    check_input_files(configs["train_input_config"], getattr(strategy.extended, "_num_workers", 1))

    with strategy.scope():
        model = model_builder.build(configs["model"], is_training=True)
        ensure_built(model, pipeline_proto)
        if budget and budget.elapsed() > budget.seconds:
            raise BudgetTooShort(budget.too_short_message(0))
        if adaptive and not {"freeze", "train_only"} & chosen:
            pretrained = _has_fine_tune(train_config)
            blocks = backbone_blocks(model)
            specs, reason = freeze_spec(blocks, train_config.batch_size, pretrained, adaptation.median_side)
            log(f"adaptive recipe: {reason}")
            recipe = recipe.replace(freeze=specs)
        frozen = resolve_frozen(model, pipeline_proto, list(recipe.freeze), list(recipe.train_only))
        variables = apply_freeze(model, frozen)
        infos = describe_variables(model)
        log(variables_table(infos, frozen, verbose=False))
        global_step = tf.Variable(
            0,
            trainable=False,
            dtype=tf.int64,
            name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        # The schedule reads its own step: global_step times `stretch`, which a time budget sets once it knows
        # how many steps fit, so the schedule spans the run whatever its length. Until then (the warm-up) the
        # schedule stays at its first step; without a budget the two steps are one.
        schedule_step = tf.Variable(
            0, trainable=False, dtype=tf.int64, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA
        )
        stretch = tf.Variable(0.0 if budget else 1.0, trainable=False, dtype=tf.float64)
        optimizer, (learning_rate,) = optimizer_builder.build(train_config.optimizer, global_step=schedule_step)
        if train_config.optimizer.use_moving_average:
            optimizer.shadow_copy(model)
        dataset = strategy.distribute_datasets_from_function(
            lambda context: (
                train_dataset(
                    train_config,
                    configs["train_input_config"],
                    configs["model"],
                    model,
                    context,
                    cache=recipe.cache_images,
                    log=log,
                )
                .repeat()
                .with_options(_input_options(recipe.seed))
            )
        )
        checkpoint = tf.train.Checkpoint(step=global_step, model=model, optimizer=optimizer)
        manager = tf.train.CheckpointManager(checkpoint, str(save_dir), max_to_keep=recipe.keep_checkpoints)
        if latest:
            restored = _restored(model, _restore_run(checkpoint, latest, pipeline))
            log(f"resumed from {latest} at step {int(global_step.numpy())}")
            source = f"the run's checkpoint {latest} does not hold them"
        else:
            restored = _load_fine_tune_checkpoint(model, train_config, model_dir, log)
            if recipe.keep_box_head:
                restored |= _restore_box_head(model, fine_tune_checkpoint(train_config), log)
            source = _fine_tune_source(train_config)
        _check_frozen_restored(infos, frozen, restored, source, recipe.allow_random_frozen, log)
        step_fn = _make_step(
            model,
            optimizer,
            variables,
            (global_step, schedule_step, stretch),
            train_config,
            strategy,
            learning_rate,
            jit_compile=recipe.jit_compile,
            xla_loss=recipe.xla_loss,
            steps_per_call=recipe.steps_per_call,
        )
    # Only now, when nothing can refuse any more, so that a refused run leaves no folder behind (a time budget
    # can still turn out shorter than the warm-up: `undo` takes back what the run wrote).
    undo = Undo(model_dir)
    with _kept_on_interrupt(model_dir, save_dir, latest, undo, budget):
        save_dir.mkdir(parents=True, exist_ok=True)
        _remove_partial_saves(save_dir)
        if is_chief:
            record_run(model_dir, Path(pipeline), recipe, edited)

        writer = tf.summary.create_file_writer(str(save_dir / "train"))
        history = _History(save_dir / HISTORY, int(global_step.numpy()))
        iterator = iter(dataset)
        start = int(global_step.numpy())
        if start >= total_steps and not budget:
            raise TrainError(f"{model_dir} is already at step {start} of {total_steps}; raise --steps to train more")
        writes: list[float] = []  # the seconds of each checkpoint write, its checks and loss curve included
        if start == 0:
            began = time.perf_counter()
            manager.save(checkpoint_number=0)  # the starting point, as model_lib_v2 saves it
            writes.append(time.perf_counter() - began)
        if budget:
            total_steps = sys.maxsize  # until the warm-up has timed the steps
        losses: dict[str, float] = {}
        rates = []
        iterations: list[float] = []  # wall time of the loop's iterations, less their checkpoint writes

        def save(step: int) -> float:
            """Write the checkpoint of `step` (after its checks, with the history and loss curve); returns the seconds
            all that took."""
            began = time.perf_counter()
            _check_finite(model, optimizer, step, manager, history)
            # history first: a kill between the two must not leave a checkpoint whose steps have no rows
            # (--resume keeps the rows up to the restored step and drops any later ones)
            history.flush()
            manager.save(checkpoint_number=step)
            if is_chief:
                history.plot(save_dir / LOSS_CURVE)
            return time.perf_counter() - began

        with (
            writer.as_default(),
            tqdm(
                total=None if budget else total_steps, initial=start, unit="step", desc="training", disable=not progress
            ) as bar,
        ):
            last_saved = start
            step = start
            while step < total_steps:
                iteration_began = began = time.perf_counter()
                before, count = step, _call_steps(recipe, step, start, total_steps, last_saved, budget)
                reduced, done, applied = step_fn(iterator, tf.constant(count, tf.int32))
                done = int(done)
                values = {key: value.numpy().tolist() for key, value in reduced.items()}
                step = int(global_step.numpy())
                rate = done / max(time.perf_counter() - began, 1e-9)
                for index in range(done):
                    losses = {key: float(value[index]) for key, value in values.items()}
                    if index == done - 1 and (not bool(applied) or not math.isfinite(losses["Loss/total_loss"])):
                        history.flush()
                        raise TrainError(_not_applied_message(losses["Loss/total_loss"], step + 1, manager))
                    # the steps of one call share its rate; each step's losses and rate are its own row and scalars
                    row_step = before + 1 + index
                    rates.append(rate)
                    for key, value in losses.items():
                        tf.summary.scalar(key, value, step=row_step)
                    tf.summary.scalar("steps_per_sec", rate, step=row_step)
                    history.add(row_step, losses, rate)
                bar.update(done)
                bar.set_postfix(_postfix(losses, rates), refresh=False)
                saving = step - last_saved >= recipe.checkpoint_every or step == total_steps
                if saving:
                    writes.append(save(step))
                    last_saved = step
                # the budget plans from steps: a call of several steps counts as that many equal ones
                spent = time.perf_counter() - iteration_began - (writes[-1] if saving else 0.0)
                iterations.extend([spent / done] * done)
                if budget:
                    try:
                        # the median write: one slowed by another process must not end the run early
                        save_seconds = statistics.median(writes) if writes else 0.0
                        end = budget.next_end(step, iterations, save_seconds, recipe.checkpoint_every, saving)
                    except BudgetTooShort:
                        history.flush()
                        undo()
                        raise
                    if end is not None:
                        total_steps = end
                        seconds = budget.step_seconds(iterations)
                        plan = f"training to step {end}" if end > step else f"no time for another step: ending at {end}"
                        log(f"time budget {budget.text}: {seconds:.2f} s a step, {plan}")
                        recipe = _stretch(recipe, total_steps, schedule_steps, stretch, bar)
                        record_run(model_dir, Path(pipeline), recipe, resolved_text(Path(pipeline), recipe))
                        # the re-plan and its record are part of the iteration (the summary's slowest step)
                        spent = time.perf_counter() - iteration_began - (writes[-1] if saving else 0.0)
                        iterations[-done:] = [spent / done] * done
            if last_saved < total_steps == int(global_step.numpy()):
                writes.append(save(total_steps))  # a time budget that ran out at a step between checkpoints
    if budget:
        log(budget.summary(total_steps - start, iterations, writes))
    steady = rates[1:] or rates
    return TrainResult(
        step=int(global_step.numpy()),
        losses=losses,
        checkpoint=manager.latest_checkpoint,
        steps_per_second=sorted(steady)[len(steady) // 2],
        frozen=len(frozen),
        trainable=len(variables),
        history=history.rows,
    )


@contextlib.contextmanager
def _kept_on_interrupt(
    model_dir: Path, save_dir: Path, resumed_from: str | None, undo: Undo, budget: Budget | None
) -> Iterator[None]:
    """A Ctrl-C ends the run with what its checkpoints hold (README: it loses only the steps since the last one).
    A new run that saved nothing past its starting point, or whose time budget has not planned its steps yet
    (--resume goes on with planned steps only), is taken back whole, so the same command starts it again;
    otherwise `Interrupted` names the checkpoint that --resume goes on from."""
    try:
        yield
    except BaseException as error:
        if not caused_by_interrupt(error):
            raise
        latest = tf.train.latest_checkpoint(str(save_dir))
        unplanned = budget is not None and budget.end is None
        if resumed_from is None and (latest is None or latest.endswith("-0") or unplanned):
            undo()
            raise KeyboardInterrupt from error
        raise Interrupted(
            f"{model_dir} keeps {Path(latest or resumed_from).name}, its latest checkpoint (the steps after it are "
            f"lost); to go on: tfod-wrap train --pipeline {model_dir / 'pipeline.config'} --model-dir {model_dir} "
            "--resume"
        ) from None


def _call_steps(recipe: TrainRecipe, step: int, start: int, total_steps: int, last_saved: int, budget) -> int:
    """Steps for the next call of the compiled step: recipe.steps_per_call, but one for the run's first call
    (its time is tracing, which the budget's warm-up leaves out) and until a time budget has made its plan (the
    warm-up times single steps), and never past the next checkpoint or the end, so that both fall between calls."""
    if step == start or (budget is not None and budget.end is None):
        return 1
    return max(1, min(recipe.steps_per_call, total_steps - step, last_saved + recipe.checkpoint_every - step))


def _budget(recipe: TrainRecipe, resume: bool, changes: dict[str, Any]) -> Budget | None:
    if recipe.time_budget is None:
        if recipe.fixed_recipe:
            raise TrainError("--fixed-recipe goes with --time-budget (without a budget, nothing adapts)")
        return None
    if resume:
        raise TrainError("--time-budget plans a new run; --resume continues the steps its run planned")
    clashing = [f"--{name.replace('_', '-')}" for name in ("num_steps", "steps") if getattr(recipe, name) is not None]
    if clashing:
        raise TrainError(f"--time-budget sets the number of steps; drop {' and '.join(clashing)}")
    return Budget(recipe.time_budget)


def _runtime(recipe: TrainRecipe, log) -> None:
    """The process-wide TensorFlow settings of the recipe: the inter-op thread pool (fixed once TensorFlow has
    started its runtime: a later run in the same process keeps the first one's) and oneDNN's bfloat16 rewrite."""
    if recipe.inter_op_threads and tf.config.threading.get_inter_op_parallelism_threads() != recipe.inter_op_threads:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(recipe.inter_op_threads)
        except RuntimeError:
            log(f"inter_op_threads {recipe.inter_op_threads}: TensorFlow is already running in this process; unchanged")
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": recipe.bfloat16})


def _seed(seed: int, log) -> None:
    """Seed Python, NumPy and TensorFlow (for this process). TensorFlow's op determinism is not turned on: TFOD's
    random crop calls sample_distorted_bounding_box without a seed of its own, which determinism refuses. The
    model's CPU kernels give the same results run to run as they are; the input pipeline is what varies (its
    parallel map draws random numbers in whatever order its threads run), hence `_input_options`."""
    from tfod_wrap.compat.hooks import seed_tfod_input_pipeline

    seed_tfod_input_pipeline()
    tf.keras.utils.set_random_seed(seed)
    log(f"seed {seed}: Python, NumPy and TensorFlow seeded; the input pipeline runs on one thread")


def _input_options(seed: int | None) -> tf.data.Options:
    """A seeded run decodes and augments on one thread, in order: each random op then draws its numbers for the
    same images in the same order every run (with more threads, whichever image's map runs first draws first)."""
    options = tf.data.Options()
    if seed is not None:
        options.deterministic = True
        options.threading.private_threadpool_size = 1
    return options


def _has_fine_tune(train_config) -> bool:
    return fine_tune_checkpoint(train_config) is not None


def _stretch(recipe: TrainRecipe, total_steps: int, schedule_steps: int, stretch, bar) -> TrainRecipe:
    """Point the schedule at `total_steps` and record it in the recipe: the run folder's recipe.json then holds
    the steps that were trained, and repeating or resuming the run needs no budget."""
    if schedule_steps:
        stretch.assign(schedule_steps / total_steps)
    bar.total = total_steps
    bar.refresh()
    return recipe.replace(time_budget=None, fixed_recipe=False, num_steps=total_steps)


def _remove_partial_saves(save_dir: Path) -> None:
    """Delete the `ckpt-N_temp/` folders of saves that a kill interrupted. TF writes a save there and merges it
    into ckpt-N.index/.data before the `checkpoint` file names it, so such a folder is never a checkpoint; but a
    later save of the same number does not clear what the killed one wrote, and the partial shards (as large as
    the checkpoint) would stay. Only this run writes into `save_dir` (a second one refuses without --resume)."""
    for folder in save_dir.glob("ckpt-*_temp"):
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def _check_schedule(pipeline_proto, pipeline, total_steps: int | None, log) -> None:
    """Refuse learning rates that cannot train; warn when the run outlasts its schedule (rate 0 after the end)."""
    from tfod_wrap.core.pipeline import ConfigError, check_learning_rates, schedule_end

    try:
        check_learning_rates(pipeline_proto)
    except ConfigError as error:
        raise TrainError(f"{pipeline}: {error}") from None
    end = schedule_end(pipeline_proto)
    if end is not None and total_steps is not None and total_steps > end:
        log(
            f"warning: training to step {total_steps} runs past the end of its learning-rate schedule (cosine decay, "
            f"total_steps {end}): steps {end + 1}..{total_steps} train at rate 0. Stretch the schedule with "
            f"`tfod-wrap config {pipeline} --steps {total_steps} --output FILE`"
        )


def _restore_run(checkpoint, latest: str, pipeline):
    """Restore the run's own checkpoint for --resume; one that does not fit this pipeline's model (another
    num_classes, another architecture) or cannot be read (truncated, files missing) is a TrainError."""
    try:
        return checkpoint.restore(latest).expect_partial()
    except ValueError as error:
        reason = str(error).strip().splitlines()[0]
        raise TrainError(
            f"--resume: {latest} does not fit the model of {pipeline} ({reason}); was it trained with another "
            "pipeline (e.g. another num_classes)? Resume with that pipeline, or train into a new --model-dir"
        ) from None
    except (tf.errors.OpError, IndexError) as error:  # IndexError: the checkpoint reader on a truncated file
        reason = (error.message if isinstance(error, tf.errors.OpError) else str(error)).strip().splitlines()[0]
        raise TrainError(f"--resume: cannot restore {latest}: {reason}") from None


def check_input_files(reader, workers: int) -> None:
    """TFOD shards the training input by file across workers: a worker without a file gets no data
    and the whole cluster stops at its first step. Say so before anything starts."""
    patterns = list(reader.tf_record_input_reader.input_path)
    files = [name for pattern in patterns for name in tf.io.gfile.glob(pattern)]
    if not files:
        raise TrainError(f"no training records match {', '.join(patterns)}")
    if len(files) < workers:
        raise TrainError(
            f"{len(files)} training record file(s) for {workers} workers: the TFOD input is split by file, so "
            f"a worker would get no data. Write the records with `tfod-wrap tfrecords --shards {workers}` (or more)."
        )


def _load_fine_tune_checkpoint(model, train_config, model_dir: Path, log) -> set[str]:
    """Restore the config's fine_tune_checkpoint the way model_lib_v2 does (restore_from_objects); returns
    the names of the variables it restored."""
    from object_detection.utils import variables_helper

    path = fine_tune_checkpoint(train_config)
    if not path:
        log(
            "no fine_tune_checkpoint set: training from random initialisation "
            "(tfod-wrap config --checkpoint PREFIX to fine-tune)"
        )
        return set()
    if not tf.io.gfile.exists(f"{path}.index"):
        raise TrainError(f"fine_tune_checkpoint {path} does not exist (expected {path}.index)")
    kind = train_config.fine_tune_checkpoint_type or "detection"
    variables_helper.ensure_checkpoint_supported(path, kind, str(model_dir))
    restore_map = model.restore_from_objects(fine_tune_checkpoint_type=kind)
    status = tf.train.Checkpoint(**restore_map).restore(path).expect_partial().assert_existing_objects_matched()
    from tfod_wrap.core.weights import checkpoint_origin

    log(f"restored {kind} checkpoint {path} ({checkpoint_origin(path)})")
    return _restored(model, status)


def _restored(model, status) -> set[str]:
    """Names of the model's variables that a checkpoint restore gave a value. TensorFlow keeps the objects it
    matched to the checkpoint's object graph; every variable among them was assigned the stored value."""
    matched = {id(item) for item in status._checkpoint.object_by_proto_id.values()}  # noqa: SLF001
    return {variable.name for variable in model.variables if id(variable) in matched}


def _fine_tune_source(train_config) -> str:
    """Why variables that no restore covered are random, for the refusal message."""
    path = fine_tune_checkpoint(train_config)
    if not path:
        return "no fine_tune_checkpoint is set"
    kind = train_config.fine_tune_checkpoint_type or "detection"
    return f"the {kind} fine_tune_checkpoint {path} does not restore them"


def _check_frozen_restored(infos, frozen: set[str], restored: set[str], source: str, allowed: bool, log) -> None:
    """Refuse to freeze random weights (frozen, they stay random for the whole run) unless allowed."""
    random = [info for info in infos if info.name in frozen and info.name not in restored]
    if not random:
        return
    counts: dict[str, int] = {}
    for info in random:
        counts[info.part] = counts.get(info.part, 0) + 1
    parts = " and ".join(f"the {part}'s {count} variable{'s' if count > 1 else ''}" for part, count in counts.items())
    verb = "were" if len(random) > 1 else "was"
    if allowed:
        log(f"freezing random weights, as --allow-random-frozen allows: {parts} {verb} not restored ({source})")
        return
    raise TrainError(
        f"refusing to freeze random weights: {parts} {verb} not restored from any checkpoint ({source}). Start "
        "from pretrained weights (tfod-wrap config --checkpoint PREFIX), freeze less, or pass --allow-random-frozen"
    )


def _restore_box_head(model, path: str | None, log) -> set[str]:
    """Restore an SSD's box-regression head (its layers per feature map) from the fine-tune checkpoint. The box
    encodings are class-agnostic, so they carry over whenever the anchors per location and the feature depths
    are the same; a different shape fails the restore with both shapes named."""
    heads = getattr(getattr(model, "_box_predictor", None), "_prediction_heads", None)
    if not path or not heads or "box_encodings" not in heads:
        raise TrainError(
            "--keep-box-head needs an SSD with a convolutional box predictor and a fine_tune_checkpoint to restore from"
        )
    head = tf.train.Checkpoint(box_encodings=heads["box_encodings"])
    view = tf.train.Checkpoint(model=tf.train.Checkpoint(_box_predictor=tf.train.Checkpoint(_prediction_heads=head)))
    try:
        status = view.restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise TrainError(f"--keep-box-head: {path} has no box head that fits this model ({error})") from None
    log(f"restored the box-regression head from {path}")
    return _restored(model, status)


def _not_applied_message(loss: float, step: int, manager) -> str:
    kept = manager.latest_checkpoint or "none yet"
    what = f"the loss became {loss}" if not math.isfinite(loss) else f"the gradients are not finite (loss {loss})"
    return (
        f"{what} at step {step}; the step was not applied and nothing was saved. The last good checkpoint ({kept}) "
        "is kept. Lower the learning rate or check the data (tfod-wrap inspect)."
    )


def _check_finite(model, optimizer, step: int, manager, history) -> None:
    """Refuse to save a checkpoint holding NaN or inf. The loss and gradients can stay finite while batch-norm
    moving variances overflow to inf (the normalised output hides it), and --resume from such a checkpoint
    diverges at once; so every variable is checked, not only the loss."""
    slots = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    bad = [
        variable.name
        for variable in [*model.variables, *slots]
        if variable.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(variable)))
    ]
    if not bad:
        return
    history.flush()
    kept = manager.latest_checkpoint or "none yet"
    raise TrainError(
        f"after step {step}, {len(bad)} variable(s) are not finite ({', '.join(bad[:3])}"
        f"{', ...' if len(bad) > 3 else ''}); nothing was saved. The last good checkpoint ({kept}) is kept. Lower "
        "the learning rate or check the data (tfod-wrap inspect)."
    )


def _make_step(
    model,
    optimizer,
    variables,
    steps,
    train_config,
    strategy,
    learning_rate,
    *,
    jit_compile: bool = False,
    xla_loss: bool = False,
    steps_per_call: int = 1,
):
    """The compiled training call: `step(iterator, count)` runs up to `count` distributed steps, each TFOD's loss
    computation, gradients for the trainable variables only, applied only when the loss and every gradient are
    finite. It stops after the first step that was not applied and returns each step's losses and learning rate
    (read after the step, as TFOD logs it), the number of steps run and whether the last one was applied. `steps`:
    the global step, the schedule's step and the stretch between them. `jit_compile`: the forward and backward
    pass are compiled with XLA (the input, the summary and the update are not: XLA compiles neither iterators
    nor summaries)."""
    from object_detection import model_lib, model_lib_v2
    from object_detection.core import standard_fields as fields

    global_step, schedule_step, stretch = steps
    clip = train_config.gradient_clipping_by_norm
    unpad = train_config.unpad_groundtruth_tensors
    add_regularization = train_config.add_regularization_loss
    replicas = strategy.num_replicas_in_sync

    connected: list[int] = []  # indices of the variables that get a gradient, found when the step is traced
    # The optimizer's slots, made now rather than by the first apply_gradients: a tf.function whose first trace
    # creates variables is traced a second time, and tracing TFOD's step is seconds of Python. apply_gradients made
    # them only for the variables that get a gradient; in every template each trainable variable does (the same
    # slots as before in each, checked), and a slot for one that did not would stay zero.
    optimizer._create_all_weights(variables)  # noqa: SLF001

    def gradients_of(features, labels):
        model._is_training = True  # noqa: SLF001 (as model_lib_v2.eager_train_step does)
        tf.keras.backend.set_learning_phase(True)
        unstacked = model_lib.unstack_batch(labels, unpad_groundtruth_tensors=unpad)
        with tf.GradientTape() as tape:
            losses, _ = model_lib_v2._compute_losses_and_predictions_dicts(  # noqa: SLF001
                model, features, unstacked, training_step=global_step, add_regularization_loss=add_regularization
            )
            losses = model_lib_v2.normalize_dict(losses, replicas)
        gradients = tape.gradient(losses["Loss/total_loss"], variables)
        if clip > 0:
            gradients, _ = tf.clip_by_global_norm(gradients, clip)
        connected[:] = [index for index, gradient in enumerate(gradients) if gradient is not None]
        gradients = [gradients[index] for index in connected]
        finite = [tf.reduce_all(tf.math.is_finite(gradient)) for gradient in gradients]
        finite.append(tf.math.is_finite(losses["Loss/total_loss"]))
        return losses, gradients, tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.float32)

    compiled = tf.function(gradients_of, jit_compile=True) if jit_compile else gradients_of
    if xla_loss and not jit_compile:
        # The loss half of the step (anchor matching, target assignment, the losses) is thousands of small ops
        # that XLA fuses; the network's convolutions stay on oneDNN, which XLA's CPU backend is far slower at.
        model.loss = _compiled_loss(model)

    def compute(features, labels):
        with tf.summary.record_if(tf.equal(global_step, 0)):
            _batch_image_summary(features[fields.InputDataFields.image], labels, global_step)
        return compiled(features, labels)

    def follow(step):
        schedule_step.assign(tf.cast(tf.floor(tf.cast(step, tf.float64) * stretch), tf.int64))

    def apply(gradients):
        follow(global_step)  # `stretch` may have changed since the last step
        optimizer.apply_gradients(zip(gradients, [variables[index] for index in connected]))
        follow(global_step.assign_add(1))  # so the rate read after the step is the next one's, as TFOD logs it

    def apply_all(gradients):
        strategy.run(apply, args=(gradients,))
        return tf.constant(True)

    def one_step(iterator):
        features, labels = next(iterator)
        per_replica, gradients, bad = strategy.run(compute, args=(features, labels))
        bad = strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None)
        # The cond is in cross-replica context: a branch that merge_calls (apply_gradients does) must not be
        # inside a replica function (the pattern of Keras' LossScaleOptimizer).
        applied = tf.cond(tf.equal(bad, 0.0), lambda: apply_all(gradients), lambda: tf.constant(False))
        losses = model_lib_v2.reduce_dict(strategy, per_replica, tf.distribute.ReduceOp.SUM)
        with tf.control_dependencies([applied]):
            rate = learning_rate() if callable(learning_rate) else tf.constant(learning_rate)
        losses = {key: tf.cast(value, tf.float32) for key, value in losses.items()}
        return losses | {"learning_rate": tf.cast(rate, tf.float32)}, applied

    # Without AutoGraph: the step's Python holds no control flow on tensors (the loop and conds are explicit), so
    # converting its source would change nothing in the graph and only add to each trace.
    if steps_per_call == 1:

        @tf.function(autograph=False)
        def single(iterator, count):
            # no loop in the graph: a while loop around the step makes each step slower (docs/BENCHMARKS.md)
            losses, applied = one_step(iterator)
            return {key: value[None] for key, value in losses.items()}, tf.constant(1), applied

        return single

    @tf.function(autograph=False)
    def step(iterator, count):
        # The first step outside the loop: it gives the losses' names for the arrays that collect them.
        first, applied = one_step(iterator)
        keys = sorted(first)
        arrays = [tf.TensorArray(tf.float32, size=count).write(0, first[key]) for key in keys]

        def more(done, applied, *arrays):
            return tf.logical_and(applied, done < count)

        def body(done, applied, *arrays):
            losses, applied = one_step(iterator)
            return (done + 1, applied, *[array.write(done, losses[key]) for array, key in zip(arrays, keys)])

        done, applied, *arrays = tf.while_loop(more, body, (tf.constant(1), applied, *arrays))
        return {key: array.gather(tf.range(done)) for key, array in zip(keys, arrays)}, done, applied

    return step


def _compiled_loss(model):
    """The model's `loss` compiled with XLA. TFOD's loss reads the groundtruth and an SSD's anchors from the model
    (set by provide_groundtruth and predict); a compiled function would keep the tensors of its first trace, so
    they are passed in and set on the model for the call."""
    from object_detection.core import box_list

    original = model.loss

    def loss_of(prediction_dict, true_image_shapes, groundtruth):
        kept = model._groundtruth_lists, getattr(model, "_anchors", None)  # noqa: SLF001
        model._groundtruth_lists = groundtruth  # noqa: SLF001
        if "anchors" in prediction_dict and hasattr(model, "_anchors"):
            model._anchors = box_list.BoxList(prediction_dict["anchors"])  # noqa: SLF001
        try:
            return original(prediction_dict, true_image_shapes)
        finally:
            model._groundtruth_lists, model._anchors = kept  # noqa: SLF001

    compiled = tf.function(loss_of, jit_compile=True)

    def loss(prediction_dict, true_image_shapes, **_keywords):
        return compiled(prediction_dict, true_image_shapes, dict(model._groundtruth_lists))  # noqa: SLF001

    return loss


def _batch_image_summary(images, labels, global_step) -> None:
    """The first training batch as the model sees it (after augmentation), with its boxes."""
    from object_detection.core import standard_fields as fields

    boxes = labels[fields.InputDataFields.groundtruth_boxes]

    def draw():
        shown = tf.cast(images[:3], tf.float32)
        low = tf.reduce_min(shown, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(shown, axis=[1, 2, 3], keepdims=True)
        scaled = (shown - low) / tf.maximum(high - low, 1e-6)
        return tf.image.draw_bounding_boxes(scaled, boxes[:3], colors=tf.constant([[1.0, 0.2, 0.2, 1.0]]))

    def nothing():
        return tf.zeros_like(images[:0], dtype=tf.float32)

    # The summary records only at step 0 (record_if), but outside a cond the drawing ran at every step (4-6 ms of op
    # time, beside the network on the other inter-op thread).
    drawn = tf.cond(tf.equal(global_step, 0), draw, nothing)
    tf.summary.image("train_input_images_with_boxes", drawn, step=global_step, max_outputs=3)


def _postfix(losses: dict[str, float], rates: list[float]) -> dict[str, str]:
    short = {key.split("/")[-1].replace("_loss", ""): value for key, value in losses.items()}
    postfix = {name: f"{value:.3f}" for name, value in short.items() if name not in ("learning_rate",)}
    postfix["lr"] = f"{losses['learning_rate']:.2e}"
    postfix["steps/s"] = f"{rates[-1]:.2f}"
    return postfix


class _History:
    """train_history.csv: one row per step, kept across --resume (rows past the restored step are
    dropped, since those steps are trained again)."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        self.rows: list[dict] = []
        if path.is_file():
            with open(path, newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= start_step]
        self.offset = float(self.rows[-1]["seconds"]) if self.rows else 0.0
        self.started = time.perf_counter()

    def add(self, step: int, losses: dict[str, float], rate: float) -> None:
        seconds = self.offset + time.perf_counter() - self.started
        self.rows.append({"step": step, "seconds": round(seconds, 3), **losses, "steps_per_sec": rate})

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def plot(self, output: Path) -> None:
        from tfod_wrap.train.curves import loss_curve

        loss_curve(self.rows, output)
