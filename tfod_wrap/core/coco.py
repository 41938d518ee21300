"""COCO-style scoring shared by the stages: the ground truth of TFRecords as a COCO dataset (boxes in pixels, the
classes through the label map as TFOD's decoder maps them), and pycocotools' COCOeval on it. `eval` builds its
metrics, and `export --verify` its mAP@0.5 per format, on these.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.records import feature_values, read_examples


class EvalError(UserError):
    """An evaluation that cannot run; the message says why."""


def records(files: list[str]) -> Iterator[tuple[int, dict]]:
    """(image id, parsed record) in file order; ids are 1-based positions, unique within one eval."""
    for image_id, _, feature in records_with_files(files):
        yield image_id, feature


def records_with_files(files: list[str]) -> Iterator[tuple[int, str, dict]]:
    """(image id, file, parsed record): the file names the record in error messages."""
    for image_id, (file, example) in enumerate(read_examples(files), start=1):
        yield image_id, file, example.features.feature


class LabelSource:
    """The label map of an eval, with its path for messages."""

    def __init__(self, class_ids: dict[str, int], path: str | Path = "the label map"):
        self.class_ids = class_ids
        self.path = str(path)


def class_labels(feature, count: int, labels: LabelSource, where: str) -> list[int]:
    """Each box's class id. Records name classes twice (class/label and class/text) or, as TFOD's own
    create_coco_tf_record.py writes them, by text only; TFOD's decoder then maps text through the label map, and
    so does this. A label that contradicts the text under this label map is an error: per-class results would
    go under the wrong names."""
    ids = [int(value) for value in feature_values(feature, "image/object/class/label")]
    texts = [value.decode("utf-8", "replace") for value in feature_values(feature, "image/object/class/text")]
    if len(ids) < count and len(texts) < count:
        raise EvalError(
            f"{where}: {count} boxes but {max(len(ids), len(texts))} class entries (no class for some boxes: "
            "neither image/object/class/label nor image/object/class/text)"
        )
    if len(texts) < count:
        return ids[:count]
    result = []
    for index, text in enumerate(texts[:count]):
        mapped = labels.class_ids.get(text)
        if mapped is None:
            raise EvalError(f"{where}: class {text!r} is not in the label map {labels.path}")
        if index < len(ids) and ids[index] != mapped:
            raise EvalError(
                f"{where}: the record gives class {text!r} id {ids[index]}, but the label map {labels.path} gives "
                f"it id {mapped}; evaluate with the label map the records were written with"
            )
        result.append(mapped)
    return result


def image_groundtruth(
    image_id: int, feature, first_annotation_id: int, labels: LabelSource, file: str = "records"
) -> tuple[dict, list[dict]]:
    """One record's COCO image entry and annotations (boxes in pixels), ids counting from first_annotation_id."""
    width, height = feature_values(feature, "image/width")[0], feature_values(feature, "image/height")[0]
    name = feature_values(feature, "image/filename")[0].decode()
    image = {"id": image_id, "width": width, "height": height, "file_name": name}
    sides = ("xmin", "ymin", "xmax", "ymax")
    corners = list(zip(*(feature_values(feature, f"image/object/bbox/{key}") for key in sides)))
    crowd = feature_values(feature, "image/object/is_crowd")
    ids = class_labels(feature, len(corners), labels, f"{file}, image {name}")
    annotations = []
    for index, ((xmin, ymin, xmax, ymax), label) in enumerate(zip(corners, ids)):
        box = [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height]
        annotations.append(
            {
                "id": first_annotation_id + index,
                "image_id": image_id,
                "category_id": int(label),
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": int(crowd[index]) if index < len(crowd) else 0,
            }
        )
    return image, annotations


def groundtruth(files: list[str], class_ids: dict[str, int], label_map: str | Path = "the label map") -> dict:
    """The COCO dataset of every record of `files` (no image decoded): images with ids 1.. in file order,
    annotations, and the label map's categories. `label_map` names the label map in errors."""
    labels = LabelSource(class_ids, label_map)
    images, annotations = [], []
    for image_id, file, feature in records_with_files(files):
        image, boxes = image_groundtruth(image_id, feature, len(annotations) + 1, labels, file)
        images.append(image)
        annotations += boxes
    categories = [{"id": class_id, "name": name} for name, class_id in sorted(class_ids.items(), key=lambda i: i[1])]
    return {"images": images, "annotations": annotations, "categories": categories}


class MetricsError(UserError, ValueError):
    """Ground truth and detections that cannot be scored together; the message says why."""


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """pycocotools prints progress on every call; keep stdout clean unless asked."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _groundtruth_api(groundtruth: dict) -> COCO:
    # COCOeval writes "ignore" flags into the annotations: work on a copy so the caller's dict is untouched
    dataset = copy.deepcopy(groundtruth)
    dataset.setdefault("images", [])
    dataset.setdefault("categories", [])
    for annotation in dataset.setdefault("annotations", []):
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", float(annotation["bbox"][2] * annotation["bbox"][3]))
    api = COCO()
    api.dataset = dataset
    api.createIndex()
    return api


def _detections_api(truth: COCO, detections: list[dict]) -> COCO:
    known = set(truth.getImgIds())
    unknown = sorted({str(d["image_id"]) for d in detections if d["image_id"] not in known})
    if unknown:
        raise MetricsError(f"detections for images not in the ground truth: {', '.join(unknown[:5])}")
    if detections:
        return truth.loadRes(copy.deepcopy(detections))  # loadRes adds ids and areas in place
    # loadRes indexes detections[0]; an empty result set is a valid input, so build it by hand
    empty = COCO()
    empty.dataset = {"images": list(truth.dataset["images"]), "categories": list(truth.dataset["categories"])}
    empty.dataset["annotations"] = []
    empty.createIndex()
    return empty


# indices into COCOeval's parameters: areaRng[0] is "all", maxDets[2] is the largest (100, or `max_detections`)
AREA_ALL = 0
MAX_DETS_LAST = 2
COCO_MAX_DETECTIONS = 100


def max_detections_needed(groundtruth: dict, detections: list[dict]) -> int:
    """COCO's 100 detections per image, or as many as the most objects or detections of one image where that is
    more (sliced inference has no cap, and a large image can hold hundreds of objects): with COCO's cap, the
    lower-scoring detections of such an image would go unscored and its objects beyond 100 count as missed."""
    most = Counter(a["image_id"] for a in groundtruth.get("annotations", []))
    found = Counter(d["image_id"] for d in detections)
    return max([COCO_MAX_DETECTIONS, *most.values(), *found.values()])


def mean_valid(values: np.ndarray) -> float:
    """COCOeval.summarize's averaging: entries of -1 mean "no ground truth" and are left out."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def coco_eval(
    groundtruth: dict, detections: list[dict], verbose: bool = False, max_detections: int = COCO_MAX_DETECTIONS
) -> COCOeval:
    """pycocotools' COCOeval (boxes) on these inputs, evaluated, accumulated and summarised (`.stats` is set).
    `max_detections` replaces COCO's 100 as the largest maxDets (the one AP and AR@100 use)."""
    with quiet(verbose):
        truth = _groundtruth_api(groundtruth)
        evaluator = COCOeval(truth, _detections_api(truth, detections), iouType="bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if max_detections != COCO_MAX_DETECTIONS:
        # summarize() computes mAP at a fixed maxDets of 100 (its other numbers take maxDets[2]): -1 when 100 is not
        # one of them. The same average, at the raised maxDets:
        evaluator.stats[0] = mean_valid(evaluator.eval["precision"][:, :, :, AREA_ALL, MAX_DETS_LAST])
    return evaluator


def map_at_50(groundtruth: dict, detections: list[dict]) -> float:
    """COCO's mAP@0.5 (DetectionBoxes_Precision/mAP@.50IOU) of COCO results against the ground truth, maxDets
    raised where an image needs it."""
    return float(
        coco_eval(groundtruth, detections, max_detections=max_detections_needed(groundtruth, detections)).stats[1]
    )
