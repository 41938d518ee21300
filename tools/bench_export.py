"""Benchmark the exported detectors: size per format and quantisation, latency per image, FPS of the web page.

For SSD MobileNet V2 at 320x320 (template ssd_mobilenet_v2 with its fixed_shape_resizer set to 320x320; the
template says 300x300) and SSD MobileNet V2 FPNLite 320 (template ssd_mobilenet_v2_fpnlite_320):

1. a generated dataset (--images 640x480 JPEGs, 1-4 ellipses, rectangles or triangles on gradient backgrounds,
   3 classes, Pascal VOC XML; tools/bench_tfrecords.py's generator) is converted with `convert` (3/4 train, 1/4
   val), configured with `config.configure` (batch 2, no fine_tune_checkpoint) and trained for --steps steps from
   **random initialisation**: the weights are meaningless, but sizes do not depend on them and speed hardly does
   (non-max suppression sees every anchor either way, the templates' score threshold being 1e-8);
2. `export.export(..., formats=("saved_model", "tfjs", "tflite"), quantize=Q)` for Q in none, float16, uint8 (the
   SavedModel is written again by each export; it is the same every time): size in MiB of each format's folder as
   export.json reports it;
3. latency per image on --latency-images val images (640x480, what a webcam gives), each timed --repeats times
   after --warmup untimed runs, pooled, median:
   - SavedModel in TensorFlow: the serving_default signature called on the uint8 image, outputs fetched to NumPy;
   - TFLite interpreter of each quantisation, with num_threads 1 and num_threads = cores: `invoke()` only, on the
     preprocessed input (`CheckpointDetector(...).preprocess(image)`: resized to 320x320 and normalised, as the
     TFLite graph expects);
   - TF.js on the wasm backend in Node (`TFJSDetector`, the page's own @tensorflow/tfjs): executeAsync plus
     reading every output, on the 640x480 image (the graph resizes it) and, for the float32 weights, once more on
     the image already resized to the model's 320x320 (what the page sends);
   every latency is also given as a ratio to the SavedModel's median of the same model in the same run;
4. the page (`tfod_wrap.web`) in headless Chromium with a 640x480 still image as its fake camera, for --frames frames,
   on each of its runtimes: the float32 and the uint8 TFLite export on MediaPipe Tasks (XNNPACK wasm, one thread in
   each of --workers workers, and again on the page's own thread, ?workers=0, as the page ran it before it had
   workers; ?runtime=tflite, what the page picks by default when the export has TFLite) and the float32 and float16
   TF.js export on TF.js's wasm backend (?backend=wasm): FPS and inference ms as the page reports them (its log line
   every 5 frames; medians after frame 10), whether the page was crossOriginIsolated and which wasm binary (threads,
   SIMD) ran; and TF.js float32 once more with a 320x240 camera (the page resizes every frame to 320x320 before the
   model, so this shows what the camera size costs). Targets at 640x480 on this 2-core machine: TF.js at least 10
   FPS; the MediaPipe page (in its workers) at least 20 FPS for SSD MobileNet V2 320 and 12 FPS for FPNLite 320
   (issue 20), and its ratio to the TF.js float32 page of the same model in the same run.

--page-only skips the latency measurements and exports float32 and uint8 only (SavedModel, TF.js, TFLite): the
pages of each model side by side, MediaPipe on the float32 and on the uint8 TFLite (full-integer kernels, which
XNNPACK runs faster), each in workers and on the page's thread, and TF.js on float32, in about 15 minutes.

While every measurement runs, a thread samples the CPU time of every process: "other load" is the mean number of
cores that processes outside this script's process tree kept busy (values well above 0 mean the timing was
disturbed), "steal" the mean number stolen by the hypervisor. Before each latency and page measurement the script
waits until those other processes use less than 0.2 cores over 2 s, spending at most --wait-quiet seconds (300) on
waiting over the whole run; after that it measures regardless.

    .venv/bin/python tools/bench_export.py [--quick] [--page-only] [--images 24] [--steps 2] [--latency-images 3]
                                           [--repeats 20] [--warmup 3] [--frames 100] [--workers 2] [--wait-quiet 300]
                                           [--workdir DIR] [--json PATH]

--quick: 1 latency image, 10 repeats, 30 page frames, float32 only on the page (MediaPipe in workers and on the
page's thread, TF.js); no JSON
unless --json.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from bench_common import in_workdir, load_and_total, machine  # tools/ is on sys.path when run as a script
from bench_tfrecords import write_sample  # 640x480 JPEG + VOC XML, 3 classes
from PIL import Image

import tfod_wrap  # noqa: F401  (must come before any object_detection import)
from tfod_wrap.core.manifests import ExportManifest, RecordsFolder
from tfod_wrap.core.tflite import interpreter as tflite_interpreter
from tfod_wrap.export.formats import FORMATS, QUANTIZE  # every format and quantisation of the export table

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "SSD MobileNet V2 320": (
        "ssd_mobilenet_v2",
        ["model.image_resizer.fixed_shape_resizer.height=320", "model.image_resizer.fixed_shape_resizer.width=320"],
    ),
    "SSD MobileNet V2 FPNLite 320": ("ssd_mobilenet_v2_fpnlite_320", []),
}
BATCH = 2
TARGET_FPS = 10.0  # the TF.js page on wasm
# the MediaPipe (TFLite, XNNPACK wasm) page, per model (issue 20)
TARGET_FPS_TFLITE = {"SSD MobileNet V2 320": 20.0, "SSD MobileNet V2 FPNLite 320": 12.0}
RUNTIME_NAMES = {"tflite": "TFLite on MediaPipe", "tfjs": "TF.js wasm"}
PAGE_FORMATS = ("saved_model", "tfjs", "tflite")  # what --page-only exports
PAGE_LOG_EVERY = 5
PAGE_SKIP_FRAMES = 10
MIB = 2**20
SAMPLE_SECONDS = 0.5
QUIET_CORES = 0.2
QUIET_WINDOW = 2.0
CAMERAS = (("640x480", (640, 480)), ("320x240", (320, 240)))


# --- load --------------------------------------------------------------------------------------


def process_times() -> tuple[dict[tuple[int, float], float], set[tuple[int, float]]]:
    """CPU-seconds of every process by (pid, start time), and which of them are this process or its descendants."""
    cpu, parents = {}, {}
    for process in psutil.process_iter(["ppid", "create_time", "cpu_times"]):
        info = process.info
        if info["cpu_times"] is None:
            continue
        cpu[(process.pid, info["create_time"])] = info["cpu_times"].user + info["cpu_times"].system
        parents[process.pid] = info["ppid"]
    mine = set()
    for key in cpu:
        pid = key[0]
        while pid and pid != os.getpid():
            pid = parents.get(pid)
        if pid:
            mine.add(key)
    return cpu, mine


class Measured:
    """Context manager: while its block runs, a thread samples every process's CPU time every SAMPLE_SECONDS; `.load`
    then holds the mean number of cores that processes outside this script's process tree kept busy (processes that
    live shorter than a sample are missed) and the mean number the hypervisor stole."""

    def __enter__(self) -> Measured:
        self.other = 0.0
        self.done = threading.Event()
        self.previous = process_times()[0]
        self.started, self.steal = time.perf_counter(), psutil.cpu_times().steal
        self.thread = threading.Thread(target=self._sample_until_done, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        current, mine = process_times()
        self.other += sum(t - self.previous.get(key, 0.0) for key, t in current.items() if key not in mine)
        self.previous = current

    def _sample_until_done(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            self._sample()

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self._sample()
        wall = time.perf_counter() - self.started
        steal = psutil.cpu_times().steal - self.steal
        self.load = {"other_cores": max(self.other, 0.0) / wall, "steal_cores": steal / wall, "seconds": wall}


class QuietWait:
    """Called before a measurement: waits until processes outside this script's tree keep fewer than QUIET_CORES
    cores busy over a QUIET_WINDOW-second window, spending at most `budget` seconds over the whole run."""

    def __init__(self, budget: float):
        self.left = budget

    def __call__(self) -> float:
        started = time.perf_counter()
        while self.left > 0:
            with Measured() as probe:
                time.sleep(QUIET_WINDOW)
            self.left -= probe.load["seconds"]
            if probe.load["other_cores"] < QUIET_CORES:
                break
            progress(f"    waiting: other processes keep {probe.load['other_cores']:.2f} cores busy")
        return time.perf_counter() - started


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- models --------------------------------------------------------------------------------------


def prepare_data(workdir: Path, count: int) -> Path:
    from tfod_wrap.data import convert

    voc_dir, records = workdir / "voc", workdir / "records"
    voc_dir.mkdir(parents=True)
    for index in range(count):
        write_sample(voc_dir, index)
    report = convert(voc_dir, records, split="train=0.75,val=0.25", shards=1)
    if report["images_written"] != count:
        raise SystemExit(f"convert wrote {report['images_written']} of {count} images; see {records}/report.json")
    return records


def train_model(name: str, records: Path, workdir: Path, steps: int) -> tuple[Path, Path]:
    """pipeline.config and model dir of `name`, trained for `steps` steps from random initialisation."""
    from tfod_wrap import config, train

    template, overrides = MODELS[name]
    folder = workdir / template
    pipeline = folder / "pipeline.config"
    overrides = [*overrides, 'train_config.fine_tune_checkpoint=""']  # random initialisation
    config.configure(
        template, pipeline, data=records, checkpoint="none", batch_size=BATCH, steps=steps, overrides=overrides
    )
    train.train(pipeline, folder / "model", steps=steps, log=lambda *_: None)
    return pipeline, folder / "model"


def export_all(
    pipeline: Path, model_dir: Path, folder: Path, quantizations=QUANTIZE, formats=tuple(FORMATS)
) -> dict[str, ExportManifest]:
    """{quantisation: its export.json}, one export per quantisation."""
    from tfod_wrap import export

    reports = {}
    for quantize in quantizations:
        progress(f"  export quantize={quantize} ...")
        written = export.export(
            pipeline,
            model_dir,
            folder / f"export-{quantize}",
            formats=formats,
            quantize=quantize,
            log=lambda *_: None,
        )
        reports[quantize] = ExportManifest.from_json(written)
    return reports


def sizes(reports: dict[str, ExportManifest]) -> dict[str, dict[str, int]]:
    """{format: {quantisation: bytes}} of what was exported."""
    names = [name for name in FORMATS if all(name in report.formats for report in reports.values())]
    return {name: {q: report.formats[name]["bytes"] for q, report in reports.items()} for name in names}


# --- latency -----------------------------------------------------------------------------------


def timed_runs(run: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def latency_row(times: list[float], **details) -> dict:
    return {"median_ms": statistics.median(times), "samples": len(times), "ms": times, **details}


def saved_model_latency(saved_model: Path, images: list[np.ndarray], warmup: int, repeats: int) -> dict:
    import tensorflow as tf

    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    times = []
    for image in images:
        tensor = tf.constant(image[np.newaxis], dtype=tf.uint8)

        def run(tensor=tensor) -> dict:
            return {key: value.numpy() for key, value in signature(input_tensor=tensor).items()}

        times += timed_runs(run, warmup, repeats)
    return latency_row(times, runtime="TensorFlow SavedModel", threads=os.cpu_count(), input="640x480 uint8")


def tflite_latency(model: Path, inputs: list[np.ndarray], warmup: int, repeats: int, threads: int) -> dict:

    interpreter = tflite_interpreter(model, num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    times = []
    for preprocessed in inputs:
        interpreter.set_tensor(index, preprocessed.astype(np.float32))
        times += timed_runs(interpreter.invoke, warmup, repeats)
    size = "x".join(str(side) for side in inputs[0].shape[1:3])
    return latency_row(times, runtime="TFLite", threads=threads, input=f"{size} float32, preprocessed")


def tfjs_latency(tfjs_dir: Path, images: list[np.ndarray], warmup: int, repeats: int, label: str) -> dict:
    from tfod_wrap.core.detector import TFJSDetector

    detector = TFJSDetector(tfjs_dir, backend="wasm")
    detector.batch(images, repeat=warmup + repeats)
    report = detector.last_run
    times = [ms for latencies in report["latency_ms"] for ms in latencies[warmup:]]
    size = "x".join(str(side) for side in images[0].shape[1::-1])
    return latency_row(
        times, runtime=label, threads=1, input=f"{size} uint8", backend=report["backend"], tfjs=report["tfjs"]
    )


def measure_latency(
    pipeline: Path,
    reports: dict[str, ExportManifest],
    images: list[np.ndarray],
    args: argparse.Namespace,
    quiet: QuietWait,
) -> list[dict]:
    """The latency rows of one model, SavedModel first, with ratios to it; each with the load during it."""
    from tfod_wrap.core.detector import CheckpointDetector

    folder = {q: Path(reports[q].formats["saved_model"]["path"]).parent for q in QUANTIZE}
    reference = CheckpointDetector(pipeline, reports["none"].checkpoint)
    preprocessed = [reference.preprocess(image) for image in images]
    height, width = preprocessed[0].shape[1:3]
    resized = [np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR)) for image in images]
    counts = (args.warmup, args.repeats)
    jobs = [("SavedModel", lambda: saved_model_latency(folder["none"] / "saved_model", images, *counts))]
    for threads in sorted({1, os.cpu_count() or 1}):
        for q in QUANTIZE:
            model = folder[q] / "tflite" / "model.tflite"
            label = f"TFLite {q}, {threads} thread{'s' if threads > 1 else ''}"
            jobs.append((label, lambda m=model, t=threads: tflite_latency(m, preprocessed, *counts, t)))
    for q in QUANTIZE:
        label = f"TF.js {q} weights, wasm in Node"
        jobs.append((label, lambda q=q, label=label: tfjs_latency(folder[q] / "tfjs", images, *counts, label)))
    label = f"TF.js none weights, wasm in Node, input pre-resized to {width}x{height}"
    jobs.append((label, lambda: tfjs_latency(folder["none"] / "tfjs", resized, *counts, label)))
    rows = []
    for label, job in jobs:
        progress(f"  latency: {label} ...")
        waited = quiet()
        with Measured() as measured:
            row = job()
        rows.append(row | {"label": label, "load": measured.load | {"waited_s": waited}})
    baseline = rows[0]["median_ms"]
    for row in rows:
        row["ratio_to_saved_model"] = row["median_ms"] / baseline
    return rows


# --- page --------------------------------------------------------------------------------------


def page_log(console: list[str]) -> tuple[dict, list[dict]]:
    """The page's `ready` line and its per-frame log lines, from the console lines run_page returns."""
    ready, frames = {}, []
    for line in console:
        _, _, text = line.partition("tfod-wrap: ")
        if not text:
            continue
        try:
            fields = json.loads(text)
        except json.JSONDecodeError:
            continue
        if fields.get("event") == "ready":
            ready = fields
        elif "frames" in fields and "fps" in fields:
            frames.append(fields)
    return ready, frames


def measure_page(
    tfjs_dir: Path,
    clip: Path,
    frames: int,
    weights: str,
    camera: str,
    quiet: QuietWait,
    runtime: str = "tfjs",
    workers: int | None = None,
) -> dict:
    """The page on one runtime: "tfjs" (?backend=wasm) or "tflite" (?runtime=tflite: the TFLite export beside
    tfjs_dir, on MediaPipe, in `workers` workers: ?workers=N, the page's default when None)."""
    from tfod_wrap.web import run_page, serving

    query = {"log": str(PAGE_LOG_EVERY)} | ({"runtime": "tflite"} if runtime == "tflite" else {"backend": "wasm"})
    if workers is not None:
        query["workers"] = str(workers)
    waited = quiet()
    with Measured() as measured, serving(tfjs_dir) as server:
        state = run_page(server.url, clip, frames=frames, query=query, timeout=60 + frames)
    ready, logged = page_log(state.get("console", []))
    steady = [line for line in logged if line["frames"] > PAGE_SKIP_FRAMES] or logged
    median = (lambda key: statistics.median(line[key] for line in steady)) if steady else (lambda key: None)
    return {
        "runtime": runtime,
        "weights": weights,
        "camera": camera,
        "workers": workers,
        "fps_median": median("fps"),
        "inference_ms_median": median("inferenceMs"),
        "fps_last": state.get("fps"),
        "inference_ms_last": state.get("inferenceMs"),
        "frames": state.get("frames"),
        "logged_frames": [line["frames"] for line in steady],
        "backend": state.get("backend"),
        "runtime_ran": state.get("runtime"),
        "cross_origin_isolated": state.get("crossOriginIsolated"),
        "wasm": ready.get("wasm"),
        "error": state.get("error"),
        "timed_out": state.get("timedOut"),
        "num_tensors": state.get("numTensors"),
        "seconds": state.get("seconds"),
        "load": measured.load | {"waited_s": waited},
    }


# --- report --------------------------------------------------------------------------------------


def cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def loads(load: dict) -> str:
    return f"{load['other_cores']:.2f}, {load['steal_cores']:.2f}"


def page_target(name: str, page: dict) -> float:
    return TARGET_FPS_TFLITE.get(name, TARGET_FPS) if page["runtime"] == "tflite" else TARGET_FPS


def page_name(page: dict) -> str:
    """The runtime of a page run, with MediaPipe's workers."""
    if page["runtime"] != "tflite":
        return RUNTIME_NAMES[page["runtime"]]
    workers = page.get("workers")
    where = "page's thread" if workers == 0 else f"{workers} workers" if workers else "default workers"
    return f"{RUNTIME_NAMES['tflite']} ({where})"


def page_ratio(pages: list[dict]) -> dict[str, float]:
    """FPS of each MediaPipe page (per TFLite quantisation and workers) over the float32 TF.js page, 640x480 camera,
    one run."""
    fps = {
        (page_name(page), page["weights"]): page["fps_median"]
        for page in pages
        if page["camera"] == "640x480" and not page["error"] and page["fps_median"]
    }
    baseline = fps.get((RUNTIME_NAMES["tfjs"], "none"))
    return {
        f"{name}, {q}": value / baseline
        for (name, q), value in fps.items()
        if name != RUNTIME_NAMES["tfjs"] and baseline
    }


def markdown(results: dict) -> str:
    lines = ["| model | format | " + " | ".join(f"{q} MiB" for q in QUANTIZE) + " |", "|---|---|" + "---:|" * 3]
    for name, model in results["models"].items():
        for fmt, by_q in model["sizes"].items():
            row = " | ".join(cell(by_q[q] / MIB if q in by_q else None, ".2f") for q in QUANTIZE)
            lines.append(f"| {name} | {fmt} | {row} |")
    lines += [
        "",
        "| model | runtime | threads | input | median ms | ratio to SavedModel | samples | other load, steal (cores) |",
    ]
    lines.append("|---|---|---:|---|---:|---:|---:|---:|")
    for name, model in results["models"].items():
        for row in model["latency"]:
            lines.append(
                f"| {name} | {row['label']} | {row['threads']} | {row['input']} | {row['median_ms']:.1f} | "
                f"{row['ratio_to_saved_model']:.2f} | {row['samples']} | {loads(row['load'])} |"
            )
    lines += [
        "",
        "| model | page runtime | weights | camera | FPS (median) | inference ms (median) | 1000/FPS ms | frames "
        "| crossOriginIsolated | wasm threads, SIMD | other load, steal (cores) | target |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for name, model in results["models"].items():
        for page in model["page"]:
            wasm = page["wasm"] or {}
            fps = page["fps_median"]
            target = page_target(name, page)
            verdict = f"{'met' if fps and fps >= target else 'missed'} (>= {target:.0f})"
            verdict = f"error: {page['error']}" if page["error"] else verdict
            verdict = "baseline: the page without workers" if page.get("workers") == 0 else verdict
            lines.append(
                f"| {name} | {page_name(page)} | {page['weights']} | {page['camera']} | "
                f"{cell(fps, '.1f')} | {cell(page['inference_ms_median'], '.0f')} | "
                f"{cell(1000 / fps if fps else None, '.0f')} | {page['frames']} | {page['cross_origin_isolated']} | "
                f"{wasm.get('threads')}, {wasm.get('simd')} | {loads(page['load'])} | {verdict} |"
            )
    for name, model in results["models"].items():
        for page, ratio in model.get("page_ratio", {}).items():
            lines.append(
                f"\n{name}: the page on {page} TFLite runs {ratio:.2f}x the FPS of the float32 TF.js wasm page "
                "(640x480, this run)"
            )
    disturbed = [
        f"{name}: {row['label']} ({row['load']['other_cores']:.2f})"
        for name, model in results["models"].items()
        for row in [*model["latency"], *({"label": f"page {p['weights']} {p['camera']}"} | p for p in model["page"])]
        if row["load"]["other_cores"] > QUIET_CORES
    ]
    if disturbed:
        lines += [
            "",
            f"warning: other processes kept more than {QUIET_CORES} cores busy during: " + "; ".join(disturbed),
        ]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (see the module docstring)")
    parser.add_argument(
        "--page-only", action="store_true", help="only the pages: float32 and uint8 exports, no latency (see docstring)"
    )
    parser.add_argument("--images", type=int, default=24, help="generated 640x480 images (default 24)")
    parser.add_argument("--steps", type=int, default=2, help="training steps, batch 2 (default 2)")
    parser.add_argument("--latency-images", type=int, default=3, help="val images timed (default 3)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per image (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per image first (default 3)")
    parser.add_argument("--frames", type=int, default=100, help="page frames per run (default 100)")
    parser.add_argument(
        "--workers", type=int, default=2, help="MediaPipe's workers in the page (?workers=N), beside 0 (default 2)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=300,
        help="seconds the run may spend in all waiting for other processes to go quiet before a measurement (300)",
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--workdir", type=Path, help="data, models and exports (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="results as JSON (default docs/bench_export.json, none with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.latency_images, args.repeats, args.frames = 1, 10, 30
    elif args.json is None:
        args.json = ROOT / "docs" / "bench_export.json"
    if args.latency_images > args.images // 4:
        parser.error("--latency-images must not exceed the val split (a quarter of --images)")
    return args


def load_images(records: Path, count: int) -> list[np.ndarray]:
    """The first `count` images of the val records, decoded to RGB uint8 (640x480)."""
    from tfod_wrap.core.records import decode_image, read_examples

    files = sorted(map(str, records.glob(RecordsFolder(records).manifest.splits["val"]["pattern"])))
    examples = itertools.islice(read_examples(files), count)
    return [decode_image(example.features.feature) for _, example in examples]


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    import tensorflow as tf

    from tfod_wrap.web import make_clip

    started = time.perf_counter()
    load_before = os.getloadavg()
    progress(f"generating {args.images} images and records in {workdir} ...")
    records = prepare_data(workdir, args.images)
    images = load_images(records, args.latency_images)
    Image.fromarray(images[0]).save(workdir / "frame.png")
    clips = {
        camera: make_clip(workdir / "frame.png", workdir / f"clip-{camera}.y4m", size=size) for camera, size in CAMERAS
    }
    # (runtime, weights, camera): MediaPipe on the float32 TFLite, TF.js float32 and float16 at the webcam size;
    # TF.js float32 once more at a smaller camera size
    quiet = QuietWait(args.wait_quiet)
    # (runtime, weights, camera, MediaPipe's workers): MediaPipe in its default workers and on the page's own thread
    # (workers=0, the page before it had workers) for each TFLite quantisation, TF.js float32 at the webcam size;
    # without --quick also TF.js float16 and float32 at a smaller camera size
    mediapipe = [("tflite", q, "640x480", w) for q in ("none", "uint8") for w in (args.workers, 0)]
    page_runs = [*(mediapipe[:2] if args.quick else mediapipe), ("tfjs", "none", "640x480", None)]
    if not (args.quick or args.page_only):
        page_runs += [("tfjs", "float16", "640x480", None), ("tfjs", "none", "320x240", None)]
    models = {}
    for name in args.models:
        progress(f"{name}: training {args.steps} steps ...")
        with Measured() as trained:
            pipeline, model_dir = train_model(name, records, workdir, args.steps)
        with Measured() as exported:
            if args.page_only:
                reports = export_all(pipeline, model_dir, workdir / MODELS[name][0], ("none", "uint8"), PAGE_FORMATS)
            else:
                reports = export_all(pipeline, model_dir, workdir / MODELS[name][0])
        latency = [] if args.page_only else measure_latency(pipeline, reports, images, args, quiet)
        page = []
        for runtime, quantize, camera, workers in page_runs:
            label = page_name({"runtime": runtime, "workers": workers})
            progress(f"  page: {label}, {quantize} weights, {camera} camera, {args.frames} frames ...")
            tfjs_dir = Path(reports[quantize].formats["tfjs"]["path"])
            page.append(measure_page(tfjs_dir, clips[camera], args.frames, quantize, camera, quiet, runtime, workers))
        models[name] = {
            "template": MODELS[name][0],
            "overrides": MODELS[name][1],
            "sizes": sizes(reports),
            "export_seconds": {
                q: {f: w["seconds"] for f, w in report.formats.items()} for q, report in reports.items()
            },
            "train_load": trained.load,
            "export_load": exported.load,
            "latency": latency,
            "page": page,
            "page_ratio": page_ratio(page),
        }
    webcam = [
        (name, page)
        for name, model in models.items()
        for page in model["page"]
        if page["camera"] == "640x480" and page["runtime"] == "tfjs"
    ]
    # the targets hold for the page as users get it: MediaPipe in its workers, not the ?workers=0 comparison
    mediapipe = [
        (name, page)
        for name, model in models.items()
        for page in model["page"]
        if page["runtime"] == "tflite" and page["workers"] != 0
    ]
    return {
        "machine": machine() | {"tensorflow": tf.__version__},
        "date": datetime.date.today().isoformat(),
        "conditions": {
            "init": f"random (no fine_tune_checkpoint), {args.steps} training steps of batch {BATCH}",
            "images": args.images,
            "latency_images": args.latency_images,
            "image_size": [640, 480],
            "repeats": args.repeats,
            "warmup": args.warmup,
            "page_frames": args.frames,
            "page_log_every": PAGE_LOG_EVERY,
            "page_skip_frames": PAGE_SKIP_FRAMES,
            "quick": args.quick,
            "page_only": args.page_only,
            "wait_quiet_budget_s": args.wait_quiet,
            "wait_quiet_left_s": quiet.left,
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "models": models,
        "target_fps": TARGET_FPS,
        "target_met": bool(webcam) and all((page["fps_median"] or 0) >= TARGET_FPS for _, page in webcam),
        "target_met_by": [
            f"{name}, {page['weights']}" for name, page in webcam if (page["fps_median"] or 0) >= TARGET_FPS
        ],
        "target_fps_tflite": TARGET_FPS_TFLITE,
        "target_tflite_met": bool(mediapipe)
        and all((page["fps_median"] or 0) >= page_target(name, page) for name, page in mediapipe),
        "total_seconds": time.perf_counter() - started,
    }


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args()
    results = in_workdir(args.workdir, "bench-export-", lambda workdir: benchmark(args, workdir))
    print(markdown(results))
    print(
        f"\nMediaPipe page targets (SSD MobileNet V2 320 >= 20 FPS, FPNLite 320 >= 12 FPS): "
        f"{'met' if results['target_tflite_met'] else 'missed'}"
    )
    print(
        f"TF.js target >= {TARGET_FPS:.0f} FPS on wasm: {'met' if results['target_met'] else 'missed'} "
        f"(met by: {', '.join(results['target_met_by']) or 'none'}); {load_and_total(results)}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
