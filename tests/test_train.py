"""Training on tiny records: freezing holds bit for bit, resume after kill -9, NaN stop, two workers."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import checkpoint_values, pythons_own_ctrl_c, tiny_voc

from tfod_wrap import cli, config, train
from tfod_wrap.core.checkpoints import find_checkpoints
from tfod_wrap.core.model import ensure_built
from tfod_wrap.data import convert
from tfod_wrap.train import loop
from tfod_wrap.train.loop import _make_step as make_step
from tfod_wrap.train.loop import check_input_files

CLI = str(Path(sys.executable).parent / "tfod-wrap")
LEARNING_RATE = "train_config.optimizer.momentum_optimizer.learning_rate"
SIZE = 160  # input size: small enough for CPU tests, large enough for the SSD feature maps


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    voc = tiny_voc(root / "voc", 8)
    convert(voc, root / "records", workers=1)
    return root / "records"


def make_pipeline(records: Path, path: Path, *overrides: str, steps: int = 3) -> Path:
    config.configure(
        "ssd_mobilenet_v2",
        path,
        data=records,
        checkpoint="none",
        batch_size=2,
        steps=steps,
        overrides=[
            f"model.image_resizer.fixed_shape_resizer.height={SIZE}",
            f"model.image_resizer.fixed_shape_resizer.width={SIZE}",
            *overrides,
        ],
        check=False,
    )
    return path


def fresh_names() -> None:
    """Keras numbers layer names per process (`..._1` for a second model); compare names across
    models only after resetting that counter."""
    tf.keras.backend.clear_session()


def listed(pipeline: Path, *freeze: str):
    fresh_names()
    return train.list_variables(pipeline, list(freeze))


def variables_at(pipeline: Path, checkpoint: str) -> dict[str, np.ndarray]:
    """Every model variable (trainable or not) restored from a checkpoint, by variable name."""
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    fresh_names()
    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    model = model_builder.build(configs["model"], is_training=True)
    ensure_built(model, config_util.create_pipeline_proto_from_configs(configs))
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return {variable.name: variable.numpy() for variable in model.variables}


def slot_count(checkpoint: str) -> int:
    return sum(".OPTIMIZER_SLOT" in name for name, _ in tf.train.list_variables(checkpoint))


@pytest.fixture(scope="module")
def frozen_run(records, tmp_path_factory):
    root = tmp_path_factory.mktemp("frozen")
    # Focal loss gives far-from-any-box anchors gradients of about 1e-6; at the batch-scaled rate
    # (3e-4) their updates fall below float32 resolution, so the test trains at a larger rate.
    pipeline = make_pipeline(
        records, root / "pipeline.config", f"{LEARNING_RATE}={{constant_learning_rate {{ learning_rate: 0.05 }}}}"
    )
    # Random weights (no checkpoint): only the freezing itself is tested here, so the refusal is waived.
    result = train.train(
        pipeline, root / "model", freeze=["backbone"], steps=3, allow_random_frozen=True, log=lambda *_: None
    )
    infos, frozen = listed(pipeline, "backbone")
    before = variables_at(pipeline, str(root / "model" / "ckpt-0"))
    after = variables_at(pipeline, result.checkpoint)
    return result, infos, frozen, before, after


def test_frozen_variables_bit_identical_trainable_ones_change(frozen_run):
    result, infos, frozen, before, after = frozen_run
    assert result.step == 3 and result.checkpoint.endswith("ckpt-3")
    assert frozen and len(frozen) == result.frozen
    trainable = [info.name for info in infos if info.name not in frozen]
    assert all(np.array_equal(before[name], after[name]) for name in frozen)
    changed = {name for name in trainable if not np.array_equal(before[name], after[name])}
    # Most trained variables move in 3 steps; a few may not (anchors that matched no box, ReLU6 units
    # saturated on tiny images). Frozen ones cannot: test_config_file_freezing_is_honoured shows the
    # backbone does move when it is not frozen.
    assert len(changed) > 0.6 * len(trainable), sorted(set(trainable) - changed)
    # Optimizer slots (momentum) exist for the trained variables only.
    assert slot_count(result.checkpoint) == len(trainable)


def test_frozen_batch_norm_keeps_its_statistics(frozen_run):
    _, infos, frozen, before, after = frozen_run
    moving = [name for name in before if "moving_mean" in name]
    backbone_layers = {info.name.rsplit("/", 1)[0] for info in infos if info.name in frozen}
    frozen_stats = [name for name in moving if name.rsplit("/", 1)[0] in backbone_layers]
    other_stats = [name for name in moving if name not in frozen_stats]
    assert frozen_stats and other_stats
    assert all(np.array_equal(before[name], after[name]) for name in frozen_stats)
    assert any(not np.array_equal(before[name], after[name]) for name in other_stats)


def test_config_file_freezing_is_honoured(records, tmp_path):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", "train_config.freeze_variables=[BoxPredictor]")
    result = train.train(pipeline, tmp_path / "model", steps=2, allow_random_frozen=True, log=lambda *_: None)
    _, frozen = listed(pipeline)
    assert frozen and all("BoxPredictor" in name for name in frozen)
    before = variables_at(pipeline, str(tmp_path / "model" / "ckpt-0"))
    after = variables_at(pipeline, result.checkpoint)
    assert all(np.array_equal(before[name], after[name]) for name in frozen)
    backbone = [name for name in before if name.startswith(("Conv1/", "block_"))]
    assert any(not np.array_equal(before[name], after[name]) for name in backbone)


def test_outputs_and_refusal_to_train_over_checkpoints(frozen_run, records, tmp_path):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=2)
    model_dir = tmp_path / "model"
    train.train(pipeline, model_dir, log=lambda *_: None)
    rows = (model_dir / "train_history.csv").read_text().splitlines()
    assert rows[0].startswith("step,seconds,Loss/") and len(rows) == 3
    assert (model_dir / "loss_curve.png").stat().st_size > 1000
    (event_file,) = (model_dir / "train").glob("events.out.tfevents.*")
    events = tf.compat.v1.train.summary_iterator(str(event_file))
    values = [(event.step, value) for event in events for value in event.summary.value]
    assert {"Loss/total_loss", "learning_rate", "steps_per_sec"} <= {value.tag for _, value in values}
    # the first batch as the model saw it, with its boxes drawn in red, once (step 0), not at every step
    ((step, batch),) = [(step, value) for step, value in values if value.tag == "train_input_images_with_boxes"]
    pictures = [tf.io.decode_png(png).numpy() for png in tf.make_ndarray(batch.tensor)[2:]]
    assert step == 0 and [picture.shape for picture in pictures] == [(SIZE, SIZE, 3)] * 2
    assert all(((picture == (255, 51, 51)).all(axis=-1)).sum() > SIZE for picture in pictures)
    # left at 1, an export later in this process would save learning-phase batch norms in training mode
    assert tf.keras.backend.learning_phase() == 0
    with pytest.raises(train.TrainError, match="already holds checkpoints"):
        train.train(pipeline, model_dir, log=lambda *_: None)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(records, tmp_path):
    pipeline = make_pipeline(
        records,
        tmp_path / "pipeline.config",
        f"{LEARNING_RATE}={{constant_learning_rate {{ learning_rate: 1e30 }}}}",
        steps=6,
    )
    with pytest.raises(train.TrainError, match=r"the loss became (nan|inf).*last good checkpoint"):
        train.train(pipeline, tmp_path / "model", checkpoint_every=1, log=lambda *_: None)
    latest = tf.train.latest_checkpoint(str(tmp_path / "model"))
    values = variables_at(pipeline, latest)
    assert all(np.all(np.isfinite(value)) for value in values.values())


def latest_step(model_dir: Path) -> int:
    latest = tf.train.latest_checkpoint(str(model_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else -1


@pytest.mark.long
def test_resume_after_sigkill_continues_the_step_count(records, tmp_path, capsys):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=400)
    model_dir = tmp_path / "model"
    command = [CLI, "train", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--checkpoint-every", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    # the `checkpoint` file names a save once it is whole (ckpt-4.index alone appears before that: a kill between
    # the two leaves ckpt-2 as the latest, as it should)
    while time.time() < deadline and latest_step(model_dir) < 4:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_step(model_dir)
    assert killed_at >= 4
    code = cli.main([*command[1:], "--resume", "--steps", str(killed_at + 3)])  # the rerun needs no process
    resumed = capsys.readouterr()
    assert code == 0, resumed.err
    assert f"step {killed_at + 3}:" in resumed.out
    steps = [int(line.split(",")[0]) for line in (model_dir / "train_history.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == killed_at + 3 and len(steps) == len(set(steps))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.long
def test_two_workers_train_in_lockstep(records, tmp_path):
    # TFOD splits the input by file across workers: one file each at least.
    sharded = tmp_path / "records"
    convert(records.parent / "voc", sharded, shards=2, workers=1)
    pipeline = make_pipeline(sharded, tmp_path / "pipeline.config", steps=3)
    one_file = config.load(make_pipeline(records, tmp_path / "one.config")).train_input_reader
    with pytest.raises(train.TrainError, match="--shards 2"):
        check_input_files(one_file, workers=2)
    check_input_files(config.load(pipeline).train_input_reader, workers=2)
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes = []
    for index in range(2):
        environment = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        )
        command = [
            CLI,
            "train",
            "--pipeline",
            str(pipeline),
            "--model-dir",
            str(tmp_path / "model"),
            "--strategy",
            "multi_worker",
        ]
        processes.append(
            subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [process.communicate(timeout=400) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    chief = variables_at(pipeline, str(tmp_path / "model" / "ckpt-3"))
    worker = variables_at(pipeline, str(tmp_path / "model" / "worker-1" / "ckpt-3"))
    start = variables_at(pipeline, str(tmp_path / "model" / "ckpt-0"))
    trainable = [name for name in chief if "moving_" not in name]
    assert all(np.array_equal(chief[name], worker[name]) for name in trainable)
    assert any(not np.array_equal(chief[name], start[name]) for name in trainable)


def test_variables_cli_lists_parts_and_totals(records, tmp_path, capsys):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config")
    code = cli.main(["variables", "--pipeline", str(pipeline), "--freeze", "backbone:4"])
    result = capsys.readouterr()
    assert code == 0, result.err
    lines = result.out.splitlines()
    assert any(line.startswith("Conv1/kernel:0") and "backbone" in line and "frozen" in line for line in lines)
    assert any(line.startswith("block_5_expand/kernel:0") and "trainable" in line for line in lines)
    assert any(line.startswith("total") for line in lines)
    code = cli.main(["variables", "--pipeline", str(pipeline), "--freeze", "FeatureExtractor"])
    typo = capsys.readouterr().err
    assert code == 2 and "backbone" in typo and "Traceback" not in typo


def non_finite_variables(checkpoint: str) -> list[str]:
    """Every float tensor of a checkpoint (model, batch-norm statistics, optimizer slots) that holds NaN or inf."""
    values = {
        name: np.asarray(tf.train.load_variable(checkpoint, name)) for name, _ in tf.train.list_variables(checkpoint)
    }
    return [name for name, value in values.items() if value.dtype.kind == "f" and not np.all(np.isfinite(value))]


@pytest.mark.parametrize("rate", ["1e6", "1e12"])
def test_no_checkpoint_with_non_finite_variables_is_saved_or_named_good(records, tmp_path, rate):
    # At these rates the loss stays finite for a step or more while batch-norm moving variances overflow
    # to inf (the normalised output, and so the loss, stays finite): a loss check alone saved such
    # checkpoints (at 1e6 the run even finished "successfully"), and --resume diverged from them.
    pipeline = make_pipeline(
        records,
        tmp_path / "pipeline.config",
        f"{LEARNING_RATE}={{constant_learning_rate {{ learning_rate: {rate} }}}}",
        steps=6,
    )
    with pytest.raises(train.TrainError, match=r"not finite|the loss became (nan|inf)") as error:
        train.train(pipeline, tmp_path / "model", checkpoint_every=1, log=lambda *_: None)
    latest = tf.train.latest_checkpoint(str(tmp_path / "model"))
    assert f"last good checkpoint ({latest})" in str(error.value)
    for index in tf.train.get_checkpoint_state(str(tmp_path / "model")).all_model_checkpoint_paths:
        assert non_finite_variables(index) == [], index


def test_cli_refuses_to_freeze_what_no_checkpoint_restored(records, tmp_path, capsys):
    """Frozen random weights stay random: `train` names the part, in one line, and leaves no run folder."""
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=1)
    model_dir = tmp_path / "model"
    code = cli.main(["train", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--freeze", "backbone"])
    refused = capsys.readouterr().err
    assert code == 2, refused
    assert re.search(
        r"the backbone's \d+ variables were not restored from any checkpoint \(no fine_tune_checkpoint is set\)",
        refused,
    ), refused
    assert "--allow-random-frozen" in refused and "Traceback" not in refused
    assert len(refused.strip().splitlines()) == 1 and not model_dir.exists()


def test_a_checkpoint_covers_only_what_it_restored_and_resume_covers_all(frozen_run, records, tmp_path):
    # A detection fine-tune checkpoint restores the feature extractor (backbone and SSD extra layers), not the heads.
    result = frozen_run[0]
    pipeline = make_pipeline(
        records,
        tmp_path / "pipeline.config",
        f"train_config.fine_tune_checkpoint={result.checkpoint}",
        "train_config.fine_tune_checkpoint_type=detection",
        steps=1,
    )
    freeze = ["backbone", "box_head"]
    with pytest.raises(train.TrainError, match=r"refusing to freeze random weights: the box_head's \d+ variables were"):
        train.train(pipeline, tmp_path / "refused", freeze=freeze, log=lambda *_: None)
    assert not (tmp_path / "refused").exists()
    lines: list[str] = []
    opted = train.train(pipeline, tmp_path / "model", freeze=freeze, allow_random_frozen=True, log=lines.append)
    assert opted.step == 1
    notices = [line for line in lines if "allow-random-frozen" in line]
    assert len(notices) == 1 and "the box_head's" in notices[0] and "backbone" not in notices[0]
    # On resume the run's own checkpoint restored every variable, the random-start box head included.
    resumed = train.train(pipeline, tmp_path / "model", freeze=freeze, resume=True, steps=2, log=lambda *_: None)
    assert resumed.step == 2


def test_train_cli_with_a_recipe_file_an_override_and_resume(records, tmp_path, capsys):
    """A run through `tfod-wrap train --recipe FILE` with one option over it: the run folder gets the edited
    pipeline and the recipe it trained with, the rates are the recipe's, and --resume reads the saved recipe."""
    from tfod_wrap import cli
    from tfod_wrap.core.recipe import TrainRecipe

    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=50)
    cosine_path = f"{LEARNING_RATE}.cosine_decay_learning_rate"
    recipe = TrainRecipe(
        freeze=("backbone",),
        allow_random_frozen=True,
        num_steps=3,
        learning_rate=0.004,
        overrides=(f"{cosine_path}.warmup_steps=2",),
        steps=2,
        checkpoint_every=1,
    )
    recipe.save(tmp_path / "recipes")
    run = tmp_path / "run"
    argv = ["train", "--pipeline", str(pipeline), "--model-dir", str(run)]
    assert cli.main([*argv, "--recipe", str(tmp_path / "recipes" / "recipe.json"), "--warmup-rate", "0.001"]) == 0
    assert "step 2:" in capsys.readouterr().out
    expected = recipe.replace(warmup_rate=0.001)
    assert TrainRecipe.load(run / "recipe.json") == expected
    edited = config.load(run / "pipeline.config")
    cosine = edited.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (edited.train_config.num_steps, cosine.total_steps, cosine.warmup_steps) == (3, 3, 2)
    assert (cosine.learning_rate_base, cosine.warmup_learning_rate) == pytest.approx((0.004, 0.001))
    assert config.load(pipeline).train_config.num_steps == 50  # the input pipeline is left as it was
    # TFOD's cosine schedule with the recipe's numbers: halfway up the warm-up at step 1, the base rate at step 2
    assert learning_rates(run) == pytest.approx([0.0025, 0.004])
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-2")

    # --resume without --recipe trains on with the saved one (the backbone stays frozen: no optimizer slots appear
    # for it), and the saved recipe records the new --steps; the pipeline is not edited again.
    edited_text = (run / "pipeline.config").read_text()
    argv = ["train", "--pipeline", str(run / "pipeline.config"), "--model-dir", str(run), "--resume", "--steps", "3"]
    assert cli.main(argv) == 0
    assert "step 3:" in capsys.readouterr().out
    assert TrainRecipe.load(run / "recipe.json") == expected.replace(steps=3)
    assert (run / "pipeline.config").read_text() == edited_text
    assert learning_rates(run) == pytest.approx([0.0025, 0.004, 0.0])  # step 3 is the schedule's end
    assert slot_count(str(run / "ckpt-3")) == slot_count(str(run / "ckpt-2")) > 0


def read_history(model_dir: Path) -> list[dict[str, str]]:
    with open(model_dir / "train_history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def learning_rates(run: Path) -> list[float]:
    return [float(row["learning_rate"]) for row in read_history(run)]


@pytest.mark.long
def test_a_time_budget_plans_the_steps_stretches_the_schedule_and_records_its_choices(records, tmp_path):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config")
    model_dir, lines = tmp_path / "model", []
    # the budget's clock starts after train's imports (an interpreter's start is not the run's): imported here
    # first, so that a worker whose first training this is does not count them (tens of seconds under load)
    from object_detection.builders import model_builder, optimizer_builder  # noqa: F401

    began = time.perf_counter()
    result = train.train(pipeline, model_dir, time_budget="60s", checkpoint_every=20, log=lines.append)
    elapsed = time.perf_counter() - began
    log = "\n".join(lines)
    for choice in ("input size: kept at 160x160", "anchors:", "rates: base 0.0025", "freezing: nothing"):
        assert f"adaptive recipe: {choice}" in log
    assert re.search(r"time budget 60s: [\d.]+ s a step, training to step \d+", log)
    # the budget holds building, tracing and checkpoint writes. It ends the run on the iteration that shows it
    # spent: past the budget by at most one step and one write, which another xdist worker can slow 100-fold
    slowest = re.search(r"trained \d+ steps in \d+ s; slowest step ([\d.]+) s .*checkpoint write ([\d.]+) s", log)
    assert slowest, log
    assert 45 < elapsed < 60 * 1.15 + float(slowest[1]) + float(slowest[2]), log
    saved = json.loads((model_dir / "recipe.json").read_text())
    assert saved["time_budget"] is None and saved["num_steps"] == result.step > 10
    assert saved["learning_rate"] == 0.0025 and saved["freeze"] == []
    written = config.load(model_dir / "pipeline.config")
    cosine = written.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert written.train_config.num_steps == cosine.total_steps == result.step
    # the schedule spans the steps trained: warm-up, the base rate, and decay to (almost) nothing at the end
    rates = learning_rates(model_dir)
    assert len(rates) == result.step and max(rates) == pytest.approx(0.0025, rel=0.02)
    if "no time for another step" not in log:  # a machine that slowed down may end the run before the schedule
        assert rates[-1] < 0.02 * max(rates)
    # smoothly: the pipeline's own schedule is 3 steps long, stretched over all of them without a staircase
    assert len(set(rates)) > len(rates) // 2


@pytest.mark.parametrize("fixed", [False, True], ids=["adaptive", "fixed recipe"])
def test_a_budget_shorter_than_the_warm_up_leaves_no_run_folder(records, tmp_path, capsys, fixed):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config")
    argv = ["train", "--pipeline", str(pipeline), "--model-dir", str(tmp_path / "model"), "--time-budget", "2s"]
    code = cli.main(argv + ["--fixed-recipe"] * fixed)
    output = capsys.readouterr()
    assert code == 2 and "Traceback" not in output.err
    assert output.err.strip().splitlines()[-1].startswith("error: --time-budget 2s is shorter than the warm-up")
    assert not (tmp_path / "model").exists()
    # --fixed-recipe: the budget only counts the steps; nothing of the pipeline is chosen for it
    assert ("adaptive recipe:" in output.out + output.err) is not fixed


def test_a_fixed_recipe_needs_a_budget(records, tmp_path, capsys):
    pipeline = make_pipeline(records, tmp_path / "pipeline.config")
    code = cli.main(["train", "--pipeline", str(pipeline), "--model-dir", str(tmp_path / "m"), "--fixed-recipe"])
    assert code == 2 and capsys.readouterr().err.strip() == (
        "error: --fixed-recipe goes with --time-budget (without a budget, nothing adapts)"
    )


def test_the_same_seed_trains_the_same_weights(small_run, tmp_path):
    """The session's 2-step run (seed 0, made in whichever test process asked first) trained again here: the
    same weights and optimizer slots to the bit, and the same losses."""
    train.train(small_run / "pipeline.config", tmp_path / "again", seed=0, log=lambda *_: None)
    first, again = (checkpoint_values(folder / "ckpt-2") for folder in (small_run / "model", tmp_path / "again"))
    assert first.keys() == again.keys() and len(first) > 100
    assert all(np.array_equal(first[key], again[key]) for key in first)
    history = [read_history(folder) for folder in (small_run / "model", tmp_path / "again")]
    assert [row["Loss/total_loss"] for row in history[0]] == [row["Loss/total_loss"] for row in history[1]]


def test_several_steps_per_call_train_what_one_step_per_call_trains(records, tmp_path, monkeypatch):
    """N steps per compiled call is a speed setting only: with the same seed, the same weights, and every step
    in the history with its own losses and learning rate; the checkpoint falls between calls. Either way the
    step is traced once (seconds of Python each time): calls of another length and the optimizer's slots made
    at the first step do not trace it again."""
    made = []
    monkeypatch.setattr(loop, "_make_step", lambda *args, **kwargs: made.append(make_step(*args, **kwargs)) or made[-1])
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=6)
    runs, history = {}, {}
    for per_call in (1, 4):
        fresh_names()
        name = f"per-call-{per_call}"
        train.train(pipeline, tmp_path / name, seed=7, steps_per_call=per_call, checkpoint_every=5, log=lambda *_: None)
        assert made[-1].experimental_get_tracing_count() == 1
        runs[per_call] = checkpoint_values(tmp_path / name / "ckpt-5")  # after the call of 4
        history[per_call] = read_history(tmp_path / name)
        assert tf.train.latest_checkpoint(str(tmp_path / name)).endswith("ckpt-6")
        assert (tmp_path / name / "ckpt-5.index").is_file()  # calls of 1, 4, then 1 step: step 5 ends a call
    assert [row["step"] for row in history[4]] == [str(step) for step in range(1, 7)]
    rates, losses = (
        [[float(row[key]) for row in history[n]] for n in (1, 4)] for key in ("learning_rate", "Loss/total_loss")
    )
    np.testing.assert_allclose(rates[1], rates[0], rtol=1e-6)
    assert losses[1][0] == losses[0][0]  # step 1 is a call of its own in both runs: the same kernels, the same bits
    # later steps start from weights that differ by rounding (below), and SSD's hard-example mining, which picks the
    # top negatives, can turn that into a step in the loss: 0.26% at step 6 seen with oneDNN on AVX-512
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-2)
    assert len(set(history[4][index]["learning_rate"] for index in range(6))) > 1  # read after each step
    # the same training up to float rounding: the loop's body is optimised as a function of its own, and its
    # kernels may round differently (a few 1e-6 on weights of order 0.1 after 5 steps with AVX-512, up to 4e-5
    # without it); after step 6 a flip in the mining can part them by 1e-3, so the weights compared are step 5's
    for name, value in runs[1].items():
        np.testing.assert_allclose(runs[4][name], value, rtol=1e-4, atol=1e-4, err_msg=name)


def test_a_non_finite_loss_in_a_call_of_several_steps_stops_at_its_step(records, tmp_path):
    """A non-finite loss in a call of several steps ends the call at that step: the steps before it are in the
    history, the failing one is named and not applied, and nothing is saved."""
    pipeline = make_pipeline(
        records,
        tmp_path / "pipeline.config",
        f"{LEARNING_RATE}={{constant_learning_rate {{ learning_rate: 1e30 }}}}",
        steps=8,
    )
    with pytest.raises(train.TrainError, match=r"at step (\d+);") as raised:
        train.train(pipeline, tmp_path / "model", steps_per_call=8, checkpoint_every=100, log=lambda *_: None)
    failed = int(re.search(r"at step (\d+);", str(raised.value)).group(1))
    assert failed > 1  # the first step (a call of its own) trains; the rate blows up a later one
    assert [int(row["step"]) for row in read_history(tmp_path / "model")] == list(range(1, failed))
    assert tf.train.latest_checkpoint(str(tmp_path / "model")).endswith("ckpt-0")


def test_the_decoded_image_cache_serves_every_record_once_an_epoch_augmented(records, tmp_path):
    """cache_images: the records are decoded once and shuffled from memory, so each epoch holds every training
    image exactly once; the random augmentation (here a horizontal flip) still differs between epochs."""
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    from tfod_wrap.train.inputs import train_dataset

    pipeline = make_pipeline(
        records,
        tmp_path / "pipeline.config",
        "train_config.data_augmentation_options=[]",
        "train_config.data_augmentation_options[0]={random_horizontal_flip {}}",
    )
    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    fresh_names()
    model = model_builder.build(configs["model"], is_training=True)
    lines: list[str] = []
    dataset = train_dataset(
        configs["train_config"],
        configs["train_input_config"],
        configs["model"],
        model,
        None,
        cache=True,
        log=lines.append,
    )
    assert any(line.startswith("input: decoding the training records") for line in lines)
    records_count = sum(1 for _ in tf.data.TFRecordDataset(str(records / "train.record")))
    batches = iter(dataset)
    epochs = []
    for _ in range(3):
        hashes, images = [], []
        for _ in range(records_count // 2):  # batch 2
            features, _labels = next(batches)
            hashes += features["hash"].numpy().tolist()
            images += list(features["image"].numpy())
        epochs.append(dict(zip(hashes, images, strict=True)))
        assert len(set(hashes)) == records_count  # every image once
    assert epochs[0].keys() == epochs[1].keys() == epochs[2].keys()
    # each image is flipped or not afresh every epoch: all 8 the same in three epochs has odds of 4**-8
    assert any(not np.array_equal(epochs[0][key], later[key]) for later in epochs[1:] for key in epochs[0])


@contextlib.contextmanager
def ctrl_c_once(happened: Callable[[], bool]):
    """A real SIGINT to this process once `happened()` (polled from a thread), with Python's own Ctrl-C handler."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if happened():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    with pythons_own_ctrl_c():
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def test_ctrl_c_keeps_what_train_and_eval_wrote_and_says_how_to_go_on(records, tmp_path, capsys):
    """README: Ctrl-C loses only the steps since the last checkpoint. The command says which checkpoint it kept and
    the command that goes on from it (it said "nothing was written"); eval names the checkpoints it scored."""
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=400)
    run = tmp_path / "run"
    argv = ["train", "--pipeline", str(pipeline), "--model-dir", str(run), "--checkpoint-every", "2"]
    with ctrl_c_once(lambda: latest_step(run) >= 2):
        code = cli.main(argv)
    message = capsys.readouterr().err.strip().splitlines()[-1]
    kept = latest_step(run)
    assert code == 130 and kept >= 2, message
    expected = (
        f"interrupted; {run} keeps ckpt-{kept}, its latest checkpoint (the steps after it are lost); "
        f"to go on: tfod-wrap train --pipeline {run / 'pipeline.config'} --model-dir {run} --resume"
    )
    assert message == expected
    go_on = message.split("to go on: tfod-wrap ")[1].split()
    assert cli.main([*go_on, "--steps", str(kept + 1)]) == 0
    assert f"step {kept + 1}:" in capsys.readouterr().out

    scored = tmp_path / "eval"
    argv = ["eval", "--pipeline", str(pipeline), "--model-dir", str(run), "--checkpoint", "all"]
    with ctrl_c_once(lambda: (scored / "metrics.json").exists()):
        code = cli.main([*argv, "--output", str(scored)])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    kept_pattern = rf"interrupted; kept the evaluation of ckpt-0(, ckpt-\d+)* in {re.escape(str(scored))}"
    assert code == 130 and re.fullmatch(kept_pattern, message), message
    assert len(message.split(",")) < len(find_checkpoints(run, "all")), "stopped before the last checkpoint"


@pytest.mark.parametrize("budget", [False, True], ids=["before ckpt-1", "in a time budget's warm-up"])
def test_ctrl_c_before_a_new_run_can_go_on_takes_the_run_back(records, tmp_path, capsys, budget):
    """Nothing past the starting point (ckpt-0) to go on from, or a time budget that has not planned its steps yet
    (--resume refuses such a run, although it has checkpoints): the run folder is removed, so the same command
    starts the run again (it would refuse a folder with checkpoints)."""
    pipeline = make_pipeline(records, tmp_path / "pipeline.config", steps=400)
    run = tmp_path / "run"
    argv = ["train", "--pipeline", str(pipeline), "--model-dir", str(run)]
    if budget:  # the plan comes after budget.WARMUP_STEPS timed steps; checkpoints at every step before it
        argv += ["--time-budget", "60s", "--fixed-recipe", "--checkpoint-every", "1"]
    with ctrl_c_once(lambda: latest_step(run) >= 2 if budget else latest_step(run) == 0):
        assert cli.main(argv if budget else [*argv, "--steps", "2"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted; nothing was written"
    assert not run.exists()
    if not budget:  # (a budget's run takes its whole minute)
        assert cli.main([*argv, "--steps", "2"]) == 0 and latest_step(run) == 2
