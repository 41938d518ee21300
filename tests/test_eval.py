"""End-to-end evaluation of a checkpoint trained for a few steps, and of its exported SavedModel."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf

from tfod_wrap import cli, evaluate
from tfod_wrap.evaluate.metrics import COCO_METRIC_NAMES


@pytest.fixture(scope="module")
def trained(small_run, tmp_path_factory):
    """The session's 2-step run (ckpt-0, ckpt-2), its model folder copied: eval writes its results into it."""
    model_dir = tmp_path_factory.mktemp("eval") / "model"
    shutil.copytree(small_run / "model", model_dir)
    return small_run, small_run / "pipeline.config", model_dir


@pytest.fixture(scope="module")
def evaluated(trained):
    _, pipeline, model_dir = trained
    return evaluate.evaluate_checkpoints(pipeline, model_dir, checkpoint="all", log=lambda *_: None)


def test_every_checkpoint_is_scored_with_files_and_scalars(trained, evaluated):
    _, _, model_dir = trained
    assert list(evaluated) == ["ckpt-0", "ckpt-2"]
    metrics = evaluated["ckpt-2"]
    assert metrics["images"] == 4
    assert set(metrics["coco"]) == set(COCO_METRIC_NAMES)
    assert set(metrics["per_class"]) == {"a", "b"}
    assert all(metrics["per_class"][name]["num_groundtruth"] == 2 for name in ("a", "b"))
    for name in ("metrics.json", "pr_curves.png", "confusion_matrix.png", "worst_class_examples.png"):
        assert (model_dir / "eval" / "ckpt-2" / name).stat().st_size > 100
    assert (model_dir / "eval" / "metrics.json").is_file()
    events = sorted((model_dir / "eval").glob("events.out.tfevents.*"))
    scalars = {
        (value.tag, event.step)
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert ("DetectionBoxes_Precision/mAP", 2) in scalars and ("DetectionBoxes_Precision/mAP", 0) in scalars
    assert ("DetectionBoxes_PerformanceByCategory/mAP/a", 2) in scalars


def test_saved_model_scores_like_its_checkpoint(trained, evaluated, tmp_path, capsys):
    root, _, _ = trained
    code = cli.main(
        [
            "eval",
            "--saved-model",
            str(root / "export" / "saved_model"),
            "--data",
            str(root / "records" / "val.record"),
            "--label-map",
            str(root / "records" / "label_map.pbtxt"),
            "--output",
            str(tmp_path / "saved_eval"),
        ]
    )
    result = capsys.readouterr()
    assert code == 0, result.err
    assert "mAP" in result.out
    import json

    exported = json.loads((tmp_path / "saved_eval" / "metrics.json").read_text())
    for name in COCO_METRIC_NAMES:
        assert exported["coco"][name] == pytest.approx(evaluated["ckpt-2"]["coco"][name], abs=1e-6)


def test_cli_eval_latest_and_watch(trained, tmp_path, capsys):
    _, pipeline, model_dir = trained
    code = cli.main(
        ["eval", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--output", str(tmp_path / "e")]
    )
    result = capsys.readouterr()
    assert code == 0, result.err
    assert "mAP" in result.out and (tmp_path / "e" / "ckpt-2" / "metrics.json").is_file()
    # The run is finished (step 2 of 2): --watch scores the latest checkpoint and returns.
    watched = evaluate.watch(pipeline, model_dir, timeout=30, poll=0.1, output_dir=tmp_path / "w", log=lambda *_: None)
    assert list(watched) == ["ckpt-2"]
    code = cli.main(["eval", "--pipeline", str(pipeline), "--model-dir", str(model_dir), "--checkpoint", "ckpt-99"])
    assert code == 2 and "no checkpoint 'ckpt-99'" in capsys.readouterr().err


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
