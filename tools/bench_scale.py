"""How a run grows with its settings (issue 20 item 4): a training step's time and memory against the batch size
and the input size, and conversion's time and memory against the number of images, so that a user can predict a
run on their own data from a few numbers.

Training: the demo's setting (SSD MobileNet V2 from the offline pretrained import, the registered `demo` recipe:
backbone:10 frozen, the loop's defaults), on `tfod-wrap sample` data converted as `make demo` does. Batch 1, 2, 4,
8 and 16 at 300x300, and input 300, 320, 512 and 640 at batch 8 (the fixed_shape_resizer set with `--set`; anchors
as the template has them), each run in a fresh process training --steps steps. A run's step time is the median of
its steps after --warmup (each call's wall time over its steps, as `bench_train.py --levers` measures), its memory
the process's peak resident set (VmHWM: TensorFlow, the model, the input pipeline). Each setting runs --repeats
times, in the order A B C ... C B A; the table gives the median over the repeats' medians.

Conversion: `convert()` (what `tfod-wrap tfrecords` runs: one worker per core, every JPEG decode-checked) on 1k,
10k and 100k images, each once into a new folder, in a fresh process whose peak memory (parent, and the workers'
sum sampled every 50 ms) comes back. The 1,000 images are bench_tfrecords.py's generated 640x480 JPEGs (3 classes,
1-4 boxes); the larger sets repeat them, each copy made distinct by a JPEG comment (the converter writes
byte-equal images once), so every image is read, checked and encoded but generating 100k images does not
dominate the run. The page cache is warm for
all (the files are read once before timing).

    .venv/bin/python tools/bench_scale.py [--steps 30] [--warmup 5] [--repeats 2] [--conversion 1000,10000,100000]
                                          [--workdir DIR] [--json docs/bench_scale.json] [--plot docs/bench_scale.png]

A run whose other processes kept a core busy is flagged in the table ("busy"); compare ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import in_workdir, machine
from bench_tfrecords import ensure_dataset, own_peak_rss, warm_page_cache
from bench_train import BUSY_WARNING, call_step_times, cpu_sample, other_load, prepare_demo, read_scalars

ROOT = Path(__file__).resolve().parent.parent
RESIZER = "model.ssd.image_resizer.fixed_shape_resizer"
BATCHES = (1, 2, 4, 8, 16)
SIZES = (300, 320, 512, 640)
BASE_BATCH, BASE_SIZE = 8, 300
DEMO_IMAGES = 300
UNIQUE_IMAGES = 1000
MIB = 1024 * 1024


def settings() -> list[tuple[int, int]]:
    """(batch, input size) pairs: the batch sweep at the base size, then the input sweep at the base batch."""
    pairs = [(batch, BASE_SIZE) for batch in BATCHES] + [(BASE_BATCH, size) for size in SIZES]
    return list(dict.fromkeys(pairs))


# --- one training run, in a child process --------------------------------------------------------------------


def train_child(pipeline: Path, model_dir: Path, batch: int, size: int, steps: int, result: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfod_wrap import train
    from tfod_wrap.core.recipe import RECIPES

    started = time.perf_counter()
    train.train(
        pipeline,
        model_dir,
        RECIPES["demo"],
        steps=steps,
        batch_size=batch,
        overrides=(f"{RESIZER}.height={size}", f"{RESIZER}.width={size}"),
        checkpoint_every=10**9,
        log=lambda message: None,
    )
    seconds = time.perf_counter() - started
    gc.collect()  # flushes the loop's summary writer
    rates = read_scalars(model_dir / "train", ("steps_per_sec",))["steps_per_sec"]
    done = sorted(rates)
    run = {"steps": done, "wall_time": [rates[s][0] for s in done], "steps_per_sec": [rates[s][1] for s in done]}
    result.write_text(json.dumps(run | {"run_seconds": seconds, "peak_rss_mib": own_peak_rss() / MIB}))


def train_run(pipeline: Path, folder: Path, batch: int, size: int, steps: int, warmup: int) -> dict:
    folder.mkdir(parents=True)
    result = folder / "result.json"
    command = [sys.executable, __file__, "--train-child", str(pipeline), str(folder / "model"), str(batch), str(size)]
    command += ["--steps", str(steps), "--result", str(result)]
    print(f"training batch {batch} at {size}x{size} ...", file=sys.stderr, flush=True)
    before = cpu_sample()
    with open(folder / "train.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode
    load = other_load(before, cpu_sample())
    if code != 0:
        tail = (folder / "train.log").read_text(errors="replace").splitlines()[-10:]
        return {"error": f"exit status {code}: {tail[-1] if tail else ''}", **load}
    run = json.loads(result.read_text())
    times = call_step_times(run, warmup)
    return load | {"step_s": statistics.median(times), "peak_rss_mib": run["peak_rss_mib"], "samples": len(times)}


def train_scale(workdir: Path, steps: int, warmup: int, repeats: int) -> list[dict]:
    pipeline = prepare_demo(workdir / "demo", DEMO_IMAGES)
    plan = []
    for index in range(repeats):
        plan += settings() if index % 2 == 0 else settings()[::-1]
    runs: dict[tuple[int, int], list[dict]] = {pair: [] for pair in settings()}
    for index, (batch, size) in enumerate(plan):
        runs[batch, size].append(train_run(pipeline, workdir / f"train{index}", batch, size, steps, warmup))
    rows = []
    for (batch, size), repeat in runs.items():
        done = [run for run in repeat if "error" not in run]
        row = {
            "batch": batch,
            "size": size,
            "repeats": len(done),
            "errors": [r["error"] for r in repeat if "error" in r],
        }
        row["other_cores"] = max(run["other_cores"] for run in repeat)
        if done:
            step = statistics.median(run["step_s"] for run in done)
            row |= {"step_s": step, "image_ms": 1000 * step / batch, "repeat_step_s": [r["step_s"] for r in done]}
            row["peak_rss_mib"] = max(run["peak_rss_mib"] for run in done)
        rows.append(row)
    return rows


# --- conversion ----------------------------------------------------------------------------------------------


def repeated_dataset(unique: Path, folder: Path, count: int) -> Path:
    """`count` distinct images: the unique ones over and over, each copy made distinct by a JPEG comment
    (COM segment) naming it, with its own XML. Hard links or byte-equal copies would not do: the converter
    writes a duplicate image once."""
    marker = folder / ".complete"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(unique.glob("*.jpg"))
    jpegs = [source.read_bytes() for source in sources]
    xmls = [source.with_suffix(".xml").read_text(encoding="utf-8") for source in sources]
    for index in range(count):
        source = index % len(sources)
        name = f"img_{index:06d}"
        comment = f"tfod-wrap bench_scale copy {index}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        jpeg = jpegs[source]
        (folder / f"{name}.jpg").write_bytes(jpeg[:2] + segment + jpeg[2:])  # right after the SOI marker
        xml = xmls[source].replace(sources[source].name, f"{name}.jpg")
        (folder / f"{name}.xml").write_text(xml, encoding="utf-8")
    marker.touch()
    return folder


def conversion_child(voc_dir: Path, out_dir: Path, result: Path) -> None:
    from bench_tfrecords import WorkerPeak

    from tfod_wrap.data import convert

    sampler = WorkerPeak()
    sampler.start()
    started = time.perf_counter()
    written = convert(voc_dir, out_dir)["images_written"]
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    record_bytes = sum(path.stat().st_size for path in out_dir.rglob("*.record*"))
    result.write_text(
        json.dumps(
            {
                "images": written,
                "seconds": seconds,
                "parent_peak_mib": own_peak_rss() / MIB,
                "workers_total_peak_mib": sampler.peak_total / MIB,
                "records_mib": record_bytes / MIB,
            }
        )
    )


def conversion_scale(workdir: Path, counts: list[int]) -> list[dict]:
    unique_count = min(UNIQUE_IMAGES, *counts)
    unique = ensure_dataset(workdir, unique_count)
    rows = []
    for count in counts:
        voc_dir = unique if count == unique_count else repeated_dataset(unique, workdir / f"voc-x{count}", count)
        image_bytes = warm_page_cache(voc_dir)
        out_dir, result = workdir / f"records-{count}", workdir / f"conversion-{count}.json"
        print(f"converting {count} images ...", file=sys.stderr, flush=True)
        before = cpu_sample()
        command = [sys.executable, __file__, "--conversion-child", str(voc_dir), str(out_dir), "--result", str(result)]
        subprocess.run(command, check=True, cwd=ROOT)
        row = json.loads(result.read_text()) | other_load(before, cpu_sample())
        row |= {"images_per_s": row["images"] / row["seconds"], "images_mib": image_bytes / MIB}
        rows.append(row)
        shutil.rmtree(out_dir)  # 100k records take gigabytes
    return rows


# --- report --------------------------------------------------------------------------------------------------


def busy(row: dict) -> str:
    return " (busy)" if row.get("other_cores", 0) > BUSY_WARNING else ""


def training_table(rows: list[dict]) -> list[str]:
    lines = [
        "| batch | input | step s | ms per image | x the batch-8 300 px step | peak memory MiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    base = next((row for row in rows if (row["batch"], row["size"]) == (BASE_BATCH, BASE_SIZE)), {})
    for row in rows:
        if "step_s" not in row:
            lines.append(f"| {row['batch']} | {row['size']} | failed: {'; '.join(row['errors'])} | | | |")
            continue
        ratio = f"{row['step_s'] / base['step_s']:.2f}" if "step_s" in base else "-"
        lines.append(
            f"| {row['batch']} | {row['size']} | {row['step_s']:.3f}{busy(row)} | {row['image_ms']:.1f} | "
            f"{ratio} | {row['peak_rss_mib']:,.0f} |"
        )
    return lines


def markdown(results: dict) -> str:
    lines = training_table(results["training"]) if results["training"] else []
    lines += ["", "| images | seconds | images/s | records MiB | parent peak MiB | workers' peak MiB |"]
    lines.append("|---:|---:|---:|---:|---:|---:|")
    for row in results["conversion"]:
        lines.append(
            f"| {row['images']:,} | {row['seconds']:.1f}{busy(row)} | {row['images_per_s']:,.0f} | "
            f"{row['records_mib']:,.0f} | {row['parent_peak_mib']:,.0f} | {row['workers_total_peak_mib']:,.0f} |"
        )
    return "\n".join(lines)


def plot(results: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_batch, by_size, by_count) = plt.subplots(1, 3, figsize=(15, 4.2))
    training = [row for row in results["training"] if "step_s" in row]
    batch_rows = [row for row in training if row["size"] == BASE_SIZE]
    size_rows = [row for row in training if row["batch"] == BASE_BATCH]
    by_batch.plot([r["batch"] for r in batch_rows], [r["step_s"] for r in batch_rows], "o-", label="step s")
    by_batch.plot(
        [r["batch"] for r in batch_rows], [r["image_ms"] / 1000 for r in batch_rows], "s--", label="s per image"
    )
    by_batch.set(xscale="log", xlabel="batch size (300x300)", ylabel="seconds", title="training step against batch")
    by_batch.set_xticks(BATCHES, [str(b) for b in BATCHES])
    by_batch.legend()
    by_size.plot([r["size"] ** 2 / 1000 for r in size_rows], [r["step_s"] for r in size_rows], "o-")
    for row in size_rows:
        by_size.annotate(
            f"{row['size']}", (row["size"] ** 2 / 1000, row["step_s"]), textcoords="offset points", xytext=(4, -10)
        )
    by_size.set(xlabel="input pixels (thousands; batch 8)", ylabel="step s", title="training step against input size")
    counts = [row["images"] for row in results["conversion"]]
    by_count.plot(counts, [row["seconds"] for row in results["conversion"]], "o-")
    by_count.set(
        xscale="log", yscale="log", xlabel="images (640x480 JPEG)", ylabel="seconds", title="tfrecords conversion"
    )
    figure.suptitle(f"tfod-wrap scale: {results['machine']['cpu_model']}, {results['machine']['cpus']} cores")
    figure.tight_layout()
    figure.savefig(output, dpi=90)
    plt.close(figure)


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    started = time.perf_counter()
    conditions = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    results = {"machine": machine(), "conditions": conditions | {"workdir": str(workdir)}}
    results["training"] = train_scale(workdir, args.steps, args.warmup, args.repeats) if args.steps else []
    counts = [int(text) for text in args.conversion.split(",")] if args.conversion else []
    results["conversion"] = conversion_scale(workdir, counts) if counts else []
    results["total_seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (0: no training runs)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of a run's median")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--conversion", default="1000,10000,100000", help="comma-separated image counts ('' : none)")
    parser.add_argument("--workdir", type=Path, help="kept when given (must be new or empty); else a temporary folder")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench_scale.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench_scale.png")
    parser.add_argument("--train-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--conversion-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        pipeline, model_dir, batch, size = args.train_child
        train_child(Path(pipeline), Path(model_dir), int(batch), int(size), args.steps, args.result)
        return
    if args.conversion_child:
        conversion_child(*(Path(part) for part in args.conversion_child), args.result)
        return
    if args.steps and args.steps < args.warmup + 10:
        parser.error("--steps must leave at least 10 steps after --warmup")
    results = in_workdir(args.workdir, "bench-scale-", lambda workdir: benchmark(args, workdir))
    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    plot(results, args.plot)
    print(markdown(results))
    print(f"\ntotal {results['total_seconds']:.0f} s; {args.json}, {args.plot}")


if __name__ == "__main__":
    main()
