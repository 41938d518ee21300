"""Parity: the same images through the checkpoint and every exported format, compared output by output.

Compared per format, each where the format exposes it:
- raw_detection_scores: every anchor's class scores before non-max suppression (all formats);
- raw_detection_boxes: every anchor's decoded box (for TFLite, decoded here from the encodings and anchors that
  enter its post-processing op);
- detections: each reference detection scoring at least CONFIDENT is matched to the same class's best-overlapping
  detection of the format; the box and score differences are reported (a missing match counts as 1.0).
  Detections below that are left out: among near-equal scores, NMS order differs between kernels legitimately.
  TFLite's post-processing op keeps one class per anchor and suppresses across classes, where TFOD's NMS keeps an
  anchor's runner-up classes too, so TFLite is compared with `one_class_per_anchor` of the reference.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfod_wrap.core.nodejs import node_modules, run_node

CONFIDENT = 0.3
# Largest allowed difference per format and quantisation (scores are 0..1, boxes normalised).
# float32 formats differ only by kernel arithmetic; quantised weights move everything by a few percent.
TOLERANCE = {
    ("saved_model", "none"): 1e-4,
    ("tfjs", "none"): 2e-3,
    ("tfjs", "float16"): 2e-2,
    ("tfjs", "uint8"): 0.1,
    ("tflite", "none"): 2e-3,
    ("tflite", "float16"): 2e-2,
    ("tflite", "uint8"): 0.1,
}
RUN_TFJS = Path(__file__).with_name("run_tfjs.cjs")


class Reference:
    """The training-time model restored from the checkpoint: what every export must reproduce."""

    def __init__(self, pipeline_config, checkpoint: str):
        from object_detection.builders import model_builder

        self.model = model_builder.build(pipeline_config.model, is_training=False)
        tf.train.Checkpoint(model=self.model).restore(checkpoint).expect_partial()
        self._run = tf.function(self._forward)

    def _forward(self, image):
        images, shapes = self.model.preprocess(tf.cast(image[tf.newaxis], tf.float32))
        predictions = self.model.predict(images, shapes)
        return images, self.model.postprocess(predictions, shapes)

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        preprocessed, detections = self._run(tf.constant(image))
        result = {key: value[0].numpy() for key, value in detections.items()}
        result["detection_classes"] = result["detection_classes"] + 1  # postprocess is 0-based, label maps 1-based
        result["num_detections"] = int(result["num_detections"])
        result["preprocessed"] = preprocessed.numpy()
        return result

    def normalisation(self) -> dict[str, list[float]]:
        """Per-channel scale and offset of the feature extractor's preprocessing (affine for every TFOD model)."""
        zeros = self.model.preprocess(tf.zeros([1, 8, 8, 3]))[0][0, 0, 0].numpy()
        ones = self.model.preprocess(tf.ones([1, 8, 8, 3]))[0][0, 0, 0].numpy()
        return {"scale": (ones - zeros).tolist(), "offset": zeros.tolist()}


def run_saved_model(saved_model: Path, images: list[np.ndarray], input_type: str) -> list[dict[str, np.ndarray]]:
    loaded = tf.saved_model.load(str(saved_model))
    dtype = tf.uint8 if input_type == "image_tensor" else tf.float32
    results = []
    for image in images:
        output = loaded.signatures["serving_default"](input_tensor=tf.constant(image[np.newaxis], dtype=dtype))
        result = {key: value[0].numpy() for key, value in output.items()}
        result["num_detections"] = int(result["num_detections"])
        results.append(result)
    return results


def run_tfjs(model_dir: Path, images: list[np.ndarray], backend: str = "wasm", repeat: int = 1) -> dict:
    """The TF.js model in Node with the page's own @tensorflow/tfjs (wasm backend by default)."""
    with tempfile.TemporaryDirectory(prefix="tfod-wrap-tfjs-") as scratch:
        folder = Path(scratch)
        inputs = []
        for index, image in enumerate(images):
            pixels = folder / f"{index}.rgb"
            np.ascontiguousarray(image, dtype=np.uint8).tofile(pixels)
            inputs.append({"data": str(pixels), "shape": list(image.shape)})
        request = {
            "modules": str(node_modules()),
            "model": str(model_dir),
            "backend": backend,
            "repeat": repeat,
            "inputs": inputs,
            "output": str(folder),
        }
        (folder / "request.json").write_text(json.dumps(request))
        run_node(RUN_TFJS, str(folder / "request.json"))
        report = json.loads((folder / "result.json").read_text())
        for result in report["results"]:
            tensors = {}
            for name, spec in result["outputs"].items():
                tensors[name] = np.fromfile(spec["file"], dtype=np.float32).reshape(spec["shape"])[0]
            tensors["num_detections"] = int(tensors["num_detections"])
            result["outputs"] = tensors
    return report


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute differences between one image's reference outputs and a format's outputs."""
    differences = {}
    for key in ("raw_detection_scores", "raw_detection_boxes"):
        differences[key] = float(np.abs(candidate[key] - reference[key]).max())
    box, score = _detection_differences(reference, candidate)
    differences["detection_boxes"] = box
    differences["detection_scores"] = score
    return differences


def one_class_per_anchor(reference: dict, nms, max_detections: int) -> dict:
    """The reference's detections as TFLite's fast post-processing op makes them from the same raw outputs
    (`use_regular_nms=False`, one class per detection): each anchor's best class, then class-agnostic NMS with
    the pipeline's `nms` thresholds. TFLite does not clip boxes; run_tflite clips its output, so this does too."""
    scores = reference["raw_detection_scores"][:, 1:]  # column 0 is the background
    best = scores.max(axis=1)
    kept = tf.image.non_max_suppression(
        reference["raw_detection_boxes"], best, max_detections, nms.iou_threshold, nms.score_threshold
    ).numpy()
    return {
        **reference,
        "detection_boxes": np.clip(reference["raw_detection_boxes"][kept], 0.0, 1.0),
        "detection_classes": scores[kept].argmax(axis=1) + 1,
        "detection_scores": best[kept],
        "num_detections": len(kept),
    }


def _detection_differences(reference: dict, candidate: dict) -> tuple[float, float]:
    count = candidate["num_detections"]
    boxes, classes, scores = (
        candidate[key][:count] for key in ("detection_boxes", "detection_classes", "detection_scores")
    )
    worst_box = worst_score = 0.0
    for box, label, score in zip(
        reference["detection_boxes"], reference["detection_classes"], reference["detection_scores"]
    ):
        if score < CONFIDENT:
            break
        same_class = np.flatnonzero(classes.astype(int) == int(label))
        if same_class.size == 0:
            return 1.0, 1.0
        best = same_class[np.argmax([_iou(box, boxes[index]) for index in same_class])]
        worst_box = max(worst_box, float(np.abs(boxes[best] - box).max()))
        worst_score = max(worst_score, abs(float(scores[best]) - float(score)))
    return worst_box, worst_score


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return float(overlap / union) if union > 0 else 0.0


def summarise(format_name: str, quantize: str, per_image: list[dict[str, float]]) -> dict:
    """The worst difference over the images for each output, against the format's documented tolerance."""
    worst = {key: max(image[key] for image in per_image) for key in per_image[0]}
    tolerance = TOLERANCE[(format_name, "none" if format_name == "saved_model" else quantize)]
    return {"max_difference": worst, "tolerance": tolerance, "passed": all(v <= tolerance for v in worst.values())}
