"""Property test of `tfrecords` (issue 18): generated VOC / COCO / CSV datasets with good and broken images and
annotations. Every written record decodes with the TFOD API's own decoder to the annotated boxes (clipped, boxes
without area dropped), the images written are exactly the good ones, and every skipped image is in report.json
with a reason."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import photo, read_examples, voc_xml, write_coco, write_csv
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from object_detection.core import standard_fields as fields
from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder

from tfod_wrap.data import convert

GOOD = ("jpeg", "png", "png16", "duplicate")
BROKEN = ("truncated", "truncated_eoi", "garbage", "missing", "bomb", "mismatch", "outside", "device", "huge_size")
SIZES = ((64, 48), (40, 56))


@st.composite
def image_specs(draw) -> dict:
    width, height = draw(st.sampled_from(SIZES))
    coordinate_x, coordinate_y = st.integers(-10, width + 10), st.integers(-10, height + 10)
    box = st.tuples(st.sampled_from("ab"), coordinate_x, coordinate_y, coordinate_x, coordinate_y)
    kind = draw(st.sampled_from(GOOD + BROKEN))
    return {"kind": kind, "size": (width, height), "boxes": draw(st.lists(box, max_size=3))}


datasets = st.tuples(st.sampled_from(["voc", "coco", "csv"]), st.lists(image_specs(), min_size=1, max_size=5))


def encoded(image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=90) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def image_bytes(kind: str, size: tuple[int, int], seed: int) -> bytes | None:
    """The file for one image kind (None: no file)."""
    picture = photo(*size, seed=seed)
    if kind == "png":
        return encoded(picture, "PNG")
    if kind == "png16":
        return tf.io.encode_png(np.asarray(picture).astype(np.uint16) * 257).numpy()
    jpeg = encoded(picture, "JPEG")
    if kind == "truncated":
        return jpeg[: len(jpeg) * 3 // 4]
    if kind == "truncated_eoi":
        scan = jpeg.index(b"\xff\xda")
        return jpeg[: scan + (len(jpeg) - scan) // 2] + b"\xff\xd9"
    if kind == "garbage":
        return np.random.default_rng(seed).bytes(300)
    if kind == "bomb":
        header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    if kind == "missing":
        return None
    return jpeg  # jpeg, mismatch, outside, huge_size


def lay_out(root: Path, specs: list[dict]) -> list[dict]:
    """Write the images; returns per image: stem, file name as annotated, annotated size, expected outcome."""
    data = root / "data"
    data.mkdir()
    laid = []
    for index, spec in enumerate(specs):
        kind, size, stem = spec["kind"], spec["size"], f"img{index:02d}"
        suffix = ".png" if kind in ("png", "png16", "bomb") else ".jpg"
        name, folder = stem + suffix, data
        content = image_bytes(kind, size, seed=index)
        if kind == "duplicate":
            earlier = [item for item in laid if item["kind"] in ("jpeg", "png")]
            if earlier:
                size, content = earlier[-1]["size"], (data / earlier[-1]["name"]).read_bytes()
        if kind == "outside":
            name, folder = f"../{stem}.jpg", root
            (root / f"{stem}.jpg").write_bytes(content)
        elif kind == "device":
            name = "/dev/null"
        elif content is not None:
            (folder / name).write_bytes(content)
        annotated = (size[0] + 5, size[1]) if kind == "mismatch" else size
        written = kind in ("jpeg", "png", "png16") or (kind == "duplicate" and content is not None and not earlier)
        copy_of = earlier[-1]["name"] if kind == "duplicate" and earlier else None
        laid.append(
            {
                **spec,
                "stem": stem,
                "name": name,
                "size": size,
                "annotated": annotated,
                "written": written,
                "copy_of": copy_of,
            }
        )
    return laid


def size_fields(item: dict) -> tuple[object, object]:
    return ("1e400", item["annotated"][1]) if item["kind"] == "huge_size" else item["annotated"]


def write_annotations(fmt: str, root: Path, laid: list[dict]) -> Path:
    data = root / "data"
    if fmt == "voc":
        for item in laid:
            objects = [dict(zip(("name", "xmin", "ymin", "xmax", "ymax"), box)) for box in item["boxes"]]
            (data / f"{item['stem']}.xml").write_text(voc_xml(item["name"], size_fields(item), objects))
        return data
    if fmt == "coco":
        images, annotations = [], []
        for index, item in enumerate(laid, start=1):
            width, height = size_fields(item)
            # Ids of mixed types, as exports write them: "3" and 3 are one image, "1" is category 1.
            image_id, reference = (str(index), index) if index % 2 else (index, str(index))
            images.append({"id": image_id, "file_name": item["name"], "width": width, "height": height})
            for name, x0, y0, x1, y1 in item["boxes"]:
                category = (1 if name == "a" else 2) if len(annotations) % 2 else ("1" if name == "a" else "2")
                box = [x0, y0, x1 - x0, y1 - y0]
                annotation = {"id": len(annotations) + 1, "image_id": reference, "category_id": category}
                annotations.append({**annotation, "bbox": box, "iscrowd": "0"})
        return write_coco(
            data / "instances.json", images, annotations, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
        )
    rows = [[item["name"], *size_fields(item), *box] for item in laid for box in item["boxes"]]
    return write_csv(data / "labels.csv", rows)


def expected_boxes(item: dict) -> list[tuple[str, list[float]]]:
    """What the converter promises: inverted or flat boxes dropped, the rest clipped to the image, then those
    left without area dropped; normalised [ymin, xmin, ymax, xmax]."""
    width, height = item["size"]
    kept = []
    for name, x0, y0, x1, y1 in item["boxes"]:
        if x1 <= x0 or y1 <= y0:
            continue
        x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
        y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
        if x1 > x0 and y1 > y0:
            kept.append((name, [y0 / height, x0 / width, y1 / height, x1 / width]))
    return kept


DECODER = TfExampleDecoder()


def decode(example) -> dict:
    tensors = DECODER.decode(tf.constant(example.SerializeToString()))
    return {key: value.numpy() for key, value in tensors.items()}


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets)
# a CSV image with no rows, then a copy of it with one: the copy is the dataset's only image of those bytes
@example(
    (
        "csv",
        [
            {"kind": "jpeg", "size": (64, 48), "boxes": []},
            {"kind": "duplicate", "size": (64, 48), "boxes": [("a", 0, 0, 0, 0)]},
        ],
    )
)
def test_written_records_decode_to_the_annotated_boxes_and_skips_have_reasons(dataset):
    fmt, specs = dataset
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        laid = lay_out(root, specs)
        annotations = write_annotations(fmt, root, laid)
        # An image no CSV row mentions is not in the dataset at all.
        annotated = [item for item in laid if fmt != "csv" or item["boxes"]]
        # A copy of an image the dataset leaves out is the first of its bytes there: its first copy is written.
        in_dataset, copied = {item["name"] for item in annotated}, set()
        for item in annotated:
            if item["copy_of"] and item["copy_of"] not in in_dataset:
                item["written"] = item["copy_of"] not in copied
                copied.add(item["copy_of"])
        report = convert(annotations, root / "out", workers=1)

        examples = read_examples(sorted((root / "out").glob("*.record")))
        written = {
            example.features.feature["image/filename"].bytes_list.value[0].decode(): example for example in examples
        }
        assert sorted(written) == sorted(item["name"] for item in annotated if item["written"])
        assert report["images_written"] == len(written)

        class_ids = report["classes"]  # (what label_map.pbtxt holds; a dataset without boxes has none)
        for item in annotated:
            if item["written"]:
                tensors = decode(written[item["name"]])
                assert tensors[fields.InputDataFields.image].shape == (*item["size"][::-1], 3)
                expected = expected_boxes(item)
                boxes = tensors[fields.InputDataFields.groundtruth_boxes]
                assert boxes.reshape(-1, 4) == pytest.approx(np.array([box for _, box in expected]).reshape(-1, 4))
                classes = tensors[fields.InputDataFields.groundtruth_classes].tolist()
                assert classes == [class_ids[name] for name, _ in expected]
                assert not tensors[fields.InputDataFields.groundtruth_is_crowd].any()
            else:
                keys = (item["stem"], item["name"])
                mentions = [p for p in report["skipped"] if any(key in p["file"] + p["reason"] for key in keys)]
                assert mentions and all(problem["reason"].strip() for problem in mentions), item
        saved = json.loads((root / "out" / "report.json").read_text())
        assert saved["skipped"] == report["skipped"]
