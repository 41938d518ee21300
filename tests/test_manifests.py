"""The stage output folders as typed objects (tfod_wrap.core.manifests): each manifest reads back what its stage
wrote, key for key and in the same order, and a file that is not one is a one-line error naming it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tfod_wrap.core.manifests import (
    DetectFolder,
    DetectSummary,
    ExportFolder,
    ExportManifest,
    ManifestError,
    RecordsFolder,
    RecordsManifest,
    RunFolder,
)

EXPORT = {
    "pipeline": "/runs/ssd/pipeline.config",
    "checkpoint": "/runs/ssd/ckpt-300",
    "formats": {
        "saved_model": {"path": "out/saved_model", "bytes": 23, "seconds": 4.1, "input_type": "image_tensor"},
        "tfjs": {"path": "out/tfjs", "bytes": 19, "seconds": 9.0, "quantization": "none"},
    },
    "verify": {
        "images": 4,
        "confident_score": 0.3,
        "formats": {
            "saved_model": {"max_difference": {"detection_boxes": 0.0}, "tolerance": 1e-4, "passed": True},
            "tfjs": {"max_difference": {"detection_boxes": 0.01}, "tolerance": 2e-3, "passed": False},
        },
    },
}
SUMMARY = {
    "output": "detected",
    "models": [{"name": "export", "kind": "saved_model", "latency_ms": {"first": 1.0, "median": 0.5}}],
    "frames": 3,
    "seconds": 1.5,
    "fps": 2.0,
    "images": 3,
    "videos": [],
    "skipped": [{"path": "notes.txt", "reason": "not an image or video"}],
    "min_score": 0.5,
    "batch": 1,
    "concurrent_calls": 2,
    "tensorflow_threads": {"intra_op": 0, "inter_op": 0},
}


def written(folder: Path, name: str, content) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def test_export_manifest_round_trip_keeps_keys_and_order(tmp_path):
    manifest = ExportManifest.read(written(tmp_path / "export", "export.json", EXPORT))
    assert manifest.formats["tfjs"]["path"] == "out/tfjs" and manifest.failed_formats() == ["tfjs"]
    assert json.dumps(manifest.to_json()) == json.dumps(EXPORT)
    manifest.write(tmp_path / "again")
    assert (tmp_path / "again" / "export.json").read_text() == json.dumps(EXPORT, indent=2) + "\n"
    # without --verify there is no "verify" key at all, as before
    plain = {key: value for key, value in EXPORT.items() if key != "verify"}
    assert ExportManifest.from_json(plain).to_json() == plain and ExportManifest.from_json(plain).failed_formats() == []


def test_export_verify_table_lists_each_format_with_its_result():
    table = ExportManifest.from_json(EXPORT).verify_table().splitlines()
    assert table[0].split() == ["format", "detection_boxes", "tolerance", "result"]
    assert table[1].split() == ["saved_model", "0.00e+00", "0.0001", "ok"]
    assert table[2].split() == ["tfjs", "1.00e-02", "0.002", "FAILED"]


def test_export_folder_names_its_parts(tmp_path):
    folder = ExportFolder(written(tmp_path / "export", "export.json", EXPORT))
    assert folder.format("tfjs") == tmp_path / "export" / "tfjs"
    assert folder.label_map == tmp_path / "export" / "label_map.pbtxt"
    assert folder.manifest.checkpoint == "/runs/ssd/ckpt-300"


def test_records_manifest_reads_back_what_tfrecords_wrote(tmp_path, voc_dataset):
    from tfod_wrap.data import convert

    source = voc_dataset([{"objects": [{"name": "cat", "xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40}]}] * 4)
    convert(source, tmp_path / "records", split="train=0.5,val=0.5", workers=1)
    text = (tmp_path / "records" / "report.json").read_text()
    folder = RecordsFolder(tmp_path / "records")
    manifest = folder.manifest
    assert manifest.tool == "tfod-wrap" and manifest.classes == {"cat": 1} and set(manifest.splits) == {"train", "val"}
    assert folder.label_map.is_file() and folder.split_pattern("val") == tmp_path / "records" / "val.record"
    assert json.dumps(manifest.to_json(), indent=2) + "\n" == text  # every key, in the order written
    manifest.write(tmp_path / "copy")
    assert (tmp_path / "copy" / "report.json").read_text() == text


def test_records_manifest_of_an_older_report_without_label_map_key(tmp_path):
    older = {"tool": "tfod-wrap", "splits": {"train": {"pattern": "train.record", "images": 2}}}
    manifest = RecordsManifest.read(written(tmp_path, "report.json", older))
    assert manifest.label_map == "label_map.pbtxt"


def test_detect_summary_round_trip(tmp_path):
    summary = DetectFolder(written(tmp_path / "detected", "summary.json", SUMMARY)).manifest
    assert summary.frames == 3 and summary.models[0]["name"] == "export"
    assert json.dumps(summary.to_json()) == json.dumps(SUMMARY)


def test_run_folder_finds_its_files_and_checkpoints(tmp_path):
    state = (
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-2"\n'
    )
    (tmp_path / "checkpoint").write_text(state)
    run = RunFolder(tmp_path)
    assert run.pipeline == tmp_path / "pipeline.config" and run.recipe == tmp_path / "recipe.json"
    assert run.checkpoints("latest") == [str(tmp_path / "ckpt-2")]
    assert run.checkpoints("all") == [str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-2")]


@pytest.mark.parametrize(
    ("manifest", "content", "message"),
    [
        (ExportManifest, None, "export.json: missing; {folder} is not an output folder of `tfod-wrap export`"),
        (ExportManifest, "{", "export.json: not valid JSON (Expecting property name"),
        (ExportManifest, "\udcff", "export.json: not UTF-8 text"),
        (ExportManifest, [1, 2], "export.json: not an export.json of `tfod-wrap export` (a JSON list, not an object)"),
        (ExportManifest, {"pipeline": "p", "formats": {}}, "(no 'checkpoint')"),
        (ExportManifest, {"pipeline": 3, "checkpoint": "c", "formats": {}}, "('pipeline' is not a string)"),
        (ExportManifest, {"pipeline": "p", "checkpoint": "c", "formats": {"tfjs": 1}}, "(a format without a path)"),
        (ExportManifest, {**EXPORT, "verify": {"images": 4}}, "('verify' without formats)"),
        (RecordsManifest, {"label_map": "label_map.pbtxt"}, "report.json of `tfod-wrap tfrecords` (no 'splits')"),
        (RecordsManifest, {"splits": {"train": 3}}, "(no splits with record patterns)"),
        (RecordsManifest, {"splits": {}}, "(no splits with record patterns)"),
        (RecordsManifest, {"splits": {"t": {"pattern": "t"}}, "label_map": 1}, "('label_map' is not a string)"),
        (DetectSummary, {**SUMMARY, "frames": "3"}, "summary.json of `tfod-wrap detect` ('frames' is not a number)"),
        (DetectSummary, {"my": "results"}, "summary.json of `tfod-wrap detect` (no 'output')"),
    ],
)
def test_a_file_that_is_not_the_manifest_is_one_line_naming_it(tmp_path, manifest, content, message):
    folder = tmp_path / "out"
    folder.mkdir()
    if isinstance(content, str):
        (folder / manifest.FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    elif content is not None:
        (folder / manifest.FILE).write_text(json.dumps(content))
    with pytest.raises(ManifestError) as refused:
        manifest.read(folder)
    text = str(refused.value)
    assert text.startswith(str(folder / manifest.FILE) + ": ") and "\n" not in text
    assert message.format(folder=folder) in text


def test_manifests_load_without_tensorflow():
    import subprocess  # other tests may have loaded TensorFlow here: a fresh process

    code = "import sys, tfod_wrap.core.manifests; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_run_warns_when_evaluated_with_another_model_than_it_trained(tmp_path):
    """`train --time-budget` writes the model it chose into the run's pipeline.config; reading the checkpoints with
    the pipeline from before (other input size and anchors) is named, post-processing changes are not."""
    from tfod_wrap.core import pipeline as configs

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    before = configs.load("ssd_mobilenet_v2")
    trained = configs.load("ssd_mobilenet_v2")
    trained.model.ssd.image_resizer.fixed_shape_resizer.height = 640
    trained.model.ssd.anchor_generator.ssd_anchor_generator.min_scale = 0.02
    configs.save(trained, run.pipeline)
    warning = run.model_warning(before, tmp_path / "given.config")
    assert warning.startswith(f"warning: {tmp_path / 'given.config'} has model.ssd.anchor_generator.")
    assert f"(2 model fields differ); to use the model as trained, pass --pipeline {run.pipeline}" in warning
    assert run.model_warning(configs.load(run.pipeline), tmp_path / "given.config") is None
    thresholds = configs.load(run.pipeline)
    thresholds.model.ssd.post_processing.batch_non_max_suppression.score_threshold = 0.5
    assert run.model_warning(thresholds, tmp_path / "given.config") is None  # evaluating at other thresholds
    assert run.model_warning(before, run.pipeline) is None  # the run's own file
    assert RunFolder(tmp_path / "elsewhere").model_warning(before, tmp_path / "given.config") is None
