"""The installed `tfod-wrap` console script, run as a user runs it; label maps; inspect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tfod_wrap.core.labelmap import check_label_map
from tfod_wrap.data import preview_grid, record_stats

CLI = str(Path(sys.executable).parent / "tfod-wrap")
BOXES = [
    {"name": "cat", "xmin": 2, "ymin": 2, "xmax": 20, "ymax": 30},
    {"name": "dog", "xmin": 30, "ymin": 5, "xmax": 60, "ymax": 45},
]


def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stderr
    return result


@pytest.fixture
def records(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES[: 1 + i % 2]} for i in range(6)] + [{"objects": []}])
    run("tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"), "--split", "train=0.5,val=0.5")
    return tmp_path / "out"


def test_help_of_every_command():
    for command in (
        [],
        ["tfrecords"],
        ["labelmap"],
        ["labelmap", "build"],
        ["labelmap", "check"],
        ["inspect"],
        ["config"],
        ["eval"],
        ["detect"],
    ):
        assert "usage: tfod-wrap" in run(*command, "--help").stdout


def test_tfrecords_prints_summary(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES}, {"objects": BOXES[:1]}])
    result = run("tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"))
    assert "boxes: cat" in result.stdout and "wrote 2 images" in result.stdout
    assert json.loads((tmp_path / "out" / "report.json").read_text())["boxes_per_class"] == {"cat": 2, "dog": 1}


def test_strict_error_exit_code_and_message(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": BOXES, "annotated_size": (10, 10)}])
    result = run("tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"), "--strict", expect=2)
    assert "error:" in result.stderr and "img000.jpg" in result.stderr and "annotation says 10x10" in result.stderr
    assert not (tmp_path / "out").exists()


def test_labelmap_build_and_check(voc_dataset, tmp_path):
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


def test_inspect_preview_draws_what_training_sees(records, tmp_path):
    out = preview_grid([str(records / "train.record")], tmp_path / "grid.png", count=3, columns=2)
    grid = Image.open(out).convert("RGB")
    assert grid.size == (640, 640)
    # Box outlines are drawn in their class colour over the decoded photos (every image has a cat).
    assert (0xE6, 0x19, 0x4B) in set(grid.getdata())  # class id 1 (cat)
    result = run("inspect", str(records / "*.record"), "--preview", str(tmp_path / "cli.png"))
    assert "cat: 6" in result.stdout and (tmp_path / "cli.png").is_file()
