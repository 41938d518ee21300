"""PNG plots of evaluation metrics: PR curves, the confusion matrix and example detections of one class.

Figures are built with matplotlib's object API (no pyplot), so nothing depends on a display or on global
figure state, and each PNG is written atomically: a crash never leaves a half-written image.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tfod_wrap.core.files import atomic_write_bytes

DPI = 100


def _save(figure: Figure, output: Path) -> Path:
    output = Path(output)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(output, buffer.getvalue())
    return output


def _colours(count: int) -> list:
    # tab10 stays distinguishable up to 10 lines; beyond that tab20, then a continuous map
    name = "tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"
    cmap = colormaps[name]
    return [cmap(i) if name != "turbo" else cmap(i / max(count - 1, 1)) for i in range(count)]


def plot_pr_curves(metrics: dict, output: Path) -> Path:
    """One precision-recall line per class (COCO's curve at IoU 0.5), the legend giving each class's AP50."""
    curves = {name: curve for name, curve in metrics["curves"].items() if curve["recall"]}
    figure = Figure(figsize=(9, 6))
    axes = figure.add_subplot()
    for colour, (name, curve) in zip(_colours(len(curves)), curves.items()):
        ap50 = metrics["per_class"][name]["AP50"]
        axes.plot(curve["recall"], curve["precision"], color=colour, linewidth=1.5, label=f"{name} (AP50 {ap50:.3f})")
    if not curves:
        axes.text(0.5, 0.5, "no class has ground truth", ha="center", va="center", transform=axes.transAxes)
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision-recall at IoU 0.5")
    axes.grid(alpha=0.3)
    if curves:
        # outside the axes so many classes do not cover the curves
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8 if len(curves) <= 15 else 6, frameon=False)
    return _save(figure, output)


def plot_confusion(metrics: dict, output: Path) -> Path:
    """The confusion matrix with counts in the cells; colour is the share of its row, so rare classes show."""
    confusion = metrics["confusion"]
    matrix = np.asarray(confusion["matrix"], dtype=float)
    rows = confusion.get("rows", confusion["labels"])
    columns = confusion.get("columns", confusion["labels"])
    n = max(len(rows), 1)
    side = max(5.0, 0.4 * n + 2.5)
    figure = Figure(figsize=(side, side))
    axes = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    font = 9 if n <= 12 else 7 if n <= 22 else 5
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if shares[i, j] > 0.6 else "black"
            axes.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=font, color=colour)
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=font)
    axes.set_yticks(range(len(rows)), rows, fontsize=font)
    axes.set(xlabel="predicted", ylabel="ground truth", title="Confusion matrix (IoU 0.5)")
    return _save(figure, output)


def _image_lookup(groundtruth: dict) -> dict:
    """Both an image's id and its file name find its ground-truth entry."""
    lookup = {}
    for image in groundtruth.get("images", []):
        lookup[image["id"]] = image
        if "file_name" in image:
            lookup.setdefault(image["file_name"], image)
    return lookup


def _boxes(records: list[dict], image_id) -> list[dict]:
    return [r for r in records if r["image_id"] == image_id]


def _draw_one(axes, image: np.ndarray, truth: list[dict], found: list[dict], names: dict, title: str) -> None:
    axes.imshow(image)
    for annotation in truth:
        x, y, w, h = annotation["bbox"]
        axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=1.5))
        axes.text(
            x,
            y + h,
            names.get(annotation["category_id"], "?"),
            color="black",
            fontsize=7,
            va="top",
            bbox={"facecolor": "lime", "pad": 1, "linewidth": 0},
        )
    for detection in found:
        x, y, w, h = detection["bbox"]
        axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=1.5))
        label = f"{names.get(detection['category_id'], '?')} {detection['score']:.2f}"
        axes.text(
            x, y, label, color="white", fontsize=7, va="bottom", bbox={"facecolor": "red", "pad": 1, "linewidth": 0}
        )
    axes.set_title(title, fontsize=8)
    axes.axis("off")


def draw_examples(
    images: list[tuple[str, np.ndarray]],
    groundtruth: dict,
    detections: list[dict],
    class_name: str,
    output: Path,
    score_threshold: float = 0.5,
    limit: int = 8,
) -> Path:
    """A grid of up to `limit` images that show `class_name` in the ground truth or in a detection >= threshold.

    Every class is drawn (so a confusion with another class is visible): ground truth in green, detections
    scoring >= score_threshold in red with their score. `images` keys are ground-truth image ids or file names.
    """
    names = {c["id"]: c["name"] for c in groundtruth.get("categories", [])}
    class_ids = {i for i, name in names.items() if name == class_name}
    lookup = _image_lookup(groundtruth)
    kept = [d for d in detections if d["score"] >= score_threshold]
    chosen = []
    for key, array in images:
        image_id = lookup[key]["id"] if key in lookup else key
        truth, found = _boxes(groundtruth.get("annotations", []), image_id), _boxes(kept, image_id)
        if any(r["category_id"] in class_ids for r in truth + found):
            chosen.append((key, array, truth, found))
        if len(chosen) >= limit:
            break
    columns = min(4, max(len(chosen), 1))
    grid_rows = max(math.ceil(len(chosen) / columns), 1)
    figure = Figure(figsize=(4 * columns, 3.4 * grid_rows))
    figure.suptitle(f"{class_name}: ground truth (green), detections >= {score_threshold:g} (red)", fontsize=10)
    for index, (key, array, truth, found) in enumerate(chosen):
        _draw_one(figure.add_subplot(grid_rows, columns, index + 1), array, truth, found, names, str(key))
    if not chosen:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, f"no image shows {class_name}", ha="center", va="center")
        axes.axis("off")
    return _save(figure, output)
