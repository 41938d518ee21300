"""Stage 6: detectors on images, folders and videos (`tfod-wrap detect`): drawn images, an annotated video or
GIF, COCO-results JSON that `tfod-wrap eval --detections` scores, and, with several models, side-by-side grids
and their latencies.

Output folder (built beside --output and swapped in whole at the end):
    images/  videos/  detections.json  images.json  summary.json   (see outputs.py; MODEL/ folders with several)
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

from tfod_wrap.core.files import claim_output, read_json_object
from tfod_wrap.core.manifests import DetectSummary
from tfod_wrap.core.processes import terminate_as_interrupt
from tfod_wrap.core.sliced import SlicedDetector, Tiling, describe_tiling
from tfod_wrap.core.tiles import DEFAULT_OVERLAP
from tfod_wrap.detect import inputs as sources
from tfod_wrap.detect.models import DetectError, Model, load_model, model_name
from tfod_wrap.detect.outputs import DETECTIONS, IMAGES, VIDEO_CODECS, Outputs
from tfod_wrap.detect.pipeline import run

SUMMARY = DetectSummary.FILE
# With one model, two calls at once. On this project's 2-core machine (idle), an SSD MobileNet V2 320 SavedModel ran
# 23-26 frames a second one call at a time with TensorFlow's default threads (every operation on both cores: 1.7
# cores busy), 24-31 with two calls at once, and 33-39 with two calls at once of one thread per operation
# (`split_cores`). With several models, one call at a time keeps their latencies comparable.
CONCURRENT_CALLS = 2
# names a model cannot take: with several models, each gets a folder of its name beside these
RESERVED = {"images", "videos", SUMMARY, DETECTIONS, IMAGES}
KIND = "detect"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)

__all__ = ["DetectError", "Model", "detect", "load_model", "split_cores", "summary_table"]


def detect(
    models: Sequence[str | Path],
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    min_score: float = 0.5,
    label_map: str | Path | None = None,
    batch: int = 4,
    video_fps: float | None = None,
    gif: bool = False,
    video_codec: str = "h264",
    tune_threads: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    tile: int | None = None,
    tile_overlap: float = DEFAULT_OVERLAP,
    tile_merge: str = "nms",
    tile_full_image: bool = False,
) -> dict:
    """Run every model on every input and write the outputs into `output`; returns summary.json's content.

    `min_score` decides which boxes are drawn; detections.json keeps every detection the model returns (mAP
    needs the low scores too). `batch` frames of one size go through a model per call when its input takes
    a batch (TFOD's uint8 exports take one image: they get one); with one model, two calls run at once, so
    its latency is measured while they share the CPU. With `tune_threads` and one model, TensorFlow's threads
    are split between those two calls first (`split_cores`; it changes them for the rest of the process, and
    only if TensorFlow has not run yet: the command line does it). Videos are written as MP4 (`video_codec`
    "h264", which browsers play, or "mp4v"), or GIF with `gif`, at `video_fps` or the input's rate. Unreadable
    inputs are skipped and listed.

    With `tile`, each image runs as overlapping tiles of that size (plus the whole image with `tile_full_image`),
    the boxes merged with `tile_merge` (see core/sliced.py): one image at a time, its tiles batched.
    """
    _check_options(models, min_score, batch, video_fps, video_codec)
    tiling = Tiling(tile, tile_overlap, tile_merge, tile_full_image) if tile is not None else None
    paths = [Path(path) for path in inputs]
    output = Path(output)
    found, skipped = sources.collect(paths)
    if not found:
        raise DetectError("no image or video among the inputs: " + "; ".join(f"{s.path}: {s.reason}" for s in skipped))
    sources.check_output(output, paths, KIND, _earlier_output)
    calls = CONCURRENT_CALLS if len(models) == 1 else 1
    if tune_threads and calls > 1:
        split_cores(calls)
    loaded = _load_models(models, label_map, log)
    if tiling:
        for model in loaded:
            model.sliced = SlicedDetector(model, tiling)  # what detect.pipeline runs instead of the model
    if tiling or not any(model.batchable for model in loaded):
        batch = 1  # waiting for a batch that is then run image by image would only delay the writer
    from tqdm import tqdm

    started = time.perf_counter()
    with (
        terminate_as_interrupt(),  # SIGTERM as Ctrl-C: the threads end and the staging folder goes, not left behind
        claim_output(output, KIND, legacy=_earlier_output) as staging,
        tqdm(total=sources.frame_count(found), unit="img", desc="detecting", disable=not progress) as bar,
    ):
        outputs = Outputs(staging, loaded, min_score=min_score, gif=gif, video_fps=video_fps, video_codec=video_codec)
        try:
            latencies = run(sources.read(found), loaded, outputs, batch, calls, bar)
        finally:
            outputs.close()
        for item in skipped:
            outputs.add(item)
        seconds = time.perf_counter() - started
        options = {"min_score": min_score, "batch": batch, "concurrent_calls": calls}
        summary = _summary(output, loaded, latencies, outputs, seconds, tiling, **options)
        summary.write(staging)
    return summary.to_json()


def split_cores(calls: int) -> bool:
    """Set TensorFlow to run `calls` operations at once on cores/calls threads each, instead of every operation
    on all cores: with `calls` model calls at once, less time goes into keeping threads in step (see
    CONCURRENT_CALLS). Possible only before TensorFlow has run anything in this process; returns whether it was
    set. It stays for the rest of the process, where one call at a time (training) is then slower."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // calls))
        tf.config.threading.set_inter_op_parallelism_threads(calls)
    except RuntimeError:  # TensorFlow is already running here: keep its threads
        return False
    return True


def summary_table(summary: dict) -> str:
    """Latency per image of each model, one line each (the first call apart: it sets the graph up), then what
    was written and skipped."""
    lines = [
        f"{'model':<28} {'kind':<11} {'batch':>5} {'images':>7} {'first ms':>9} {'median ms':>10} {'mean ms':>8} "
        f"{'p90 ms':>7}"
    ]
    for model in summary["models"]:
        latency = model["latency_ms"]
        lines.append(
            f"{model['name'][:28]:<28} {model['kind']:<11} {model['batch']:>5} {model['images']:>7} "
            f"{latency['first']:>9.1f} {latency['median']:>10.1f} {latency['mean']:>8.1f} {latency['p90']:>7.1f}"
        )
    lines.append(
        f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} per second): "
        f"{summary['images']} images, {len(summary['videos'])} videos written to {summary['output']}"
    )
    tiling = summary.get("tiling")
    if tiling:
        lines.append(
            f"sliced: {describe_tiling(tiling)}; {tiling['calls_per_image']:g} model calls per image (latency is per "
            "whole image)"
        )
    for model in summary["models"]:
        if model["note"]:
            lines.append(f"note: {model['name']}: {model['note']}")
    for skipped in summary["skipped"]:
        lines.append(f"skipped {skipped['path']}: {skipped['reason']}")
    return "\n".join(lines)


def _earlier_output(folder: Path) -> bool:
    """A detect output of the versions before the ownership marker, which took any folder holding a summary.json
    for one: now the summary.json must be detect's, and the folder hold nothing but what detect writes."""
    summary = read_json_object(folder / SUMMARY)
    if summary is None or not {"models", "frames", "images", "videos", "skipped"} <= summary.keys():
        return False
    models = summary["models"] if isinstance(summary["models"], list) else []
    names = RESERVED | {model.get("name") for model in models if isinstance(model, dict)}
    return {path.name for path in folder.iterdir()} <= names


def _check_options(models: Sequence, min_score: float, batch: int, video_fps: float | None, video_codec: str) -> None:
    if not models:
        raise DetectError("no model: pass --model at least once")
    if not 0 <= min_score <= 1:
        raise DetectError(f"--min-score {min_score}: a score between 0 and 1")
    if batch < 1:
        raise DetectError(f"--batch {batch}: at least 1")
    if video_fps is not None and video_fps <= 0:
        raise DetectError(f"--video-fps {video_fps}: frames per second above 0")
    if video_codec not in VIDEO_CODECS:
        raise DetectError(f"--video-codec {video_codec}: one of {', '.join(VIDEO_CODECS)}")


def _load_models(specs: Sequence[str | Path], label_map: str | Path | None, log: Callable[[str], None]) -> list[Model]:
    """Each model with a name of its own (name-2, ... for repeats): the grid's headers and the output folders."""
    loaded, names = [], set(RESERVED)
    for spec in specs:
        name = base = model_name(str(spec))
        number = 1
        while name in names:
            number += 1
            name = f"{base}-{number}"
        names.add(name)
        model = load_model(spec, label_map, name=name)
        log(f"{name}: {model.kind} model, labels from {model.labels}")
        loaded.append(model)
    return loaded


def _latency(timings: list[tuple[float, int]]) -> dict[str, float]:
    """Milliseconds per image: the first call apart (it sets the graph up), statistics over the images of the
    others (each image of a batch counted at the batch's time per image)."""
    if not timings:
        return {"first": 0.0, "median": 0.0, "mean": 0.0, "p90": 0.0}
    rest = sorted(ms for ms, images in timings[1:] for _ in range(images)) or [timings[0][0]]
    return {
        "first": timings[0][0],
        "median": statistics.median(rest),
        "mean": statistics.fmean(rest),
        "p90": rest[min(len(rest) - 1, int(0.9 * len(rest)))],
    }


def _summary(
    output: Path,
    models: list[Model],
    latencies: dict,
    outputs: Outputs,
    seconds: float,
    tiling: Tiling | None,
    **options,
) -> DetectSummary:
    files = outputs.files()
    frames = sum(images for _, images in next(iter(latencies.values()), []))
    return DetectSummary(
        output=str(output),
        models=[
            {
                "name": model.name,
                "source": model.source,
                "kind": model.kind,
                "labels": model.labels,
                "batch": model.largest_batch,
                "images": sum(images for _, images in latencies[model.name]),
                "latency_ms": _latency(latencies[model.name]),
                "detections": files[model.name],
                "note": model.note,
            }
            for model in models
        ],
        frames=frames,
        seconds=round(seconds, 3),
        fps=frames / seconds if seconds else 0.0,
        images=outputs.images_written,
        videos=outputs.videos,
        skipped=outputs.skipped,
        **options,
        tensorflow_threads={  # 0: TensorFlow's default (all cores)
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        tiling=_tiling_summary(tiling, models, frames),
    )


def _tiling_summary(tiling: Tiling | None, models: list[Model], frames: int) -> dict | None:
    """The options, and the model calls an image took on average (tiles, plus the whole image if asked)."""
    if tiling is None:
        return None
    calls = next((model.sliced.tiles_run for model in models if hasattr(model, "sliced")), 0)
    return {**tiling.to_json(), "calls_per_image": round(calls / frames, 2) if frames else 0.0}
