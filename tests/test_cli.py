"""The command line in-process through `cli.main` (as the console script calls it), the console script itself
once, label maps and inspect."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from tfod_wrap import cli
from tfod_wrap.core.labelmap import check_label_map
from tfod_wrap.data import preview_grid, record_stats

CLI = str(Path(sys.executable).parent / "tfod-wrap")
BOXES = [
    {"name": "cat", "xmin": 2, "ymin": 2, "xmax": 20, "ymax": 30},
    {"name": "dog", "xmin": 30, "ymin": 5, "xmax": 60, "ymax": 45},
]


@pytest.fixture
def run(capsys):
    """`tfod-wrap ARGS` in this process: its exit status (argparse's too) must be `expect`; stdout and stderr."""

    def run(*args: str, expect: int = 0) -> SimpleNamespace:
        try:
            status = cli.main(list(args))
        except SystemExit as stop:  # --help, --version and usage errors
            status = stop.code
        out, err = capsys.readouterr()
        assert status == expect, err
        return SimpleNamespace(stdout=out, stderr=err)

    return run


@pytest.fixture
def records(run, voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES[: 1 + i % 2]} for i in range(6)] + [{"objects": []}])
    run("tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"), "--split", "train=0.5,val=0.5")
    return tmp_path / "out"


def test_the_console_script_answers_without_loading_tensorflow():
    assert subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60).stdout.startswith("tfod-wrap")
    # `--help` of every command stays fast: building the parser imports no TensorFlow
    probe = "import sys; from tfod_wrap import cli; cli.build_parser(); print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout == "False\n"


def test_help_of_every_command(run):
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices  # noqa: SLF001
    assert {"tfrecords", "config", "train", "variables", "eval", "export", "detect", "serve"} <= set(commands)
    for command in [[], *([name] for name in commands), ["labelmap", "build"], ["labelmap", "check"]]:
        assert "usage: tfod-wrap" in run(*command, "--help").stdout, command
    assert "--no-freeze" in run("train", "--help").stdout


def test_tfrecords_prints_summary(run, voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES}, {"objects": BOXES[:1]}])
    result = run("tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"))
    assert "boxes: cat" in result.stdout and "wrote 2 images" in result.stdout
    assert json.loads((tmp_path / "out" / "report.json").read_text())["boxes_per_class"] == {"cat": 2, "dog": 1}


def test_strict_error_exit_code_and_message(run, voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES, "annotated_size": (10, 10)}])
    result = run("tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"), "--strict", expect=2)
    assert "error:" in result.stderr and "img000.jpg" in result.stderr and "annotation says 10x10" in result.stderr
    assert not (tmp_path / "out").exists()


def test_labelmap_build_and_check(run, voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES}])
    label_map = tmp_path / "lm.pbtxt"
    assert "2 classes (cat, dog)" in run("labelmap", "build", "--input", str(voc), "--output", str(label_map)).stdout
    assert "valid, 2 classes" in run("labelmap", "check", str(label_map)).stdout

    bad = tmp_path / "bad.pbtxt"
    bad.write_text('item { name: "background" id: 0 }\nitem { name: "cat" id: 1 }\nitem { name: "dog" id: 1 }\n')
    result = run("labelmap", "check", str(bad), expect=1)
    assert "id 0 is reserved for the background class" in result.stderr
    assert "id 1 is used by both 'cat' and 'dog'" in result.stderr
    bad.write_text("item { name: 'x' idd: 1 }")
    assert "not a label map" in check_label_map(bad)[0]


def test_inspect_stats(records):
    stats = record_stats([str(records / "train.record"), str(records / "val.record")])
    assert stats["images"] == 7 and stats["negatives"] == 1
    assert stats["boxes_per_class"] == {"cat": 6, "dog": 3}
    assert stats["box_width_px"]["min"] == pytest.approx(18) and stats["box_width_px"]["max"] == pytest.approx(30)
    assert stats["box_aspect_w_over_h"]["max"] == pytest.approx(0.75)
    assert stats["image_sizes"] == {"64x48": 7}
    # A folder means every record file in it.
    assert record_stats([str(records)])["images"] == 7


def test_inspect_preview_draws_what_training_sees(run, records, tmp_path):
    out = preview_grid([str(records / "train.record")], tmp_path / "grid.png", count=3, columns=2)
    grid = Image.open(out).convert("RGB")
    assert grid.size == (640, 640)
    # Box outlines are drawn in their class colour over the decoded photos (every image has a cat).
    assert (0xE6, 0x19, 0x4B) in set(grid.getdata())  # class id 1 (cat)
    result = run("inspect", str(records / "*.record"), "--preview", str(tmp_path / "cli.png"))
    assert "cat: 6" in result.stdout and (tmp_path / "cli.png").is_file()


def test_every_command_line_of_the_readme_parses():
    """The README is the contract: each `.venv/bin/tfod-wrap ...` line of it is taken by the parser as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in readme.splitlines() if line.strip().startswith(".venv/bin/tfod-wrap ")]
    assert len(lines) > 20 and any(" train " in line and "--recipe" in line for line in lines)
    parser = cli.build_parser()
    for line in lines:
        try:
            parser.parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit as stop:  # --help and --version exit 0; a flag the parser does not know exits 2
            assert stop.code == 0, line


# The program, with a Ctrl-C sent from an exit handler: after the command is over, while Python shuts down.
CTRL_C_AT_EXIT = """
import atexit, os, signal, sys, time
from tfod_wrap.cli import run

def late_ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)  # where a handler would raise KeyboardInterrupt
    print("not ended by the Ctrl-C", file=sys.stderr)

atexit.register(late_ctrl_c)
run()
"""


def test_a_ctrl_c_after_the_command_is_over_ends_the_program_without_a_traceback(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES}])
    label_map = tmp_path / "lm.pbtxt"
    argv = [sys.executable, "-c", CTRL_C_AT_EXIT, "labelmap", "build", "--input", str(voc), "--output", str(label_map)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == -2 and done.stderr == "", done.stderr  # ended by SIGINT, at once, silently
    assert "2 classes (cat, dog)" in done.stdout and check_label_map(label_map) == []
