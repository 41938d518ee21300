"""Fault tests of `tfod-wrap train` and `tfod-wrap export` (issue 18): SIGKILL or SIGTERM at a few points of a
real run, then the same command again (`train --resume`, `export` as it was). The rerun gives the result of an
uninterrupted run, and no process, staging folder or half-written checkpoint is left or named.

What "the same result" means for train: the TFOD input pipeline shuffles and augments without a seed the loop could
fix, and TF's CPU kernels reduce in thread order, so two uninterrupted runs already differ in their weights. What is
deterministic, and asserted: the final step, the `checkpoint` state naming only complete checkpoints that restore,
the same variables (names and shapes) as an uninterrupted run, all finite, and train_history.csv holding each step
once. Export is deterministic given the checkpoint: the rerun gives the same files, the same SavedModel variable
values and the same TF.js weights manifest and weight bytes as an uninterrupted export.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import tensorflow as tf
from conftest import tiny_voc
from test_tfrecords_faults import alive, environment, leftovers
from test_train import CLI, make_pipeline

from tfod_wrap import cli, train
from tfod_wrap.data import convert

pytestmark = pytest.mark.long  # a process per run, killed and run again: make check, not make test

STEPS = 5
WAIT_SECONDS = 300


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-faults")
    convert(tiny_voc(root / "voc", 8), root / "records", workers=1)
    return make_pipeline(root / "records", root / "pipeline.config", steps=STEPS)


def train_command(pipeline: Path, model_dir: Path) -> list[str]:
    return [CLI, "train", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--checkpoint-every", "1"]


def export_command(pipeline: Path, model_dir: Path, out: Path) -> list[str]:
    return [
        CLI,
        "export",
        "--pipeline",
        str(pipeline),
        "--model-dir",
        str(model_dir),
        "--output",
        str(out),
        "--formats",
        "saved_model,tfjs",
    ]


@pytest.fixture(scope="module")
def trained(pipeline, tmp_path_factory) -> Path:
    """One uninterrupted tiny run: the reference for train, the checkpoint every export test exports. It runs in
    this process, as does the resumed run: only the runs that are killed need a process of their own."""
    model_dir = tmp_path_factory.mktemp("reference") / "model"
    train.train(pipeline, model_dir, checkpoint_every=1, log=lambda *_: None)
    return model_dir


def run_and_kill(command: list[str], when: Callable[[], bool], signum: int, log: Path) -> tuple[int, set[int]]:
    """Start `command`, send `signum` as soon as `when()` holds; returns the exit code and every child pid seen."""
    # stderr to a file, not a pipe: an orphaned child would hold a pipe open and hide what went wrong
    with open(log, "wb") as stderr_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr_file, env=environment())
    watched = psutil.Process(process.pid)
    children: set[int] = set()
    deadline = time.monotonic() + WAIT_SECONDS
    while not when():
        assert process.poll() is None, f"the run ended before the kill point:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the kill point never came"
        children |= {child.pid for child in watched.children(recursive=True)}
        time.sleep(0.002)
    children |= {child.pid for child in watched.children(recursive=True)}
    os.kill(process.pid, signum)
    process.wait(timeout=WAIT_SECONDS)
    deadline = time.monotonic() + 10
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(children), "a child process outlived its parent"
    return process.returncode, children


def checkpoint_state(model_dir: Path) -> list[str]:
    """Every checkpoint the `checkpoint` state file names (the latest and the kept ones)."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    return [*state.all_model_checkpoint_paths] if state else []


def variables(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    # _CHECKPOINTABLE_OBJECT_GRAPH is the object graph as bytes, no variable
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if not name.startswith("_")}


def first_checkpoint(model_dir: Path) -> Callable[[], bool]:
    return lambda: (model_dir / "ckpt-1.index").exists()


def saving(model_dir: Path) -> Callable[[], bool]:
    """A save in progress: TF writes `ckpt-N_temp/` and merges it into ckpt-N.index/.data at the end."""
    return lambda: (
        (model_dir / "ckpt-1.index").exists() and any(path.name.endswith("_temp") for path in model_dir.iterdir())
    )


TRAIN_POINTS = {
    "first checkpoint": (first_checkpoint, signal.SIGKILL),
    "mid-save": (saving, signal.SIGTERM),
}


@pytest.mark.parametrize("point", list(TRAIN_POINTS))
def test_killed_train_resumes_to_the_result_of_an_uninterrupted_run(pipeline, trained, tmp_path, point, capsys):
    model_dir = tmp_path / "model"
    condition, signum = TRAIN_POINTS[point]
    code, _ = run_and_kill(train_command(pipeline, model_dir), condition(model_dir), signum, tmp_path / "killed.txt")
    assert code != 0
    assert "Traceback" not in (tmp_path / "killed.txt").read_text()
    killed_state = checkpoint_state(model_dir)
    assert killed_state, "a checkpoint was complete before the kill"
    for prefix in killed_state:  # what the state names is whole, even when the kill came mid-save
        assert Path(f"{prefix}.index").is_file()
        variables(prefix)

    code = cli.main([*train_command(pipeline, model_dir)[1:], "--resume"])
    resumed = capsys.readouterr()
    assert code == 0, resumed.err
    assert f"step {STEPS}:" in resumed.out

    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest == str(model_dir / f"ckpt-{STEPS}")
    for prefix in checkpoint_state(model_dir):
        assert not prefix.endswith("_temp") and Path(f"{prefix}.index").is_file()
    assert not [path.name for path in model_dir.iterdir() if path.name.endswith("_temp")], "no save left half done"
    values = variables(latest)
    reference = variables(tf.train.latest_checkpoint(str(trained)))
    assert {name: value.shape for name, value in values.items()} == {
        name: value.shape for name, value in reference.items()
    }
    assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == STEPS
    assert all(np.all(np.isfinite(value)) for value in values.values() if value.dtype.kind == "f")
    steps = [int(line.split(",")[0]) for line in (model_dir / "train_history.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, STEPS + 1))


def export_contents(out: Path) -> dict[str, object]:
    """What must equal between exports of one checkpoint: the file list, the SavedModel's variable values, the
    TF.js weights manifest and weight shards. Not saved_model.pb's bytes (function names carry per-process ids)
    nor export.json's timings and paths."""
    files = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    saved = variables(str(out / "saved_model" / "variables" / "variables"))
    model = json.loads((out / "tfjs" / "model.json").read_text())
    shards = {path.name: path.read_bytes() for path in sorted((out / "tfjs").glob("*.bin"))}
    return {"files": files, "saved_model": saved, "manifest": model["weightsManifest"], "shards": shards}


def assert_same_export(actual: dict[str, object], expected: dict[str, object]) -> None:
    assert actual["files"] == expected["files"]
    assert actual["saved_model"].keys() == expected["saved_model"].keys()
    for name, value in expected["saved_model"].items():
        assert np.array_equal(actual["saved_model"][name], value), name
    assert actual["manifest"] == expected["manifest"]
    assert actual["shards"] == expected["shards"]


@pytest.fixture(scope="module")
def exported(pipeline, trained, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("export-reference") / "out"
    # a process of its own, as the rerun: TF.js names the graph's constants per process (a second export in one
    # process numbers them on), and the comparison is of fresh runs
    run = subprocess.run(export_command(pipeline, trained, out), capture_output=True, env=environment(), timeout=600)
    assert run.returncode == 0, run.stderr.decode()
    return export_contents(out)


def staged(out: Path, relative: str) -> Callable[[], bool]:
    return lambda: any(folder.joinpath(relative).exists() for folder in out.parent.glob(f".{out.name}.partial-*"))


EXPORT_POINTS = {
    "SavedModel write": (lambda out: staged(out, "saved_model/variables"), signal.SIGKILL),
    "TF.js conversion": (lambda out: staged(out, "label_map.pbtxt"), signal.SIGTERM),
}


@pytest.mark.parametrize("point", list(EXPORT_POINTS))
def test_killed_export_leaves_nothing_and_rerun_gives_the_same_files(pipeline, trained, exported, tmp_path, point):
    out = tmp_path / "out"
    condition, signum = EXPORT_POINTS[point]
    command = export_command(pipeline, trained, out)
    code, _ = run_and_kill(command, condition(out), signum, tmp_path / "killed.txt")
    assert code != 0
    assert not out.exists(), "nothing replaces the output before the export is complete"
    if signum == signal.SIGTERM:
        assert "Traceback" not in (tmp_path / "killed.txt").read_text()
        assert not leftovers(out), "SIGTERM cleans up its own staging folder"

    rerun = subprocess.run(command, capture_output=True, env=environment(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert not leftovers(out), "the rerun removed the dead run's staging folder"
    assert_same_export(export_contents(out), exported)
