"""The model card of an export: MODEL_CARD.md for people, and the same facts under `card` in export.json.

Everything in it is read from the files the earlier stages wrote, so a card never states what was not measured:
the classes (label map), the training data (the records' report.json), the run (recipe.json, the pipeline, the
loss history's clock), the metrics of the exported checkpoint (`tfod-wrap eval` writes RUN/eval/ckpt-N/metrics.json;
a card says "not evaluated" without it), the parity of each format (--verify), the sizes, the input the model
expects, and how to load each format that was written.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tfod_wrap.core import pipeline as configs
from tfod_wrap.core.files import read_json_object
from tfod_wrap.core.manifests import ExportManifest, ManifestError, RecordsManifest, RunFolder
from tfod_wrap.core.weights import checkpoint_origin

FILE = "MODEL_CARD.md"
HISTORY = "train_history.csv"  # train's loss history; its `seconds` column is the run's clock
EVAL = "eval"  # `tfod-wrap eval` writes RUN/eval/ckpt-N/metrics.json

# How to load each format, with the model's size and normalisation filled in: a few lines that run as they stand
# (tests/test_card.py runs the Python ones but MediaPipe's, which needs its own venv). `image` is an RGB uint8 array
# (height, width, 3). A snippet named after no format loads the file of the one in FORMAT_OF.
SNIPPETS: dict[str, tuple[str, str]] = {
    "saved_model": (
        "python",
        "import tensorflow as tf\n"
        'detect = tf.saved_model.load("saved_model").signatures["serving_default"]\n'
        "out = detect(tf.constant(image[None]))  # boxes (ymin, xmin, ymax, xmax) 0..1, classes = label map ids\n",
    ),
    "tflite": (
        "python",
        "import numpy as np, tensorflow as tf\n"
        'model = tf.lite.Interpreter("tflite/model.tflite"); model.allocate_tensors()\n'
        "pixels = tf.compat.v1.image.resize(image[None].astype(np.float32), {size}) * {scale} + {offset}\n"
        'model.set_tensor(model.get_input_details()[0]["index"], pixels.numpy().astype(np.float32)); model.invoke()\n'
        'outputs = {{d["name"]: model.get_tensor(d["index"]) for d in model.get_output_details()}}'
        "  # names: tflite/metadata.json; classes 0-based\n",
    ),
    "onnx": (
        "python",
        "import onnxruntime as ort\n"
        'session = ort.InferenceSession("onnx/model.onnx", providers=["CPUExecutionProvider"])\n'
        'names = ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]\n'
        'boxes, classes, scores, count = session.run(names, {{"input_tensor": image[None]}})  # label map ids\n',
    ),
    "mediapipe": (
        "python",
        "import mediapipe as mp\n"
        "from mediapipe.tasks.python import vision\n"
        "from mediapipe.tasks.python.core.base_options import BaseOptions\n"
        'options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path="tflite/model.tflite"))\n'
        "detections = vision.ObjectDetector.create_from_options(options).detect(\n"
        "    mp.Image(image_format=mp.ImageFormat.SRGB, data=image)).detections  # labels: embedded in the file\n",
    ),
    "tfjs": (
        "js",
        'const model = await tf.loadGraphModel("tfjs/model.json");\n'
        "const out = await model.executeAsync(tf.browser.fromPixels(video).expandDims(0));"
        "  // tfjs/metadata.json names the outputs\n",
    ),
}


FORMAT_OF = {"mediapipe": "tflite"}  # MediaPipe Tasks runs the TFLite file (its metadata is embedded)


def card_facts(
    pipeline_config, checkpoint: str, classes: dict[str, int], manifest: ExportManifest, normalisation: dict
) -> dict:
    """The facts of the card (export.json's `card`), from the files of the run, its records and this export."""
    prefix = Path(checkpoint)
    model = configs.meta_architecture(pipeline_config)
    return {
        "classes": [{"id": id_, "name": name} for name, id_ in sorted(classes.items(), key=lambda item: item[1])],
        "model": {
            "architecture": pipeline_config.model.WhichOneof("model"),
            "feature_extractor": model.feature_extractor.type,
        },
        "input": _input(pipeline_config, manifest, normalisation),
        "training": _training(pipeline_config, prefix),
        "data": _data(pipeline_config),
        "metrics": _metrics(prefix),
        "parity": _parity(manifest),
        "sizes": {name: entry["bytes"] for name, entry in manifest.formats.items()},
    }


def _input(pipeline_config, manifest: ExportManifest, normalisation: dict) -> dict:
    resizer = configs.meta_architecture(pipeline_config).image_resizer
    fixed = resizer.fixed_shape_resizer if resizer.WhichOneof("image_resizer_oneof") == "fixed_shape_resizer" else None
    return {
        "size": [fixed.height, fixed.width] if fixed else None,
        "color": "RGB",
        "saved_model_input": manifest.formats.get("saved_model", {}).get("input_type", "image_tensor"),
        "normalisation": normalisation,
    }


def _training(pipeline_config, prefix: Path) -> dict:
    train = pipeline_config.train_config
    run = prefix.parent
    recipe = read_json_object(run / RunFolder.RECIPE) or {}
    start = configs.fine_tune_checkpoint(train)
    pretrained = {"checkpoint": start, "origin": checkpoint_origin(start)} if start else None
    return {
        "checkpoint": prefix.name,
        "step": int(prefix.name.rsplit("-", 1)[-1]) if "-" in prefix.name else None,
        "batch_size": train.batch_size,
        "num_steps": train.num_steps,
        "pretrained": pretrained,
        "freeze": recipe.get("freeze", list(train.freeze_variables)),
        "seed": recipe.get("seed"),
        "seconds": _training_seconds(run / HISTORY),
    }


def _training_seconds(history: Path) -> float | None:
    """The run's clock at its last step (train_history.csv's `seconds`), or None without a history."""
    try:
        with history.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        return float(rows[-1]["seconds"]) if rows else None
    except (OSError, KeyError, ValueError):
        return None


def _data(pipeline_config) -> dict | None:
    """The records' report.json (tfod-wrap tfrecords) beside the training records: images and boxes per split."""
    paths = list(pipeline_config.train_input_reader.tf_record_input_reader.input_path)
    if not paths:
        return None
    folder = Path(paths[0]).parent
    try:
        report = RecordsManifest.read(folder)
    except ManifestError:  # records that tfod-wrap did not write: the card says so
        return None
    splits = {
        name: {"images": split.get("images"), "boxes_per_class": split.get("boxes_per_class", {})}
        for name, split in report.splits.items()
    }
    return {"records": str(folder), "splits": splits}


def _metrics(prefix: Path) -> dict | None:
    metrics = read_json_object(prefix.parent / EVAL / prefix.name / "metrics.json")
    if not metrics or "coco" not in metrics:
        return None
    coco = metrics["coco"]
    return {
        "eval": str(prefix.parent / EVAL / prefix.name),
        "mAP": coco.get("DetectionBoxes_Precision/mAP"),
        "mAP@0.5": coco.get("DetectionBoxes_Precision/mAP@.50IOU"),
        "per_class": {
            name: {"AP": values.get("AP"), "AP50": values.get("AP50")}
            for name, values in metrics.get("per_class", {}).items()
        },
    }


def _parity(manifest: ExportManifest) -> dict | None:
    if not manifest.verify:
        return None
    return {
        name: {
            "passed": result["passed"],
            "max_difference": result["max_difference"],
            **{key: result[key] for key in ("map_change", "judged_by") if key in result},
        }
        for name, result in manifest.verify["formats"].items()
    }


def render(facts: dict) -> str:
    """MODEL_CARD.md: the facts as sections and tables, then how to load each format."""
    parts = ["# Model card", ""]
    model, train = facts["model"], facts["training"]
    parts += [
        f"{model['architecture']} ({model['feature_extractor']}), {len(facts['classes'])} classes, exported from "
        f"{train['checkpoint']} by tfod-wrap.",
        "",
        "## Classes",
        "",
        "| id | name |",
        "|---:|---|",
        *(f"| {entry['id']} | {entry['name']} |" for entry in facts["classes"]),
        "",
        *_render_input(facts["input"]),
        *_render_training(train),
        *_render_data(facts["data"]),
        *_render_metrics(facts["metrics"]),
        *_render_formats(facts),
        *_render_loading(facts),
    ]
    return "\n".join(parts)


def _render_input(info: dict) -> list[str]:
    size = f"{info['size'][0]}x{info['size'][1]} (height x width)" if info["size"] else "any size (the model resizes)"
    norm = info["normalisation"]
    return [
        "## Intended input",
        "",
        f"- {info['color']} images; the model's own input size is {size}.",
        f"- SavedModel input: `{info['saved_model_input']}` (uint8 pixels, any size; the graph resizes).",
        f"- TFLite input: float32, resized to the model's size, pixel (0..255) x {_numbers(norm.get('scale'))} + "
        f"{_numbers(norm.get('offset'))} per channel (tflite/metadata.json).",
        "",
    ]


def _render_training(train: dict) -> list[str]:
    start = train["pretrained"]
    origin = f"{start['checkpoint']} ({start['origin']})" if start else "random weights (no fine_tune_checkpoint)"
    seconds = f"{train['seconds']:.0f} s" if train["seconds"] is not None else "not recorded"
    seed = "none" if train["seed"] is None else train["seed"]
    return [
        "## Training",
        "",
        f"- Pretrained start: {origin}",
        f"- Steps: {train['step']} (schedule {train['num_steps']}), batch {train['batch_size']}, training time "
        f"{seconds}",
        f"- Frozen: {', '.join(train['freeze']) or 'nothing'}; seed: {seed}",
        "",
    ]


def _render_data(data: dict | None) -> list[str]:
    lines = ["## Data", ""]
    if data is None:
        return [*lines, "Not known: the training records have no report.json of `tfod-wrap tfrecords`.", ""]
    classes = sorted({name for split in data["splits"].values() for name in split["boxes_per_class"]})
    lines += [
        f"From {data['records']} (report.json). Boxes per class and split:",
        "",
        "| split | images | " + " | ".join(classes) + " |",
        "|---|---:|" + "---:|" * len(classes),
    ]
    for name, split in data["splits"].items():
        counts = " | ".join(str(split["boxes_per_class"].get(label, 0)) for label in classes)
        lines.append(f"| {name} | {split['images']} | {counts} |")
    return [*lines, ""]


def _render_metrics(metrics: dict | None) -> list[str]:
    lines = ["## Metrics", ""]
    if metrics is None:
        return [*lines, "Not evaluated: run `tfod-wrap eval` on this checkpoint before exporting to include them.", ""]
    lines += [
        f"COCO metrics on the eval split ({metrics['eval']}): mAP {_number(metrics['mAP'])}, mAP@0.5 "
        f"{_number(metrics['mAP@0.5'])}.",
        "",
        "| class | AP | AP@0.5 |",
        "|---|---:|---:|",
        *(
            f"| {name} | {_number(values['AP'])} | {_number(values['AP50'])} |"
            for name, values in metrics["per_class"].items()
        ),
    ]
    return [*lines, ""]


def _render_formats(facts: dict) -> list[str]:
    parity = facts["parity"] or {}
    lines = ["## Formats", "", "| format | MiB | parity with the checkpoint (--verify) |", "|---|---:|---|"]
    for name, size in facts["sizes"].items():
        result = parity.get(name)
        if result is None:
            check = "not checked"
        else:
            worst = max(result["max_difference"].values(), default=0.0)
            verdict = "passed" if result["passed"] else "FAILED"
            check = f"{verdict} (largest difference {worst:.2g})"
            if "judged_by" in result:  # a quantised format: decided by its accuracy (export.verify.MAP_KEPT)
                change = f"{result['map_change']:+.4f} against the checkpoint"
                check = f"{verdict} on mAP@0.5: {change} (largest output difference {worst:.2g})"
        lines.append(f"| {name} | {size / 2**20:.1f} | {check} |")
    return [*lines, ""]


def _render_loading(facts: dict) -> list[str]:
    lines = ["## Loading", "", "Paths are relative to this folder; `image` is an RGB uint8 array.", ""]
    for name, (language, _) in SNIPPETS.items():
        if FORMAT_OF.get(name, name) in facts["sizes"]:
            lines += [f"{name}:", "", f"```{language}", snippet(name, facts).rstrip("\n"), "```", ""]
    return lines


def snippet(name: str, facts: dict) -> str:
    """The loading code of format `name`, filled in with this model's input size and normalisation."""
    norm = facts["input"]["normalisation"]
    size = facts["input"]["size"] or [320, 320]
    return SNIPPETS[name][1].format(
        size=list(size), scale=_numbers(norm.get("scale")), offset=_numbers(norm.get("offset"))
    )


def _numbers(values) -> str:
    return "[" + ", ".join(f"{value:.6g}" for value in values) + "]" if values else "[]"


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"
