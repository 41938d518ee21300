"""Issue 18, items 10-12: eval against records' own class names and at one trace for any image size; one-line
errors (exit 2, no traceback) for bad config values, unreadable files, broken checkpoints and mismatched resumes;
learning rates that cannot train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import photo, voc_xml

from tfod_wrap import cli, config, evaluate
from tfod_wrap.core.detector import CheckpointDetector
from tfod_wrap.core.labelmap import write_label_map
from tfod_wrap.data import convert
from tfod_wrap.evaluate.metrics import COCO_METRIC_NAMES

RATE = "train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate.learning_rate_base"


def one_line_error(capsys, argv: list[str], *words: str) -> str:
    """Run the CLI in-process; it must exit 2 with one `error:` line naming `words`, and no traceback."""
    code = cli.main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert str(word) in err, (word, err)
    return err


@pytest.fixture
def run(small_run):
    """The session's two training steps of a 2-class SSD at 160x160 on train/val records: ckpt-0 and ckpt-2 (read
    only: the tests that change the run change a copy)."""
    return small_run, small_run / "pipeline.config"


def copy_model(run, tmp_path: Path) -> Path:
    shutil.copytree(run[0] / "model", tmp_path / "model")
    return tmp_path / "model"


# --- item 11: tracebacks instead of messages ---------------------------------------------------------------


def test_config_set_int32_overflow(capsys, tmp_path):
    argv = ["config", "ssd_mobilenet_v2", "--checkpoint", "none", "--no-check", "--output", tmp_path / "p.config"]
    one_line_error(capsys, [*argv, "--set", "model.num_classes=99999999999"], "model.num_classes", "out of range")
    assert not (tmp_path / "p.config").exists()


@pytest.mark.parametrize("option", ["--steps", "--batch-size"])
def test_config_steps_or_batch_size_overflow(capsys, tmp_path, option):
    argv = ["config", "ssd_mobilenet_v2", "--checkpoint", "none", "--no-check", "--output", tmp_path / "p.config"]
    one_line_error(capsys, [*argv, option, "99999999999"], option, "out of range")
    assert not (tmp_path / "p.config").exists()


def test_config_output_is_a_folder(capsys, tmp_path):
    (tmp_path / "folder").mkdir()
    argv = ["config", "ssd_mobilenet_v2", "--checkpoint", "none", "--no-check", "--output", tmp_path / "folder"]
    one_line_error(capsys, argv, str(tmp_path / "folder"), "is a folder")


@pytest.mark.parametrize(
    "report", ["[1, 2", "[1, 2]", '{"label_map": "label_map.pbtxt"}', '{"splits": {"train": 3}}', "\udcff"]
)
def test_config_data_with_junk_report(capsys, tmp_path, report):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "report.json").write_bytes(report.encode("utf-8", "surrogateescape"))
    write_label_map({"a": 1}, tmp_path / "records" / "label_map.pbtxt")
    argv = ["config", "ssd_mobilenet_v2", "--checkpoint", "none", "--no-check", "--output", tmp_path / "p.config"]
    one_line_error(capsys, [*argv, "--data", tmp_path / "records"], "report.json")


@pytest.mark.parametrize("command", [["config", "show"], ["config", "diff", "SAME"], ["labelmap", "check"]])
def test_binary_file_for_text_commands(capsys, tmp_path, command):
    binary = tmp_path / "binary.config"
    binary.write_bytes(bytes(range(256)) * 8)
    argv = [binary if part == "SAME" else part for part in command] + [binary]
    one_line_error(capsys, argv, str(binary), "not UTF-8 text")


def test_eval_on_truncated_checkpoint(capsys, run, tmp_path):
    model_dir = copy_model(run, tmp_path)
    data = next(model_dir.glob("ckpt-2.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    argv = ["eval", "--pipeline", run[1], "--model-dir", model_dir, "--output", tmp_path / "eval"]
    one_line_error(capsys, argv, "ckpt-2", "cannot restore")


def test_eval_on_stale_checkpoint_state(capsys, run, tmp_path):
    # The `checkpoint` state file names a checkpoint whose files are gone (deleted, or copied without them).
    model_dir = copy_model(run, tmp_path)
    for path in model_dir.glob("ckpt-2.*"):
        path.unlink()
    argv = ["eval", "--pipeline", run[1], "--model-dir", model_dir, "--output", tmp_path / "eval"]
    one_line_error(capsys, argv, "ckpt-2", "cannot restore")


def test_resume_with_another_class_count(capsys, run, tmp_path):
    model_dir = copy_model(run, tmp_path)
    other = tmp_path / "three.config"
    config.configure(run[1], other, overrides=["model.num_classes=3"], check=False)
    argv = ["train", "--pipeline", other, "--model-dir", model_dir, "--resume", "--steps", "3"]
    one_line_error(capsys, argv, "ckpt-2", "does not fit")
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-2")


# --- item 12: learning rates that cannot train ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-0.01"])
def test_config_refuses_non_finite_or_negative_learning_rate(capsys, tmp_path, value):
    argv = ["config", "ssd_mobilenet_v2", "--checkpoint", "none", "--output", tmp_path / "p.config"]
    one_line_error(capsys, [*argv, "--set", f"{RATE}={value}"], "learning_rate_base", value)
    assert not (tmp_path / "p.config").exists()


def test_train_past_the_schedule_warns_of_rate_zero(run):
    from object_detection.builders import optimizer_builder

    from tfod_wrap.train.loop import _check_schedule

    pipeline = config.load(run[1])
    logged: list[str] = []
    end = pipeline.train_config.num_steps
    _check_schedule(pipeline, run[1], end + 2, logged.append)
    assert any("past the end of its learning-rate schedule" in line and "rate 0" in line for line in logged), logged
    # what the warning says, from the TFOD API's own schedule: cosine decay is 0 past total_steps
    step = tf.Variable(0, dtype=tf.int64)
    _, (rate,) = optimizer_builder.build(pipeline.train_config.optimizer, global_step=step)
    step.assign(end - 1)
    assert float(rate()) > 0
    step.assign(end + 1)
    assert float(rate()) == 0.0


# --- item 10: eval reads the records' own class names, and traces once for any image size ------------------


def rewrite_records(source: str, target: Path, drop: str) -> Path:
    """The records of `source` without feature `drop` (as TFOD's create_coco_tf_record.py writes only text)."""
    with tf.io.TFRecordWriter(str(target)) as writer:
        for record in tf.data.TFRecordDataset([source]):
            example = tf.train.Example.FromString(record.numpy())
            del example.features.feature[drop]
            writer.write(example.SerializeToString())
    return target


def test_eval_refuses_label_map_contradicting_records(run, tmp_path):
    root, pipeline = run
    swapped = tmp_path / "swapped.pbtxt"
    write_label_map({"b": 1, "a": 2}, swapped)
    detector = CheckpointDetector(pipeline, root / "model" / "ckpt-2")
    records = [str(root / "records" / "val.record")]
    with pytest.raises(evaluate.EvalError, match="val.record") as error:
        evaluate.score(records, detector, swapped, tmp_path / "eval")
    assert str(swapped) in str(error.value) and "'a'" in str(error.value)


def test_eval_reads_class_text_when_records_have_no_label(run, tmp_path):
    root, pipeline = run
    detector = CheckpointDetector(pipeline, root / "model" / "ckpt-2")
    label_map = root / "records" / "label_map.pbtxt"
    original = evaluate.score([str(root / "records" / "val.record")], detector, label_map, tmp_path / "a")
    text_only = rewrite_records(
        str(root / "records" / "val.record"), tmp_path / "text.record", "image/object/class/label"
    )
    metrics = evaluate.score([str(text_only)], detector, label_map, tmp_path / "b")
    assert sum(values["num_groundtruth"] for values in metrics["per_class"].values()) == 4
    assert all(metrics["coco"][name] == original["coco"][name] for name in COCO_METRIC_NAMES)
    assert metrics["coco"][COCO_METRIC_NAMES[0]] != -1


def test_eval_refuses_boxes_without_any_class(run, tmp_path):
    root, pipeline = run
    detector = CheckpointDetector(pipeline, root / "model" / "ckpt-2")
    no_label = rewrite_records(str(root / "records" / "val.record"), tmp_path / "a.record", "image/object/class/label")
    bare = rewrite_records(str(no_label), tmp_path / "b.record", "image/object/class/text")
    with pytest.raises(evaluate.EvalError, match="no class"):
        evaluate.score([str(bare)], detector, root / "records" / "label_map.pbtxt", tmp_path / "eval")


def mixed_size_records(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    for index, (width, height) in enumerate(sizes):
        photo(width, height, seed=index).save(folder / f"{index}.jpg")
        box = {"name": "ab"[index % 2], "xmin": 4, "ymin": 4, "xmax": width - 4, "ymax": height - 4}
        (folder / f"{index}.xml").write_text(voc_xml(f"{index}.jpg", (width, height), [box]))
    convert(folder, folder.parent / "mixed", workers=1)
    return folder.parent / "mixed" / "train.record"


def test_a_checkpoint_detector_loads_another_checkpoint_without_tracing_again(run):
    """What eval does for each checkpoint after the first: the same detections to the bit as a detector made for
    that checkpoint, raw scores and boxes included, and no new trace of the model."""
    root, pipeline = run
    image = np.asarray(photo(96, 72))
    made = CheckpointDetector(pipeline, root / "model" / "ckpt-2")(image)
    detector = CheckpointDetector(pipeline, root / "model" / "ckpt-0")
    first, traced = detector(image), detector.tracing_count()
    loaded = detector.load(root / "model" / "ckpt-2")(image)
    assert detector.tracing_count() == traced
    assert not np.array_equal(first.raw["raw_detection_scores"], loaded.raw["raw_detection_scores"])
    assert loaded.raw.keys() == made.raw.keys()
    pairs = [(loaded.boxes, made.boxes), (loaded.classes, made.classes), (loaded.scores, made.scores)]
    pairs += [(loaded.raw[key], made.raw[key]) for key in made.raw]
    assert all(np.array_equal(ours, theirs) for ours, theirs in pairs)


def test_eval_traces_the_model_once_for_mixed_image_sizes(run, tmp_path):
    root, pipeline = run
    records = mixed_size_records(tmp_path / "voc", [(96, 72), (80, 64), (120, 90), (64, 100), (150, 50)])
    detector = CheckpointDetector(pipeline, root / "model" / "ckpt-2")
    traced = detector.tracing_count()  # at most 2 already: tf.function traces again after creating variables
    metrics = evaluate.score([str(records)], detector, root / "records" / "label_map.pbtxt", tmp_path / "eval")
    assert metrics["images"] == 5
    assert detector.tracing_count() == traced <= 2  # five sizes, no new trace (each one was a trace before)


def test_eval_cli_label_map_contradiction_is_one_line(capsys, run, tmp_path):
    root, _ = run
    swapped = tmp_path / "swapped.pbtxt"
    write_label_map({"b": 1, "a": 2}, swapped)
    report = json.loads((root / "records" / "report.json").read_text())
    assert report["splits"]["val"]["images"] == 4
    argv = ["eval", "--saved-model", root / "export" / "saved_model", "--data", root / "records" / "val.record"]
    one_line_error(capsys, [*argv, "--label-map", swapped, "--output", tmp_path / "e"], str(swapped), "val.record")
