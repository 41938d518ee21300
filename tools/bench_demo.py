"""What the pretrained start and freezing each buy, on the demo's sample data (issue 7's target).

Four runs of the same SSD MobileNet V2 on the same records, each the registered `demo` recipe (what
`make demo DEMO_STEPS=1300` trains; tfod_wrap/core/recipe.py) with a few fields changed:
  demo                the imported pretrained checkpoint, the recipe's freeze spec
  no-freeze           the imported pretrained checkpoint, everything trained
  no-freeze-lr-0.004  the same at a lower rate: at the demo's rate, training everything can diverge
  scratch             random initialisation, everything trained
The demo trains the recipe's num_steps; the others train --other-steps (550), at least the same training time, since
a step with nothing frozen takes over 2x as long: the comparison is at equal time, as the target is. Every kept
checkpoint (ckpt-0 included) is scored on the held-out split, so the plot shows loss and mAP@0.5 against time.

    .venv/bin/python tools/bench_demo.py [--steps N] [--other-steps 550] [--every 500] [--runs demo,no-freeze,...]
                                         [--keep-results]

Writes docs/bench_demo.json and docs/bench_demo.png, and prints the table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from bench_common import machine  # noqa: E402

from tfod_wrap.core.files import atomic_write_json  # noqa: E402
from tfod_wrap.core.recipe import RECIPES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "tfod-wrap")
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"


DEMO = RECIPES["demo"]
# What each run changes in the demo recipe, and whether it starts from the imported checkpoint.
RUNS = {
    "demo": {"pretrained": True, "recipe": {}},
    "no-freeze": {"pretrained": True, "recipe": {"freeze": []}},
    # At the demo's 0.01 the classification loss of a fully trained network can blow up (it did in one run of
    # two), which would make freezing look better than it is; this row is the fair baseline.
    "no-freeze-lr-0.004": {"pretrained": True, "recipe": {"freeze": [], "learning_rate": 0.004, "warmup_rate": 0.001}},
    # The imported pipeline names its own checkpoint as fine_tune_checkpoint: scratch empties it. It also freezes
    # batch norm (its statistics were folded away); from random weights that would leave the network
    # unnormalised, so scratch trains batch norm as the templates do.
    "scratch": {
        "pretrained": False,
        "recipe": {
            "freeze": [],
            "overrides": ['train_config.fine_tune_checkpoint=""', "model.ssd.freeze_batchnorm=false"],
        },
    },
}


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def prepare(work: Path, pretrained: Path) -> Path:
    """Sample data -> records, and the imported checkpoint (both reused when present)."""
    data = work / "sample"
    if not (data / "README.txt").is_file():
        run([CLI, "sample", "--output", str(data)])
    records = work / "records"
    if not (records / "report.json").is_file():
        run(
            [CLI, "tfrecords", "--input", str(data / "annotations"), "--images", str(data / "images")]
            + ["--output", str(records), "--split", "train=0.8,val=0.2", "--seed", "0"]
        )
    if not (pretrained / "checkpoint" / "ckpt-0.index").is_file():
        run([CLI, "pretrained", "import-tflite", "--output", str(pretrained)])
    return records


def train_and_score(name: str, work: Path, records: Path, pretrained: Path, args) -> dict:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)  # a fresh run each time: train refuses a folder with checkpoints
    pipeline = folder / "pipeline.config"
    setting = RUNS[name]
    command = [CLI, "config", str(pretrained / "pipeline.config"), "--data", str(records), "--output", str(pipeline)]
    if setting["pretrained"]:
        command += ["--checkpoint", str(pretrained)]
    run(command)
    steps = args.steps if name == "demo" else args.other_steps
    recipe = DEMO.replace(
        num_steps=steps,
        batch_size=args.batch,
        checkpoint_every=args.every,
        keep_checkpoints=steps // args.every + 2,
        **setting["recipe"],
    )
    recipe_file = work / f"{name}.recipe.json"
    atomic_write_json(recipe_file, recipe.to_json())
    command = [CLI, "train", "--pipeline", str(pipeline), "--model-dir", str(folder), "--recipe", str(recipe_file)]
    started = time.perf_counter()
    run(command)
    wall = time.perf_counter() - started
    run([CLI, "eval", "--pipeline", str(pipeline), "--model-dir", str(folder), "--checkpoint", "all"])
    with open(folder / "train_history.csv") as handle:
        history = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    seconds = {int(row["step"]): row["seconds"] for row in history}
    points = []
    for metrics in sorted((folder / "eval").glob("ckpt-*/metrics.json"), key=lambda p: int(p.parent.name[5:])):
        step = int(metrics.parent.name[5:])
        points.append(
            {"step": step, "seconds": seconds.get(step, 0.0), "map50": json.loads(metrics.read_text())["coco"][MAP50]}
        )
    return {
        "setting": {"pretrained": setting["pretrained"], "freeze": list(recipe.freeze), "recipe": recipe.to_json()},
        "train_wall_s": round(wall, 1),
        "median_step_s": sorted(b["seconds"] - a["seconds"] for a, b in zip(history, history[1:]))[len(history) // 2],
        "loss": [(row["seconds"], row["Loss/total_loss"]) for row in history],
        "map50": points,
    }


def plot(results: dict, output: Path) -> None:
    figure, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, result in results.items():
        seconds, losses = zip(*result["loss"])
        loss_axis.plot([s / 60 for s in seconds], losses, label=name, linewidth=0.8)
        map_axis.plot(
            [p["seconds"] / 60 for p in result["map50"]], [p["map50"] for p in result["map50"]], "o-", label=name
        )
    loss_axis.set(xlabel="training time (min)", ylabel="total loss", yscale="log", title="loss")
    map_axis.set(xlabel="training time (min)", ylabel="mAP@0.5 (val)", ylim=(0, 1), title="held-out mAP@0.5")
    map_axis.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    for axis in (loss_axis, map_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def table(results: dict) -> str:
    lines = [
        "| run | pretrained | frozen | median step (s) | training (min) | final mAP@0.5 | best mAP@0.5 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        setting, points = result["setting"], result["map50"]
        lines.append(
            f"| {name} | {'yes' if setting['pretrained'] else 'no'} | {', '.join(setting['freeze']) or '-'} | "
            f"{result['median_step_s']:.2f} | {result['train_wall_s'] / 60:.1f} | {points[-1]['map50']:.3f} | "
            f"{max(p['map50'] for p in points):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tfod-wrap-bench-demo"))
    parser.add_argument("--pretrained", type=Path, default=REPO / "models" / "objectron_ssd_mobilenet_v2")
    parser.add_argument("--steps", type=int, default=DEMO.num_steps)
    parser.add_argument("--batch", type=int, default=DEMO.batch_size)
    parser.add_argument(
        "--other-steps",
        type=int,
        default=550,
        help="steps of every run but the demo: with nothing frozen a step takes over 2x as long, so 550 of them take "
        "at least as long as the demo's 1300",
    )
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--keep-results", action="store_true", help="keep the runs in docs/bench_demo.json not rerun")
    parser.add_argument("--runs", default=",".join(RUNS))
    args = parser.parse_args()
    records = prepare(args.work, args.pretrained)
    output = REPO / "docs" / "bench_demo.json"
    results = json.loads(output.read_text())["results"] if args.keep_results and output.is_file() else {}
    for name in args.runs.split(","):
        results[name] = train_and_score(name, args.work, records, args.pretrained, args)
        output.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": vars(args) | {"work": str(args.work), "pretrained": str(args.pretrained)},
                    "results": results,
                },
                indent=1,
            )
        )
    plot(results, REPO / "docs" / "bench_demo.png")
    print(table(results))


if __name__ == "__main__":
    main()
