"""The export itself: each format of the table (`formats.FORMATS`) has a `Backend` here, a function that writes it
and one that runs it for `--verify`; `export` checks the request, then goes through the table in order.

What several formats need from the checkpoint (the restored model for TFLite's calibration and metadata, and for
--verify's reference outputs; the pipeline's eval images) is made once per export, in `Job`.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from tfod_wrap.core import coco
from tfod_wrap.core import pipeline as configs
from tfod_wrap.core.detections import Detections
from tfod_wrap.core.detector import (
    CheckpointDetector,
    ONNXDetector,
    SavedModelDetector,
    TFJSDetector,
    TFLiteDetector,
)
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_json, atomic_write_text, check_output, claim_output
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.manifests import ExportFolder, ExportManifest, ManifestError, RunFolder
from tfod_wrap.core.processes import terminate_as_interrupt
from tfod_wrap.core.records import decode_image, expand_record_paths, read_examples
from tfod_wrap.core.tflite import box_scales, postprocess_tensors
from tfod_wrap.core.tflite import interpreter as tflite_interpreter
from tfod_wrap.export import card
from tfod_wrap.export import verify as parity
from tfod_wrap.export.formats import (
    ALWAYS,
    DEFAULT_FORMATS,
    FORMATS,
    PIXEL_INPUT_TYPES,
    ExportError,
    ParityError,
    check_architecture,
    check_request,
)
from tfod_wrap.export.onnx import convert_to_onnx, onnx_metadata
from tfod_wrap.export.savedmodel import export_saved_model, signature_outputs
from tfod_wrap.export.tfjs import OUTPUT_DESCRIPTIONS, convert_to_tfjs, output_shapes, tfjs_metadata
from tfod_wrap.export.tflite import MAX_DETECTIONS, check_supported, export_tflite
from tfod_wrap.export.tflite_metadata import LABELS_FILE, embed_metadata

KIND = "export"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)
CALIBRATION_IMAGES = 100  # uint8 TFLite's representative data set, from the training records (never the eval ones)


@dataclass
class Job:
    """One export's settings, and what its formats share, each made on first use."""

    pipeline_config: object
    checkpoint: str
    staging: Path
    input_type: str
    quantize: str
    label_map: Path
    _images: list[np.ndarray] = field(default_factory=list)
    _all_images_read: bool = False

    @cached_property
    def reference(self) -> CheckpointDetector:
        """The checkpoint's model, restored once for every format that needs it."""
        return CheckpointDetector(self.pipeline_config, self.checkpoint)

    def eval_images(self, count: int) -> list[np.ndarray]:
        """The first `count` images of the pipeline's eval records (RGB uint8), read once for all who ask."""
        if len(self._images) < count and not self._all_images_read:
            self._images = _read_eval_images(self.pipeline_config, count)
            self._all_images_read = len(self._images) < count
        return self._images[:count]

    @property
    def architecture(self) -> str:
        return self.pipeline_config.model.WhichOneof("model")

    def train_images(self, count: int) -> list[np.ndarray]:
        """The first `count` images of the pipeline's training records (RGB uint8): uint8 TFLite's calibration,
        kept apart from the eval images that --verify scores it on."""
        paths = list(self.pipeline_config.train_input_reader.tf_record_input_reader.input_path)
        if not paths:
            raise ExportError("the pipeline has no train_input_reader records to calibrate uint8 on")
        return _read_images(paths, count, "training")

    @cached_property
    def classes(self) -> dict[str, int]:
        return read_label_map(self.label_map)


@dataclass(frozen=True)
class Backend:
    """How one format of the table is made and checked.

    write(job, folder): fill `folder` (the format's folder in the staging export); returns export.json's details
    for the format beyond path, bytes and seconds.
    run(job, images, expected): the format's outputs on `images`, and the reference outputs to compare them with
    (usually `expected`, the checkpoint's own), or None when this export cannot be run that way.
    check(pipeline_config): raises ExportError before any work when the pipeline cannot be exported to it.
    """

    write: Callable[[Job, Path], dict]
    run: Callable[[Job, list[np.ndarray], list[Detections]], tuple[list[Detections], list[Detections]] | None]
    check: Callable[[object], None] | None = None


def export(
    pipeline: str | Path,
    model_dir: str | Path,
    output: str | Path,
    *,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
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
    formats = tuple(dict.fromkeys((ALWAYS, *check_request(formats, quantize, input_type))))
    pipeline_config = configs.load(pipeline)
    run = RunFolder(model_dir)
    prefix = run.checkpoints(checkpoint)[0]
    warning = run.model_warning(pipeline_config, pipeline)
    if warning:
        log(warning)
    label_map = Path(label_map or _pipeline_label_map(pipeline_config))
    read_label_map(label_map)  # a bad label map fails here, before any work
    _check_pipeline(pipeline_config, formats)
    output = Path(output)
    check_output(output, KIND, legacy=_earlier_output)
    manifest = ExportManifest(pipeline=str(Path(pipeline).resolve()), checkpoint=str(Path(prefix).resolve()))
    # SIGTERM as Ctrl-C: the staging folder (as large as the model) is removed on the way out, not left behind
    with terminate_as_interrupt(), claim_output(output, KIND, legacy=_earlier_output) as staging:
        job = Job(pipeline_config, prefix, staging, input_type, quantize, label_map)
        for name in formats:
            started = time.perf_counter()
            details = BACKENDS[name].write(job, staging / name)
            manifest.formats[name] = {
                "path": str(output / name),
                "bytes": _bytes(staging / name),
                "seconds": round(time.perf_counter() - started, 1),
                **details,
            }
            log(f"{name}: {_bytes(staging / name) / 2**20:.1f} MiB in {time.perf_counter() - started:.0f} s")
        if verify:
            manifest.verify = {**_verify(job, formats, verify_images), "accuracy": _accuracy(job, formats)}
            parity.judge_quantised(manifest.verify, job.quantize)
        manifest.card = card.card_facts(pipeline_config, prefix, job.classes, manifest, job.reference.normalisation())
        atomic_write_text(staging / card.FILE, card.render(manifest.card))
        manifest.write(staging)
    failed = manifest.failed_formats()
    if failed:
        results = manifest.verify["formats"]
        why = [
            f"{name} mAP@0.5 {results[name]['map_change']:+.4f} against the checkpoint's"
            if "judged_by" in results[name]
            else f"{name} beyond its tolerance"
            for name in failed
        ]
        raise ParityError(
            f"{output}: parity check failed: {', '.join(why)} (see {output / ExportManifest.FILE}):\n"
            + manifest.verify_table(),
            why,
        )
    return manifest.to_json()


def verify_table(report: dict) -> str:
    """The parity report of export.json's content as a table (see ExportManifest.verify_table)."""
    return ExportManifest.from_json(report).verify_table()


def _check_pipeline(pipeline_config, formats: tuple[str, ...]) -> None:
    """Every refusal a pipeline can earn, before any work: the table's architectures, then each format's own."""
    check_architecture(formats, pipeline_config.model.WhichOneof("model"))
    for name in formats:
        if BACKENDS[name].check is not None:
            BACKENDS[name].check(pipeline_config)


def _earlier_output(folder: Path) -> bool:
    """An export of the versions before the ownership marker, which took any folder holding an export.json for one:
    now the export.json must be export's, and the folder hold nothing but what export writes."""
    try:
        ExportManifest.read(folder)
    except ManifestError:
        return False
    written = {*FORMATS, ExportManifest.FILE, ExportFolder.LABEL_MAP, card.FILE}
    return {path.name for path in folder.iterdir()} <= written


def _pipeline_label_map(pipeline_config) -> str:
    path = pipeline_config.train_input_reader.label_map_path
    if not path or not Path(path).is_file():
        raise ExportError(f"the pipeline's label map {path!r} is missing; pass --label-map FILE")
    return path


# ---- saved_model ------------------------------------------------------------------------------------------------


def _write_saved_model(job: Job, folder: Path) -> dict:
    """exporter_lib_v2's layout (saved_model/, checkpoint/, pipeline.config) at the export's top, the label map
    beside it."""
    export_saved_model(job.pipeline_config, job.checkpoint, folder.parent, job.input_type)
    shutil.copyfile(job.label_map, ExportFolder(folder.parent).label_map)
    return {"input_type": job.input_type}


def _run_saved_model(job: Job, images: list[np.ndarray], expected: list[Detections]) -> tuple[list, list] | None:
    if job.input_type not in PIXEL_INPUT_TYPES:  # encoded strings or tf.Examples: --verify feeds pixels
        return None
    return SavedModelDetector(job.staging / "saved_model").batch(images), expected


# ---- tfjs -------------------------------------------------------------------------------------------------------


def _write_tfjs(job: Job, folder: Path) -> dict:
    with _pixel_saved_model(job) as (source, browser_input):
        model_json = convert_to_tfjs(source, folder, job.quantize)
        outputs = signature_outputs(source)
    metadata = tfjs_metadata(
        outputs,
        output_shapes(model_json, outputs),
        job.classes,
        browser_input,
        _fixed_size(configs.meta_architecture(job.pipeline_config)),
        architecture=job.architecture,
        quantization=job.quantize,
    )
    atomic_write_json(folder / "metadata.json", metadata)
    weights = [weight for group in json.loads(model_json.read_text())["weightsManifest"] for weight in group["weights"]]
    dtypes = Counter(weight.get("quantization", {}).get("dtype", weight["dtype"]) for weight in weights)
    return {"quantization": job.quantize, "weight_dtypes": dict(sorted(dtypes.items()))}


def _run_tfjs(job: Job, images: list[np.ndarray], expected: list[Detections]) -> tuple[list, list]:
    return TFJSDetector(job.staging / "tfjs").batch(images), expected


@contextmanager
def _pixel_saved_model(job: Job) -> Iterator[tuple[Path, str]]:
    """(a SavedModel taking pixels, its input type): the export's own, or for an export taking encoded strings
    or tf.Examples, one exported with image_tensor into a scratch folder (a browser or onnxruntime has pixels)."""
    if job.input_type in PIXEL_INPUT_TYPES:
        yield job.staging / "saved_model", job.input_type
        return
    with tempfile.TemporaryDirectory(prefix="tfod-wrap-pixels-") as scratch:
        yield export_saved_model(job.pipeline_config, job.checkpoint, Path(scratch), "image_tensor"), "image_tensor"


# ---- onnx -------------------------------------------------------------------------------------------------------


def _write_onnx(job: Job, folder: Path) -> dict:
    folder.mkdir()
    with _pixel_saved_model(job) as (source, input_type):
        proto = convert_to_onnx(source, folder / "model.onnx")
    metadata = onnx_metadata(
        proto,
        job.classes,
        _fixed_size(configs.meta_architecture(job.pipeline_config)),
        architecture=job.architecture,
        quantization="none",
    )
    atomic_write_json(folder / "metadata.json", metadata)
    return {"input_type": input_type, "opset": metadata["opset"]}


def _run_onnx(job: Job, images: list[np.ndarray], expected: list[Detections]) -> tuple[list, list]:
    return ONNXDetector(job.staging / "onnx" / "model.onnx").batch(images), expected


# ---- tflite -----------------------------------------------------------------------------------------------------


def _write_tflite(job: Job, folder: Path) -> dict:
    folder.mkdir()

    def calibration():
        for image in job.train_images(CALIBRATION_IMAGES):
            yield job.reference.preprocess(image)

    export_tflite(job.pipeline_config, job.checkpoint, folder / "model.tflite", job.quantize, calibration)
    height, width = _fixed_size(configs.meta_architecture(job.pipeline_config))
    _embed_tflite_metadata(job, folder / "model.tflite", (height, width))
    atomic_write_json(
        folder / "metadata.json",
        {
            "format": "tfod-wrap-detector-tflite",
            "version": 1,
            "quantization": job.quantize,
            "classes": [{"id": i, "name": name} for name, i in sorted(job.classes.items(), key=lambda item: item[1])],
            "input": {
                "shape": [1, height, width, 3],
                "dtype": "float32",
                "color": "RGB",
                "preprocessing": (
                    "resize to shape (bilinear without half-pixel centres, as TFOD's fixed_shape_resizer: TF1 "
                    "resize_images, align_corners false), then pixel (0..255) * scale + offset, per channel"
                ),
                **job.reference.normalisation(),
            },
            "outputs": _tflite_outputs(folder / "model.tflite"),
            "embedded": (
                "TFLite metadata in model.tflite (labels, input normalisation, outputs by meaning; the schema of "
                f"MediaPipe Tasks and the TFLite Task Library), {LABELS_FILE} in the zip appended to it"
            ),
        },
    )
    return {"quantization": job.quantize, "embedded_metadata": True}


def _embed_tflite_metadata(job: Job, model: Path, size: tuple[int, int]) -> None:
    """Labels, normalisation and output meanings into the .tflite, for clients that read nothing beside it."""
    names = {index: name for name, index in job.classes.items()}
    # line N names 0-based class N (label map id N + 1); a gap in the ids keeps its line, named by its id
    labels = [names.get(index, str(index)) for index in range(1, max(names) + 1)]
    loaded = tflite_interpreter(model)
    meaning = {tensor["index"]: key for key, tensor in postprocess_tensors(loaded).items()}
    outputs = [meaning[output["index"]] for output in loaded.get_output_details()]
    embed_metadata(
        model,
        labels,
        job.reference.normalisation(),
        outputs,
        name="tfod-wrap SSD detector",
        description=(
            f"TFOD SSD exported by tfod-wrap: {size[1]}x{size[0]} RGB input, {len(labels)} classes, up to "
            f"{MAX_DETECTIONS} detections, quantisation {job.quantize}."
        ),
    )


def _run_tflite(job: Job, images: list[np.ndarray], expected: list[Detections]) -> tuple[list, list]:
    # the checkpoint's own preprocessing feeds both: the comparison is of the converted graph alone
    model = job.staging / "tflite" / "model.tflite"
    detector = TFLiteDetector(model, preprocess=job.reference.preprocess, box_scales=box_scales(job.pipeline_config))
    outputs = detector.batch(images)
    # TFLite's post-processing op has its own NMS rule: its reference follows that rule
    nms = job.pipeline_config.model.ssd.post_processing.batch_non_max_suppression
    return outputs, [parity.one_class_per_anchor(result, nms, MAX_DETECTIONS) for result in expected]


def _tflite_outputs(model: Path) -> dict[str, dict]:
    tensors = postprocess_tensors(tflite_interpreter(model))
    descriptions = {**OUTPUT_DESCRIPTIONS, "detection_classes": "class ids, 0-based: add 1 for the label map id"}
    return {
        key: {"tensor": tensors[key]["name"], "description": descriptions[key]}
        for key in ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    }


# One backend per row of formats.FORMATS (tests/test_export_table.py holds the two tables to the same names).
BACKENDS: dict[str, Backend] = {
    "saved_model": Backend(_write_saved_model, _run_saved_model),
    "tfjs": Backend(_write_tfjs, _run_tfjs),
    "tflite": Backend(_write_tflite, _run_tflite, check=check_supported),
    "onnx": Backend(_write_onnx, _run_onnx),
}


# ---- shared -----------------------------------------------------------------------------------------------------


def _verify(job: Job, formats: tuple[str, ...], count: int) -> dict:
    """Every verifiable format on the eval images against the checkpoint: the largest differences per output."""
    images = job.eval_images(count)
    expected = [job.reference(image) for image in images]
    results = {}
    for name in formats:
        run = BACKENDS[name].run(job, images, expected) if FORMATS[name].verify else None
        if run is not None:
            outputs, references = run
            differences = [parity.compare(reference, output) for reference, output in zip(references, outputs)]
            results[name] = parity.summarise(name, job.quantize, differences)
    return {"images": len(images), "confident_score": parity.CONFIDENT, "formats": results}


def _accuracy(job: Job, formats: tuple[str, ...]) -> dict:
    """COCO mAP@0.5 of the checkpoint and of every verifiable format on the pipeline's whole eval split, scored as
    `tfod-wrap eval` scores (core.coco): what a conversion or quantisation costs in accuracy, beside the parity
    check's largest differences. Records the eval cannot score (a class the label map lacks) are reported, not
    raised: the export itself is sound."""
    files = expand_record_paths(_eval_paths(job.pipeline_config))
    try:
        truth = coco.groundtruth(files, job.classes, job.label_map)
    except UserError as error:
        return {"metric": "mAP@0.5", "error": str(error)}
    images = [decode_image(feature) for _, feature in coco.records(files)]  # ids 1.. in the ground truth's order
    expected = job.reference.batch(images)
    scores = {}
    for name in formats:
        run = BACKENDS[name].run(job, images, expected) if FORMATS[name].verify else None
        if run is not None:
            scores[name] = _map_at_50(truth, run[0])
    return {"metric": "mAP@0.5", "images": len(images), "checkpoint": _map_at_50(truth, expected), "formats": scores}


def _map_at_50(truth: dict, found: list[Detections]) -> float:
    results = [
        result
        for image, detections in zip(truth["images"], found)
        for result in detections.to_coco(image["id"], image["width"], image["height"])
    ]
    return round(coco.map_at_50(truth, results), 4)


def _eval_paths(pipeline_config) -> list[str]:
    paths = [path for reader in pipeline_config.eval_input_reader for path in reader.tf_record_input_reader.input_path]
    if not paths:
        raise ExportError("the pipeline has no eval_input_reader records to take images from")
    return paths


def _fixed_size(model) -> list[int] | None:
    """[height, width] when the model resizes every image to one size: the page then resizes before sending."""
    resizer = getattr(model, "image_resizer", None)
    if resizer is None or resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        return None
    return [resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width]


def _read_eval_images(pipeline_config, count: int) -> list[np.ndarray]:
    """The first `count` images of the pipeline's eval records, decoded to RGB uint8."""
    return _read_images(_eval_paths(pipeline_config), count, "eval")


def _read_images(paths: list[str], count: int, split: str) -> list[np.ndarray]:
    examples = itertools.islice(read_examples(expand_record_paths(paths)), count)
    images = [decode_image(example.features.feature) for _, example in examples]
    if not images:
        raise ExportError(f"{', '.join(paths)}: no images in the {split} records")
    return images


def _bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
