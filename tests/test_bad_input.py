"""Every kind of bad input, in lenient and in strict mode; inputs are never touched."""

from __future__ import annotations

import json

import pytest
from conftest import feature, photo, read_examples, snapshot, write_coco, write_csv

from tfod_wrap.data import DataError, convert

GOOD = {"name": "cat", "xmin": 2, "ymin": 2, "xmax": 20, "ymax": 30}


def corrupt(path):
    path.write_bytes(b"this is not an image at all" * 10)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# (spec of the bad image, problem kind in the report, words the strict error must contain)
CASES = {
    "missing image": ({"objects": [GOOD], "write_image": False}, "missing image", "image not found"),
    "corrupt image": ({"objects": [GOOD], "damage": corrupt}, "corrupt image", "corrupt"),
    "truncated jpeg": ({"objects": [GOOD], "damage": truncate, "size": (256, 192)}, "corrupt image", "truncated"),
    "size mismatch": ({"objects": [GOOD], "annotated_size": (640, 480)}, "size mismatch", "annotation says 640x480"),
    "malformed xml": ({"objects": [GOOD], "xml": "<annotation><filename>x"}, "malformed annotation", "malformed XML"),
    "bad coordinate": (
        {"objects": [{**GOOD, "xmax": "abc"}]},
        "malformed annotation",
        "<xmax> is not a number",
    ),
}


def make_case(voc_dataset, spec: dict):
    bad = {key: value for key, value in spec.items() if key not in ("damage", "xml")}
    voc = voc_dataset([{"objects": [GOOD]}, bad, {"objects": [GOOD]}])
    if "damage" in spec:
        spec["damage"](voc / "img001.jpg")
    if "xml" in spec:
        (voc / "img001.xml").write_text(spec["xml"])
    return voc


@pytest.mark.parametrize("case", list(CASES))
def test_lenient_skips_bad_image_with_reason(voc_dataset, tmp_path, case):
    spec, kind, _ = CASES[case]
    voc = make_case(voc_dataset, spec)
    before = snapshot(voc)
    report = convert(voc, tmp_path / "out", workers=1)

    assert report["images_written"] == 2
    assert report["images_skipped"] == 1
    assert report["problem_counts"] == {kind: 1}
    (skipped,) = report["skipped"]
    assert "img001" in skipped["file"] and skipped["kind"] == kind
    assert len(read_examples([tmp_path / "out" / "train.record"])) == 2
    assert json.loads((tmp_path / "out" / "report.json").read_text())["images_skipped"] == 1
    assert snapshot(voc) == before


@pytest.mark.parametrize("case", list(CASES))
def test_strict_stops_naming_file_and_problem_and_writes_nothing(voc_dataset, tmp_path, case):
    spec, _, words = CASES[case]
    voc = make_case(voc_dataset, spec)
    before = snapshot(voc)
    with pytest.raises(DataError, match="img001") as error:
        convert(voc, tmp_path / "out", strict=True, workers=1)
    assert words in str(error.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["voc"]  # no staging folder left behind either
    assert snapshot(voc) == before


BOX_CASES = {
    "partly outside": ({"name": "cat", "xmin": -5, "ymin": 10, "xmax": 80, "ymax": 30}, "clipped box", "clipped"),
    "no area": ({"name": "cat", "xmin": 10, "ymin": 10, "xmax": 10, "ymax": 30}, "dropped box", "no area"),
    "inverted": ({"name": "cat", "xmin": 30, "ymin": 10, "xmax": 10, "ymax": 30}, "dropped box", "no area"),
    "outside": ({"name": "cat", "xmin": 70, "ymin": 10, "xmax": 90, "ymax": 30}, "dropped box", "outside"),
    "unknown class": (
        {"name": "ufo", "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9},
        "unknown class",
        "not in the label map",
    ),
}


@pytest.fixture
def cat_label_map(tmp_path):
    path = tmp_path / "labels.pbtxt"
    path.write_text('item { name: "cat" id: 1 }\n')
    return path


@pytest.mark.parametrize("case", list(BOX_CASES))
def test_lenient_fixes_or_drops_bad_boxes(voc_dataset, tmp_path, cat_label_map, case):
    box, kind, words = BOX_CASES[case]
    voc = voc_dataset([{"objects": [GOOD, box]}])
    report = convert(voc, tmp_path / "out", label_map=cat_label_map, workers=1)
    assert report["images_written"] == 1
    assert report["problem_counts"] == {kind: 1}
    assert words in report["box_problems"][0]["reason"]
    (example,) = read_examples([tmp_path / "out" / "train.record"])
    xmins = feature(example, "image/object/bbox/xmin")
    if kind == "clipped box":
        assert xmins == pytest.approx([2 / 64, 0.0])
        assert feature(example, "image/object/bbox/xmax")[1] == pytest.approx(1.0)
    else:
        assert xmins == pytest.approx([2 / 64])


@pytest.mark.parametrize("case", list(BOX_CASES))
def test_strict_fails_on_bad_boxes(voc_dataset, tmp_path, cat_label_map, case):
    box, _, words = BOX_CASES[case]
    voc = voc_dataset([{"objects": [GOOD, box]}])
    with pytest.raises(DataError, match=words):
        convert(voc, tmp_path / "out", label_map=cat_label_map, strict=True, workers=1)
    assert not (tmp_path / "out").exists()


def test_malformed_json_is_an_error_in_both_modes(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [')
    for strict in (False, True):
        with pytest.raises(DataError, match=r"bad\.json: malformed JSON"):
            convert(tmp_path / "bad.json", tmp_path / "out", strict=strict, workers=1)
    write_coco(tmp_path / "nolists.json", [], [], [])
    (tmp_path / "wrong.json").write_text('{"images": {}}')
    with pytest.raises(DataError, match="not a COCO detection file"):
        convert(tmp_path / "wrong.json", tmp_path / "out", workers=1)


def test_coco_bad_annotation_skips_its_image(tmp_path):
    photo(40, 30).save(tmp_path / "a.jpg")
    photo(40, 30).save(tmp_path / "b.jpg")
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, {"id": 2, "file_name": "b.jpg"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, "x", 5]},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 3, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},
    ]
    coco = write_coco(tmp_path / "c.json", images, annotations, [{"id": 1, "name": "cat"}])
    report = convert(coco, tmp_path / "out", workers=1)
    assert report["images_written"] == 1
    reasons = [problem["reason"] for problem in report["skipped"]]
    assert any("bbox must be 4 numbers" in reason for reason in reasons)
    assert any("image id that is not in 'images'" in reason for reason in reasons)
    with pytest.raises(DataError, match=r"c\.json \(annotation 1\)"):
        convert(coco, tmp_path / "out2", strict=True, workers=1)


def test_malformed_csv(tmp_path):
    photo(50, 40).save(tmp_path / "p.jpg")
    (tmp_path / "cols.csv").write_text("filename,class,xmin\np.jpg,a,1\n")
    with pytest.raises(DataError, match=r"cols\.csv: missing column\(s\) width, height, ymin, xmax, ymax"):
        convert(tmp_path / "cols.csv", tmp_path / "out", workers=1)
    rows = write_csv(
        tmp_path / "rows.csv", [["p.jpg", 50, 40, "a", 1, 1, 9, 9], ["q.jpg", 50, 40, "a", "one", 1, 9, 9]]
    )
    report = convert(rows, tmp_path / "out", workers=1)
    assert report["images_written"] == 1
    assert "rows.csv:3" in report["skipped"][0]["file"]
    with pytest.raises(DataError, match=r"rows\.csv:3: q\.jpg"):
        convert(rows, tmp_path / "out2", strict=True, workers=1)


def test_duplicate_image_is_written_once(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": [GOOD]}])
    (voc / "copy.xml").write_text((voc / "img000.xml").read_text())
    report = convert(voc, tmp_path / "out", workers=1)
    assert report["images_written"] == 1
    assert report["problem_counts"] == {"duplicate image": 1}


def test_output_folder_safety(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": [GOOD]}])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not written by tfod-wrap"):
        convert(voc, foreign, workers=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="contains the input"):
        convert(voc, tmp_path, workers=1)

    # An earlier output is replaced whole: no stale shards survive a change of --shards.
    convert(voc, tmp_path / "out", shards=3, workers=1)
    convert(voc, tmp_path / "out", workers=1)
    listed = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert listed == [".tfod-wrap-output.json", "label_map.pbtxt", "report.json", "train.record"]


def _jpeg_bytes(size=(64, 48)) -> bytes:
    import io

    buffer = io.BytesIO()
    photo(*size).save(buffer, "JPEG")
    return buffer.getvalue()


def test_truncation_found_past_an_embedded_thumbnail(voc_dataset, tmp_path):
    """An embedded JPEG (as EXIF thumbnails are) has its own end marker; it must not hide truncation."""
    voc = voc_dataset([{"objects": [GOOD], "write_image": False}, {"objects": [GOOD], "write_image": False}])
    thumbnail = _jpeg_bytes((8, 8))
    segment = b"\xff\xe2" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    main = _jpeg_bytes()
    with_thumbnail = main[:2] + segment + main[2:]
    (voc / "img000.jpg").write_bytes(with_thumbnail[: len(with_thumbnail) - len(main) // 2])
    (voc / "img001.jpg").write_bytes(with_thumbnail + b"appended data, as motion photos have")
    report = convert(voc, tmp_path / "out", workers=1)
    assert [problem["kind"] for problem in report["skipped"]] == ["corrupt image"]
    assert "img000.jpg" in report["skipped"][0]["file"]
    assert report["image_handling"] == {"passed through": 1}


def test_truncated_png_is_corrupt(voc_dataset, tmp_path):
    voc = voc_dataset([{"file": "a.png", "objects": [GOOD], "size": (128, 96)}])
    truncate(voc / "a.png")
    report = convert(voc, tmp_path / "out", workers=1)
    assert report["problem_counts"] == {"corrupt image": 1}
