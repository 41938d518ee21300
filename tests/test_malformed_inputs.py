"""Every subcommand against a corpus of malformed inputs, in-process through `tfod_wrap.cli.main`: each must exit 2
with exactly one `error:` line on stderr, never a traceback, and never hang (a FIFO, /dev/zero).

A new subcommand must be added to COMMANDS (test_every_subcommand_is_in_the_corpus fails until it is), and a new
file-taking option to its command's argument lists."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tfod_wrap import cli

HANG_SECONDS = 60  # far above any refusal (they take well under a second once TensorFlow is imported)
OUT = "@OUT"  # replaced by a fresh folder for outputs
X = "@X"  # replaced by the malformed input


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 16 + b"\xff\xfe\x00")
    return path


def _text(content: str):
    def make(path: Path) -> Path:
        path.write_text(content, encoding="utf-8")
        return path

    return make


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _symlink_loop(path: Path) -> Path:
    other = path.with_name(path.name + "-other")
    path.symlink_to(other)
    other.symlink_to(path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "unrelated.txt").write_text("nothing tfod-wrap wrote")
    return path


# name -> how to make it at a given path (None: a fixed path outside tmp)
CORPUS = {
    "binary": _binary,
    "empty": _text(""),
    "json-list": _text("[1, 2, 3]"),
    "json-deep": _text("[" * 100_000),
    "huge-numbers": _text('{"width": 1e400, "id": 99999999999999999999999999, "num_classes": 1e400}\n'),
    "unicode-name": _text("ünïcødé: {\n"),
    "dev-zero": None,
    "fifo": _fifo,
    "symlink-loop": _symlink_loop,
    "folder": _folder,
    "missing": lambda path: path,
}

COMMANDS: dict[str, list[list[str]]] = {
    "tfrecords": [
        ["tfrecords", "--input", X, "--output", f"{OUT}/records"],
        ["tfrecords", "--input", "@VOC", "--label-map", X, "--output", f"{OUT}/records"],
    ],
    "pretrained": [
        ["pretrained", "download", "ssd_mobilenet_v2", "--archive", X, "--output", f"{OUT}/zoo"],
        ["pretrained", "import-tflite", "--output", f"{OUT}/imported", "--package", X],
    ],
    "labelmap": [["labelmap", "check", X], ["labelmap", "build", "--input", X, "--output", f"{OUT}/map.pbtxt"]],
    "config": [
        ["config", X, "--output", f"{OUT}/p.config", "--checkpoint", "none", "--no-check"],
        ["config", "show", X],
        ["config", "diff", X, X],
        ["config", "ssd_mobilenet_v2", "--data", X, "--output", f"{OUT}/p.config", "--no-check"],
        ["config", "ssd_mobilenet_v2", "--checkpoint", X, "--output", f"{OUT}/p.config", "--no-check"],
    ],
    "train": [
        ["train", "--pipeline", X, "--model-dir", f"{OUT}/model"],
        ["train", "--pipeline", X, "--model-dir", f"{OUT}/model", "--recipe", X],
    ],
    "variables": [["variables", "--pipeline", X]],
    "eval": [
        ["eval", "--pipeline", X, "--model-dir", f"{OUT}/model"],
        ["eval", "--saved-model", X, "--data", X, "--label-map", X],
        ["eval", "--detections", X, "--data", X, "--label-map", X],
    ],
    "export": [["export", "--pipeline", X, "--model-dir", f"{OUT}/model", "--output", f"{OUT}/export"]],
    "detect": [["detect", X, "--model", X, "--output", f"{OUT}/detected"]],
    "inspect": [["inspect", X], ["inspect", "@RECORDS", "--label-map", X]],
    "serve": [["serve", "--model", X, "--port", "0"]],
    "install-web": [["install-web", "--prefix", X]],
    "sample": [["sample", "--output", X, "--count", "2"]],
}

# A folder, or a path that does not exist yet, is what --prefix takes: npm would really install there. A path
# that does not exist yet is where `sample` writes its dataset.
NOT_MALFORMED = {("install-web", "folder"), ("install-web", "missing"), ("sample", "missing")}

# Cases this test found that belong to code other engineers are changing now (tfod_wrap/data/ conversion,
# detect, serve); reported to them rather than patched here.
KNOWN: dict[tuple[str, str], str] = {}


def cases():
    for command, argvs in COMMANDS.items():
        for index, argv in enumerate(argvs):
            for name in CORPUS:
                if (command, name) in NOT_MALFORMED:
                    continue
                case = f"{command}#{index}"
                known = KNOWN.get((case, name))
                marks = [pytest.mark.xfail(reason=known, strict=True)] if known else []
                yield pytest.param(argv, name, id=f"{case}-{name}", marks=marks)


class Hung(Exception):
    pass


def _alarm(signum, frame):
    raise Hung(f"no answer within {HANG_SECONDS} s")


@pytest.fixture(scope="module")
def valid_inputs(tmp_path_factory) -> dict[str, Path]:
    """Good files for the slots that are not under test: a VOC folder and its records."""
    from conftest import tiny_voc

    from tfod_wrap.data import convert

    root = tmp_path_factory.mktemp("valid")
    voc = tiny_voc(root / "voc", 2)
    convert(voc, root / "records", workers=1)
    return {"@VOC": voc, "@RECORDS": root / "records" / "train.record"}


def _malformed(name: str, folder: Path) -> Path:
    make = CORPUS[name]
    if make is None:
        return Path("/dev/zero")
    return make(folder / f"{name} ünï ✓.input")


@pytest.mark.parametrize(("argv", "name"), list(cases()))
def test_malformed_input_is_one_line_error(argv, name, tmp_path, capsys, valid_inputs):
    bad = _malformed(name, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    filled = [
        str(valid_inputs.get(arg, arg)).replace(X, str(bad)).replace(OUT, str(out))
        if isinstance(arg, str)
        else str(arg)
        for arg in argv
    ]
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        code = cli.main(filled)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    # `labelmap check` is a check: a text file that is no valid label map gets its documented answer "invalid"
    # (exit 1, one line per problem, each naming the file); a file it cannot read as text is an error (exit 2).
    if code == 1 and argv[:2] == ["labelmap", "check"]:
        assert lines and all(line.startswith(f"{bad}: ") for line in lines), err
        return
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_every_subcommand_is_in_the_corpus():
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")  # noqa: SLF001
    assert set(commands.choices) == set(COMMANDS)
