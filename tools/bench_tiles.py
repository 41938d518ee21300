"""Tiled training with sliced inference against whole-image training and inference (issue 22, item 4), at equal
training time, on small objects on large images.

Data (`--data small`, default): N images of --size (2048x1536) on the sample generator's backgrounds, each holding
--scenes sample scenes (tfod_wrap.sample, 320x240) shrunk by --shrink (0.25), so their objects are about 10-40 px. Or
`--data DIR`: any annotations `tfod-wrap tfrecords` reads (a real annotated set). Then, with one --split/--seed:
  whole   records of the whole images; the template trained on them for --minutes, eval on whole images
  tiled   records of --tile px tiles; the same template and --minutes, eval on the whole val images with
          `eval --tile` (nms and fuse; and with --full-image, plus the whole image)
Both evals read the same whole-image val records, so the numbers compare. mAP@0.5 of each, and the inference cost
per full image (median seconds of the detector on the val images, after a warm-up call).

On the demo's 320x240 sample, tiles of 320 px or more are the whole image: `--demo-check` writes its records with
and without --tile and checks that they hold the same images (one tile each), so tiled is there exactly whole.

    .venv/bin/python tools/bench_tiles.py --workdir /tmp/bench_tiles [--images 60] [--minutes 30] [--tile 320]
                                          [--model ssd_mobilenet_v2] [--data small|DIR] [--only data,records]
                                          [--demo-check]

Hours of CPU at the defaults (two trainings of --minutes, evals of every val image on every tile). Writes
WORKDIR/bench_tiles.json and prints a table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import machine
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STEPS = ("data", "records", "train", "eval")


def small_objects(folder: Path, images: int, size: tuple[int, int], scenes: int, shrink: float, seed: int) -> dict:
    """VOC folder of `images` large images with `scenes` shrunk sample scenes each; returns counts and sizes."""
    from tfod_wrap.sample.dataset import voc_xml
    from tfod_wrap.sample.drawing import background_crop
    from tfod_wrap.sample.scene import render

    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    lengths, count = [], 0
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        canvas = Image.fromarray(np.clip(background_crop(rng, width, height), 0, 255).astype(np.uint8))
        patch_w, patch_h = round(320 * shrink), round(240 * shrink)
        cells = [(x, y) for y in range(0, height - patch_h, patch_h) for x in range(0, width - patch_w, patch_w)]
        objects = []
        for number, cell in enumerate(rng.choice(len(cells), size=min(scenes, len(cells)), replace=False)):
            jpeg, found = render(index * scenes + number, seed, (320, 240))
            x, y = cells[cell]
            canvas.paste(Image.open(io.BytesIO(jpeg)).resize((patch_w, patch_h), Image.LANCZOS), (x, y))
            for obj in found:
                xmin, ymin, xmax, ymax = (round(v * shrink) for v in obj["box"])
                box = (x + xmin, y + ymin, x + max(xmax, xmin + 1), y + max(ymax, ymin + 1))
                objects.append({"name": obj["name"], "box": box, "truncated": obj["truncated"]})
                lengths.append(max(box[2] - box[0], box[3] - box[1]))
        name = f"large_{index:04d}.jpg"
        canvas.save(folder / name, quality=92)
        (folder / f"large_{index:04d}.xml").write_text(voc_xml(name, size, objects), "utf-8")
        count += len(objects)
    return {"images": images, "objects": count, "object_px": [int(np.percentile(lengths, p)) for p in (5, 50, 95)]}


def cli(*args: str, log: Path) -> float:
    """`tfod-wrap ARGS` in a subprocess with this checkout first on the path; its seconds. Output goes to `log`."""
    started = time.perf_counter()
    with open(log, "a") as stream:
        stream.write(f"$ tfod-wrap {' '.join(args)}\n")
        stream.flush()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "tfod_wrap", *args], stdout=stream, stderr=stream, env=env, check=True)
    return time.perf_counter() - started


def seconds_per_image(pipeline: Path, model_dir: Path, records: Path, tiling, limit: int) -> float:
    """Median seconds of the checkpoint's detector (sliced with `tiling`) on up to `limit` val images."""
    from tfod_wrap.core.checkpoints import find_checkpoints
    from tfod_wrap.core.detector import CheckpointDetector
    from tfod_wrap.core.records import decode_image, read_examples
    from tfod_wrap.core.sliced import SlicedDetector

    detector = CheckpointDetector(pipeline, find_checkpoints(model_dir, "latest")[0])
    if tiling is not None:
        detector = SlicedDetector(detector, tiling)
    times = []
    for number, (_, example) in enumerate(read_examples([str(records)])):
        if number > limit:
            break
        image = decode_image(example.features.feature)
        started = time.perf_counter()
        detector(image)
        if number:  # the first call traces the model
            times.append(time.perf_counter() - started)
    return statistics.median(times) if times else float("nan")


def demo_check(work: Path, tile: int, log: Path) -> dict:
    """The demo's sample with and without --tile: the same images, one tile each, when a tile holds the image."""
    from tfod_wrap.core.records import feature_values, read_examples

    cli("sample", "--output", str(work / "sample"), "--count", "60", log=log)
    outputs = {}
    for name, extra in (("whole", []), ("tiled", ["--tile", str(tile)])):
        out = work / f"sample_{name}"
        cli("tfrecords", "--input", str(work / "sample" / "annotations"), "--output", str(out), *extra, log=log)
        outputs[name] = [
            feature_values(example.features.feature, "image/key/sha256")[0]
            for _, example in read_examples([str(out / "train.record")])
        ]
    return {"same_images": outputs["whole"] == outputs["tiled"], "images": len(outputs["whole"])}


def run(args: argparse.Namespace) -> dict:
    from tfod_wrap.core.sliced import Tiling

    work, log = args.workdir, args.workdir / "commands.log"
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else set(STEPS)
    result: dict = {"machine": machine(), "options": {k: str(v) for k, v in vars(args).items()}}
    annotations = work / "small_objects" if args.data == "small" else Path(args.data)
    if "data" in only and args.data == "small":
        width, height = (int(v) for v in args.size.split("x"))
        result["data"] = small_objects(annotations, args.images, (width, height), args.scenes, args.shrink, args.seed)
    split = ["--split", "train=0.8,val=0.2", "--seed", str(args.seed)]
    whole, tiled = work / "records_whole", work / "records_tiled"
    if "records" in only:
        result["records_seconds"] = {
            "whole": cli("tfrecords", "--input", str(annotations), "--output", str(whole), *split, log=log),
            "tiled": cli(
                "tfrecords",
                "--input",
                str(annotations),
                "--output",
                str(tiled),
                *split,
                "--tile",
                str(args.tile),
                log=log,
            ),
        }
        result["tiling"] = json.loads((tiled / "report.json").read_text())["tiling"]
    runs = {"whole": whole, "tiled": tiled}
    for name, records in runs.items():
        pipeline, model_dir = work / f"{name}.config", work / f"run_{name}"
        if "train" in only:
            # batch 8, as `make train` configures it (the templates' own batches are TPU settings)
            cli("config", args.model, "--data", str(records), "--output", str(pipeline), "--batch-size", "8", log=log)
            budget = f"{round(args.minutes * 60)}s"
            result.setdefault("train_seconds", {})[name] = cli(
                "train",
                "--pipeline",
                str(pipeline),
                "--model-dir",
                str(model_dir),
                "--time-budget",
                budget,
                "--seed",
                str(args.seed),
                log=log,
            )
    if "eval" in only:
        val = str(whole / "val.record")
        evals = {"whole": ("whole", None)}
        for merge in ("nms", "fuse"):
            evals[f"tiled-{merge}"] = ("tiled", Tiling(args.tile, merge=merge))
            if args.full_image:
                evals[f"tiled-{merge}-full"] = ("tiled", Tiling(args.tile, merge=merge, full_image=True))
        table = {}
        for label, (name, tiling) in evals.items():
            # the run's own pipeline.config: what train trained (the adaptive recipe changes input size and anchors)
            model_dir, out = work / f"run_{name}", work / f"eval_{label}"
            pipeline = model_dir / "pipeline.config"
            extra = [] if tiling is None else ["--tile", str(tiling.size), "--tile-merge", tiling.merge]
            extra += ["--tile-full-image"] if tiling is not None and tiling.full_image else []
            cli(
                "eval",
                "--pipeline",
                str(pipeline),
                "--model-dir",
                str(model_dir),
                "--data",
                val,
                "--output",
                str(out),
                *extra,
                log=log,
            )
            metrics = json.loads((out / "metrics.json").read_text())
            table[label] = {
                "mAP@0.5": metrics["coco"]["DetectionBoxes_Precision/mAP@.50IOU"],
                "mAP": metrics["coco"]["DetectionBoxes_Precision/mAP"],
                "max_detections": metrics["max_detections"],
                "seconds_per_image": seconds_per_image(pipeline, model_dir, whole / "val.record", tiling, args.timed),
            }
        result["eval"] = table
    if args.demo_check:
        result["demo_sample"] = demo_check(work, args.tile, log)
    (work / "bench_tiles.json").write_text(json.dumps(result, indent=2))
    return result


def table(result: dict) -> str:
    lines = ["| run | mAP@0.5 | mAP | s / full image | maxDets |", "|---|---|---|---|---|"]
    for label, row in result.get("eval", {}).items():
        lines.append(
            f"| {label} | {row['mAP@0.5']:.3f} | {row['mAP']:.3f} | {row['seconds_per_image']:.2f} | "
            f"{row['max_detections']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="kept: data, records, runs, evals, the JSON")
    parser.add_argument("--data", default="small", help="small (generated) or a folder/file of annotations")
    parser.add_argument("--images", type=int, default=60, help="generated large images (60)")
    parser.add_argument("--size", default="2048x1536", help="their size (2048x1536)")
    parser.add_argument("--scenes", type=int, default=24, help="shrunk sample scenes per image (24)")
    parser.add_argument("--shrink", type=float, default=0.25, help="their scale: 320x240 scenes to 80x60 (0.25)")
    parser.add_argument("--tile", type=int, default=320, help="tile size for training and inference (320)")
    parser.add_argument("--model", default="ssd_mobilenet_v2", help="template of both runs (ssd_mobilenet_v2)")
    parser.add_argument("--minutes", type=float, default=30, help="training time of each run (30)")
    parser.add_argument("--full-image", action="store_true", help="also eval tiled runs plus the whole image")
    parser.add_argument("--timed", type=int, default=10, help="val images timed per detector (10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help=f"comma-separated steps of {','.join(STEPS)} (default all)")
    parser.add_argument("--demo-check", action="store_true", help="check tiled == whole on the demo's sample")
    result = run(parser.parse_args())
    print(json.dumps({key: value for key, value in result.items() if key != "eval"}, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
