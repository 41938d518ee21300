"""Each annotation format converts to records that TensorFlow reads back with the right content."""

from __future__ import annotations

import json

import pytest
from conftest import feature, photo, read_examples, write_coco, write_csv

from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.data import convert


def test_voc_fields_and_tag_order(voc_dataset, tmp_path):
    objects = [
        {"name": "cat", "xmin": 8, "ymin": 4, "xmax": 40, "ymax": 36, "difficult": 1, "truncated": 1, "pose": "Left"},
        {"name": "dog", "xmin": 0, "ymin": 0, "xmax": 16, "ymax": 12},
    ]
    # Same content written twice: tags in the usual order and scrambled (children and box coordinates).
    voc = voc_dataset([{"objects": objects}, {"objects": objects, "shuffle": True}])
    report = convert(voc, tmp_path / "out", workers=1)

    assert report["format"] == "voc"
    assert report["images_written"] == 2
    assert read_label_map(tmp_path / "out" / "label_map.pbtxt") == {"cat": 1, "dog": 2}
    first, second = read_examples([tmp_path / "out" / "train.record"])
    for example in (first, second):
        assert feature(example, "image/object/class/text") == [b"cat", b"dog"]
        assert feature(example, "image/object/class/label") == [1, 2]
        assert feature(example, "image/object/bbox/xmin") == pytest.approx([8 / 64, 0])
        assert feature(example, "image/object/bbox/ymax") == pytest.approx([36 / 48, 12 / 48])
        assert feature(example, "image/object/difficult") == [1, 0]
        assert feature(example, "image/object/truncated") == [1, 0]
        assert feature(example, "image/object/view") == [b"Left", b"Unspecified"]
        assert feature(example, "image/height") == [48] and feature(example, "image/width") == [64]
        assert feature(example, "image/format") == [b"jpeg"]
    assert feature(first, "image/filename") == [b"img000.jpg"]


def test_voc_layout_with_separate_image_folder(tmp_path):
    (tmp_path / "VOC" / "Annotations").mkdir(parents=True)
    (tmp_path / "VOC" / "JPEGImages").mkdir()
    photo(32, 32).save(tmp_path / "VOC" / "JPEGImages" / "a.jpg")
    (tmp_path / "VOC" / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>x</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    report = convert(tmp_path / "VOC" / "Annotations", tmp_path / "out", workers=1)
    assert report["images_written"] == 1 and report["boxes_per_class"] == {"x": 1}


def test_coco_ids_crowd_and_negatives(tmp_path):
    for seed, name in enumerate(("a.jpg", "b.jpg", "empty.jpg")):
        photo(40, 30, seed=seed).save(tmp_path / name)  # distinct: identical bytes are written once
    images = [
        {"id": 7, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 9, "file_name": "b.jpg", "width": 40, "height": 30},
        {"id": 11, "file_name": "empty.jpg", "width": 40, "height": 30},
    ]
    categories = [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 90, "bbox": [4, 3, 20, 15], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        {"id": 3, "image_id": 9, "category_id": 17, "bbox": [10, 10, 5, 5]},
    ]
    coco = write_coco(tmp_path / "instances.json", images, annotations, categories)
    report = convert(coco, tmp_path / "out", workers=1)

    # Non-contiguous ids 3, 17, 90 become 1..3 in id order.
    assert read_label_map(tmp_path / "out" / "label_map.pbtxt") == {"car": 1, "cat": 2, "zebra": 3}
    assert report["format"] == "coco"
    assert report["splits"]["train"]["negatives"] == 1
    by_id = {feature(e, "image/source_id")[0]: e for e in read_examples([tmp_path / "out" / "train.record"])}
    assert set(by_id) == {b"7", b"9", b"11"}
    assert feature(by_id[b"7"], "image/object/class/label") == [3, 1]
    assert feature(by_id[b"7"], "image/object/is_crowd") == [0, 1]
    assert feature(by_id[b"7"], "image/object/bbox/xmax") == pytest.approx([24 / 40, 10 / 40])
    assert feature(by_id[b"11"], "image/object/bbox/xmin") == []


def test_csv_tutorial_format(tmp_path):
    photo(50, 40).save(tmp_path / "p.png")
    photo(50, 40, seed=1).save(tmp_path / "q.jpg")
    csv_file = write_csv(
        tmp_path / "labels.csv",
        [
            ["p.png", 50, 40, "red", 1, 2, 30, 20],
            ["p.png", 50, 40, "blue", 5, 5, 10, 10],
            ["q.jpg", 50, 40, "red", 0, 0, 50, 40],
        ],
    )
    report = convert(csv_file, tmp_path / "out", workers=1)
    assert report["format"] == "csv"
    assert report["boxes_per_class"] == {"blue": 1, "red": 2}
    examples = {feature(e, "image/filename")[0]: e for e in read_examples([tmp_path / "out" / "train.record"])}
    assert feature(examples[b"p.png"], "image/format") == [b"png"]
    assert feature(examples[b"p.png"], "image/object/class/text") == [b"red", b"blue"]
    assert feature(examples[b"q.jpg"], "image/object/bbox/xmax") == pytest.approx([1.0])


def test_auto_detects_each_format(tmp_path, voc_dataset):
    from tfod_wrap.data.annotations import detect_format

    voc = voc_dataset([{"objects": []}])
    coco = write_coco(tmp_path / "c.json", [], [], [])
    csv_file = write_csv(tmp_path / "c.csv", [])
    assert [detect_format(p) for p in (voc, coco, csv_file)] == ["voc", "coco", "csv"]


def test_given_label_map_sets_ids(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": [{"name": "dog", "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}]}])
    label_map = tmp_path / "lm.pbtxt"
    label_map.write_text('item { name: "cat" id: 4 }\nitem { name: "dog" id: 7 }\n')
    convert(voc, tmp_path / "out", label_map=label_map, workers=1)
    (example,) = read_examples([tmp_path / "out" / "train.record"])
    assert feature(example, "image/object/class/label") == [7]
    assert read_label_map(tmp_path / "out" / "label_map.pbtxt") == {"cat": 4, "dog": 7}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["classes"] == {"cat": 4, "dog": 7}
