"""tfod_wrap.sample (`tfod-wrap sample`, `tools/sample_data.py`): the sample dataset generated from photos bundled
with scikit-image / scikit-learn."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from lxml import etree
from PIL import Image

from tfod_wrap import cli
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import OWNER_FILE
from tfod_wrap.data import convert
from tfod_wrap.sample import MARKER, drawing, generate, photos, render, scene
from tfod_wrap.sample.dataset import voc_xml

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
    summary = generate(output, count=COUNT, seed=7)
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
    assert readme.splitlines()[0] == MARKER
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
    for spec in photos.OBJECTS[label]:
        cut = photos.cutout(spec)
        for draw in range(20):
            length = rng.uniform(*spec.scale) * 240
            truncate = draw % 2 == 1
            _, alpha, area, truncated = drawing.warp(cut, rng, size, length, truncate)
            box = drawing.tight_box(alpha)
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
        _, objects = render(index, 3, (320, 240))
        for obj in objects:
            assert obj["visible"] >= scene.MIN_VISIBLE


def test_same_seed_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    output, _ = dataset
    again = tmp_path / "again"
    generate(again, count=COUNT, seed=7)
    assert read_folder(again) == read_folder(output)
    other = tmp_path / "other"
    generate(other, count=COUNT, seed=8)
    first, second = read_folder(output), read_folder(other)
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first if name.startswith("images/"))


def test_images_depend_only_on_seed_and_index(dataset, tmp_path):
    """A shorter run is a prefix of a longer one, so worker count and --count do not change an image."""
    output, _ = dataset
    short = tmp_path / "short"
    generate(short, count=5, seed=7)
    for name in ("images/sample_00004.jpg", "annotations/sample_00004.xml"):
        assert (short / name).read_bytes() == (output / name).read_bytes()


def test_worker_processes_give_the_same_bytes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    generate(one, count=6, seed=11, workers=1)
    generate(two, count=6, seed=11, workers=2)
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
        generate(foreign, count=2)
    assert read_folder(foreign) == {"notes.txt": b"precious"}
    (foreign / "README.txt").write_text("some other README\n")
    with pytest.raises(UserError, match="not written by tfod-wrap"):
        generate(foreign, count=2)
    assert sorted(read_folder(foreign)) == ["README.txt", "notes.txt"]


def test_replaces_its_own_output_and_fills_an_empty_folder(tmp_path):
    target = tmp_path / "sample"
    target.mkdir()  # empty: fine
    generate(target, count=3, seed=1)
    (target / "images" / "stray.jpg").write_bytes(b"left over")
    generate(target, count=2, seed=1)  # its own output: replaced whole
    assert sorted(path.name for path in (target / "images").iterdir()) == ["sample_00000.jpg", "sample_00001.jpg"]
    assert [path.name for path in tmp_path.iterdir()] == ["sample"]  # no staging folder left behind


def test_command_line(tmp_path, capsys):
    output, preview = tmp_path / "cli", tmp_path / "preview.png"
    command = ["sample", "--output", str(output), "--count", "4"]
    assert cli.main([*command, "--seed", "2", "--size", "160x120", "--preview", str(preview)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["size"] == "160x120"
    with Image.open(output / "images" / "sample_00000.jpg") as image:
        assert image.size == (160, 120)
    with Image.open(preview) as image:
        assert image.format == "PNG" and image.size == (4 * (160 + 4) - 4, 120)  # one row of 4
    (output / OWNER_FILE).unlink()
    (output / "README.txt").unlink()
    assert cli.main(command) == 2
    assert "not written by tfod-wrap" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample", "--output", str(output), "--size", "320"])
    assert "expected WIDTHxHEIGHT such as 320x240, got '320'" in capsys.readouterr().err


def test_tools_script_is_the_sample_command(tmp_path):
    """`python tools/sample_data.py` (the README's demo step 1) runs `tfod-wrap sample`: the same files."""
    script, command = tmp_path / "script", ["--count", "2", "--seed", "4", "--size", "96x64"]
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "sample_data.py"), "--output", str(script), *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == 2
    generate(tmp_path / "library", count=2, seed=4, size=(96, 64))
    assert read_folder(script) == read_folder(tmp_path / "library")


# sha256 of files written by tools/sample_data.py before it moved into tfod_wrap.sample (commit 1e2a61e):
# `make demo`'s data (seed 0, 320x240) must stay byte-identical, or docs/BENCHMARKS.md's demo numbers would
# no longer be reproducible. (seed, index, size) -> (JPEG, VOC XML).
EARLIER_FILES = {
    (0, 0, (320, 240)): (
        "b72c6201a0d1a2c67043436b10dbd4183bfa869ce2f421a62c64f9b69de93b9f",
        "6ece0bb6b5e6b2cf5e16c93ef5d5b342ae47e917b4547a6b89a73c6e80c6a161",
    ),
    (0, 1, (320, 240)): (
        "9ed0802787c1e0a7689616ee901f5e561685f2e76390ec7df2ed3cb59c5c2a91",
        "6c74af49f65270fda2f5c9fc82e04fb50b9b53da470684a9beef173636bc897b",
    ),
    (0, 57, (320, 240)): (
        "c5268bc38cb42a0de15a83561c3614f231264c18a43549b28f9b337724649116",
        "b09f09a8066566b8a712a5cef116a88aa95d7f0d16a79b9df260cae3532f4dcc",
    ),
    (0, 299, (320, 240)): (
        "87a4f7698faa8d39e1d978860178478097a91a726fa81375837b35e9cf568c65",
        "eb07859e1dec7a919473cefbcc85429c3090cf554915dd7ed8f86ba8895f236c",
    ),
    (3, 2, (160, 120)): (
        "d882780f450e71fb2363a11a2dc70a596f311b9fe25049e5e1312bfa9030b7ea",
        "358b6c65a8765b1de9f6d6bb4c15148bbb8f0b794542aeb4f3840dd6abc90f7e",
    ),
}


# The same files made on a CPU without AVX-512 (AMD EPYC, 2026-12-07): OpenCV's float kernels there round a few
# pixels of this image differently (its other images and every annotation are the same bytes).
WITHOUT_AVX512 = {(0, 0, (320, 240)): "0a9e09d6e962347807f02dc773fdd5cbb0b9bb7e473c7977670688f288d11a39"}


def jpeg_hashes(key: tuple) -> set[str]:
    """The JPEG hashes the earlier generator gave for (seed, index, size), on the CPUs it was run on."""
    return {EARLIER_FILES[key][0], WITHOUT_AVX512.get(key, EARLIER_FILES[key][0])}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_are_those_of_the_earlier_generator(tmp_path):
    written = tmp_path / "demo"
    generate(written, count=2, seed=0)  # through the writer: images/ and annotations/ as make demo gets them
    for index in (0, 1):
        xml = EARLIER_FILES[(0, index, (320, 240))][1]
        image = (written / "images" / f"sample_{index:05d}.jpg").read_bytes()
        assert sha256(image) in jpeg_hashes((0, index, (320, 240))), index
        assert sha256((written / "annotations" / f"sample_{index:05d}.xml").read_bytes()) == xml, index
    for (seed, index, size), (_, xml) in EARLIER_FILES.items():
        image, objects = render(index, seed, size)
        assert sha256(image) in jpeg_hashes((seed, index, size)), (seed, index, size)
        assert sha256(voc_xml(f"sample_{index:05d}.jpg", size, objects).encode()) == xml, (seed, index)


def test_pixels_are_realistic_photos_not_flat_colour(dataset):
    output, _ = dataset
    for path in sorted((output / "images").glob("*.jpg"))[:8]:
        with Image.open(path) as image:
            pixels = np.asarray(image, np.float32)
        assert pixels.std() > 15  # textured photo content
