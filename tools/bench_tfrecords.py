"""Benchmark `tfod_wrap.data.convert` (VOC XML -> TFRecord) against two references, side by side.

(a) baseline: the approach of the TFOD tutorial's `generate_tfrecord.py` (written here from its
    description): ElementTree -> pandas DataFrame -> group by filename -> one tf.train.Example per
    image, built with iterrows() and written by one tf.io.TFRecordWriter, all in one process;
(b) `convert(voc_dir, out_dir)` with its defaults (one worker per core);
(c) I/O floor: read every image's bytes and write them into one file;
(d) (b) without the strict JPEG decode that proves every record decodes (`encode.check_jpeg_decodes`
    replaced by a no-op for the run): b/d is what that check costs.

The dataset (generated 640x480 JPEGs with Pascal VOC XML) is cached in --workdir; generating it is
not timed. TensorFlow and tfod_wrap are imported before any timing, and every image is read once
before the first timed run, so all runs see a warm page cache. Each repeat times a, b and c in a
rotated order, each into a new output folder (writes reach the page cache; nothing is fsynced).

Peak memory of (b) is measured on 500 and on 2000 images, each in a fresh child process (this
script with a hidden flag) that imports tfod_wrap but not TensorFlow.

    .venv/bin/python tools/bench_tfrecords.py [--images 2000] [--repeats 5] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psutil
from bench_common import (  # tools/ is on sys.path when run as a script
    draw_objects,
    in_workdir,
    machine,
    random_boxes,
    voc_xml,
)
from PIL import Image

from tfod_wrap.data import convert

if TYPE_CHECKING:
    import tensorflow as tf

WIDTH, HEIGHT = 640, 480
CLASSES = ("ellipse", "rectangle", "triangle")
SEED = 0
JPEG_QUALITY = 90
MEMORY_SIZES = (500, 2000)
POLL_SECONDS = 0.05
TARGET_A_OVER_B = 3.0
TARGET_B_OVER_C = 2.0
MIB = 1024 * 1024


# --- dataset -----------------------------------------------------------------------------------


def gradient(rng: np.random.Generator) -> np.ndarray:
    """A smooth background: a bilinear blend of four random corner colours."""
    corners = rng.uniform(30, 225, size=(4, 3))
    x = np.linspace(0.0, 1.0, WIDTH)[None, :, None]
    y = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    top = corners[0] * (1 - x) + corners[1] * x
    bottom = corners[2] * (1 - x) + corners[3] * x
    return top * (1 - y) + bottom * y


def synthetic_photo(rng: np.random.Generator, boxes: list) -> Image.Image:
    """Gradient background, the objects drawn on it, then sensor-like noise over everything."""
    image = Image.fromarray(gradient(rng).astype(np.uint8))
    draw_objects(image, boxes, rng)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 6.0, size=(HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_sample(folder: Path, index: int) -> None:
    rng = np.random.default_rng([SEED, index])
    boxes = random_boxes(rng, (WIDTH, HEIGHT), CLASSES, max_boxes=4, box_widths=(60, 260), box_heights=(60, 220))
    filename = f"img_{index:05d}.jpg"
    synthetic_photo(rng, boxes).save(folder / filename, "JPEG", quality=JPEG_QUALITY)
    voc_xml(filename, boxes, (WIDTH, HEIGHT)).write(folder / f"img_{index:05d}.xml", encoding="utf-8")


def ensure_dataset(workdir: Path, count: int) -> Path:
    """`count` images with their XML in workdir/voc-COUNT, generated once (deterministic from SEED)."""
    folder = workdir / f"voc-{count}-seed{SEED}"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating {count} images in {folder} ...", file=sys.stderr)
    for index in range(count):
        write_sample(folder, index)
    marker.touch()
    return folder


def warm_page_cache(folder: Path) -> int:
    """Read every file once; returns the total bytes of the images."""
    for path in folder.iterdir():
        path.read_bytes()
    return sum(path.stat().st_size for path in folder.glob("*.jpg"))


# --- (a) the tutorial's generate_tfrecord.py approach ------------------------------------------


def xml_to_dataframe(voc_dir: Path) -> pd.DataFrame:
    rows = []
    for xml_file in sorted(voc_dir.glob("*.xml")):
        root = ET.parse(xml_file).getroot()
        filename = root.find("filename").text
        width, height = int(root.find("size/width").text), int(root.find("size/height").text)
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            corners = [int(box.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")]
            rows.append((filename, width, height, obj.find("name").text, *corners))
    columns = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]
    return pd.DataFrame(rows, columns=columns)


def tutorial_example(
    filename: str, group: pd.DataFrame, image_dir: Path, class_ids: dict[str, int]
) -> tf.train.Example:
    import tensorflow as tf

    with tf.io.gfile.GFile(str(image_dir / filename), "rb") as stream:
        encoded = stream.read()
    width, height = Image.open(io.BytesIO(encoded)).size
    xmins, xmaxs, ymins, ymaxs, texts, labels = [], [], [], [], [], []
    for _, row in group.iterrows():
        xmins.append(row["xmin"] / width)
        xmaxs.append(row["xmax"] / width)
        ymins.append(row["ymin"] / height)
        ymaxs.append(row["ymax"] / height)
        texts.append(row["class"].encode("utf8"))
        labels.append(class_ids[row["class"]])

    def ints(values: list) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(values: list) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def strings(values: list) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/filename": strings([filename.encode("utf8")]),
        "image/source_id": strings([filename.encode("utf8")]),
        "image/encoded": strings([encoded]),
        "image/format": strings([b"jpg"]),
        "image/object/bbox/xmin": floats(xmins),
        "image/object/bbox/xmax": floats(xmaxs),
        "image/object/bbox/ymin": floats(ymins),
        "image/object/bbox/ymax": floats(ymaxs),
        "image/object/class/text": strings(texts),
        "image/object/class/label": ints(labels),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def run_baseline(voc_dir: Path, out_dir: Path) -> int:
    import tensorflow as tf

    table = xml_to_dataframe(voc_dir)
    class_ids = {name: index for index, name in enumerate(sorted(table["class"].unique()), start=1)}
    out_dir.mkdir(parents=True)
    written = 0
    with tf.io.TFRecordWriter(str(out_dir / "train.record")) as writer:
        for filename, group in table.groupby("filename"):
            writer.write(tutorial_example(filename, group, voc_dir, class_ids).SerializeToString())
            written += 1
    return written


# --- (b) and (c) -------------------------------------------------------------------------------


def run_convert(voc_dir: Path, out_dir: Path) -> int:
    return convert(voc_dir, out_dir)["images_written"]


def run_convert_unchecked(voc_dir: Path, out_dir: Path) -> int:
    """(b) with the decode check off; the workers are forked per run, so they inherit the no-op."""
    from tfod_wrap.data import encode

    check = encode.check_jpeg_decodes
    encode.check_jpeg_decodes = lambda data, mode: None
    try:
        return run_convert(voc_dir, out_dir)
    finally:
        encode.check_jpeg_decodes = check


def run_io_floor(voc_dir: Path, out_dir: Path) -> int:
    out_dir.mkdir(parents=True)
    images = sorted(voc_dir.glob("*.jpg"))
    with open(out_dir / "images.bin", "wb") as sink:
        for path in images:
            with open(path, "rb") as source:
                sink.write(source.read())
    return len(images)


CONTENDERS: dict[str, tuple[str, Callable[[Path, Path], int]]] = {
    "a": ("(a) baseline: tutorial generate_tfrecord.py approach, 1 process", run_baseline),
    "b": ("(b) tfod_wrap convert, default workers", run_convert),
    "c": ("(c) I/O floor: read + write the image bytes", run_io_floor),
    "d": ("(d) tfod_wrap convert without the JPEG decode check", run_convert_unchecked),
}


def time_once(key: str, voc_dir: Path, out_dir: Path, expected: int) -> float:
    run = CONTENDERS[key][1]
    start = time.perf_counter()
    written = run(voc_dir, out_dir)
    elapsed = time.perf_counter() - start
    if written != expected:
        raise SystemExit(f"{key}: wrote {written} images, expected {expected}")
    shutil.rmtree(out_dir)
    os.sync()  # flush before the next run so its timing does not pay for this one's writeback
    return elapsed


def time_all(voc_dir: Path, runs_dir: Path, count: int, repeats: int) -> dict[str, list[float]]:
    keys = list(CONTENDERS)
    times: dict[str, list[float]] = {key: [] for key in keys}
    for repeat in range(repeats):
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            elapsed = time_once(key, voc_dir, runs_dir / f"repeat{repeat}-{key}", count)
            times[key].append(elapsed)
            print(f"repeat {repeat + 1}/{repeats} {key}: {elapsed:.2f} s", file=sys.stderr)
    return times


# --- peak memory, in a child process -----------------------------------------------------------


class WorkerPeak(threading.Thread):
    """Samples the RSS of this process's pool workers every POLL_SECONDS; keeps the peak of their sum."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.peak_total = 0
        self.most_workers = 0

    def run(self) -> None:
        me = psutil.Process()
        while not self.done.wait(POLL_SECONDS):
            sizes = [rss for child in me.children(recursive=True) if (rss := self._worker_rss(child))]
            self.peak_total = max(self.peak_total, sum(sizes))
            self.most_workers = max(self.most_workers, len(sizes))

    def _worker_rss(self, child: psutil.Process) -> int:
        """RSS of a pool worker (forked, so it includes pages still shared with the parent)."""
        with contextlib.suppress(psutil.Error):
            return child.memory_info().rss
        return 0


def own_peak_rss() -> int:
    """This process's RSS high-water mark. Not ru_maxrss: Linux carries that across exec, so a child
    started from the TensorFlow-loaded parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(voc_dir: Path, out_dir: Path) -> None:
    """Run (b) once and print its peak memory as JSON (the last line of stdout)."""
    after_imports = psutil.Process().memory_info().rss
    sampler = WorkerPeak()
    sampler.start()
    start = time.perf_counter()
    written = run_convert(voc_dir, out_dir)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    result = {
        "images": written,
        "seconds": seconds,
        "parent_after_imports_mib": after_imports / MIB,
        "parent_peak_mib": own_peak_rss() / MIB,
        "largest_worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / MIB,
        "workers_total_peak_mib": sampler.peak_total / MIB,
        "workers": sampler.most_workers,
    }
    print(json.dumps(result))


def measure_memory(workdir: Path, runs_dir: Path) -> list[dict]:
    results = []
    for count in MEMORY_SIZES:
        voc_dir = ensure_dataset(workdir, count)
        out_dir = runs_dir / f"memory-{count}"
        command = [sys.executable, __file__, "--memory-child", str(voc_dir), str(out_dir)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        shutil.rmtree(out_dir)
    return results


# --- report ------------------------------------------------------------------------------------


def summarise(times: dict[str, list[float]], count: int, image_bytes: int) -> dict:
    medians = {key: statistics.median(values) for key, values in times.items()}
    a_over_b = medians["a"] / medians["b"]
    b_over_c = medians["b"] / medians["c"]
    a_over_d = medians["a"] / medians["d"]
    return {
        "images": count,
        "image_mib": image_bytes / MIB,
        "times_s": times,
        "median_s": medians,
        "a_over_b": a_over_b,
        "b_over_c": b_over_c,
        "a_over_d": a_over_d,
        "decode_check_cost": medians["b"] / medians["d"] - 1,
        "target_a_over_b_met": a_over_b >= TARGET_A_OVER_B,
        "target_b_over_c_met": b_over_c <= TARGET_B_OVER_C,
    }


def markdown(summary: dict, memory: list[dict]) -> str:
    count = summary["images"]
    lines = ["| run | median s | min s | max s | images/s |", "|---|---:|---:|---:|---:|"]
    for key, (label, _) in CONTENDERS.items():
        values, median = summary["times_s"][key], summary["median_s"][key]
        lines.append(f"| {label} | {median:.2f} | {min(values):.2f} | {max(values):.2f} | {count / median:.0f} |")
    verdict = {True: "met", False: "missed"}
    lines += [
        "",
        f"a/b = {summary['a_over_b']:.2f} (target >= {TARGET_A_OVER_B:g}: {verdict[summary['target_a_over_b_met']]})",
        f"b/c = {summary['b_over_c']:.2f} (target <= {TARGET_B_OVER_C:g}: {verdict[summary['target_b_over_c_met']]})",
        f"a/d = {summary['a_over_d']:.2f} without the decode check; the check adds "
        f"{summary['decode_check_cost']:.0%} to (b)",
        "",
        "| images | (b) time s | parent after imports MiB | parent peak MiB | largest worker peak MiB "
        "| all workers peak MiB (sampled) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in memory:
        lines.append(
            f"| {row['images']} | {row['seconds']:.2f} | {row['parent_after_imports_mib']:.0f} "
            f"| {row['parent_peak_mib']:.0f} | {row['largest_worker_peak_mib']:.0f} "
            f"| {row['workers_total_peak_mib']:.0f} ({row['workers']} workers) |"
        )
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the timed dataset (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each run (default 5)")
    parser.add_argument("--workdir", type=Path, help="where to cache the generated datasets (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--memory-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow  # noqa: F401  (imported here, before timing, so import time is not counted)

    voc_dir = ensure_dataset(workdir, args.images)
    image_bytes = warm_page_cache(voc_dir)
    runs_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="runs-"))
    try:
        summary = summarise(time_all(voc_dir, runs_dir, args.images, args.repeats), args.images, image_bytes)
        memory = measure_memory(workdir, runs_dir)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return {"machine": machine(), "repeats": args.repeats, **summary, "memory": memory}


def main() -> None:
    args = parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    results = in_workdir(args.workdir, "bench-tfrecords-", lambda workdir: benchmark(args, workdir))
    print(markdown(results, results["memory"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
