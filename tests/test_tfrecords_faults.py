"""Fault test of `tfod-wrap tfrecords` (issue 18): SIGKILL or SIGTERM at a few points of a real run, then the same
command again. The rerun gives the bytes of an uninterrupted run, and no worker process or staging folder is left."""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import REPO, SendsCtrlCWhenFreed, pythons_own_ctrl_c, tiny_voc

from tfod_wrap import cli
from tfod_wrap.core.processes import RESEND_SECONDS
from tfod_wrap.data.encode import encode_chunk

convert_module = importlib.import_module("tfod_wrap.data.convert")  # the package exports the function by that name

IMAGES = 600
WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_voc(tmp_path_factory.mktemp("faults") / "voc", IMAGES, classes="abc", size=(480, 360))


def command(voc: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tfod_wrap",
        "tfrecords",
        "--input",
        str(voc),
        "--output",
        str(out),
        "--split",
        "train=0.8,val=0.2",
        "--shards",
        "2",
        "--workers",
        "2",
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def contents(folder: Path) -> dict[str, object]:
    """Every file's bytes; report.json without its creation time (the one field that differs between runs)."""
    files: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.name == "report.json":
            report = json.loads(path.read_text())
            report.pop("created")
            files[path.name] = report
        else:
            files[path.name] = path.read_bytes()
    return files


def leftovers(out: Path) -> list[str]:
    return sorted(path.name for path in out.parent.iterdir() if path.name.startswith(f".{out.name}."))


def alive(pids: set[int]) -> set[int]:
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def staging_exists(out: Path) -> Callable[[], bool]:
    return lambda: any(name.startswith(f".{out.name}.partial-") for name in leftovers(out))


def shard_written(out: Path) -> Callable[[], bool]:
    def written() -> bool:
        for folder in out.parent.glob(f".{out.name}.partial-*"):
            if any(path.stat().st_size > 0 for path in folder.glob("*.record-*")):
                return True
        return False

    return written


def workers_started(process: psutil.Process) -> Callable[[], bool]:
    return lambda: len(process.children(recursive=True)) >= 2


def end_hung_run(process: subprocess.Popen) -> None:
    """Kill a run that outlived its interrupt, and its workers, then fail: a failing test leaves no processes."""
    for child in [*psutil.Process(process.pid).children(recursive=True), process]:
        child.kill()
    pytest.fail(f"the run was still waiting for its workers {WAIT_SECONDS} s after the signal")


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("reference") / "out"
    subprocess.run(command(dataset, out), check=True, capture_output=True, env=environment(), timeout=300)
    return contents(out)


POINTS = {"workers started": workers_started, "staging folder made": staging_exists, "first shard bytes": shard_written}


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_nothing_and_rerun_gives_the_same_bytes(dataset, reference, tmp_path, point, signum):
    out = tmp_path / "out"
    # stderr to a file, not a pipe: orphaned workers would hold a pipe open and hide what went wrong
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr_file:
        process = subprocess.Popen(
            command(dataset, out), stdout=subprocess.DEVNULL, stderr=stderr_file, env=environment()
        )
    watched = psutil.Process(process.pid)
    when = POINTS[point](watched if point == "workers started" else out)
    deadline = time.monotonic() + WAIT_SECONDS
    workers: set[int] = set()
    while not when():
        assert process.poll() is None, f"the run ended before '{point}': make the dataset larger"
        assert time.monotonic() < deadline, f"'{point}' never happened"
        workers |= {child.pid for child in watched.children(recursive=True)}
        time.sleep(0.005)
    workers |= {child.pid for child in watched.children(recursive=True)}
    os.kill(process.pid, signum)
    try:
        process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        end_hung_run(process)
    stderr = log.read_text()
    assert process.returncode != 0
    if signum == signal.SIGTERM:
        assert "Traceback" not in stderr
        assert not leftovers(out), "SIGTERM cleans up its own staging folder"

    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(workers), "workers outlived their parent"

    rerun = subprocess.run(command(dataset, out), capture_output=True, env=environment(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert not leftovers(out), "the rerun removed the dead run's staging folder"
    assert contents(out) == reference


# Runs the command with a SIGTERM sent as ProcessPoolExecutor's workers have all started and before its manager thread
# has (the one thread that can stop them): the moment that once hung a run (once in about 70 kills under load).
TERMINATED_AS_WORKERS_START = """
import os, signal, sys
from concurrent.futures.process import ProcessPoolExecutor
from tfod_wrap import cli
from tfod_wrap.core.processes import RESEND_SECONDS

LAUNCH = ProcessPoolExecutor._launch_processes.__code__

def terminate_on_return(frame, event, arg):
    if event == "return":
        print(*frame.f_locals["self"]._processes, file=sys.stderr, flush=True)  # the workers' pids
        os.kill(os.getpid(), signal.SIGTERM)
    return terminate_on_return

sys.settrace(lambda frame, event, arg: terminate_on_return if frame.f_code is LAUNCH else None)
sys.exit(cli.main(sys.argv[1:]))
"""


def run_under(script: str, dataset: Path, out: Path) -> tuple[int, list[str]]:
    """The conversion run by `script` (which calls the CLI with the command's arguments): exit status, stderr lines."""
    argv = [sys.executable, "-c", script, *command(dataset, out)[3:]]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment())
    try:
        _, stderr = process.communicate(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        end_hung_run(process)
    return process.returncode, stderr.decode().replace("\r", "\n").splitlines()


def test_an_interrupt_as_the_workers_start_ends_them_and_the_run(dataset, tmp_path):
    out = tmp_path / "out"
    code, (workers, message) = run_under(TERMINATED_AS_WORKERS_START, dataset, out)
    assert message == "interrupted; nothing was written" and code == 130
    assert len(workers.split()) == 2 and not alive({int(pid) for pid in workers.split()})
    assert not out.exists() and not leftovers(out)


# Runs the command with a SIGTERM sent from a garbage-collector callback in the main thread once the workers run: its
# handler raises there, where Python reports and ignores exceptions (as in an after-fork callback or a __del__). Not
# while the signal is held (the pool's start, an output's swap): its handler then raises only as the hold ends.
TERMINATED_IN_A_GC_CALLBACK = """
import atexit, gc, multiprocessing, os, signal, sys, threading
from tfod_wrap import cli
from tfod_wrap.core.processes import RESEND_SECONDS

steps = []

def raises_at_once():
    return getattr(signal.getsignal(signal.SIGTERM), "__qualname__", "") == "terminate_as_interrupt.<locals>.interrupt"

def on_collection(phase, info):
    main = threading.current_thread() is threading.main_thread()
    if not steps and main and phase == "start" and len(multiprocessing.active_children()) == 2 and raises_at_once():
        steps.append("signal sent")
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line, and raises
        steps.append("callback ran on")

gc.callbacks.append(on_collection)
atexit.register(lambda: print(*steps, sep=", ", file=sys.stderr))
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_sigterm_that_python_drops_still_ends_the_run(dataset, tmp_path):
    out = tmp_path / "out"
    code, lines = run_under(TERMINATED_IN_A_GC_CALLBACK, dataset, out)
    assert lines[-1] == "signal sent", lines  # the KeyboardInterrupt left the callback, where Python dropped it
    assert lines[-2] == "interrupted; nothing was written" and code == 130, lines
    assert not any("Traceback" in line for line in lines), lines
    assert not out.exists() and not leftovers(out)


def test_ctrl_c_in_a_terminal_ends_the_run_with_one_line(dataset, tmp_path):
    """Ctrl-C sends SIGINT to every process of the terminal's group, the workers too: the command answers it alone."""
    out = tmp_path / "out"
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    process = subprocess.Popen(command(dataset, out), **pipes, env=environment(), start_new_session=True)
    watched, written = psutil.Process(process.pid), shard_written(out)
    deadline = time.monotonic() + WAIT_SECONDS
    while not written() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = {child.pid for child in watched.children(recursive=True)}
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        end_hung_run(process)
    assert len(workers) == 2 and process.returncode == 130
    lines = stderr.decode().replace("\r", "\n").splitlines()
    assert lines[-1] == "interrupted; nothing was written" and not any("Traceback" in line for line in lines), lines
    assert not alive(workers) and not out.exists() and not leftovers(out)


def slow_encode_chunk(chunk, **options):
    """encode_chunk a moment late, noting in a log beside the output whether the chunk's part could be written."""
    time.sleep(1.0)
    log = chunk.part.parent.parent / "chunks.log"
    try:
        results = encode_chunk(chunk, **options)
    except OSError as error:
        with open(log, "a") as stream:
            stream.write(f"{type(error).__name__}\n")
        raise
    with open(log, "a") as stream:
        stream.write("written\n")
    return results


def test_an_interrupted_run_removes_its_staging_folder_after_the_workers_finish(dataset, tmp_path, monkeypatch):
    """The workers write their parts into the staging folder: removed under a worker that was still encoding, it could
    be recreated with that part in it and stay behind. Now the chunks under way finish before it is removed."""
    real_append = convert_module._append

    def append_then_interrupt(part, output):
        real_append(part, output)
        raise KeyboardInterrupt  # Ctrl-C once the first chunk is in its shard, with the second still encoding

    monkeypatch.setattr(convert_module, "encode_chunk", slow_encode_chunk)
    monkeypatch.setattr(convert_module, "_append", append_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_module.convert(dataset, out, workers=2, shards=2, split="train=0.8,val=0.2")
    outcomes = (tmp_path / "chunks.log").read_text().split()
    assert len(outcomes) >= 2 and set(outcomes) == {"written"}, outcomes
    assert not out.exists() and not leftovers(out)


def test_a_ctrl_c_that_python_drops_is_sent_again(dataset, tmp_path, capsys):
    """A Ctrl-C whose KeyboardInterrupt is raised in a garbage-collector callback (JAX, which TensorFlow's TFLite
    converter imports, installs one) was dropped: Python printed "Exception ignored" and the command went on to write
    its output. Here the signal is sent from such a callback at the first collection inside the conversion."""
    out = tmp_path / "out"
    sent = []

    def on_collection(phase, info) -> None:
        if sent or phase != "start" or threading.current_thread() is not threading.main_thread():
            return
        frame = sys._getframe(1)
        while frame is not None and frame.f_code is not convert_module.convert.__code__:
            frame = frame.f_back
        if frame is not None:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line, and raises in the callback

    gc.callbacks.append(on_collection)
    try:
        with pythons_own_ctrl_c():
            code = cli.main(["tfrecords", "--input", str(dataset), "--output", str(out), "--workers", "1"])
    finally:
        gc.callbacks.remove(on_collection)
    stderr = capsys.readouterr().err
    assert sent and code == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted; nothing was written" and "Exception ignored" not in stderr
    assert not out.exists() and not leftovers(out)


def test_a_ctrl_c_dropped_just_before_the_commit_stops_it(dataset, tmp_path, capsys, monkeypatch):
    """A Ctrl-C dropped in a __del__ with the run's last steps shorter than the delay before it is sent again: the
    run committed its output and exited 0 as if no key was pressed (seen once in the suite, most likely dropped as the
    pool shut down). Now the commit raises it."""
    out = tmp_path / "out"
    real_write_label_map = convert_module.write_label_map

    def write_label_map_then_drop_ctrl_c(*args, **kwargs) -> None:
        real_write_label_map(*args, **kwargs)
        SendsCtrlCWhenFreed()  # freed at once

    monkeypatch.setattr(convert_module, "write_label_map", write_label_map_then_drop_ctrl_c)
    with pythons_own_ctrl_c():
        code = cli.main(["tfrecords", "--input", str(dataset), "--output", str(out), "--workers", "1"])
        time.sleep(3 * RESEND_SECONDS)  # a Ctrl-C sent again after the command would interrupt this test instead
    stderr = capsys.readouterr().err
    assert code == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted; nothing was written" and "Exception ignored" not in stderr
    assert not out.exists() and not leftovers(out)
