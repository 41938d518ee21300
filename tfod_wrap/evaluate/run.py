"""`tfod-wrap eval`: run a checkpoint or an exported SavedModel over TFRecords and score it.

Ground truth is read from the records' standard TFOD keys; detections come from a `tfod_wrap.core.detector`
backend (a checkpoint runs exactly as an exported detector does: preprocess, predict, postprocess), boxes back in
pixels. Scoring is pycocotools' COCOeval (`metrics.py`), so the numbers are COCO's own, per class included.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from tfod_wrap.core.checkpoints import find_checkpoints
from tfod_wrap.core.coco import EvalError as EvalError  # the stage's error, raised by the shared ground-truth reader
from tfod_wrap.core.coco import groundtruth, records
from tfod_wrap.core.detector import CheckpointDetector, Detector
from tfod_wrap.core.errors import Interrupted
from tfod_wrap.core.files import atomic_write_json
from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.manifests import RunFolder
from tfod_wrap.core.pipeline import load
from tfod_wrap.core.processes import caused_by_interrupt
from tfod_wrap.core.records import decode_image, expand_record_paths
from tfod_wrap.core.sliced import SlicedDetector, Tiling, describe_tiling
from tfod_wrap.evaluate.metrics import COCO_METRIC_NAMES, evaluate_detections
from tfod_wrap.evaluate.plots import draw_examples, plot_confusion, plot_pr_curves

PER_CLASS_PREFIX = "DetectionBoxes_PerformanceByCategory"


def collect(
    files: list[str],
    detector: Detector | None,
    class_ids: dict[str, int],
    progress: bool = False,
    label_map: str | Path = "the label map",
):
    """COCO ground truth and COCO results for every record; without a detector, the ground truth only
    (no image is decoded) and no results. `label_map` names the label map in errors.

    The ground truth is read in a pass of its own first (no image decoded): a record that contradicts the label
    map stops the eval before any inference, and the progress bar knows its total."""
    from tqdm import tqdm

    truth = groundtruth(files, class_ids, label_map)
    images, detections = truth["images"], []
    if detector is not None:
        pending = tqdm(records(files), total=len(images), desc="evaluating", unit="img", disable=not progress)
        for (image_id, feature), image in zip(pending, images):
            detections += detector(decode_image(feature)).to_coco(image_id, image["width"], image["height"])
    return truth, detections


def _example_images(files: list[str], groundtruth: dict, detections: list[dict], class_name: str, limit: int):
    """Decode only the few images that show the worst class (a second pass keeps memory flat)."""
    class_id = next(c["id"] for c in groundtruth["categories"] if c["name"] == class_name)
    wanted = {a["image_id"] for a in groundtruth["annotations"] if a["category_id"] == class_id}
    wanted |= {d["image_id"] for d in detections if d["category_id"] == class_id}
    wanted = set(sorted(wanted)[:limit])
    images = []
    for image_id, feature in records(files):
        if image_id in wanted:
            images.append((image_id, decode_image(feature)))
    return images


def score(
    files: list[str],
    detector: Detector,
    label_map: str | Path,
    output_dir: str | Path,
    *,
    score_threshold: float = 0.5,
    progress: bool = False,
    tiling: Tiling | None = None,
) -> dict:
    """Evaluate, write metrics.json and the plots into output_dir, and return the metrics. With `tiling`, the
    detector runs sliced (core/sliced.py) and its merged detections are scored against each whole image."""
    if tiling is not None:
        detector = SlicedDetector(detector, tiling)
    groundtruth, detections = collect(files, detector, read_label_map(Path(label_map)), progress, label_map)
    extra = {"tiling": tiling.to_json()} if tiling is not None else {}
    return score_collected(files, groundtruth, detections, output_dir, score_threshold=score_threshold, **extra)


def score_collected(
    files: list[str],
    groundtruth: dict,
    detections: list[dict],
    output_dir: str | Path,
    *,
    score_threshold: float,
    **extra,
) -> dict:
    """Metrics of detections against the ground truth of `files` (as `collect` returns both), written with the
    plots into output_dir; `extra` keys go into metrics.json as they are."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_detections(groundtruth, detections, score_threshold=score_threshold)
    metrics["images"] = len(groundtruth["images"])
    metrics.update(extra)
    atomic_write_json(output_dir / "metrics.json", metrics)
    plot_pr_curves(metrics, output_dir / "pr_curves.png")
    plot_confusion(metrics, output_dir / "confusion_matrix.png")
    worst = metrics.get("worst_class")
    if worst:
        images = _example_images(files, groundtruth, detections, worst, limit=8)
        draw_examples(
            images,
            groundtruth,
            detections,
            worst,
            output_dir / "worst_class_examples.png",
            score_threshold=score_threshold,
        )
    return metrics


def write_scalars(metrics: dict, log_dir: str | Path, step: int) -> None:
    """TensorBoard eval scalars under the names model_main_tf2 uses, plus per-class AP."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for name in COCO_METRIC_NAMES:
            tf.summary.scalar(name, metrics["coco"][name], step=step)
        for class_name, values in metrics["per_class"].items():
            tf.summary.scalar(f"{PER_CLASS_PREFIX}/mAP/{class_name}", values["AP"], step=step)
            tf.summary.scalar(f"{PER_CLASS_PREFIX}/mAP@.50IOU/{class_name}", values["AP50"], step=step)
    writer.flush()


def eval_folder(model_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Where a run's checkpoint evaluations go: `output_dir`, else MODEL_DIR/eval."""
    return Path(output_dir) if output_dir else Path(model_dir) / "eval"


def evaluate_checkpoints(
    pipeline: str | Path,
    model_dir: str | Path,
    *,
    checkpoint: str = "latest",
    output_dir: str | Path | None = None,
    score_threshold: float = 0.5,
    progress: bool = False,
    tiling: Tiling | None = None,
    data: list[str] | None = None,
    log=print,
    results: dict[str, dict] | None = None,
    detector: CheckpointDetector | None = None,
) -> dict[str, dict]:
    """Evaluate checkpoints of a model dir on the pipeline's eval input, or on the records `data` (as the pipeline's
    label map reads them): {checkpoint name: metrics}, added to `results` when given; sliced with `tiling`. The
    checkpoints are restored one after the other into one detector (`detector`, when given: `watch` keeps one)."""
    config = load(pipeline)
    warning = RunFolder(model_dir).model_warning(config, pipeline)
    if warning:
        log(warning)
    reader = config.eval_input_reader[0]
    files = expand_record_paths(list(data or reader.tf_record_input_reader.input_path))
    output_dir = eval_folder(model_dir, output_dir)
    results = {} if results is None else results
    with _kept_evaluations(results, output_dir):
        for path in find_checkpoints(model_dir, checkpoint):
            name = Path(path).name
            step = int(name.rsplit("-", 1)[1])
            if detector is None:
                detector = CheckpointDetector(pipeline, path)
            elif detector.checkpoint != str(path):
                detector.load(path)
            metrics = score(
                files,
                detector,
                reader.label_map_path,
                output_dir / name,
                score_threshold=score_threshold,
                progress=progress,
                tiling=tiling,
            )
            metrics["checkpoint"] = path
            write_scalars(metrics, output_dir, step)
            atomic_write_json(output_dir / "metrics.json", metrics)  # the newest evaluated checkpoint
            results[name] = metrics
            coco = metrics["coco"]
            log(f"{name}: mAP {coco[COCO_METRIC_NAMES[0]]:.4f}, mAP@.50 {coco[COCO_METRIC_NAMES[1]]:.4f}")
    return results


def watch(
    pipeline: str | Path,
    model_dir: str | Path,
    *,
    timeout: float = 3600,
    poll: float = 10,
    log=print,
    **options,
) -> dict[str, dict]:
    """Evaluate each new checkpoint while training runs, as model_main_tf2 does with --checkpoint_dir;
    stops at the config's last step, or after `timeout` seconds without a new checkpoint."""
    last_step = load(pipeline).train_config.num_steps
    seen: dict[str, dict] = {}
    detector = None  # made at the first checkpoint; the later ones are restored into it
    waited_since = time.monotonic()
    with _kept_evaluations(seen, eval_folder(model_dir, options.get("output_dir"))):
        while time.monotonic() - waited_since < timeout:
            state = tf.train.get_checkpoint_state(str(model_dir))
            latest = Path(state.model_checkpoint_path).name if state else None
            if latest and latest not in seen:
                detector = detector or CheckpointDetector(pipeline, find_checkpoints(model_dir, latest)[0])
                evaluate_checkpoints(
                    pipeline, model_dir, checkpoint=latest, log=log, results=seen, detector=detector, **options
                )
                waited_since = time.monotonic()
                if int(latest.rsplit("-", 1)[1]) >= last_step:
                    return seen
            time.sleep(poll)
    log(f"no new checkpoint for {timeout:g} s; stopping")
    return seen


@contextlib.contextmanager
def _kept_evaluations(results: dict[str, dict], output_dir: Path) -> Iterator[None]:
    """A Ctrl-C keeps the checkpoints evaluated before it (their folders, scalars and metrics.json); says which."""
    try:
        yield
    except BaseException as error:
        if not (results and caused_by_interrupt(error)):
            raise
        raise Interrupted(f"kept the evaluation of {', '.join(results)} in {output_dir}") from None


def metrics_table(metrics: dict) -> str:
    """The printed summary: COCO numbers, then one line per class."""
    lines = [f"{name.split('/')[-1]:>16}  {metrics['coco'][name]:.4f}" for name in COCO_METRIC_NAMES]
    header = f"{'class':<20} {'AP':>6} {'AP50':>6} {'AP75':>6} {'P':>6} {'R':>6} {'F1':>6} {'thr':>5} {'gt':>5}"
    lines += ["", header]
    for name, values in metrics["per_class"].items():
        best = values["best_f1"]
        lines.append(
            f"{name[:20]:<20} {values['AP']:6.3f} {values['AP50']:6.3f} {values['AP75']:6.3f} "
            f"{best['precision']:6.3f} {best['recall']:6.3f} {best['f1']:6.3f} {best['threshold']:5.2f} "
            f"{values['num_groundtruth']:5d}"
        )
    lines.append(
        "P, R, F1 at the score threshold that maximises F1 (IoU 0.5); metrics.json also has them at "
        f"{next(iter(metrics['per_class'].values()), {}).get('at_threshold', {}).get('threshold', 0.5)}"
    )
    tiling = metrics.get("tiling")
    if tiling:
        lines.append(f"sliced inference: {describe_tiling(tiling)}; scored on the whole images")
    most = metrics.get("max_detections", 100)
    if most > 100:
        lines.append(f"COCO maxDets raised from 100 to {most} (an image has that many objects or detections)")
    return "\n".join(lines)
