"""COCO box metrics from pycocotools' own COCOeval, plus what TFOD does not report: per-class numbers.

TFOD's `include_metrics_per_category` is broken (tensorflow/models issues 4778, 5010, 9520) and stock
pycocotools only summarises over all classes, so per-class AP is read out of COCOeval's accumulated
`eval["precision"]` array with the same averaging `COCOeval.summarize` uses. Precision, recall and F1 reuse
COCOeval's own per-image matching (`evalImgs`), so crowd and ignore rules are pycocotools' own too.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from tfod_wrap.core.coco import AREA_ALL, MAX_DETS_LAST, coco_eval, max_detections_needed, mean_valid
from tfod_wrap.core.coco import MetricsError as MetricsError  # raised by the shared scoring, named here as before

COCO_METRIC_NAMES: tuple[str, ...] = (
    "DetectionBoxes_Precision/mAP",
    "DetectionBoxes_Precision/mAP@.50IOU",
    "DetectionBoxes_Precision/mAP@.75IOU",
    "DetectionBoxes_Precision/mAP (small)",
    "DetectionBoxes_Precision/mAP (medium)",
    "DetectionBoxes_Precision/mAP (large)",
    "DetectionBoxes_Recall/AR@1",
    "DetectionBoxes_Recall/AR@10",
    "DetectionBoxes_Recall/AR@100",
    "DetectionBoxes_Recall/AR@100 (small)",
    "DetectionBoxes_Recall/AR@100 (medium)",
    "DetectionBoxes_Recall/AR@100 (large)",
)

MATCH_IOU = 0.5
BACKGROUND = "background"
MISSED = "missed"


def _iou_index(evaluator: COCOeval, threshold: float) -> int:
    return int(np.argmin(np.abs(evaluator.params.iouThrs - threshold)))


def class_ap(evaluator: COCOeval, k: int) -> dict[str, float]:
    """AP, AP50, AP75 of the k-th evaluated category (area all, 100 detections), as summarize() would give."""
    precision = evaluator.eval["precision"][:, :, k, AREA_ALL, MAX_DETS_LAST]
    return {
        "AP": mean_valid(precision),
        "AP50": mean_valid(precision[_iou_index(evaluator, 0.5)]),
        "AP75": mean_valid(precision[_iou_index(evaluator, 0.75)]),
    }


def _scored_matches(evaluator: COCOeval, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, is-true-positive) of the counted detections, best score first, and the number of counted GT.

    Read from COCOeval's per-image matching at IoU 0.5, area "all", 100 detections per image; detections it
    ignores (matched to crowd regions) are dropped, as its accumulate() does.
    """
    t = _iou_index(evaluator, MATCH_IOU)
    # evaluate() lists evalImgs category-major, then area range, then image (accumulate() indexes it the same way)
    n_images, n_areas = len(evaluator.params.imgIds), len(evaluator.params.areaRng)
    start = (k * n_areas + AREA_ALL) * n_images
    images = [e for e in evaluator.evalImgs[start : start + n_images] if e is not None]
    if not images:
        return np.zeros(0), np.zeros(0, dtype=bool), 0
    scores = np.concatenate([np.asarray(e["dtScores"], dtype=float) for e in images])
    matched = np.concatenate([e["dtMatches"][t] > 0 for e in images])
    ignored = np.concatenate([e["dtIgnore"][t].astype(bool) for e in images])
    counted_truth = int(sum(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0) for e in images))
    order = np.argsort(-scores[~ignored], kind="mergesort")  # mergesort: COCOeval's tie order
    return scores[~ignored][order], matched[~ignored][order], counted_truth


def _prf(true_positives: int, detections: int, truth: int, threshold: float) -> dict[str, float]:
    precision = true_positives / detections if detections else 0.0
    recall = true_positives / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": float(threshold), "precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _at_threshold(scores: np.ndarray, hits: np.ndarray, truth: int, threshold: float) -> dict[str, float]:
    kept = scores >= threshold
    return _prf(int(np.count_nonzero(hits[kept])), int(np.count_nonzero(kept)), truth, threshold)


def _best_f1(scores: np.ndarray, hits: np.ndarray, truth: int, fallback: float) -> dict[str, float]:
    """The score threshold with the highest F1; ties go to the higher threshold (fewer detections to keep)."""
    if not scores.size:
        return _prf(0, 0, truth, fallback)  # no detections: every threshold gives 0, report the one asked for
    true_positives = np.cumsum(hits)
    kept = np.arange(1, scores.size + 1)
    # a threshold keeps every detection with an equal score: only the last of each run of equal scores is a cut
    cuts = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    candidates = [_prf(int(true_positives[i]), int(kept[i]), truth, scores[i]) for i in cuts]
    return max(candidates, key=lambda c: c["f1"])  # max keeps the first (highest-threshold) among equals


def _class_names(categories: list[dict]) -> dict[int, str]:
    """{category id: name}; a repeated name gets its id appended so no class hides another in the output.

    Ordered by id, the order COCOeval evaluates categories in, so every output lists the classes alike.
    """
    categories = sorted(categories, key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    return {c["id"]: c["name"] if names.count(c["name"]) == 1 else f"{c['name']} (id {c['id']})" for c in categories}


def _per_class(
    evaluator: COCOeval, names: dict[int, str], detections: list[dict], score_threshold: float
) -> tuple[dict, dict]:
    per_class, curves = {}, {}
    recall_points = [float(r) for r in evaluator.params.recThrs]
    detected = Counter(d["category_id"] for d in detections)
    for k, category_id in enumerate(evaluator.params.catIds):
        name = names[category_id]
        scores, hits, truth = _scored_matches(evaluator, k)
        per_class[name] = {
            **class_ap(evaluator, k),
            "num_groundtruth": truth,
            "num_detections": detected[category_id],
            "best_f1": _best_f1(scores, hits, truth, score_threshold),
            "at_threshold": _at_threshold(scores, hits, truth, score_threshold),
        }
        precision = evaluator.eval["precision"][_iou_index(evaluator, 0.5), :, k, AREA_ALL, MAX_DETS_LAST]
        has_curve = bool(np.any(precision > -1))
        curves[name] = {
            "recall": recall_points if has_curve else [],
            "precision": precision.tolist() if has_curve else [],
        }
    return per_class, curves


def _on_crowd(detection: dict, crowd: list[dict]) -> bool:
    # with the crowd flag pycocotools' IoU is intersection over the detection's own area, as COCOeval uses it
    if not crowd:
        return False
    overlaps = mask_utils.iou([detection["bbox"]], [a["bbox"] for a in crowd], [1] * len(crowd))
    return bool(np.max(overlaps) >= MATCH_IOU)


def _match_image(truth: list[dict], found: list[dict]) -> tuple[list[tuple[int, int | None]], list[int]]:
    """Class-agnostic greedy matching by score at IoU >= 0.5 in one image.

    Returns (predicted class, matched GT class or None) per counted detection and the classes of unmatched GT.
    A detection on a crowd region that matches no regular box is dropped, as COCOeval ignores it.
    """
    regular = [a for a in truth if not a.get("iscrowd")]
    crowd = [a for a in truth if a.get("iscrowd")]
    found = sorted(found, key=lambda d: -d["score"])  # sorted() is stable: equal scores keep input order
    taken = [False] * len(regular)
    pairs = []
    for detection in found:
        ious = mask_utils.iou([detection["bbox"]], [a["bbox"] for a in regular], [0] * len(regular)) if regular else []
        best, best_iou = None, MATCH_IOU
        for j, value in enumerate(np.ravel(ious)):
            if not taken[j] and value >= best_iou:
                best, best_iou = j, value
        if best is not None:
            taken[best] = True
            pairs.append((detection["category_id"], regular[best]["category_id"]))
        elif not _on_crowd(detection, crowd):
            pairs.append((detection["category_id"], None))
    return pairs, [a["category_id"] for a, used in zip(regular, taken) if not used]


def confusion_matrix(groundtruth: dict, detections: list[dict], score_threshold: float = 0.5) -> dict:
    """Counts at IoU 0.5 of detections scoring >= score_threshold, class-agnostic greedy matching per image.

    Layout (K classes, in ground-truth category order), a (K+1) x (K+1) integer matrix:
      rows    = ground-truth class, then "background" (detections that matched no ground truth: false detections)
      columns = predicted class, then "missed" (ground truth that no detection matched)
    matrix[i][j] for i, j < K: GT class i detected as class j (the diagonal is correct detections);
    matrix[K][j]: false detections of class j; matrix[i][K]: missed GT of class i; matrix[K][K] is always 0.
    Crowd boxes are not ground truth rows; a detection on a crowd region is not counted, as in COCOeval.
    Detections of category ids not in the ground truth are left out.
    """
    names = _class_names(groundtruth.get("categories", []))
    index = {category_id: i for i, category_id in enumerate(names)}
    size = len(index) + 1
    matrix = np.zeros((size, size), dtype=int)
    truth_by_image: dict = {}
    for annotation in groundtruth.get("annotations", []):
        if annotation["category_id"] in index:
            truth_by_image.setdefault(annotation["image_id"], []).append(annotation)
    found_by_image: dict = {}
    for detection in detections:
        if detection["category_id"] in index and detection["score"] >= score_threshold:
            found_by_image.setdefault(detection["image_id"], []).append(detection)
    for image_id in set(truth_by_image) | set(found_by_image):
        pairs, missed = _match_image(truth_by_image.get(image_id, []), found_by_image.get(image_id, []))
        for predicted, actual in pairs:
            matrix[index[actual] if actual is not None else size - 1, index[predicted]] += 1
        for actual in missed:
            matrix[index[actual], size - 1] += 1
    labels = list(names.values())
    return {
        "rows": [*labels, BACKGROUND],
        "columns": [*labels, MISSED],
        "labels": [*labels, BACKGROUND],
        "matrix": matrix.tolist(),
    }


def evaluate_detections(
    groundtruth: dict, detections: list[dict], score_threshold: float = 0.5, verbose: bool = False
) -> dict:
    """COCO box metrics of `detections` against `groundtruth`, overall and per class; JSON-serialisable.

    groundtruth: a COCO dict (images, annotations with bbox [x, y, w, h] in pixels, area, iscrowd; categories).
    detections: COCO results [{"image_id", "category_id", "bbox", "score"}], possibly empty.
    Returns:
      "coco": {name: value} for COCO_METRIC_NAMES, exactly COCOeval.stats (-1 where COCO has no ground truth)
      "per_class": {class: {"AP", "AP50", "AP75", "num_groundtruth" (non-crowd), "num_detections",
                   "best_f1": {"threshold", "precision", "recall", "f1"}, "at_threshold": {same, at score_threshold}}}
          AP values come from COCOeval's precision array (area all, 100 detections), averaged like summarize();
          P/R/F1 use COCOeval's own matching at IoU 0.5. Classes without ground truth have AP -1.
      "confusion": see confusion_matrix()
      "curves": {class: {"recall": COCO's 101 recall points, "precision": [...]}} at IoU 0.5 (empty if no GT)
      "worst_class": the class with the lowest AP50 among classes with ground truth, or None
      "max_detections": COCOeval's largest maxDets: 100, or more where an image has more objects or detections
          (`max_detections_needed`); AP and the AR@100 names then count that many per image
    """
    max_detections = max_detections_needed(groundtruth, detections)
    evaluator = coco_eval(groundtruth, detections, verbose=verbose, max_detections=max_detections)
    names = _class_names(groundtruth.get("categories", []))
    per_class, curves = _per_class(evaluator, names, detections, score_threshold)
    scored = [name for name, values in per_class.items() if values["num_groundtruth"] > 0]
    return {
        "coco": {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)},
        "per_class": per_class,
        "confusion": confusion_matrix(groundtruth, detections, score_threshold),
        "curves": curves,
        "worst_class": min(scored, key=lambda name: per_class[name]["AP50"]) if scored else None,
        "max_detections": max_detections,
    }
