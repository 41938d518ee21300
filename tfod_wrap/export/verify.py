"""Parity: the same images through the checkpoint and every exported format (each a `tfod_wrap.core.detector`
backend), compared output by output.

Compared per format, each where the format exposes it:
- raw_detection_scores: every anchor's class scores before non-max suppression (all formats, for models with
  anchors: CenterNet has none and gives no raw outputs);
- raw_detection_boxes: every anchor's decoded box (for TFLite, decoded here from the encodings and anchors that
  enter its post-processing op);
- detections: each reference detection scoring at least CONFIDENT is matched to the same class's best-overlapping
  detection of the format; the box and score differences are reported (a missing match counts as 1.0).
  Detections below that are left out: among near-equal scores, NMS order differs between kernels legitimately.
  TFLite's post-processing op keeps one class per anchor and suppresses across classes, where TFOD's NMS keeps an
  anchor's runner-up classes too, so TFLite is compared with `one_class_per_anchor` of the reference. ONNX is
  the SavedModel's graph with its NMS, converted, so it is compared with the reference as it is.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfod_wrap.core.detections import Detections

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
    ("onnx", "none"): 1e-3,
}
# Full-integer TFLite requantises every activation to int8, so single anchors' raw scores move further than the
# detections a user sees: on the demo model up to 0.105, while the confident detections moved 0.047 and mAP@0.5
# 0.005 against float32 TFLite. Its raw_* outputs are held to this instead (docs/BENCHMARKS.md, "Accuracy per
# quantisation").
RAW_TOLERANCE = {("tflite", "uint8"): 0.2}
# Quantised weights approximate the model rather than convert it, and single detections move with them (on the demo
# model TF.js uint8 moved one confident score by 0.26 among 16 images while its mAP@0.5 rose by 0.010). Where the eval
# split is scored, a quantised format therefore passes on accuracy: mAP@0.5 at most this far below the checkpoint's.
# The tolerances above decide where it cannot be scored, and for float32 formats always.
MAP_KEPT = 0.02


def compare(reference: Detections, candidate: Detections) -> dict[str, float]:
    """Largest absolute differences between one image's reference outputs and a format's outputs."""
    differences = {}
    # CenterNet has no anchors: its models give no raw_* outputs, and only the detections are compared
    for key in ("raw_detection_scores", "raw_detection_boxes"):
        if key in reference.raw:
            differences[key] = float(np.abs(candidate.raw[key] - reference.raw[key]).max())
    box, score = detection_differences(reference, candidate)
    differences["detection_boxes"] = box
    differences["detection_scores"] = score
    return differences


def judge_quantised(report: dict, quantize: str) -> None:
    """Decide the quantised formats of a --verify report (`formats` and `accuracy`, as export.json holds them) by
    their mAP@0.5 against the checkpoint's (MAP_KEPT), where the accuracy was measured; in place."""
    accuracy = report.get("accuracy", {})
    if quantize == "none" or "checkpoint" not in accuracy:
        return
    for name, result in report["formats"].items():
        score = accuracy["formats"].get(name)
        if name == "saved_model" or score is None:  # the SavedModel is float32 in every export
            continue
        result["map_change"] = round(score - accuracy["checkpoint"], 4)
        result["passed"] = result["map_change"] >= -MAP_KEPT
        result["judged_by"] = f"mAP@0.5 within {MAP_KEPT} of the checkpoint's"


def one_class_per_anchor(reference: Detections, nms, max_detections: int) -> Detections:
    """The reference's detections as TFLite's fast post-processing op makes them from the same raw outputs
    (`use_regular_nms=False`, one class per detection): each anchor's best class, then class-agnostic NMS with
    the pipeline's `nms` thresholds. TFLite does not clip boxes; its detector clips them, so this does too."""
    boxes, scores = reference.raw["raw_detection_boxes"], reference.raw["raw_detection_scores"][:, 1:]  # 0: background
    best = scores.max(axis=1)
    kept = tf.image.non_max_suppression(boxes, best, max_detections, nms.iou_threshold, nms.score_threshold).numpy()
    return Detections(np.clip(boxes[kept], 0.0, 1.0), scores[kept].argmax(axis=1) + 1, best[kept], reference.raw)


def detection_differences(reference: Detections, candidate: Detections) -> tuple[float, float]:
    """(box, score): the largest differences between each confident reference detection and the candidate's
    detection of its class that overlaps it most; a reference detection with none of its class counts 1.0."""
    worst_box = worst_score = 0.0
    for box, label, score in zip(reference.boxes, reference.classes, reference.scores):
        if score < CONFIDENT:
            break
        same_class = np.flatnonzero(candidate.classes == label)
        if same_class.size == 0:
            return 1.0, 1.0
        best = same_class[np.argmax([_iou(box, candidate.boxes[index]) for index in same_class])]
        worst_box = max(worst_box, float(np.abs(candidate.boxes[best] - box).max()))
        worst_score = max(worst_score, abs(float(candidate.scores[best]) - float(score)))
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
    pair = (format_name, "none" if format_name == "saved_model" else quantize)
    tolerance, raw = TOLERANCE[pair], RAW_TOLERANCE.get(pair, TOLERANCE[pair])
    passed = all(value <= (raw if key.startswith("raw_") else tolerance) for key, value in worst.items())
    summary = {"max_difference": worst, "tolerance": tolerance, "passed": passed}
    return summary | ({"raw_tolerance": raw} if raw != tolerance else {})
