"""End-to-end evaluation of a checkpoint trained for a few steps, and of its exported SavedModel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import tiny_voc

from tfod_wrap import config, evaluate, train
from tfod_wrap.data import convert
from tfod_wrap.evaluate.metrics import COCO_METRIC_NAMES

CLI = str(Path(sys.executable).parent / "tfod-wrap")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    voc = tiny_voc(root / "voc", 8)
    convert(voc, root / "records", split="train=0.5,val=0.5", workers=1)
    pipeline = root / "pipeline.config"
    config.configure(
        "ssd_mobilenet_v2",
        pipeline,
        checkpoint="none",
        data=root / "records",
        batch_size=2,
        steps=3,
        overrides=[
            "model.image_resizer.fixed_shape_resizer.height=160",
            "model.image_resizer.fixed_shape_resizer.width=160",
        ],
        check=False,
    )
    train.train(pipeline, root / "model", log=lambda *_: None)
    return root, pipeline, root / "model"


@pytest.fixture(scope="module")
def evaluated(trained):
    _, pipeline, model_dir = trained
    return evaluate.evaluate_checkpoints(pipeline, model_dir, checkpoint="all", log=lambda *_: None)


def test_every_checkpoint_is_scored_with_files_and_scalars(trained, evaluated):
    _, _, model_dir = trained
    assert list(evaluated) == ["ckpt-0", "ckpt-3"]
    metrics = evaluated["ckpt-3"]
    assert metrics["images"] == 4
    assert set(metrics["coco"]) == set(COCO_METRIC_NAMES)
    assert set(metrics["per_class"]) == {"a", "b"}
    assert all(metrics["per_class"][name]["num_groundtruth"] == 2 for name in ("a", "b"))
    for name in ("metrics.json", "pr_curves.png", "confusion_matrix.png", "worst_class_examples.png"):
        assert (model_dir / "eval" / "ckpt-3" / name).stat().st_size > 100
    assert (model_dir / "eval" / "metrics.json").is_file()
    events = sorted((model_dir / "eval").glob("events.out.tfevents.*"))
    scalars = {
        (value.tag, event.step)
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert ("DetectionBoxes_Precision/mAP", 3) in scalars and ("DetectionBoxes_Precision/mAP", 0) in scalars
    assert ("DetectionBoxes_PerformanceByCategory/mAP/a", 3) in scalars


def test_saved_model_scores_like_its_checkpoint(trained, evaluated, tmp_path):
    from object_detection import exporter_lib_v2
    from object_detection.utils import config_util

    root, pipeline, model_dir = trained
    proto = config_util.create_pipeline_proto_from_configs(config_util.get_configs_from_pipeline_file(str(pipeline)))
    exporter_lib_v2.export_inference_graph("image_tensor", proto, str(model_dir), str(tmp_path / "export"))
    result = subprocess.run(
        [
            CLI,
            "eval",
            "--saved-model",
            str(tmp_path / "export" / "saved_model"),
            "--data",
            str(root / "records" / "val.record"),
            "--label-map",
            str(root / "records" / "label_map.pbtxt"),
            "--output",
            str(tmp_path / "saved_eval"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "mAP" in result.stdout
    import json

    exported = json.loads((tmp_path / "saved_eval" / "metrics.json").read_text())
    for name in COCO_METRIC_NAMES:
        assert exported["coco"][name] == pytest.approx(evaluated["ckpt-3"]["coco"][name], abs=1e-6)


def test_cli_eval_latest_and_watch(trained, tmp_path):
    _, pipeline, model_dir = trained
    result = subprocess.run(
        [CLI, "eval", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--output", str(tmp_path / "e")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "mAP" in result.stdout and (tmp_path / "e" / "ckpt-3" / "metrics.json").is_file()
    # The run is finished (step 3 of 3): --watch scores the latest checkpoint and returns.
    watched = evaluate.watch(pipeline, model_dir, timeout=30, poll=0.1, output_dir=tmp_path / "w", log=lambda *_: None)
    assert list(watched) == ["ckpt-3"]
    missing = subprocess.run(
        [CLI, "eval", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--checkpoint", "ckpt-99"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no checkpoint 'ckpt-99'" in missing.stderr


def test_tfod_own_eval_loop_runs_in_this_environment(trained, tmp_path):
    """model_lib_v2.eval_continuously (what model_main_tf2.py runs for eval) draws its image summaries with
    Pillow's FreeTypeFont.getsize, removed in Pillow 10; tfod_wrap.compat restores it."""
    from object_detection import model_lib_v2

    _, pipeline, model_dir = trained
    model_lib_v2.eval_continuously(
        pipeline_config_path=str(pipeline),
        model_dir=str(tmp_path),
        checkpoint_dir=str(model_dir),
        wait_interval=0,
        timeout=1,
    )
    events = list((tmp_path / "eval").glob("events.out.tfevents.*"))
    tags = {
        value.tag
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert "DetectionBoxes_Precision/mAP@.50IOU" in tags
    assert any(tag.startswith("eval_side_by_side") for tag in tags)
