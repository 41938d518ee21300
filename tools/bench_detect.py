"""Benchmark `tfod-wrap detect` on a video against a plain frame-by-frame loop, side by side in one run.

Model: SSD MobileNet V2 at 320x320 (template ssd_mobilenet_v2 with its fixed_shape_resizer set to 320x320), trained
--steps steps from random initialisation on --images generated 640x480 images (tools/bench_export.py's data and
training) and exported with `tfod_wrap.export.export` as a SavedModel with uint8 input (TFOD fixes its batch at 1).
The weights are meaningless, but speed hardly depends on them.

Video: --frames frames of 640x480 at 30 FPS, written by OpenCV as MP4 (mp4v): shapes moving over a textured
background, deterministic.

Each run processes the whole video and writes an annotated MP4; both draw the boxes scoring >= the min score,
once for each of --min-scores: 0.5 (detect's default; the random-init model scores about 0.01 everywhere, so
nothing is drawn and the loops differ in everything but drawing) and 0 (every one of the 100 boxes a frame, the
most drawing there can be):
- baseline: the plain loop people write first: read a frame with OpenCV, convert it to RGB, run the SavedModel
  (`tf.saved_model.load`, one frame per call, outputs to NumPy), draw boxes and labels with PIL, convert back and
  write with OpenCV's VideoWriter;
- detect: `tfod-wrap detect --model EXPORT VIDEO --output DIR --min-score S`, as a user runs it (so with its
  TensorFlow threads split between two concurrent calls, which only a fresh process allows); it also writes
  detections.json (every detection), images.json and summary.json.
Each run is a fresh process. Frames per second = frames / seconds spent on the video with the model already
loaded: the baseline's loop, and detect's own `summary["seconds"]` (timed after its model is loaded). Both
include their first, slow inference.
The runs alternate, --repeats times each (baseline first in odd repeats, detect first in even ones); medians and
the ratio detect / baseline of the medians are reported for each min score. Target: ratio >= 1.5.

While every run goes, a thread samples the CPU time of all processes (bench_export.Measured): "other load" is
the mean number of cores that processes outside this script kept busy, "steal" the mean number the hypervisor
took. Before each run the script waits until other processes use less than 0.2 cores, spending at most
--wait-quiet seconds on waiting over the whole run (bench_export.QuietWait); after that it measures regardless.

    .venv/bin/python tools/bench_detect.py [--frames 200] [--repeats 3] [--min-scores 0.5 0] [--images 8]
                                           [--steps 2] [--wait-quiet 120] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from bench_common import in_workdir, load_and_total, machine  # tools/ is on sys.path when run as a script
from bench_export import QUIET_CORES, Measured, QuietWait, prepare_data, progress, train_model
from PIL import Image, ImageDraw

import tfod_wrap  # noqa: F401  (must come before any object_detection import)
from tfod_wrap.core.manifests import DetectFolder, DetectSummary

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "tfod-wrap"
MODEL = "SSD MobileNet V2 320"
SIZE = (640, 480)
FPS = 30
TARGET_RATIO = 1.5


def make_video(path: Path, frames: int) -> Path:
    """Ellipses and rectangles moving (and bouncing) over a fixed noisy gradient, 640x480, mp4v."""
    rng = np.random.default_rng(0)
    width, height = SIZE
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128.0)], axis=-1)
    background = np.clip(background + rng.normal(0, 12, background.shape), 0, 255).astype(np.uint8)
    shapes = [
        (rng.uniform(0, width - 160, 2), rng.uniform(-6, 6, 2), rng.integers(60, 160, 2), rng.integers(0, 256, 3))
        for _ in range(4)
    ]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for index in range(frames):
        frame = background.copy()
        for number, (start, speed, (w, h), colour) in enumerate(shapes):
            # a triangle wave: the shape goes back and forth between the frame's edges
            span = np.array([width - w, height - h], dtype=float)
            left, top = (np.abs((start + speed * index) % (2 * span) - span)).astype(int)
            if number % 2:
                cv2.rectangle(frame, (left, top), (left + w, top + h), colour.tolist(), cv2.FILLED)
            else:
                cv2.ellipse(frame, (left + w // 2, top + h // 2), (w // 2, h // 2), 0, 0, 360, colour.tolist(), -1)
        writer.write(frame)
    writer.release()
    return path


def baseline(saved_model: Path, video: Path, output: Path, min_score: float) -> tuple[int, float]:
    """The plain loop: (frames, seconds) for the whole video, the model loaded before the clock starts."""
    import tensorflow as tf

    model = tf.saved_model.load(str(saved_model))
    started = time.perf_counter()
    capture = cv2.VideoCapture(str(video))
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        found = {key: value[0].numpy() for key, value in model(tf.constant(rgb[np.newaxis])).items()}
        image = Image.fromarray(rgb)
        pen = ImageDraw.Draw(image)
        for (ymin, xmin, ymax, xmax), label, score in zip(
            found["detection_boxes"], found["detection_classes"], found["detection_scores"]
        ):
            if score >= min_score:
                box = (xmin * SIZE[0], ymin * SIZE[1], xmax * SIZE[0], ymax * SIZE[1])
                pen.rectangle(box, outline=(255, 0, 0), width=2)
                pen.text((box[0], box[1]), f"{int(label)} {score:.2f}", fill=(255, 255, 255))
        writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
        frames += 1
    writer.release()
    capture.release()
    return frames, time.perf_counter() - started


def with_detect(export: Path, video: Path, output: Path, min_score: float) -> DetectSummary:
    """`tfod-wrap detect` on the video, as a user runs it: its summary.json (`seconds` is timed after its model
    is loaded)."""
    command = [str(CLI), "detect", "--model", str(export), str(video), "--output", str(output)]
    subprocess.run([*command, "--min-score", str(min_score)], check=True, capture_output=True, text=True)
    return DetectFolder(output).manifest


def drawn_per_frame(export: Path, video: Path, min_score: float) -> float:
    """Mean number of boxes scoring >= min_score on the first 10 frames (both loops draw these)."""
    from tfod_wrap.detect import load_model

    model = load_model(export)
    capture = cv2.VideoCapture(str(video))
    counts = []
    for _ in range(10):
        ok, frame = capture.read()
        if not ok:
            break
        [found] = model(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[np.newaxis])
        counts.append(int(np.sum(found["scores"] >= min_score)))
    capture.release()
    return statistics.fmean(counts)


def one_run(kind: str, export: Path, video: Path, output: Path, min_score: float) -> dict:
    """One loop over the whole video in a fresh process: {frames, seconds, ...}."""
    if kind == "detect":
        summary = with_detect(export, video, output, min_score)
        keys = ("frames", "seconds", "concurrent_calls", "tensorflow_threads")
        return {key: getattr(summary, key) for key in keys} | {"latency_ms": summary.models[0]["latency_ms"]}
    arguments = [str(export / "saved_model"), str(video), str(output.with_suffix(".mp4")), str(min_score)]
    done = subprocess.run(
        [sys.executable, __file__, "--run-baseline", *arguments], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def measure(args: argparse.Namespace, export: Path, video: Path, workdir: Path) -> list[dict]:
    """Every min score, --repeats times, the two loops alternating which goes first."""
    quiet = QuietWait(args.wait_quiet)
    runs = []
    for repeat in range(args.repeats):
        for min_score in args.min_scores:
            order = ("baseline", "detect") if repeat % 2 == 0 else ("detect", "baseline")
            for kind in order:
                waited = quiet()
                progress(f"  repeat {repeat + 1}/{args.repeats}, min score {min_score}: {kind} ...")
                with Measured() as measured:
                    result = one_run(kind, export, video, workdir / f"{kind}-{min_score}-{repeat}", min_score)
                fps = result["frames"] / result["seconds"]
                runs.append(
                    {"kind": kind, "min_score": min_score, "repeat": repeat + 1, **result, "fps": fps}
                    | {"waited_s": waited, "load": measured.load}
                )
                progress(f"    {result['frames']} frames in {result['seconds']:.1f} s: {fps:.2f} FPS")
    return runs


def summarise(runs: list[dict], min_scores: list[float]) -> list[dict]:
    """Per min score: the median FPS of each loop and their ratio."""
    rows = []
    for min_score in min_scores:
        fps = {
            kind: statistics.median(r["fps"] for r in runs if r["kind"] == kind and r["min_score"] == min_score)
            for kind in ("baseline", "detect")
        }
        ratio = fps["detect"] / fps["baseline"]
        rows.append({"min_score": min_score, "median_fps": fps, "ratio": ratio, "target_met": ratio >= TARGET_RATIO})
    return rows


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    import tensorflow as tf

    from tfod_wrap import export

    started = time.perf_counter()
    load_before = os.getloadavg()
    progress(f"{MODEL}: {args.images} images, {args.steps} training steps, export ...")
    records = prepare_data(workdir, args.images)
    pipeline, model_dir = train_model(MODEL, records, workdir, args.steps)
    folder = workdir / "export"
    export.export(pipeline, model_dir, folder, formats=("saved_model",), log=lambda *_: None)
    video = make_video(workdir / "video.mp4", args.frames)
    boxes = {str(score): drawn_per_frame(folder, video, score) for score in args.min_scores}
    runs = measure(args, folder, video, workdir)
    return {
        "machine": machine() | {"tensorflow": tf.__version__, "opencv": cv2.__version__},
        "date": datetime.date.today().isoformat(),
        "conditions": {
            "model": MODEL,
            "init": f"random (no fine_tune_checkpoint), {args.steps} training steps",
            "saved_model_input": "uint8 [1, H, W, 3] (image_tensor): batch 1",
            "video": {"size": list(SIZE), "frames": args.frames, "fps": FPS, "codec": "mp4v"},
            "min_scores": args.min_scores,
            "boxes_drawn_per_frame": boxes,
            "repeats": args.repeats,
            "wait_quiet_budget_s": args.wait_quiet,
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "runs": runs,
        "results": summarise(runs, args.min_scores),
        "target_ratio": TARGET_RATIO,
        "total_seconds": time.perf_counter() - started,
    }


def markdown(results: dict) -> str:
    lines = [
        "| run | min score | repeat | frames | seconds | FPS | other load, steal (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        load = run["load"]
        lines.append(
            f"| {run['kind']} | {run['min_score']:g} | {run['repeat']} | {run['frames']} | {run['seconds']:.1f} | "
            f"{run['fps']:.2f} | {load['other_cores']:.2f}, {load['steal_cores']:.2f} |"
        )
    lines += ["", "| min score | boxes drawn per frame | baseline FPS | detect FPS | ratio | target >= 1.5 |"]
    lines.append("|---:|---:|---:|---:|---:|---|")
    for row in results["results"]:
        boxes = results["conditions"]["boxes_drawn_per_frame"][str(row["min_score"])]
        lines.append(
            f"| {row['min_score']:g} | {boxes:.0f} | {row['median_fps']['baseline']:.2f} | "
            f"{row['median_fps']['detect']:.2f} | {row['ratio']:.2f} | {'met' if row['target_met'] else 'missed'} |"
        )
    disturbed = [f"{r['kind']} {r['repeat']}" for r in results["runs"] if r["load"]["other_cores"] > QUIET_CORES]
    if disturbed:
        lines.append(f"warning: other processes kept more than {QUIET_CORES} cores busy during: {', '.join(disturbed)}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames of the 640x480 video (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop, alternating (default 3)")
    parser.add_argument(
        "--min-scores",
        type=float,
        nargs="+",
        default=[0.5, 0.0],
        help="both loops draw boxes scoring >= this; one condition each (0.5: detect's default, 0: every box)",
    )
    parser.add_argument("--images", type=int, default=8, help="generated training images (default 8)")
    parser.add_argument("--steps", type=int, default=2, help="training steps, batch 2 (default 2)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        help="seconds the run may spend in all waiting for other processes to go quiet before a run (120)",
    )
    parser.add_argument("--workdir", type=Path, help="data, model, video and outputs (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench_detect.json", help="results as JSON")
    return parser.parse_args()


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if sys.argv[1:2] == ["--run-baseline"]:  # one baseline run, in the fresh process one_run started
        saved_model, video, output, min_score = sys.argv[2:]
        frames, seconds = baseline(Path(saved_model), Path(video), Path(output), float(min_score))
        print(json.dumps({"frames": frames, "seconds": seconds}))
        return
    args = parse_args()
    results = in_workdir(args.workdir, "bench-detect-", lambda workdir: benchmark(args, workdir))
    print(markdown(results))
    print(load_and_total(results))
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
