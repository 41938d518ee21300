"""tools/sample_data.py: the sample dataset generated from photos bundled with scikit-image / scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from lxml import etree
from PIL import Image

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import OWNER_FILE
from tfod_wrap.data import convert

sys.path.insert(0, str(REPO / "tools"))
import sample_data  # noqa: E402

COUNT = 24


def read_folder(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def annotations(folder: Path) -> list[dict]:
    result = []
    for xml in sorted((folder / "annotations").glob("*.xml")):
        root = etree.parse(str(xml)).getroot()
        objects = [
            {
                "name": obj.findtext("name"),
                "box": tuple(int(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")),
                "truncated": int(obj.findtext("truncated")),
                "difficult": int(obj.findtext("difficult")),
            }
            for obj in root.iterfind("object")
        ]
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
        result.append({"xml": xml, "filename": root.findtext("filename"), "size": size, "objects": objects})
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("sample") / "data"
    summary = sample_data.generate(output, count=COUNT, seed=7)
    return output, summary


def test_layout_counts_and_classes(dataset):
    output, summary = dataset
    assert sorted(path.name for path in output.iterdir()) == [OWNER_FILE, "README.txt", "annotations", "images"]
    assert len(list((output / "images").glob("*.jpg"))) == COUNT
    found = annotations(output)
    assert len(found) == COUNT
    names = [obj["name"] for image in found for obj in image["objects"]]
    assert set(names) == {"cat", "cup", "rocket"}
    assert summary["images"] == COUNT
    assert summary["boxes"] == {name: names.count(name) for name in ("cat", "cup", "rocket")}
    assert all(len(image["objects"]) <= 3 for image in found)
    assert sum(1 for image in found if not image["objects"]) == summary["empty_images"]
    readme = (output / "README.txt").read_text()
    assert readme.splitlines()[0] == sample_data.MARKER
    for needle in ("seed=7", "chelsea.png", "coffee.png", "rocket.jpg", "china.jpg", "CC0", "public domain"):
        assert needle in readme


def test_boxes_lie_inside_images_that_match_their_annotations(dataset):
    output, _ = dataset
    for image in annotations(output):
        with Image.open(output / "images" / image["filename"]) as photo:
            assert photo.format == "JPEG" and photo.mode == "RGB"
            assert photo.size == image["size"] == (320, 240)
        width, height = image["size"]
        for obj in image["objects"]:
            xmin, ymin, xmax, ymax = obj["box"]
            assert 0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height, (image["xml"], obj)
            assert xmax - xmin >= 8 and ymax - ymin >= 8, (image["xml"], obj)  # recognisable, not specks
            assert obj["difficult"] == 0
            if obj["truncated"]:  # clipped by the border: the box reaches it
                assert xmin == 0 or ymin == 0 or xmax == width or ymax == height, (image["xml"], obj)


@pytest.mark.parametrize("label", ["cat", "cup", "rocket"])
def test_placed_masks_give_exact_boxes_and_truncation(label):
    """A placed object's mask: inside the image it keeps its whole area; cut by the border, its box reaches it."""
    size = (320, 240)
    rng = np.random.default_rng(5)
    for spec in sample_data.OBJECTS[label]:
        cut = sample_data.cutout(spec)
        for draw in range(20):
            length = rng.uniform(*spec.scale) * 240
            truncate = draw % 2 == 1
            _, alpha, area, truncated = sample_data._warp(cut, rng, size, length, truncate)
            box = sample_data._tight_box(alpha)
            assert box is not None
            xmin, ymin, xmax, ymax = box
            inside = float(alpha.sum()) / area
            touches = xmin == 0 or ymin == 0 or xmax == size[0] or ymax == size[1]
            if truncated:
                assert touches and inside < 0.999, (label, draw, box, inside)
            else:
                assert 0.98 < inside < 1.02, (label, draw, box, inside)
                # The box is tight: the mask reaches each of its four edges, and nothing lies outside it.
                mask = alpha >= 0.5
                assert mask[:, xmin].any() and mask[:, xmax - 1].any() and mask[ymin].any() and mask[ymax - 1].any()
                assert mask[ymin:ymax, xmin:xmax].sum() == mask.sum()


def test_rendered_objects_stay_visible():
    for index in range(8):
        _, objects = sample_data.render(index, 3, (320, 240))
        for obj in objects:
            assert obj["visible"] >= sample_data.MIN_VISIBLE


def test_same_seed_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    output, _ = dataset
    again = tmp_path / "again"
    sample_data.generate(again, count=COUNT, seed=7)
    assert read_folder(again) == read_folder(output)
    other = tmp_path / "other"
    sample_data.generate(other, count=COUNT, seed=8)
    first, second = read_folder(output), read_folder(other)
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first if name.startswith("images/"))


def test_images_depend_only_on_seed_and_index(dataset, tmp_path):
    """A shorter run is a prefix of a longer one, so worker count and --count do not change an image."""
    output, _ = dataset
    short = tmp_path / "short"
    sample_data.generate(short, count=5, seed=7)
    for name in ("images/sample_00004.jpg", "annotations/sample_00004.xml"):
        assert (short / name).read_bytes() == (output / name).read_bytes()


def test_worker_processes_give_the_same_bytes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    sample_data.generate(one, count=6, seed=11, workers=1)
    sample_data.generate(two, count=6, seed=11, workers=2)
    assert read_folder(one) == read_folder(two)


def test_the_converter_reads_it_without_problems(dataset, tmp_path):
    output, summary = dataset
    records = tmp_path / "records"
    report = convert(
        output / "annotations", records, images_dir=output / "images", split="train=0.8,val=0.2", workers=1
    )
    on_disk = json.loads((records / "report.json").read_text())
    for result in (report, on_disk):
        assert result["problem_counts"] == {}
        assert result["skipped"] == [] and result["box_problems"] == []
        assert result["images_written"] == COUNT
        assert result["boxes_per_class"] == summary["boxes"]
        assert set(result["classes"]) == {"cat", "cup", "rocket"}
    assert (records / "train.record").stat().st_size > 0 and (records / "val.record").stat().st_size > 0


def test_refuses_to_overwrite_a_folder_it_did_not_create(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match=f"^{foreign}: a non-empty folder not written by tfod-wrap"):
        sample_data.generate(foreign, count=2)
    assert read_folder(foreign) == {"notes.txt": b"precious"}
    (foreign / "README.txt").write_text("some other README\n")
    with pytest.raises(UserError, match="not written by tfod-wrap"):
        sample_data.generate(foreign, count=2)
    assert sorted(read_folder(foreign)) == ["README.txt", "notes.txt"]


def test_replaces_its_own_output_and_fills_an_empty_folder(tmp_path):
    target = tmp_path / "sample"
    target.mkdir()  # empty: fine
    sample_data.generate(target, count=3, seed=1)
    (target / "images" / "stray.jpg").write_bytes(b"left over")
    sample_data.generate(target, count=2, seed=1)  # its own output: replaced whole
    assert sorted(path.name for path in (target / "images").iterdir()) == ["sample_00000.jpg", "sample_00001.jpg"]
    assert [path.name for path in tmp_path.iterdir()] == ["sample"]  # no staging folder left behind


def test_command_line(tmp_path):
    output, preview = tmp_path / "cli", tmp_path / "preview.png"
    command = [sys.executable, str(REPO / "tools" / "sample_data.py"), "--output", str(output), "--count", "4"]
    extra = ["--seed", "2", "--size", "160x120", "--preview", str(preview)]
    done = subprocess.run([*command, *extra], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["images"] == 4 and summary["size"] == "160x120"
    with Image.open(output / "images" / "sample_00000.jpg") as image:
        assert image.size == (160, 120)
    with Image.open(preview) as image:
        assert image.format == "PNG" and image.size == (4 * (160 + 4) - 4, 120)  # one row of 4
    (output / OWNER_FILE).unlink()
    (output / "README.txt").unlink()
    refused = subprocess.run(command, capture_output=True, timeout=120)
    assert refused.returncode == 2 and b"not written by tfod-wrap" in refused.stderr


def test_pixels_are_realistic_photos_not_flat_colour(dataset):
    output, _ = dataset
    for path in sorted((output / "images").glob("*.jpg"))[:8]:
        with Image.open(path) as image:
            pixels = np.asarray(image, np.float32)
        assert pixels.std() > 15  # textured photo content
