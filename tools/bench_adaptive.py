"""The adaptive recipe (`train --time-budget`) against fixed recipes at the same budget, on data it was not tuned on
(issue 17's measurement).

Each dataset is trained three ways, each run the same wall-clock budget (--budget, default 10m) from the same
pretrained start (`config ssd_mobilenet_v2 --data RECORDS --batch-size 8`: the offline import, as `make train`
configures it), then scored on its held-out split with `tfod-wrap eval` (mAP@0.5, outside the budget):
  adaptive    --time-budget: anchors, input size, freezing and rates chosen from the model, batch and records
  demo-fixed  --time-budget --fixed-recipe with the registered demo recipe's freezing, batch and rates
              (tuned on the demo's own sample data)
  template    --time-budget --fixed-recipe with nothing changed: the template's own settings
The budget sets only the step count of the two fixed ones, so all three train for the same time.

Datasets (made in --work, reused when present):
  sample-seed7   the sample generator (cat, cup, rocket; 320x240) with another seed than the demo's
  sample-cup     the same images with only the cup annotated: one class, the other objects become background
  sample-mosaic  small objects on large images: 3x3 mosaics of sample images (seed 11), 960x720, each object a
                 third of its size in the sample (about 15-70 px at SSD MobileNet V2's 300 px input)
  deepforest     NEON aerial tree crowns annotated by people (one class, 10-60 px crowns), the Pascal VOC files
                 shipped in the `deepforest` wheel on PyPI (data: NEON, public domain; package: MIT licence);
                 fetched once with `pip download` (the only network use, asked for by running this), cut into
                 400 px tiles with `tfrecords --tile`, split by source image

    .venv/bin/python tools/bench_adaptive.py [--budget 10m] [--seeds 0] [--datasets ...] [--recipes ...]
                                             [--work DIR] [--keep-results]

Writes docs/bench_adaptive.json and prints the table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from bench_common import machine
from PIL import Image

from tfod_wrap.core.recipe import RECIPES
from tfod_wrap.sample.dataset import voc_xml

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "tfod-wrap")
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"
DEEPFOREST = "deepforest==2.1.0"
DEMO = RECIPES["demo"]
RECIPE_OPTIONS = {
    "adaptive": [],
    "demo-fixed": [
        "--fixed-recipe",
        *(option for spec in DEMO.freeze for option in ("--freeze", spec)),
        *("--batch-size", str(DEMO.batch_size)),
        *("--learning-rate", str(DEMO.learning_rate)),
        *("--warmup-rate", str(DEMO.warmup_rate)),
    ],
    "template": ["--fixed-recipe"],
}


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def records_of(annotations: Path, images: Path, output: Path, *options: str) -> Path:
    if not (output / "report.json").is_file():
        run(
            [CLI, "tfrecords", "--input", str(annotations), "--images", str(images), "--output", str(output)]
            + ["--split", "train=0.8,val=0.2", "--seed", "0", *options]
        )
    return output


def sample_seed7(work: Path) -> Path:
    data = work / "sample-seed7"
    if not (data / "README.txt").is_file():
        run([CLI, "sample", "--output", str(data), "--seed", "7", "--count", "300"])
    return records_of(data / "annotations", data / "images", work / "records-sample-seed7")


def sample_cup(work: Path) -> Path:
    """The seed-7 sample with only the cups annotated."""
    source = work / "sample-seed7"
    sample_seed7(work)
    annotations = work / "sample-cup-annotations"
    if not annotations.is_dir():
        staging = annotations.with_name(annotations.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for path in sorted((source / "annotations").glob("*.xml")):
            tree = ET.parse(path)
            root = tree.getroot()
            for item in root.findall("object"):
                if item.findtext("name") != "cup":
                    root.remove(item)
            tree.write(staging / path.name)
        staging.rename(annotations)
    return records_of(annotations, source / "images", work / "records-sample-cup")


def sample_mosaic(work: Path, grid: int = 3, count: int = 150) -> Path:
    """Sample images (seed 11) pasted `grid` x `grid` into one image, their boxes moved with them."""
    source = work / "sample-seed11"
    if not (source / "README.txt").is_file():
        run([CLI, "sample", "--output", str(source), "--seed", "11", "--count", str(grid * grid * count)])
    data = work / "sample-mosaic"
    if not data.is_dir():
        staging = data.with_name(data.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        annotations = sorted((source / "annotations").glob("*.xml"))
        for index in range(count):
            tiles = [ET.parse(path).getroot() for path in annotations[index * grid * grid : (index + 1) * grid * grid]]
            width, height = (int(tiles[0].findtext(f"size/{side}")) for side in ("width", "height"))
            mosaic = Image.new("RGB", (width * grid, height * grid))
            objects = []
            for position, tile in enumerate(tiles):
                left, top = (position % grid) * width, (position // grid) * height
                with Image.open(source / "images" / tile.findtext("filename")) as image:
                    mosaic.paste(image, (left, top))
                for item in tile.iter("object"):
                    box = [int(item.findtext(f"bndbox/{edge}")) for edge in ("xmin", "ymin", "xmax", "ymax")]
                    moved = (box[0] + left, box[1] + top, box[2] + left, box[3] + top)
                    truncated = item.findtext("truncated")
                    objects.append({"name": item.findtext("name"), "box": moved, "truncated": truncated})
            name = f"mosaic_{index:04d}.jpg"
            mosaic.save(staging / name, "JPEG", quality=90)
            (staging / f"mosaic_{index:04d}.xml").write_text(voc_xml(name, mosaic.size, objects))
        staging.rename(data)
    return records_of(data, data, work / "records-sample-mosaic")


def deepforest(work: Path) -> Path:
    """The annotated images of the deepforest wheel (VOC XML beside each PNG), tiled at 400 px."""
    data = work / "deepforest"
    if not data.is_dir():
        wheels = work / "wheels"
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(wheels), DEEPFOREST])
        wheel = next(wheels.glob("deepforest-*.whl"))
        staging = data.with_name(data.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            for name in sorted(names):
                if name.startswith("deepforest/data/") and name.endswith(".xml"):
                    image = name[: -len(".xml")] + ".png"
                    if image in names:
                        # OSBS_029.xml names its GeoTIFF; the PNG beside it holds the same pixels
                        annotation = ET.fromstring(archive.read(name))
                        annotation.find("filename").text = Path(image).name
                        ET.ElementTree(annotation).write(staging / Path(name).name)
                        (staging / Path(image).name).write_bytes(archive.read(image))
        staging.rename(data)
    return records_of(data, data, work / "records-deepforest", "--tile", "400", "--tile-overlap", "0.1")


DATASETS = {
    "sample-seed7": sample_seed7,
    "sample-cup": sample_cup,
    "sample-mosaic": sample_mosaic,
    "deepforest": deepforest,
}


def train_and_score(records: Path, folder: Path, recipe: str, budget: str, seed: int) -> dict:
    shutil.rmtree(folder, ignore_errors=True)  # train refuses a folder with checkpoints
    folder.mkdir(parents=True)
    pipeline = folder / "pipeline.config"
    # batch 8, as `make train` configures it (the template's own 512 is a TPU setting)
    run([CLI, "config", "ssd_mobilenet_v2", "--data", str(records), "--output", str(pipeline), "--batch-size", "8"])
    command = [CLI, "train", "--pipeline", str(pipeline), "--model-dir", str(folder / "run")]
    command += ["--time-budget", budget, "--seed", str(seed), *RECIPE_OPTIONS[recipe]]
    started = time.perf_counter()
    run(command)
    wall = time.perf_counter() - started
    run([CLI, "eval", "--pipeline", str(folder / "run" / "pipeline.config"), "--model-dir", str(folder / "run")])
    metrics = json.loads((folder / "run" / "eval" / "metrics.json").read_text())
    trained = json.loads((folder / "run" / "recipe.json").read_text())
    return {"map50": metrics["coco"][MAP50], "train_wall_s": round(wall, 1), "recipe": trained}


def table(results: dict, recipes: list[str]) -> str:
    lines = ["| dataset | " + " | ".join(recipes) + " |", "|---|" + "---:|" * len(recipes)]
    for dataset, by_recipe in results.items():
        cells = []
        for recipe in recipes:
            values = [run["map50"] for run in by_recipe.get(recipe, {}).values()]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.fmean(values):.3f} ({min(values):.3f}-{max(values):.3f}, n={len(values)})")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tfod-wrap-bench-adaptive"))
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds; each run once per seed")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--recipes", default=",".join(RECIPE_OPTIONS))
    parser.add_argument("--keep-results", action="store_true", help="keep the runs in the JSON not rerun")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "bench_adaptive.json")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    results = json.loads(args.json.read_text())["results"] if args.keep_results and args.json.is_file() else {}
    args.work.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets.split(","):
        records = DATASETS[dataset](args.work)
        for seed in (int(text) for text in args.seeds.split(",")):
            for recipe in recipes:
                folder = args.work / "runs" / f"{dataset}-{recipe}-seed{seed}"
                outcome = train_and_score(records, folder, recipe, args.budget, seed)
                results.setdefault(dataset, {}).setdefault(recipe, {})[str(seed)] = outcome
                args.json.write_text(
                    json.dumps(
                        {
                            "machine": machine(),
                            "args": vars(args) | {"work": str(args.work), "json": str(args.json)},
                            "results": results,
                        },
                        indent=1,
                    )
                )
    print(table(results, recipes))


if __name__ == "__main__":
    main()
