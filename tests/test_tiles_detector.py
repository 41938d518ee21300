"""Sliced inference with the real trained detector (an SSD trained on 320x240 shapes at 160 px): on a large canvas
where its object sits across a tile border, `detect --tile` finds it once, and `eval --tile` (export and checkpoint)
scores the whole canvas against its whole annotation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import photo, voc_xml
from PIL import Image

from tfod_wrap.cli import main
from tfod_wrap.core.checkpoints import find_checkpoints
from tfod_wrap.core.tiles import iou, tile_grid
from tfod_wrap.data import convert

WIDTH, HEIGHT, TILE = 1280, 960, 320
# A training image stretched to a tile's square (the model sees each 320 px tile as it saw a 320x240 image) at
# (160, 120): its shape crosses the first tile's right edge (x=320) and the second row's top edge (y=213)
PLACE, SIDE = (160, 120), 320


@pytest.fixture(scope="module")
def large_canvas(trained_detector, tmp_path_factory) -> tuple[Path, list[float]]:
    """canvas.png with its VOC annotation; returns (folder, the object's pixel box xmin, ymin, xmax, ymax)."""
    folder = tmp_path_factory.mktemp("canvas")
    image = photo(WIDTH, HEIGHT, seed=3)
    image.paste(Image.open(trained_detector.image).convert("RGB").resize((SIDE, SIDE)), PLACE)
    image.save(folder / "canvas.png")
    ymin, xmin, ymax, xmax = trained_detector.box
    box = [PLACE[0] + xmin * SIDE, PLACE[1] + ymin * SIDE, PLACE[0] + xmax * SIDE, PLACE[1] + ymax * SIDE]
    objects = [{"name": trained_detector.class_name, "xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3]}]
    (folder / "canvas.xml").write_text(voc_xml("canvas.png", (WIDTH, HEIGHT), objects))
    crossed = [t for t in tile_grid(WIDTH, HEIGHT, TILE) if iou(np.array(box), np.array([t.box]))[0] > 0]
    assert any(not (t.x <= box[0] and box[2] <= t.x + TILE and t.y <= box[1] and box[3] <= t.y + TILE) for t in crossed)
    return folder, box


def _class_id(trained_detector) -> int:
    from tfod_wrap.core.labelmap import read_label_map

    return read_label_map(trained_detector.export_dir / "label_map.pbtxt")[trained_detector.class_name]


@pytest.mark.parametrize("method", ["nms", "fuse"])
def test_sliced_detect_finds_the_object_across_a_tile_border_once(trained_detector, large_canvas, tmp_path, method):
    folder, box = large_canvas
    output = tmp_path / "out"
    args = ["detect", str(folder / "canvas.png"), "--model", str(trained_detector.export_dir), "--output", str(output)]
    assert main([*args, "--tile", str(TILE), "--tile-merge", method]) == 0
    found = [d for d in json.loads((output / "detections.json").read_text()) if d["score"] >= 0.5]
    xywh = np.array([d["bbox"] for d in found]).reshape(-1, 4)
    overlaps = iou(np.array(box), np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
    hits = [d for d, value in zip(found, overlaps) if value >= 0.5]
    assert len(hits) == 1, (box, found)  # found, and once: the tiles that saw it merged
    assert hits[0]["category_id"] == _class_id(trained_detector)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["tiling"]["merge"] == method
    assert summary["tiling"]["calls_per_image"] == len(tile_grid(WIDTH, HEIGHT, TILE)) == 20


def test_sliced_eval_scores_the_whole_canvas_for_an_export_and_a_checkpoint(trained_detector, large_canvas, tmp_path):
    folder, _ = large_canvas
    labels = trained_detector.export_dir / "label_map.pbtxt"
    convert(folder, tmp_path / "records", label_map=labels, workers=1)
    records = tmp_path / "records" / "train.record"
    args = ["eval", "--saved-model", str(trained_detector.export_dir / "saved_model"), "--data", str(records)]
    output = tmp_path / "eval-export"
    tiled = ["--label-map", str(labels), "--output", str(output), "--tile", str(TILE), "--tile-merge", "fuse"]
    assert main([*args, *tiled]) == 0
    exported = json.loads((output / "metrics.json").read_text())
    # the checkpoint, on these records instead of the pipeline's eval input
    pipeline = ["eval", "--pipeline", str(trained_detector.pipeline), "--model-dir", str(trained_detector.model_dir)]
    assert main([*pipeline, "--data", str(records), "--output", str(tmp_path / "eval-ckpt"), "--tile", str(TILE)]) == 0
    restored = json.loads((tmp_path / "eval-ckpt" / "metrics.json").read_text())
    latest = Path(find_checkpoints(trained_detector.model_dir, "latest")[0]).name
    assert restored["tiling"]["merge"] == "nms" and Path(restored["checkpoint"]).name == latest
    for metrics in (exported, restored):
        assert metrics["tiling"]["size"] == TILE and metrics["images"] == 1
        values = metrics["per_class"][trained_detector.class_name]
        assert values["num_groundtruth"] == 1
        assert values["best_f1"]["recall"] == 1.0  # the one object, found on the whole canvas at IoU 0.5
        assert metrics["coco"]["DetectionBoxes_Precision/mAP@.50IOU"] == pytest.approx(1.0)
        assert metrics["coco"]["DetectionBoxes_Precision/mAP"] > 0  # at the raised maxDets: tiles give hundreds
        assert metrics["max_detections"] > 100
