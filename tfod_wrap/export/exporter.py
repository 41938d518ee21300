"""The export itself: the checkpoint restored once, each requested format written by its function, then --verify."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tfod_wrap.core import pipeline as configs
from tfod_wrap.core.checkpoints import find_checkpoints
from tfod_wrap.core.detections import Detections
from tfod_wrap.core.detector import CheckpointDetector, SavedModelDetector, TFJSDetector, TFLiteDetector
from tfod_wrap.core.files import atomic_write_json, check_output, claim_output, read_json_object
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.processes import terminate_as_interrupt
from tfod_wrap.core.records import decode_image, expand_record_paths, read_examples
from tfod_wrap.core.tflite import box_scales, postprocess_tensors
from tfod_wrap.core.tflite import interpreter as tflite_interpreter
from tfod_wrap.export import verify as parity
from tfod_wrap.export.formats import FORMATS, INPUT_TYPES, PIXEL_INPUT_TYPES, QUANTIZE, ExportError
from tfod_wrap.export.savedmodel import export_saved_model, signature_outputs
from tfod_wrap.export.tfjs import OUTPUT_DESCRIPTIONS, convert_to_tfjs, output_shapes, tfjs_metadata
from tfod_wrap.export.tflite import MAX_DETECTIONS, check_supported, export_tflite

REPORT = "export.json"
KIND = "export"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)


def export(
    pipeline: str | Path,
    model_dir: str | Path,
    output: str | Path,
    *,
    formats: tuple[str, ...] = ("saved_model", "tfjs"),
    quantize: str = "none",
    checkpoint: str = "latest",
    input_type: str = "image_tensor",
    label_map: str | Path | None = None,
    verify: bool = False,
    verify_images: int = 4,
    log: Callable[[str], None] = print,
) -> dict:
    """Export one checkpoint to `formats` in `output` (replaced whole at the end); returns export.json's content.

    The SavedModel is always written: TF.js is converted from it and eval/detect read it. With `verify`, the
    pipeline's eval images go through the checkpoint and every format, and differences beyond
    `verify.TOLERANCE` raise ExportError after the report is written.
    """
    formats = _check_options(formats, quantize, input_type)
    pipeline_config = configs.load(pipeline)
    prefix = find_checkpoints(model_dir, checkpoint)[0]
    label_map = Path(label_map or _pipeline_label_map(pipeline_config))
    classes = read_label_map(label_map)
    if "tflite" in formats:
        check_supported(pipeline_config)
    output = Path(output)
    check_output(output, KIND, legacy=_earlier_output)
    report = {"pipeline": str(Path(pipeline).resolve()), "checkpoint": str(Path(prefix).resolve()), "formats": {}}
    # SIGTERM as Ctrl-C: the staging folder (as large as the model) is removed on the way out, not left behind
    with terminate_as_interrupt(), claim_output(output, KIND, legacy=_earlier_output) as staging:
        started = time.perf_counter()
        saved_model = export_saved_model(pipeline_config, prefix, staging, input_type)
        shutil.copyfile(label_map, staging / "label_map.pbtxt")
        _record(report, "saved_model", saved_model, staging, output, started, input_type=input_type)
        log(f"saved_model: {_size(saved_model)} in {time.perf_counter() - started:.0f} s")
        if "tfjs" in formats:
            started = time.perf_counter()
            _export_tfjs(pipeline_config, prefix, saved_model, staging / "tfjs", input_type, quantize, classes)
            _record(report, "tfjs", staging / "tfjs", staging, output, started, quantization=quantize)
            log(f"tfjs: {_size(staging / 'tfjs')} in {time.perf_counter() - started:.0f} s")
        if "tflite" in formats:
            started = time.perf_counter()
            _export_tflite(pipeline_config, prefix, staging / "tflite", quantize, classes)
            _record(report, "tflite", staging / "tflite", staging, output, started, quantization=quantize)
            log(f"tflite: {_size(staging / 'tflite')} in {time.perf_counter() - started:.0f} s")
        if verify:
            report["verify"] = _verify(pipeline_config, prefix, staging, formats, quantize, input_type, verify_images)
        atomic_write_json(staging / REPORT, report)
    failed = [name for name, result in report.get("verify", {}).get("formats", {}).items() if not result["passed"]]
    if failed:
        raise ExportError(
            f"{output}: parity check failed for {', '.join(failed)} (see {output / REPORT}):\n" + verify_table(report)
        )
    return report


def verify_table(report: dict) -> str:
    """The parity report as a table: the largest difference per output and format, and the tolerance."""
    results = report["verify"]["formats"]
    keys = sorted({key for result in results.values() for key in result["max_difference"]})
    lines = [f"{'format':<12}" + "".join(f"{key:>22}" for key in keys) + f"{'tolerance':>11}  result"]
    for name, result in results.items():
        cells = "".join(f"{result['max_difference'].get(key, float('nan')):>22.2e}" for key in keys)
        lines.append(f"{name:<12}{cells}{result['tolerance']:>11.2g}  {'ok' if result['passed'] else 'FAILED'}")
    return "\n".join(lines)


def _check_options(formats, quantize: str, input_type: str) -> tuple[str, ...]:
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantisation {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if input_type not in INPUT_TYPES:
        raise ExportError(f"unknown input type {input_type!r}; choose from {', '.join(INPUT_TYPES)}")
    return tuple(dict.fromkeys(formats))


def _pipeline_label_map(pipeline_config) -> str:
    path = pipeline_config.train_input_reader.label_map_path
    if not path or not Path(path).is_file():
        raise ExportError(f"the pipeline's label map {path!r} is missing; pass --label-map FILE")
    return path


def _earlier_output(folder: Path) -> bool:
    """An export of the versions before the ownership marker, which took any folder holding an export.json for one:
    now the export.json must be export's, and the folder hold nothing but what export writes."""
    report = read_json_object(folder / REPORT)
    if report is None or not {"pipeline", "checkpoint", "formats"} <= report.keys():
        return False
    return {path.name for path in folder.iterdir()} <= {*FORMATS, REPORT, "label_map.pbtxt", "MODEL_CARD.md"}


def _export_tfjs(pipeline_config, prefix, saved_model, target, input_type, quantize, classes) -> None:
    with tempfile.TemporaryDirectory(prefix="tfod-wrap-browser-") as scratch:
        source, browser_input = saved_model, input_type
        if input_type not in PIXEL_INPUT_TYPES:  # a browser has pixels, not encoded strings or tf.Examples
            browser_input = "image_tensor"
            source = export_saved_model(pipeline_config, prefix, Path(scratch), browser_input)
        model_json = convert_to_tfjs(source, target, quantize)
        outputs = signature_outputs(source)
    metadata = tfjs_metadata(
        outputs,
        output_shapes(model_json, outputs),
        classes,
        browser_input,
        _fixed_size(configs.meta_architecture(pipeline_config)),
        architecture=pipeline_config.model.WhichOneof("model"),
        quantization=quantize,
    )
    atomic_write_json(target / "metadata.json", metadata)


def _fixed_size(model) -> list[int] | None:
    """[height, width] when the model resizes every image to one size: the page then resizes before sending."""
    resizer = getattr(model, "image_resizer", None)
    if resizer is None or resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        return None
    return [resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width]


def _export_tflite(pipeline_config, prefix, target: Path, quantize: str, classes: dict[str, int]) -> None:
    target.mkdir()
    reference = CheckpointDetector(pipeline_config, prefix)

    def calibration() -> Iterator[np.ndarray]:
        for image in _eval_images(pipeline_config, 100):
            yield reference.preprocess(image)

    export_tflite(pipeline_config, prefix, target / "model.tflite", quantize, calibration)
    height, width = _fixed_size(configs.meta_architecture(pipeline_config))
    atomic_write_json(
        target / "metadata.json",
        {
            "format": "tfod-wrap-detector-tflite",
            "version": 1,
            "quantization": quantize,
            "classes": [{"id": i, "name": name} for name, i in sorted(classes.items(), key=lambda item: item[1])],
            "input": {
                "shape": [1, height, width, 3],
                "dtype": "float32",
                "color": "RGB",
                "preprocessing": "resize to shape, then pixel (0..255) * scale + offset, per channel",
                **reference.normalisation(),
            },
            "outputs": _tflite_outputs(target / "model.tflite"),
        },
    )


def _tflite_outputs(model: Path) -> dict[str, dict]:
    interpreter = tflite_interpreter(model)
    tensors = postprocess_tensors(interpreter)
    descriptions = {**OUTPUT_DESCRIPTIONS, "detection_classes": "class ids, 0-based: add 1 for the label map id"}
    return {
        key: {"tensor": tensors[key]["name"], "description": descriptions[key]}
        for key in ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    }


def _eval_images(pipeline_config, count: int) -> list[np.ndarray]:
    """The first `count` images of the pipeline's eval records, decoded to RGB uint8."""
    paths = [path for reader in pipeline_config.eval_input_reader for path in reader.tf_record_input_reader.input_path]
    if not paths:
        raise ExportError("the pipeline has no eval_input_reader records to take images from")
    examples = itertools.islice(read_examples(expand_record_paths(paths)), count)
    images = [decode_image(example.features.feature) for _, example in examples]
    if not images:
        raise ExportError(f"{', '.join(paths)}: no images in the eval records")
    return images


def _verify(pipeline_config, prefix, staging: Path, formats, quantize, input_type, count) -> dict:
    images = _eval_images(pipeline_config, count)
    reference = CheckpointDetector(pipeline_config, prefix)
    expected = [reference(image) for image in images]
    outputs: dict[str, list[Detections]] = {}
    references: dict[str, list[Detections]] = {}
    if input_type in PIXEL_INPUT_TYPES:
        outputs["saved_model"] = SavedModelDetector(staging / "saved_model").batch(images)
    if "tfjs" in formats:
        outputs["tfjs"] = TFJSDetector(staging / "tfjs").batch(images)
    if "tflite" in formats:
        # the checkpoint's own preprocessing feeds both: the comparison is of the converted graph alone
        model, scales = staging / "tflite" / "model.tflite", box_scales(pipeline_config)
        outputs["tflite"] = TFLiteDetector(model, preprocess=reference.preprocess, box_scales=scales).batch(images)
        # TFLite's post-processing op has its own NMS rule: its reference follows that rule
        nms = pipeline_config.model.ssd.post_processing.batch_non_max_suppression
        references["tflite"] = [parity.one_class_per_anchor(result, nms, MAX_DETECTIONS) for result in expected]
    results = {
        name: parity.summarise(
            name, quantize, [parity.compare(e, c) for e, c in zip(references.get(name, expected), candidates)]
        )
        for name, candidates in outputs.items()
    }
    return {"images": len(images), "confident_score": parity.CONFIDENT, "formats": results}


def _record(report: dict, name: str, path: Path, staging: Path, output: Path, started: float, **details) -> None:
    report["formats"][name] = {
        "path": str(output / path.relative_to(staging)),
        "bytes": _bytes(path),
        "seconds": round(time.perf_counter() - started, 1),
        **details,
    }


def _bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _size(path: Path) -> str:
    return f"{_bytes(path) / 2**20:.1f} MiB"
