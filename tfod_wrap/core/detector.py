"""One interface for every way tfod-wrap runs a detector: `detector(image) -> Detections`, an RGB uint8 [H, W, 3]
image in, the same typed detections out, whether a training checkpoint, an exported SavedModel, a TFLite file,
an ONNX file (in onnxruntime) or a TF.js model (in Node) computes them. Eval, detect, `export --verify` and the
pretrained import's check use these.

Classes are label-map ids (1-based) from every backend: the model's own postprocess and TFLite's post-processing
op count from 0, the exported signatures from 1.
"""

from __future__ import annotations

import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfod_wrap.core.detections import BOXES, CLASSES, COUNT, SCORES, Detections
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.model import build_model, restore
from tfod_wrap.core.nodejs import node_modules, run_node
from tfod_wrap.core.pipeline import load
from tfod_wrap.core.tflite import decode_boxes, interpreter, postprocess_tensors

RUN_TFJS = Path(__file__).with_name("run_tfjs.cjs")
# What the SSD predict step gives before post-processing, kept in Detections.raw for the pretrained import's check
PREDICTIONS = ("box_encodings", "class_predictions_with_background")


class Detector(ABC):
    """image (RGB uint8 [H, W, 3]) -> Detections; `batch` runs several, in one call where the backend can."""

    @abstractmethod
    def __call__(self, image: np.ndarray) -> Detections: ...

    def batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self(image) for image in images]


class CheckpointDetector(Detector):
    """A training checkpoint restored into the pipeline's model, run the way TFOD's exporter runs it (preprocess,
    predict, postprocess): what every export must reproduce. `raw` holds the anchors' scores and boxes before
    non-max suppression, and the SSD predictions. With `complete`, every object of the checkpoint must restore."""

    def __init__(self, pipeline, checkpoint: str | Path, *, complete: bool = False):
        self.pipeline = pipeline if hasattr(pipeline, "DESCRIPTOR") else load(pipeline)
        self.model = build_model(self.pipeline)
        # One signature for every size, as the exporter's: without it each new image size retraced the whole
        # model (about 17 s an image on mixed-size records). The model's own preprocess resizes to its input.
        signature = [tf.TensorSpec([None, None, 3], tf.uint8)]
        self._detect = tf.function(self._forward, input_signature=signature)
        self._preprocess = tf.function(lambda image: self._resized(image)[0], input_signature=signature)
        self._detect(tf.zeros([32, 32, 3], tf.uint8))  # creates the variables, so the restore is checked now
        self.load(checkpoint, complete=complete)

    def load(self, checkpoint: str | Path, *, complete: bool = False) -> CheckpointDetector:
        """Restore another checkpoint of the same model into this detector: its traced graph reads the variables,
        so it runs the new weights without tracing the model again (seconds a checkpoint for eval)."""
        restore(self.model, checkpoint, complete=complete)
        self.checkpoint = str(checkpoint)
        return self

    def _resized(self, image):
        return self.model.preprocess(tf.cast(image[tf.newaxis], tf.float32))

    def _forward(self, image):
        images, shapes = self._resized(image)
        predictions = self.model.predict(images, shapes)
        outputs = self.model.postprocess(predictions, shapes)
        return {**outputs, **{key: predictions[key] for key in PREDICTIONS if key in predictions}}

    def __call__(self, image: np.ndarray) -> Detections:
        outputs = self._detect(tf.constant(image, tf.uint8))
        return Detections.from_outputs({key: value[0].numpy() for key, value in outputs.items()}, class_offset=1)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The model's input for `image`: [1, H, W, 3] float32, resized and normalised (what TFLite takes)."""
        return self._preprocess(tf.constant(image, tf.uint8)).numpy()

    def tracing_count(self) -> int:
        return self._detect.experimental_get_tracing_count()

    def normalisation(self) -> dict[str, list[float]]:
        """Per-channel scale and offset of the feature extractor's preprocessing (affine for every TFOD model)."""
        zeros = self.model.preprocess(tf.zeros([1, 8, 8, 3]))[0][0, 0, 0].numpy()
        ones = self.model.preprocess(tf.ones([1, 8, 8, 3]))[0][0, 0, 0].numpy()
        return {"scale": (ones - zeros).tolist(), "offset": zeros.tolist()}


class SavedModelDetector(Detector):
    """A TFOD-exported SavedModel (a folder, or one already loaded, as a TF Hub module) through its serving_default
    signature, whatever its input dtype. `raw` holds the signature's other outputs (raw_detection_scores, ...)."""

    def __init__(self, saved_model):
        if isinstance(saved_model, (str, Path)):
            path = Path(saved_model)
            if not (path / "saved_model.pb").is_file():
                raise UserError(f"{path}: no saved_model.pb; pass the `saved_model` folder of an export")
            saved_model = tf.saved_model.load(str(path))
        self._loaded = saved_model  # the signature only holds a weak reference to its SavedModel
        self._signature = saved_model.signatures["serving_default"]
        _, inputs = self._signature.structured_input_signature
        self._input, spec = next(iter(inputs.items()))
        self._dtype = spec.dtype.as_numpy_dtype
        # TFOD's uint8 exports fix the batch at 1; its float exports and some Hub models leave it open
        self.batchable = bool(spec.shape.rank) and spec.shape[0] is None
        self.largest_batch = 0  # the largest batch run so far, for detect's report
        self.note = ""

    def __call__(self, image: np.ndarray) -> Detections:
        self.largest_batch = max(self.largest_batch, 1)
        return self._run(np.asarray(image)[np.newaxis])[0]

    def batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Same-sized images in one call when the signature takes a batch; one by one from the first batch the
        graph refuses on (the signature takes any batch but the graph does not: believe the graph)."""
        if len(images) > 1 and self.batchable:
            try:
                results = self._run(np.stack(images))
            except (tf.errors.InvalidArgumentError, ValueError) as error:
                self.batchable = False
                self.note = f"batches of {len(images)} failed ({type(error).__name__}); one image per call"
            else:
                self.largest_batch = max(self.largest_batch, len(images))
                return results
        return [self(image) for image in images]

    def _run(self, images: np.ndarray) -> list[Detections]:
        outputs = self._signature(**{self._input: tf.constant(images.astype(self._dtype, copy=False))})
        arrays = {key: value.numpy() for key, value in outputs.items()}
        return [Detections.from_outputs({key: value[i] for key, value in arrays.items()}) for i in range(len(images))]


class TFLiteDetector(Detector):
    """A TFOD SSD TFLite export (its graph starts after preprocessing and ends in TFLite_Detection_PostProcess).

    `preprocess` turns an image into the model's input; by default the export's metadata.json beside the model
    says how (resize to its shape, then pixel * scale + offset). `box_scales` (the box coder's y, x, height and
    width scales) decodes every anchor's box into raw_detection_boxes, as the SavedModel gives them. TFLite does
    not clip boxes to the image as TFOD's postprocess does; they are clipped here."""

    def __init__(
        self,
        model: str | Path,
        *,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        box_scales: Sequence[float] | None = None,
    ):
        self._interpreter = interpreter(model, preserve_all_tensors=True)
        self._tensors = postprocess_tensors(self._interpreter)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._preprocess = preprocess or _metadata_preprocessing(Path(model).with_name("metadata.json"))
        self._box_scales = box_scales

    def __call__(self, image: np.ndarray) -> Detections:
        return self.run_preprocessed(self._preprocess(image))

    def run_preprocessed(self, preprocessed: np.ndarray) -> Detections:
        """Detections for an input already preprocessed ([1, H, W, 3] float32)."""
        self._interpreter.set_tensor(self._input, preprocessed.astype(np.float32))
        self._interpreter.invoke()
        outputs = {key: self._interpreter.get_tensor(tensor["index"]) for key, tensor in self._tensors.items()}
        anchors, encodings = outputs.pop("anchors"), outputs.pop("box_encodings")[0]
        outputs = {key: value[0] for key, value in outputs.items()}
        if self._box_scales is not None:
            outputs["raw_detection_boxes"] = decode_boxes(encodings, anchors, self._box_scales)
        outputs[BOXES] = np.clip(outputs[BOXES], 0.0, 1.0)
        return Detections.from_outputs(outputs, class_offset=1)


def _metadata_preprocessing(metadata: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing an export's tflite/metadata.json describes: bilinear resize exactly as TFOD's
    fixed_shape_resizer does it, then the feature extractor's per-channel scale and offset."""
    try:
        described = json.loads(metadata.read_text())["input"]
        _, height, width, _ = described["shape"]
        scale, offset = np.float32(described["scale"]), np.float32(described["offset"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{metadata}: no input description of an export ({error}); pass preprocess") from None

    def preprocess(image: np.ndarray) -> np.ndarray:
        # TFOD's resizer is TF1's resize_images (align_corners=False: no half-pixel centres), not TF2's resize,
        # whose half-pixel sampling moved scores by about 0.01 on a 320x240 photo going to 160x160
        pixels = tf.cast(image[np.newaxis], tf.float32)
        resized = tf.compat.v1.image.resize_images(pixels, [height, width], align_corners=False).numpy()
        return resized * scale + offset

    return preprocess


class ONNXDetector(Detector):
    """A tfod-wrap ONNX export (the SavedModel's serving graph converted whole, NMS included) run in onnxruntime on
    the CPU. It takes the image as it is, like the SavedModel: the graph resizes and normalises it. Its outputs
    have the signature's names, classes already label-map ids; the batch is fixed at one image, as the
    SavedModel's. `num_threads` caps onnxruntime's threads per call (default: every core)."""

    def __init__(self, model: str | Path, *, num_threads: int | None = None):
        import onnxruntime

        path = Path(model)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file; pass the `onnx` folder of an export or its model.onnx")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initialisers, once per session, say nothing here
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for files it cannot read
            raise UserError(f"{path}: onnxruntime cannot load it ({str(error).splitlines()[0]})") from None
        (image,) = self._session.get_inputs()
        self._input = image.name
        self._dtype = np.uint8 if image.type == "tensor(uint8)" else np.float32
        self._outputs = [output.name for output in self._session.get_outputs()]
        missing = {BOXES, CLASSES, SCORES, COUNT} - set(self._outputs)
        if missing:
            raise UserError(f"{path}: the ONNX model gives {', '.join(self._outputs)}; not a TFOD detection export")
        self.batchable, self.largest_batch, self.note = False, 0, ""  # as SavedModelDetector, for detect's report

    def __call__(self, image: np.ndarray) -> Detections:
        self.largest_batch = 1
        arrays = self._session.run(self._outputs, {self._input: np.asarray(image, self._dtype)[np.newaxis]})
        return Detections.from_outputs({name: value[0] for name, value in zip(self._outputs, arrays)})


class TFJSDetector(Detector):
    """A TF.js graph model run in Node with the page's own @tensorflow/tfjs (wasm backend by default, or the pure-JS
    cpu one). One Node process runs a whole batch; `last_run` keeps its backend, TF.js version and latencies."""

    def __init__(self, model_dir: str | Path, *, backend: str = "wasm"):
        self.model_dir, self.backend = Path(model_dir), backend
        self.last_run: dict = {}

    def __call__(self, image: np.ndarray) -> Detections:
        return self.batch([image])[0]

    def batch(self, images: Sequence[np.ndarray], *, repeat: int = 1) -> list[Detections]:
        """Each image `repeat` times (for latencies; the detections are the last run's)."""
        with tempfile.TemporaryDirectory(prefix="tfod-wrap-tfjs-") as scratch:
            folder = Path(scratch)
            inputs = []
            for index, image in enumerate(images):
                pixels = folder / f"{index}.rgb"
                np.ascontiguousarray(image, dtype=np.uint8).tofile(pixels)
                inputs.append({"data": str(pixels), "shape": list(image.shape)})
            request = {
                "modules": str(node_modules()),
                "model": str(self.model_dir),
                "backend": self.backend,
                "repeat": repeat,
                "inputs": inputs,
                "output": str(folder),
            }
            (folder / "request.json").write_text(json.dumps(request))
            run_node(RUN_TFJS, str(folder / "request.json"))
            report = json.loads((folder / "result.json").read_text())
            found = [_tfjs_detections(result["outputs"]) for result in report["results"]]
        self.last_run = {
            "backend": report["backend"],
            "tfjs": report["tfjs"],
            "latency_ms": [result["latency_ms"] for result in report["results"]],
        }
        return found


def _tfjs_detections(outputs: dict) -> Detections:
    tensors = {
        name: np.fromfile(spec["file"], dtype=np.float32).reshape(spec["shape"])[0] for name, spec in outputs.items()
    }
    if COUNT not in tensors or not {BOXES, CLASSES, SCORES} <= tensors.keys():
        raise UserError(f"the TF.js model gives {', '.join(tensors)}; not a TFOD detection export")
    return Detections.from_outputs(tensors)
