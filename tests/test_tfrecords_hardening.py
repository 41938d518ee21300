"""tfrecords against hostile or broken input (issue 18): ids, paths, exceptions, undecodable images, duplicates."""

from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, feature, photo, read_examples, voc_xml, write_coco, write_csv

from tfod_wrap import cli
from tfod_wrap.data import DataError, convert

GOOD = {"name": "cat", "xmin": 2, "ymin": 2, "xmax": 20, "ymax": 30}
CLI = str(REPO / ".venv" / "bin" / "tfod-wrap")


def jpeg_bytes(size=(64, 48), seed: int = 0, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    photo(*size, seed=seed).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but carries one row of data (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid small JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(jpeg_bytes())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def three_image_voc(root: Path, middle_xml: str | None = None, middle_image: bytes | None = None) -> Path:
    """img0 and img2 good; img1 given by the arguments (defaults: good)."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(3):
        name = f"img{index}.jpg"
        (root / name).write_bytes(jpeg_bytes(seed=index))
        (root / f"img{index}.xml").write_text(voc_xml(name, (64, 48), [GOOD]))
    if middle_image is not None:
        (root / "img1.jpg").write_bytes(middle_image)
    if middle_xml is not None:
        (root / "img1.xml").write_text(middle_xml)
    return root


def skipped_files(report: dict) -> list[str]:
    return [problem["file"] for problem in report["skipped"]]


# --- 2. COCO ids of mixed types ----------------------------------------------------------------


def coco_two_images(tmp_path: Path, image_ids: list, annotation_ids: list, **annotation_extra) -> Path:
    for seed, name in enumerate(("a.jpg", "b.jpg")):
        (tmp_path / name).write_bytes(jpeg_bytes((40, 30), seed=seed))
    images = [
        {"id": image_ids[0], "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": image_ids[1], "file_name": "b.jpg", "width": 40, "height": 30},
    ]
    annotations = [
        {"id": n + 1, "image_id": image_id, "category_id": 1, "bbox": [2, 2, 10, 10], **annotation_extra}
        for n, image_id in enumerate(annotation_ids)
    ]
    return write_coco(tmp_path / "c.json", images, annotations, [{"id": 1, "name": "cat"}])


def test_coco_ids_match_by_value_across_string_and_number(tmp_path):
    coco = coco_two_images(tmp_path, ["1", 2], [1, "2"])
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["images_written"] == 2 and report["images_skipped"] == 0
    assert report["boxes_per_class"] == {"cat": 2}
    assert report["splits"]["train"]["negatives"] == 0
    examples = read_examples([tmp_path / "out" / "train.record"])
    assert sorted(feature(example, "image/source_id")[0] for example in examples) == [b"1", b"2"]


@pytest.mark.parametrize("bad_id", [1.5, True, None, [1]])
def test_coco_image_id_of_another_type_skips_that_image(tmp_path, bad_id):
    coco = coco_two_images(tmp_path, [bad_id, 2], [2])
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["images_written"] == 1
    assert any("id" in problem["reason"] and "a.jpg" in problem["reason"] for problem in report["skipped"])
    with pytest.raises(DataError, match=r"c\.json"):
        convert(coco, tmp_path / "strict", strict=True, workers=1)


def test_coco_same_id_as_string_and_number_is_a_duplicate(tmp_path):
    coco = coco_two_images(tmp_path, [1, "1"], [1])
    with pytest.raises(DataError, match="image id 1 appears twice"):
        convert(coco, tmp_path / "out", workers=1)


# --- 12. iscrowd "0", category_id true ---------------------------------------------------------


@pytest.mark.parametrize(("iscrowd", "expected"), [("0", 0), ("1", 1), (0, 0), (1, 1), (False, 0), (True, 1)])
def test_coco_iscrowd_read_by_value(tmp_path, iscrowd, expected):
    coco = coco_two_images(tmp_path, [1, 2], [1], iscrowd=iscrowd)
    convert(coco, tmp_path / "out", workers=1)
    by_id = {feature(e, "image/source_id")[0]: e for e in read_examples([tmp_path / "out" / "train.record"])}
    assert feature(by_id[b"1"], "image/object/is_crowd") == [expected]


def test_coco_iscrowd_junk_skips_the_image(tmp_path):
    coco = coco_two_images(tmp_path, [1, 2], [1], iscrowd="maybe")
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["images_written"] == 1
    assert "iscrowd" in report["skipped"][0]["reason"]


def test_coco_category_id_true_is_rejected_not_category_1(tmp_path):
    coco = coco_two_images(tmp_path, [1, 2], [1], category_id=True)
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["boxes_per_class"] == {"cat": 0}
    assert report["images_written"] == 1  # image 1 is skipped whole, image 2 stays a negative
    assert "category_id True" in report["skipped"][0]["reason"]


def test_coco_category_id_as_digit_string_matches(tmp_path):
    coco = coco_two_images(tmp_path, [1, 2], [1], category_id="1")
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["boxes_per_class"] == {"cat": 1} and report["images_skipped"] == 0


# --- 4. one bad file never kills a lenient run -------------------------------------------------


def test_decompression_bomb_png_is_skipped(tmp_path):
    root = three_image_voc(tmp_path / "voc", middle_xml=voc_xml("img1.png", None, [GOOD]))
    (root / "img1.png").write_bytes(png_declaring(30000, 30000))
    report = convert(root, tmp_path / "out", workers=1)
    assert report["images_written"] == 2
    (problem,) = report["skipped"]
    assert "img1.png" in problem["file"] and "pixels" in problem["reason"]
    with pytest.raises(DataError, match="img1.png"):
        convert(root, tmp_path / "strict", strict=True, workers=1)


def test_huge_number_in_voc_size_is_skipped(tmp_path):
    xml = voc_xml("img1.jpg", ("1e400", 48), [GOOD])
    root = three_image_voc(tmp_path / "voc", middle_xml=xml)
    report = convert(root, tmp_path / "out", workers=2)
    assert report["images_written"] == 2
    assert skipped_files(report) == [str(root / "img1.xml")]
    assert "1e400" in report["skipped"][0]["reason"]


def test_huge_number_in_csv_size_is_skipped(tmp_path):
    for seed, name in enumerate(("p.jpg", "q.jpg")):
        (tmp_path / name).write_bytes(jpeg_bytes((50, 40), seed=seed))
    rows = write_csv(
        tmp_path / "rows.csv", [["p.jpg", 50, 40, "a", 1, 1, 9, 9], ["q.jpg", "1e400", 40, "a", 1, 1, 9, 9]]
    )
    report = convert(rows, tmp_path / "out", workers=1)
    assert report["images_written"] == 1
    assert "rows.csv:3" in report["skipped"][0]["file"] and "1e400" in report["skipped"][0]["reason"]


@pytest.mark.parametrize(
    "entry",
    [
        {"id": 2, "file_name": "b.jpg", "width": 1e400, "height": 30},  # json writes Infinity
        {"id": 2, "file_name": "b.jpg", "width": "1e400", "height": 30},
        {"id": 2, "file_name": "b.jpg", "width": [40], "height": 30},
        {"id": 2, "file_name": {"a": 1}},
        {"file_name": "b.jpg"},
        "not an object",
    ],
)
def test_malformed_coco_image_entry_skips_that_image(tmp_path, entry):
    for seed, name in enumerate(("a.jpg", "b.jpg")):
        (tmp_path / name).write_bytes(jpeg_bytes((40, 30), seed=seed))
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, entry]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}]
    coco = write_coco(tmp_path / "c.json", images, annotations, [{"id": 1, "name": "cat"}])
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["images_written"] == 1 and report["images_skipped"] == 1
    assert report["skipped"][0]["kind"] == "malformed annotation"


@pytest.mark.parametrize(
    "annotation",
    [
        {"id": 5, "image_id": [1], "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 1, "category_id": [1], "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 1, "category_id": {"x": 1}, "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": [0]},
    ],
)
def test_unhashable_coco_values_are_problems_not_crashes(tmp_path, annotation):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 30)))
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}]
    coco = write_coco(tmp_path / "c.json", images, [annotation], [{"id": 1, "name": "cat"}])
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["problem_counts"] == {"malformed annotation": 1}


def test_null_byte_in_csv_filename_is_skipped(tmp_path):
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes((50, 40)))
    rows = write_csv(tmp_path / "rows.csv", [["p.jpg", 50, 40, "a", 1, 1, 9, 9], ["q\0.jpg", 50, 40, "a", 1, 1, 9, 9]])
    report = convert(rows, tmp_path / "out", workers=1)
    assert report["images_written"] == 1 and report["images_skipped"] == 1


# --- 5. every written record decodes -----------------------------------------------------------


def test_jpeg_claiming_60000_square_is_skipped(tmp_path):
    xml = voc_xml("img1.jpg", (60000, 60000), [GOOD])
    root = three_image_voc(tmp_path / "voc", middle_xml=xml, middle_image=jpeg_claiming(60000, 60000))
    report = convert(root, tmp_path / "out", workers=1)
    assert report["images_written"] == 2
    assert report["skipped"][0]["kind"] == "image too large" and "img1.jpg" in report["skipped"][0]["file"]
    assert "3,600,000,000 pixels" in report["skipped"][0]["reason"]


def test_truncated_jpeg_with_end_marker_appended_is_skipped(tmp_path):
    data = jpeg_bytes((256, 192), quality=95)
    root = three_image_voc(tmp_path / "voc", middle_xml=voc_xml("img1.jpg", (256, 192), [GOOD]))
    (root / "img1.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    # What TensorFlow would have trained on: the lower half grey, without an error.
    assert tf.io.decode_jpeg((root / "img1.jpg").read_bytes()).shape == (192, 256, 3)
    report = convert(root, tmp_path / "out", workers=1)
    assert report["images_written"] == 2
    (problem,) = report["skipped"]
    assert problem["kind"] == "corrupt image" and "img1.jpg" in problem["file"]
    with pytest.raises(DataError, match="img1.jpg"):
        convert(root, tmp_path / "strict", strict=True, workers=1)


def test_png_with_short_image_data_is_skipped(tmp_path):
    root = three_image_voc(tmp_path / "voc", middle_xml=voc_xml("img1.png", (64, 48), [GOOD]))
    full = io.BytesIO()
    photo(64, 48).save(full, "PNG")
    # A valid PNG frame (every CRC right) around half the pixel data.
    data = full.getvalue()
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    pixels = data[start + 8 : start + 8 + length]
    short = data[:start] + png_chunk(b"IDAT", pixels[: length // 2]) + png_chunk(b"IEND", b"")
    (root / "img1.png").write_bytes(short)
    report = convert(root, tmp_path / "out", workers=1)
    assert report["images_written"] == 2
    assert report["skipped"][0]["kind"] == "corrupt image"


# --- 12. 48-bit PNG ----------------------------------------------------------------------------


def test_48_bit_png_is_converted_to_8_bit(voc_dataset, tmp_path):
    voc = voc_dataset([{"file": "deep.png", "objects": [GOOD], "write_image": False}])
    pixels8 = np.asarray(photo(64, 48))
    (voc / "deep.png").write_bytes(tf.io.encode_png(pixels8.astype(np.uint16) * 257).numpy())
    report = convert(voc, tmp_path / "out", workers=1)
    assert "passed through" not in report["image_handling"]
    (example,) = read_examples([tmp_path / "out" / "train.record"])
    encoded = feature(example, "image/encoded")[0]
    assert encoded[24] == 8  # IHDR bit depth
    decoded = tf.io.decode_image(encoded, channels=3).numpy()
    assert np.abs(decoded.astype(int) - pixels8).max() <= 1


# --- 6. the same content is written once --------------------------------------------------------


def test_links_and_copies_are_written_once(tmp_path):
    root = tmp_path / "voc"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes(seed=1))
    (root / "b.jpg").symlink_to("a.jpg")
    os.link(root / "a.jpg", root / "c.jpg")
    (root / "d.jpg").write_bytes((root / "a.jpg").read_bytes())
    for index in range(8):  # other images, so there is something to split
        (root / f"o{index}.jpg").write_bytes(jpeg_bytes(seed=10 + index))
    for image in root.glob("*.jpg"):
        (root / f"{image.stem}.xml").write_text(voc_xml(image.name, (64, 48), [GOOD]))
    report = convert(root, tmp_path / "out", split="train=0.5,val=0.5", workers=2)
    assert report["images_written"] == 9
    duplicates = [problem for problem in report["skipped"] if problem["kind"] == "duplicate image"]
    assert sorted(Path(problem["file"]).name for problem in duplicates) == ["b.xml", "c.xml", "d.xml"]
    assert all("a.jpg" in problem["reason"] for problem in duplicates)
    keys = {}
    for split in ("train", "val"):
        for example in read_examples([tmp_path / "out" / f"{split}.record"]):
            key = feature(example, "image/key/sha256")[0]
            assert key not in keys, f"{key} in {keys.get(key)} and {split}"
            keys[key] = split
    assert len(keys) == 9


# --- 3. every image inside the image root ------------------------------------------------------


def outside_layout(tmp_path: Path, filename: str) -> Path:
    """A VOC folder whose img1 annotation names `filename`; a secret image lies outside the folder."""
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(seed=7))
    root = three_image_voc(tmp_path / "voc", middle_xml=voc_xml(filename, (64, 48), [GOOD]))
    (root / "img1.jpg").unlink()
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    return root


OUTSIDE = {
    "dot-dot": "../secret.jpg",
    "absolute": "{tmp}/secret.jpg",
    "symlink": "link.jpg",
    "symlinked folder": "linked_dir/secret.jpg",
}


@pytest.mark.parametrize("case", list(OUTSIDE))
def test_image_outside_the_image_folder_is_refused(tmp_path, case):
    filename = OUTSIDE[case].format(tmp=tmp_path)
    root = outside_layout(tmp_path, filename)
    report = convert(root, tmp_path / "out", workers=1)
    assert report["images_written"] == 2
    (problem,) = report["skipped"]
    assert problem["kind"] == "image outside the image folder"
    assert "--allow-outside-images" in problem["reason"]
    with pytest.raises(DataError, match="outside"):
        convert(root, tmp_path / "strict", strict=True, workers=1)
    allowed = convert(root, tmp_path / "allowed", allow_outside_images=True, workers=1)
    assert allowed["images_written"] == 3


def test_symlink_inside_the_folder_is_fine(tmp_path):
    root = three_image_voc(tmp_path / "voc", middle_xml=voc_xml("inner.jpg", (64, 48), [GOOD]))
    (root / "sub").mkdir()
    (root / "img1.jpg").rename(root / "sub" / "real.jpg")
    (root / "inner.jpg").symlink_to("sub/real.jpg")
    assert convert(root, tmp_path / "out", workers=1)["images_written"] == 3


def limited(seconds: int):
    """Run the CLI in a process that cannot take more than 3 GiB nor run past `seconds` of CPU."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))

    return apply


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, preexec_fn=limited(timeout), env=environment
    )


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_devices_and_fifos_are_refused_without_reading(tmp_path, special):
    filename = special
    root = three_image_voc(tmp_path / "voc", middle_xml=voc_xml(filename, (64, 48), [GOOD]))
    if special == "fifo":
        os.mkfifo(root / "fifo")
    result = run_cli("tfrecords", "--input", str(root), "--output", str(tmp_path / "out"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 images" in result.stdout
    strict = run_cli("tfrecords", "--input", str(root), "--output", str(tmp_path / "s"), "--strict")
    assert strict.returncode == 2
    assert "Traceback" not in strict.stderr and len(strict.stderr.strip().splitlines()) == 1
    assert "not a regular file" in strict.stderr
    allowed = run_cli("tfrecords", "--input", str(root), "--output", str(tmp_path / "a"), "--allow-outside-images")
    assert allowed.returncode == 0 and "wrote 2 images" in allowed.stdout


def test_cli_flag_is_documented(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["tfrecords", "--help"])
    assert done.value.code == 0 and "--allow-outside-images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content", [bytes(range(256)) * 8, b"[" * 100_000, b"\xef\xbb\xbf{}"], ids=["binary", "deep", "bom"]
)
def test_unreadable_coco_json_is_one_error_in_both_modes(tmp_path, content):
    (tmp_path / "c.json").write_bytes(content)
    for strict in (False, True):
        with pytest.raises(DataError, match=r"c\.json: (malformed JSON|not a COCO detection file)"):
            convert(tmp_path / "c.json", tmp_path / "out", strict=strict, workers=1)
