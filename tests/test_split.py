"""Splits: seeded and reproducible, stratified, disjoint; shards hold every record once."""

from __future__ import annotations

import pytest
from conftest import feature, read_examples

from tfod_wrap.data import DataError, convert, record_files
from tfod_wrap.data.split import parse_split, stratified_split


def synthetic(n_images: int, rare_every: int = 10):
    keys = [f"img{i:04d}.jpg" for i in range(n_images)]
    classes = [{"common"} | ({"rare"} if i % rare_every == 0 else set()) for i in range(n_images)]
    classes[1] = set()  # a negative
    return keys, classes


def test_same_seed_same_split_other_seed_differs():
    keys, classes = synthetic(200)
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1}
    first = stratified_split(keys, classes, fractions, seed=3)
    assert first == stratified_split(list(reversed(keys)), list(reversed(classes)), fractions, seed=3)
    assert first != stratified_split(keys, classes, fractions, seed=4)


def test_split_sizes_and_stratification():
    keys, classes = synthetic(200)
    assignment = stratified_split(keys, classes, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=0)
    assert sorted(assignment) == sorted(keys)  # every image exactly once
    sizes = {name: sum(1 for s in assignment.values() if s == name) for name in ("train", "val", "test")}
    assert sizes == {"train": 140, "val": 40, "test": 20}
    rare = [assignment[k] for k, c in zip(keys, classes) if "rare" in c]
    assert {name: rare.count(name) for name in ("train", "val", "test")} == {"train": 14, "val": 4, "test": 2}


def test_class_with_few_images_reaches_every_split():
    keys = [f"{i}" for i in range(30)]
    classes = [{"common"} for _ in range(27)] + [{"scarce"}] * 3
    assignment = stratified_split(keys, classes, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert sorted(assignment[k] for k in keys[27:]) == ["test", "train", "val"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("train=0.8,val=0.3", "sum to 1"), ("train", "NAME=FRACTION"), ("a=0.5,a=0.5", "twice"), ("a=x", "not a number")],
)
def test_bad_split_spec(spec, message):
    with pytest.raises(DataError, match=message):
        parse_split(spec)


def test_records_per_split_and_shard(voc_dataset, tmp_path):
    specs = [{"objects": [{"name": "ab"[i % 2], "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}]} for i in range(20)]
    voc = voc_dataset(specs)
    out = tmp_path / "out"
    report = convert(voc, out, split="train=0.75,val=0.25", shards=2, seed=5, workers=2)
    names = {}
    for split in ("train", "val"):
        files = [out / name for name in record_files(split, 2)]
        assert [f.name for f in files] == [f"{split}.record-0000{i}-of-00002" for i in range(2)]
        names[split] = [feature(e, "image/filename")[0] for e in read_examples(files)]
        assert all(len(read_examples([f])) > 0 for f in files)
    assert len(names["train"]) == 15 and len(names["val"]) == 5
    assert not set(names["train"]) & set(names["val"])
    assert report["splits"]["val"]["boxes_per_class"] == {"a": 2, "b": 3} or report["splits"]["val"][
        "boxes_per_class"
    ] == {"a": 3, "b": 2}
    assert report["splits"]["train"]["pattern"] == "train.record-?????-of-00002"

    # Reproducible end to end: the same command gives the same bytes.
    again = convert(voc, tmp_path / "again", split="train=0.75,val=0.25", shards=2, seed=5, workers=1)
    for name in record_files("val", 2):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert again["splits"] == report["splits"]


def test_outputs_get_usual_permissions(voc_dataset, tmp_path):
    import os
    import stat

    voc = voc_dataset([{"objects": [{"name": "a", "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}]}])
    convert(voc, tmp_path / "out", workers=1)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask
    for name in ("train.record", "report.json", "label_map.pbtxt"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~umask
