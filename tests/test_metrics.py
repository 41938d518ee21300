"""COCO metrics: the numbers equal pycocotools' COCOeval, per class included; P/R/F1, confusion and plots."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfod_wrap.evaluate.metrics import COCO_METRIC_NAMES, MetricsError, coco_eval, evaluate_detections
from tfod_wrap.evaluate.plots import draw_examples, plot_confusion, plot_pr_curves

CATEGORIES = [{"id": 5, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 9, "name": "bird"}, {"id": 12, "name": "fish"}]
# (image id, category id, [x, y, w, h], iscrowd): small (< 32^2), medium and large boxes; fish has no ground truth
BOXES = [
    (1, 1, [10, 10, 150, 120], 0),
    (1, 5, [300, 200, 50, 60], 0),
    (1, 9, [500, 50, 20, 20], 0),
    (2, 1, [100, 100, 60, 50], 0),
    (2, 1, [400, 300, 25, 25], 0),
    (2, 5, [200, 150, 180, 160], 0),
    (3, 9, [50, 50, 200, 150], 0),
    (3, 9, [400, 100, 70, 70], 0),
    (3, 5, [300, 300, 200, 150], 1),  # a crowd region
    (5, 5, [10, 400, 30, 30], 0),
    (5, 1, [300, 50, 250, 200], 0),
]


def make_groundtruth() -> dict:
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"img{i}.jpg"} for i in range(1, 6)]  # 4: negative
    annotations = [
        {"id": n, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
        for n, (i, c, b, crowd) in enumerate(BOXES, start=1)
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def regular_boxes():
    return [(i, c, b) for i, c, b, crowd in BOXES if not crowd]


def perfect():
    return [
        {"image_id": i, "category_id": c, "bbox": list(b), "score": 0.95 - 0.04 * n}
        for n, (i, c, b) in enumerate(regular_boxes())
    ]


def shifted():
    # a shift by 20% of the width gives IoU 0.8 / 1.2 = 0.67: a match at IoU 0.5, not at 0.75
    return [{**d, "bbox": [d["bbox"][0] + 0.2 * d["bbox"][2], *d["bbox"][1:]]} for d in perfect()]


def duplicated():
    # each duplicate outscores the next true box, so it ranks among the true positives as a false positive
    return perfect() + [{**d, "score": d["score"] - 0.01} for d in perfect()]


def on_crowd():
    inside = {"image_id": 3, "category_id": 5, "bbox": [320, 320, 60, 60], "score": 0.95}
    return perfect() + [inside, {**inside, "bbox": [350, 330, 100, 90], "score": 0.85}]


def random_scores():
    rng = np.random.default_rng(7)
    detections = []
    for i, c, b in regular_boxes():
        for _ in range(3):
            jitter = rng.normal(0, 0.15, 4) * [b[2], b[3], b[2], b[3]]
            box = [b[0] + jitter[0], b[1] + jitter[1], max(b[2] + jitter[2], 2), max(b[3] + jitter[3], 2)]
            category = c if rng.random() < 0.8 else int(rng.choice([1, 5, 9, 12]))
            detections.append({"image_id": i, "category_id": category, "bbox": box, "score": float(rng.random())})
    detections.append({"image_id": 4, "category_id": 9, "bbox": [1, 1, 40, 40], "score": 0.99})  # on the negative
    return detections


CASES = {
    "perfect": perfect,
    "empty": list,
    "shifted": shifted,
    "duplicated": duplicated,
    "crowd": on_crowd,
    "random": random_scores,
}


def reference_stats(groundtruth: dict, detections: list[dict], category_ids: list[int] | None = None) -> list[float]:
    """Plain pycocotools, written independently of the module: COCOeval.stats, optionally for some classes only."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(groundtruth)
        truth.createIndex()
        if detections:
            results = truth.loadRes(copy.deepcopy(detections))
        else:
            results = COCO()
            results.dataset = {"images": groundtruth["images"], "categories": CATEGORIES, "annotations": []}
            results.createIndex()
        evaluator = COCOeval(truth, results, "bbox")
        if category_ids is not None:
            evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(value) for value in evaluator.stats]


@pytest.fixture(scope="module")
def results() -> dict:
    groundtruth = make_groundtruth()
    return {name: evaluate_detections(groundtruth, make()) for name, make in CASES.items()}


@pytest.mark.parametrize("case", CASES)
def test_coco_numbers_equal_cocoeval(results, case):
    coco = results[case]["coco"]
    assert list(coco) == list(COCO_METRIC_NAMES)
    assert list(coco.values()) == reference_stats(make_groundtruth(), CASES[case]())


@pytest.mark.parametrize("case", CASES)
def test_per_class_ap_equals_cocoeval_on_that_class_alone(results, case):
    per_class = results[case]["per_class"]
    assert list(per_class) == ["cat", "dog", "bird", "fish"]  # category id order
    for category in CATEGORIES:
        alone = reference_stats(make_groundtruth(), CASES[case](), [category["id"]])
        values = per_class[category["name"]]
        assert [values["AP"], values["AP50"], values["AP75"]] == alone[:3], category["name"]


def test_known_values(results):
    classes = ("cat", "dog", "bird")
    assert results["perfect"]["coco"]["DetectionBoxes_Precision/mAP"] == 1.0
    assert all(v == 0.0 for v in results["empty"]["coco"].values())  # every area range has ground truth
    assert all(results["shifted"]["per_class"][c]["AP50"] == 1.0 for c in classes)
    assert all(results["shifted"]["per_class"][c]["AP75"] == 0.0 for c in classes)
    assert all(results["duplicated"]["per_class"][c]["AP"] < 1.0 for c in classes)
    assert results["crowd"]["per_class"]["dog"]["AP"] == 1.0  # detections on the crowd region are not FPs
    assert all(r["per_class"]["fish"]["AP"] == -1.0 for r in results.values())
    assert results["perfect"]["per_class"]["fish"]["num_groundtruth"] == 0
    assert results["perfect"]["curves"]["fish"] == {"recall": [], "precision": []}


def test_counts_and_precision_recall_use_coco_matching(results):
    dog = results["crowd"]["per_class"]["dog"]
    assert dog["num_groundtruth"] == 3  # the crowd box is not counted
    assert dog["num_detections"] == 5
    assert dog["at_threshold"] == {"threshold": 0.5, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    cat = results["duplicated"]["per_class"]["cat"]
    assert (cat["num_groundtruth"], cat["num_detections"]) == (4, 8)
    assert cat["at_threshold"]["precision"] == 0.5 and cat["at_threshold"]["recall"] == 1.0
    # cat's true boxes score .95, .83, .79, .59, each duplicate .01 less: the best cut keeps 4 true of 7 (at .59)
    assert cat["best_f1"] == pytest.approx({"threshold": 0.59, "precision": 4 / 7, "recall": 1.0, "f1": 8 / 11})
    empty = results["empty"]["per_class"]["cat"]
    assert empty["best_f1"] == {"threshold": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_best_f1_and_threshold_by_hand():
    truth = {
        "images": [{"id": 1, "width": 400, "height": 100, "file_name": "a.jpg"}],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": 3, "bbox": [100 * k, 10, 50, 50], "area": 2500, "iscrowd": 0}
            for k in range(3)
        ],
        "categories": [{"id": 3, "name": "a"}],
    }
    found = [  # score: true positive?
        (0.9, [0, 10, 50, 50]),  # TP
        (0.8, [60, 60, 30, 30]),  # FP
        (0.7, [100, 10, 50, 50]),  # TP
        (0.6, [360, 60, 30, 30]),  # FP
        (0.3, [200, 10, 50, 50]),  # TP
    ]
    detections = [{"image_id": 1, "category_id": 3, "bbox": b, "score": s} for s, b in found]
    values = evaluate_detections(truth, detections, score_threshold=0.5)["per_class"]["a"]
    # cuts: 0.9 -> F1 .5, 0.8 -> .4, 0.7 -> .667, 0.6 -> .571, 0.3 -> P .6 R 1 F1 .75
    assert values["best_f1"] == pytest.approx({"threshold": 0.3, "precision": 0.6, "recall": 1.0, "f1": 0.75})
    # at 0.5: 4 detections, 2 true: P 1/2, R 2/3
    assert values["at_threshold"] == pytest.approx({"threshold": 0.5, "precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})


def test_best_f1_cuts_only_between_different_scores():
    truth = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}],
    }
    # an FP ties the TP's score: no threshold keeps the TP without the FP
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.8},
    ]
    best = evaluate_detections(truth, detections)["per_class"]["a"]["best_f1"]
    assert best == pytest.approx({"threshold": 0.8, "precision": 0.5, "recall": 1.0, "f1": 2 / 3})


def test_confusion_matrix_by_hand():
    boxes = {"A": [0, 0, 50, 50], "B": [100, 0, 50, 50], "C": [200, 0, 50, 50]}
    truth = {
        "images": [{"id": 7, "width": 400, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": boxes["A"], "area": 2500, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 4, "bbox": boxes["B"], "area": 2500, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": boxes["C"], "area": 2500, "iscrowd": 0},
        ],
        "categories": [{"id": 2, "name": "a"}, {"id": 4, "name": "b"}],
    }
    detections = [
        {"image_id": 7, "category_id": 2, "bbox": boxes["A"], "score": 0.9},  # correct
        {"image_id": 7, "category_id": 2, "bbox": boxes["B"], "score": 0.8},  # a b seen as an a
        {"image_id": 7, "category_id": 4, "bbox": [300, 50, 40, 40], "score": 0.7},  # nothing there
        {"image_id": 7, "category_id": 2, "bbox": boxes["C"], "score": 0.3},  # below the threshold: C is missed
    ]
    confusion = evaluate_detections(truth, detections, score_threshold=0.5)["confusion"]
    assert confusion["rows"] == ["a", "b", "background"]
    assert confusion["columns"] == ["a", "b", "missed"]
    assert confusion["matrix"] == [[1, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_confusion_ignores_detections_on_crowd_regions(results):
    matrix = results["crowd"]["confusion"]["matrix"]
    assert matrix[-1] == [0, 0, 0, 0, 0]  # no false detections
    assert [matrix[i][i] for i in range(4)] == [4, 3, 3, 0]
    assert results["perfect"]["confusion"]["matrix"] == matrix


def test_quiet_json_and_inputs_untouched(capsys):
    groundtruth, detections = make_groundtruth(), random_scores()
    before = copy.deepcopy((groundtruth, detections))
    metrics = evaluate_detections(groundtruth, detections)
    assert capsys.readouterr().out == ""
    assert (groundtruth, detections) == before
    assert json.loads(json.dumps(metrics)) == metrics
    assert metrics["worst_class"] == min(("cat", "dog", "bird"), key=lambda c: metrics["per_class"][c]["AP50"])
    coco_eval(groundtruth, [], verbose=True)
    assert "Accumulating evaluation results" in capsys.readouterr().out


def test_worst_class_none_without_ground_truth():
    truth = {"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [], "categories": CATEGORIES}
    metrics = evaluate_detections(truth, [])
    assert metrics["worst_class"] is None
    assert all(v == -1.0 for v in metrics["coco"].values())


def test_detections_for_unknown_images_are_an_error():
    with pytest.raises(MetricsError, match="not in the ground truth"):
        evaluate_detections(make_groundtruth(), [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1}])


def test_plots_write_png_files(results, tmp_path):
    metrics = results["random"]
    pr = plot_pr_curves(metrics, tmp_path / "pr.png")
    confusion = plot_confusion(metrics, tmp_path / "plots" / "confusion.png")
    rng = np.random.default_rng(0)
    images = [(i, rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for i in range(1, 6)]
    examples = draw_examples(images, make_groundtruth(), random_scores(), "bird", tmp_path / "bird.png")
    for path in (pr, confusion, examples):
        assert path.stat().st_size > 1000
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 300 <= image.width <= 4000 and 200 <= image.height <= 4000
    assert not list(tmp_path.rglob("*.partial"))


def test_plots_with_nothing_to_show(tmp_path):
    truth = {"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [], "categories": CATEGORIES}
    metrics = evaluate_detections(truth, [])
    assert plot_pr_curves(metrics, tmp_path / "pr.png").stat().st_size > 0
    assert plot_confusion(metrics, tmp_path / "c.png").stat().st_size > 0
    assert draw_examples([], truth, [], "cat", tmp_path / "e.png").stat().st_size > 0
