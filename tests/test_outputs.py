"""One ownership rule for every command that replaces an output folder whole (`tfod_wrap.core.files.claim_output`): it
marks what it writes with `.tfod-wrap-output.json` and replaces nothing else. Here the rule itself, and the commands
that are cheap to run for real: tfrecords, the sample-data generator and pretrained download. detect, export and
pretrained import-tflite have theirs beside their other tests."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import REPO, SendsCtrlCWhenFreed, pythons_own_ctrl_c, snapshot, tiny_voc

import tfod_wrap
from tfod_wrap import cli, config, sample
from tfod_wrap.core import files, processes
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import OWNER_FILE, check_output, claim_output
from tfod_wrap.core.weights import MATCH_FILE
from tfod_wrap.data import convert
from tfod_wrap.pretrained.download import download


def user_folder(path: Path, **files: str) -> Path:
    """A folder of the user's own, holding `files` (name: text)."""
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def marker(folder: Path) -> dict:
    return json.loads((folder / OWNER_FILE).read_text())


# ---- the rule -------------------------------------------------------------------------------------------------


def test_claim_output_marks_what_it_writes_and_replaces_only_that(tmp_path):
    target = tmp_path / "out"
    with claim_output(target, "demo") as staging:
        (staging / "a.txt").write_text("first")
    expected = {"tool": "tfod-wrap", "kind": "demo", "version": tfod_wrap.__version__, "entries": ["a.txt"]}
    assert marker(target) == expected
    with claim_output(target, "demo") as staging:  # its own earlier output: replaced whole
        (staging / "b.txt").write_text("second")
    assert sorted(path.name for path in target.iterdir()) == [OWNER_FILE, "b.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["out"], "a staging or retired folder was left behind"


def test_claim_output_refuses_what_it_did_not_write(tmp_path):
    mine = user_folder(tmp_path / "mine", **{"summary.json": "{}", "report.json": '{"tool": "tfod-wrap"}'})
    before = snapshot(mine)
    refused = pytest.raises(UserError, match=rf"^{mine}: a non-empty folder not written by tfod-wrap")
    with refused, claim_output(mine, "demo") as staging:
        (staging / "x").write_text("never")
    assert snapshot(mine) == before

    with claim_output(tmp_path / "other", "detect"):
        pass
    with pytest.raises(UserError, match=r"holds a tfod-wrap detect output, not a demo output"):
        check_output(tmp_path / "other", "demo")

    # the user's file added to an earlier output would be lost with it
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"also holds notes.txt, which tfod-wrap did not write"):
        check_output(tmp_path / "other", "detect")

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        check_output(tmp_path / "file", "demo")
    (tmp_path / "locked").mkdir(mode=0o000)
    if not os.access(tmp_path / "locked", os.R_OK):  # root reads it anyway
        with pytest.raises(UserError, match="locked: cannot list the folder"):
            check_output(tmp_path / "locked", "demo")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "demo")  # an empty folder is free to take
    check_output(mine, "demo", legacy=lambda folder: True)  # an earlier version's output, as it recognises it


def test_claim_output_checks_again_before_the_swap(tmp_path):
    """Work can take hours: a folder the user fills meanwhile is not replaced, and the staging folder goes."""
    target = tmp_path / "out"
    with pytest.raises(UserError, match="not written by tfod-wrap"), claim_output(target, "demo") as staging:
        (staging / "a.txt").write_text("new")
        user_folder(target, **{"thesis.tex": "keep me"})
    assert snapshot(target) == {"thesis.tex": b"keep me"}
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


@contextlib.contextmanager
def sigterm_at_line(point: int, modules: set[str]) -> Iterator[list[int]]:
    """Send this process a real SIGTERM at the `point`-th line that runs in `modules`; yields [point] once sent.
    Python runs signal handlers between bytecodes, so this is a signal arriving at that line."""
    lines, sent = 0, []

    def at_line(frame, event, arg):
        nonlocal lines
        if event == "line" and not sent:
            lines += 1
            if lines == point:
                sent.append(point)
                signal.raise_signal(signal.SIGTERM)  # runs the handler now, inside this trace function
        return at_line

    previous = sys.gettrace()  # coverage's tracer, when it runs
    sys.settrace(lambda frame, event, arg: at_line if frame.f_code.co_filename in modules else None)
    try:
        yield sent
    finally:
        sys.settrace(previous)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_a_sigterm_at_any_line_of_a_claim_leaves_the_old_or_the_new_output_and_nothing_else(tmp_path):
    """As tfrecords and export run (SIGTERM as Ctrl-C): whichever line of the claim's own code the signal lands on,
    `out` is the whole earlier output or the whole new one, and no staging or retired folder is left beside it."""
    modules = {files.__file__, processes.__file__}
    outcomes = set()
    for point in itertools.count(1):
        target = tmp_path / str(point) / "out"
        with claim_output(target, "demo") as staging:
            (staging / "version").write_text("old")
        with processes.terminate_as_interrupt(), sigterm_at_line(point, modules) as sent:
            try:
                with claim_output(target, "demo") as staging:
                    (staging / "version").write_text("new")
            except KeyboardInterrupt:
                pass
        assert [path.name for path in target.parent.iterdir()] == ["out"], f"left behind at line {point}"
        assert sorted(path.name for path in target.iterdir()) == [OWNER_FILE, "version"]
        outcomes.add((target / "version").read_text())
        if not sent:  # past the claim's last line: the run finished
            break
    assert point > 30 and outcomes == {"old", "new"}


# ---- tfrecords ------------------------------------------------------------------------------------------------


def test_a_dropped_ctrl_c_is_raised_where_work_would_go_on_after_a_nested_block_ends():
    """Each open block keeps its own list of dropped interrupts; leaving an inner block must not unregister the outer
    one's (two empty lists are equal, so taking out "the first equal one" took the wrong list)."""
    raised = resent = False
    with pythons_own_ctrl_c(), processes.ctrl_c_delivered():
        with processes.terminate_as_interrupt():
            pass
        SendsCtrlCWhenFreed()
        try:
            processes.raise_if_interrupted()
        except KeyboardInterrupt:
            raised = True
        try:
            time.sleep(3 * processes.RESEND_SECONDS)
        except KeyboardInterrupt:  # sent again: nobody had taken it
            resent = True
    assert raised and not resent


def test_tfrecords_refuses_a_user_folder_and_replaces_its_own_output(tmp_path, capsys):
    voc = tiny_voc(tmp_path / "voc", 2)
    out = tmp_path / "records"
    convert(voc, out, workers=1)
    assert marker(out)["kind"] == "tfrecords"
    assert set(marker(out)["entries"]) == {"label_map.pbtxt", "report.json", "train.record"}
    convert(voc, out, split="train=0.5,val=0.5", workers=1)  # its own output: replaced
    assert (out / "val.record").is_file()

    # a report.json that names tfod-wrap, beside the user's own file: not an output to replace whole
    mine = user_folder(tmp_path / "mine", **{"report.json": '{"tool": "tfod-wrap"}', "notes.txt": "keep me"})
    code = cli.main(["tfrecords", "--input", str(voc), "--output", str(mine)])
    refused = capsys.readouterr().err
    assert code == 2 and "Traceback" not in refused
    assert refused.strip().splitlines() == [
        f"error: {mine}: a non-empty folder not written by tfod-wrap (no {OWNER_FILE}); refusing to replace it: "
        "choose a new or empty output folder, or remove it yourself"
    ]
    assert (mine / "notes.txt").read_text() == "keep me"


def test_tfrecords_still_replaces_an_output_of_the_previous_version(tmp_path):
    """Before the marker, tfrecords recognised its outputs by report.json's "tool": "tfod-wrap"; such a folder
    holding only what tfrecords writes is still replaced."""
    voc = tiny_voc(tmp_path / "voc", 2)
    old = user_folder(
        tmp_path / "old",
        **{"report.json": '{"tool": "tfod-wrap"}', "label_map.pbtxt": "", "train.record-00000-of-00002": ""},
    )
    convert(voc, old, workers=1)
    assert sorted(path.name for path in old.iterdir()) == [OWNER_FILE, "label_map.pbtxt", "report.json", "train.record"]


# ---- the sample-data generator --------------------------------------------------------------------------------


def test_sample_data_refuses_a_user_folder_and_replaces_its_own_output(tmp_path):
    out = tmp_path / "sample"
    sample.generate(out, count=2)
    assert marker(out) == {**marker(out), "kind": "sample data", "entries": ["README.txt", "annotations", "images"]}
    sample.generate(out, count=1)
    assert len(list((out / "images").iterdir())) == 1

    # the previous version's marker (README.txt's first line) is still recognised, but not with the user's files
    old = user_folder(tmp_path / "old", **{"README.txt": sample.MARKER + "\n"})
    (old / "images").mkdir()
    sample.generate(old, count=1)
    assert marker(old)["kind"] == "sample data"
    legacy_with_notes = user_folder(tmp_path / "notes", **{"README.txt": sample.MARKER, "notes.txt": "mine"})
    command = [sys.executable, str(REPO / "tools" / "sample_data.py"), "--count", "1", "--output"]
    done = subprocess.run([*command, str(legacy_with_notes)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {legacy_with_notes}: a non-empty folder not written by tfod-wrap")
    assert (legacy_with_notes / "notes.txt").read_text() == "mine"


# ---- pretrained download --------------------------------------------------------------------------------------


def zoo_tarball(folder: Path) -> Path:
    """A tarball laid out as the model zoo's: one top folder with checkpoint/ckpt-0.* and pipeline.config."""
    top = folder / "zoo" / "ssd_mobilenet_v2_320x320_coco17_tpu-8"
    tf.train.Checkpoint(step=tf.Variable(1)).write(str(top / "checkpoint" / "ckpt-0"))
    (top / "pipeline.config").write_text(config.to_text(config.load("ssd_mobilenet_v2")))
    with tarfile.open(folder / "model.tar.gz", "w:gz") as archive:
        archive.add(top, arcname=top.name)
    return folder / "model.tar.gz"


def test_pretrained_download_refuses_a_user_folder_and_replaces_its_own_output(tmp_path):
    tarball, quiet = zoo_tarball(tmp_path), {"log": lambda *_: None}
    mine = user_folder(tmp_path / "mine", **{"thesis.tex": "keep me"})
    with pytest.raises(UserError, match=rf"^{mine}: a non-empty folder not written by tfod-wrap"):
        download("ssd_mobilenet_v2", archive=tarball, output=mine, **quiet)
    assert snapshot(mine) == {"thesis.tex": b"keep me"}

    out = download("ssd_mobilenet_v2", archive=tarball, output=tmp_path / "model", **quiet)
    assert marker(out)["kind"] == "pretrained download"
    (out / "checkpoint" / "ckpt-0.index").unlink()  # a damaged download of its own: unpacked again
    download("ssd_mobilenet_v2", archive=tarball, output=out, **quiet)
    assert (out / "checkpoint" / "ckpt-0.index").is_file()

    # the previous version's download (its MATCH_FILE, no marker) is replaced too
    (out / OWNER_FILE).unlink()
    (out / "checkpoint" / "ckpt-0.index").unlink()
    download("ssd_mobilenet_v2", archive=tarball, output=out, **quiet)
    assert (out / "checkpoint" / "ckpt-0.index").is_file() and (out / MATCH_FILE).is_file()
