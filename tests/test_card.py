"""The model card of every export (export/card.py): MODEL_CARD.md and export.json's `card`, on the suite's trained
detector. Its facts must be those of the files the run, the records and the export wrote, and its loading code must
run as written."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tfod_wrap import evaluate
from tfod_wrap.core import pipeline as configs
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.manifests import ExportManifest
from tfod_wrap.export import card


def iou(first, second) -> float:
    top, left = max(first[0], second[0]), max(first[1], second[1])
    bottom, right = min(first[2], second[2]), min(first[3], second[3])
    inter = max(0.0, bottom - top) * max(0.0, right - left)
    areas = [(box[2] - box[0]) * (box[3] - box[1]) for box in (first, second)]
    return inter / (sum(areas) - inter)


def test_the_card_states_the_classes_data_run_parity_and_sizes(trained_detector):
    report, folder = trained_detector.report, trained_detector.export_dir
    facts = report["card"]
    classes = read_label_map(folder / "label_map.pbtxt")
    assert {entry["name"]: entry["id"] for entry in facts["classes"]} == classes
    records = json.loads((trained_detector.pipeline.parent / "records" / "report.json").read_text())
    assert facts["data"]["splits"] == {
        name: {"images": split["images"], "boxes_per_class": split["boxes_per_class"]}
        for name, split in records["splits"].items()
    }
    training = facts["training"]
    assert training["checkpoint"] == "ckpt-300" and training["step"] == 300 and training["seed"] == 0
    assert training["pretrained"] is None and training["freeze"] == [] and training["seconds"] > 0
    assert facts["sizes"] == {name: entry["bytes"] for name, entry in report["formats"].items()}
    assert {name: result["passed"] for name, result in facts["parity"].items()} == {
        name: result["passed"] for name, result in report["verify"]["formats"].items()
    }
    assert facts["input"]["size"] == [160, 160] and facts["metrics"] is None

    text = (folder / card.FILE).read_text()
    assert text == card.render(facts)
    assert "| 1 | ellipse |" in text and "| train | 16 | 8 | 8 |" in text
    assert "Not evaluated: run `tfod-wrap eval`" in text and "random weights" in text
    for name in report["formats"]:
        assert re.search(rf"\| {name} \| [\d.]+ \| passed \(largest difference", text), name


def python_snippets(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\n\n```python\n(.*?)```", text, flags=re.S | re.M))


def test_the_cards_python_loading_code_runs_and_finds_the_object(trained_detector, monkeypatch):
    folder = trained_detector.export_dir
    snippets = python_snippets((folder / card.FILE).read_text())
    assert set(snippets) == {"saved_model", "tflite", "onnx", "mediapipe"}  # MediaPipe's: test_mediapipe.py
    image = np.asarray(Image.open(trained_detector.image).convert("RGB"))
    class_id = read_label_map(folder / "label_map.pbtxt")[trained_detector.class_name]
    monkeypatch.chdir(folder)  # the card's paths are relative to its folder

    found = {"image": image}
    exec(snippets["saved_model"], found)
    out = {key: value.numpy()[0] for key, value in found["out"].items()}
    assert out["detection_scores"][0] > 0.5 and out["detection_classes"][0] == class_id
    assert iou(out["detection_boxes"][0], trained_detector.box) > 0.7

    found = {"image": image}
    exec(snippets["onnx"], found)
    assert found["scores"][0][0] > 0.5 and found["classes"][0][0] == class_id
    assert iou(found["boxes"][0][0], trained_detector.box) > 0.7

    found = {"image": image}
    exec(snippets["tflite"], found)
    names = json.loads((folder / "tflite" / "metadata.json").read_text())["outputs"]
    tensor = {key: found["outputs"][entry["tensor"]][0] for key, entry in names.items()}
    assert tensor["detection_scores"][0] > 0.5 and tensor["detection_classes"][0] + 1 == class_id
    assert iou(tensor["detection_boxes"][0], trained_detector.box) > 0.7


def test_a_card_carries_the_eval_metrics_of_its_checkpoint(trained_detector, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_detector.model_dir, run, ignore=shutil.ignore_patterns("ckpt-0.*", "train"))
    metrics = evaluate.evaluate_checkpoints(trained_detector.pipeline, run, checkpoint="ckpt-300", log=print)
    metrics = metrics["ckpt-300"]
    manifest = ExportManifest.from_json(trained_detector.report)
    classes = read_label_map(trained_detector.export_dir / "label_map.pbtxt")
    normalisation = trained_detector.report["card"]["input"]["normalisation"]
    pipeline_config = configs.load(trained_detector.pipeline)
    facts = card.card_facts(pipeline_config, str(run / "ckpt-300"), classes, manifest, normalisation)

    assert facts["metrics"]["mAP@0.5"] == pytest.approx(metrics["coco"]["DetectionBoxes_Precision/mAP@.50IOU"])
    assert set(facts["metrics"]["per_class"]) == set(classes)
    text = card.render(facts)
    assert f"mAP@0.5 {facts['metrics']['mAP@0.5']:.3f}" in text
    for name, values in facts["metrics"]["per_class"].items():
        assert f"| {name} | {values['AP']:.3f} | {values['AP50']:.3f} |" in text


def test_a_quantised_format_is_carded_with_the_accuracy_it_passed_on():
    judged = {"passed": True, "max_difference": {"detection_scores": 0.26}, "map_change": 0.0104, "judged_by": "mAP"}
    lines = card._render_formats({"sizes": {"tfjs": 2**20}, "parity": {"tfjs": judged}})
    assert (
        "| tfjs | 1.0 | passed on mAP@0.5: +0.0104 against the checkpoint (largest output difference 0.26) |" in lines
    )
