"""Benchmark a training step of every template: batch 8, at the template's own input size, backbone frozen or not.

Each run is a fresh subprocess (clean TF and Keras state) that configures the template on a generated dataset
(bench_train's: 320x320 JPEGs with 1-3 shapes each), from random weights (`--checkpoint none`, the freezing
allowed with allow_random_frozen: only time is measured), and trains 1 + --steps steps through
`tfod_wrap.train.train`. The step time is the median time of the compiled step over the steps after the first
(which traces). Around each run the parent samples the machine's CPU counters: "other load" is the mean number of
cores other processes kept busy; well above 0 means the machine was shared and the time is inflated.

`--policy mixed_bfloat16` sets that Keras mixed-precision policy in the child before the model is built: a measure
of whether bfloat16 compute pays on this CPU (tfod-wrap itself trains in float32).

    .venv/bin/python tools/bench_templates.py [--templates a,b] [--freeze none,backbone] [--steps 3]
                                              [--policy float32] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_common import machine  # tools/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8
IMAGES = 16


def counters() -> tuple[float, float, float]:
    """(wall clock, busy CPU-seconds of the whole machine, CPU-seconds of finished children)."""
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + times.irq + times.softirq
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), busy, children.ru_utime + children.ru_stime


def child(args: argparse.Namespace) -> None:
    """One run: configure, train 1 + steps steps, print a JSON line with the step times."""
    import tfod_wrap  # noqa: F401  (the compat fixes, before any object_detection import)

    if args.policy != "float32":
        import tensorflow as tf

        tf.keras.mixed_precision.set_global_policy(args.policy)
    from tfod_wrap import config, train

    work = Path(args.child)
    pipeline = work / f"{args.templates}-{args.freeze}-{args.policy}.config"
    config.configure(
        args.templates,
        pipeline,
        data=work / "records",
        checkpoint="none",
        batch_size=BATCH,
        steps=1 + args.steps,
        check=False,
    )
    started = time.perf_counter()
    result = train.train(
        pipeline,
        work / pipeline.stem,
        freeze=[] if args.freeze == "none" else [args.freeze],
        allow_random_frozen=True,
        checkpoint_every=10**9,
        log=lambda *_: None,
    )
    steps = [1.0 / float(row["steps_per_sec"]) for row in result.history]
    print(
        json.dumps(
            {
                "first_step_s": steps[0],
                "step_s": statistics.median(steps[1:]),
                "steps_s": steps[1:],
                "frozen_variables": result.frozen,
                "trainable_variables": result.trainable,
                "run_s": time.perf_counter() - started,
            }
        )
    )


def run(template: str, freeze: str, policy: str, steps: int, work: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(work), "--templates", template, "--freeze", freeze]
    command += ["--policy", policy, "--steps", str(steps)]
    before = counters()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    after = counters()
    wall, busy, mine = (end - start for start, end in zip(before, after, strict=True))
    row = {"template": template, "freeze": freeze, "policy": policy, "other_cores": max(busy - mine, 0.0) / wall}
    if done.returncode:
        return {**row, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--templates", help="comma-separated (default: every template)")
    parser.add_argument("--freeze", default="none,backbone")
    parser.add_argument("--policy", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (3)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from bench_train import write_dataset

    import tfod_wrap  # noqa: F401
    from tfod_wrap import config
    from tfod_wrap.data import convert

    templates = args.templates.split(",") if args.templates else config.templates()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-templates-") as scratch:
        work = Path(scratch)
        write_dataset(work / "voc", IMAGES)
        convert(work / "voc", work / "records", split="train=1.0", workers=1)
        for template in templates:
            for freeze in args.freeze.split(","):
                rows.append(run(template, freeze, args.policy, args.steps, work))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "batch": BATCH, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
