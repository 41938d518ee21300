"""Where the demo's training step spends its time: TensorFlow's profiler over the `demo` recipe's steps, the op
time grouped by part of the model and by kind of op.

The demo's setting, as `bench_train.py --levers` prepares it (SSD MobileNet V2 300 from the offline pretrained
import, batch 8, `backbone:10` frozen, `tfod-wrap sample` data converted as `make demo` does), trained for
--warmup + --steps steps in this process under `tf.profiler.experimental`. Only the step calls after the warm-up
count (the first traces the graph). For each op that TensorFlow's executor ran in those calls the profiler records
its duration on the inter-op thread that ran it; an op's own work may spread over the intra-op threads, and two
inter-op threads run ops at once, so "op ms per step" can exceed the step's wall time. The shares are what the
table is for: which parts of the model a cheaper step would have to cut.

Parts, by op name: the backbone's blocks up to the recipe's `backbone:N` (frozen: forward only) and after it
(forward, and backward under `gradient_tape/`), the feature maps (SSD's extra layers), the box and class heads, the
loss (anchor matching, target encoding, hard-example mining, the losses), the optimizer's update, and the rest
(weight decay, sums of gradients, the NaN check, the input summary).

    .venv/bin/python tools/bench_step_profile.py [--steps 20] [--warmup 3] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import time
from pathlib import Path

from bench_common import in_workdir, machine  # tools/ is on sys.path when run as a script
from bench_train import DEMO_IMAGES, DEMO_RECIPE, prepare_demo

STEP_CALL = re.compile(r"EagerLocalExecute: __inference_single_\d+$")  # one call of the loop's step function
# MobileNetV2's Keras layers: block_N_*, and the stem (Conv1, bn_Conv1, expanded_conv_*), which is block 1
BLOCK = re.compile(r"/model/(?:block_(\d+)_|(?:Conv1|bn_Conv1|expanded_conv)[_/])")
FREEZE_SPEC = re.compile(r"backbone:(\d+)$")
PARTS = (
    "backbone, frozen blocks (forward)",
    "backbone, trained blocks (forward)",
    "backbone, trained blocks (backward)",
    "feature maps (forward)",
    "feature maps (backward)",
    "box and class heads (forward and backward)",
    "loss: matching, targets, mining, losses",
    "optimizer update",
    "other (weight decay, gradient sums, NaN check, input summary)",
)


def part_of(op: str, frozen_blocks: int) -> str:
    """The PARTS entry of one op, by its name in the step's graph."""
    backward = op.startswith("gradient_tape/")
    if "feature_extractor/model/" in op:
        match = BLOCK.search(op)
        # the stem is block 1; the layers after the last numbered block (Conv_1, out_relu) come last
        block = (int(match.group(1)) if match.group(1) else 1) if match else 10**6
        if block <= frozen_blocks:
            return PARTS[0]
        return PARTS[2] if backward else PARTS[1]
    if "FeatureMaps" in op:
        return PARTS[4] if backward else PARTS[3]
    if "BoxPredictor" in op or "Predictor/" in op:
        return PARTS[5]
    if op.startswith("Loss/") or "/Loss/" in op:
        return PARTS[6]
    if "Apply" in op.split(":")[-1]:
        return PARTS[7]
    return PARTS[8]


def op_kind(op: str) -> str:
    """The kernel that ran ('_MklNativeFusedConv2D', 'Relu6', ...): the part of a profiled name after the colon."""
    return op.rsplit(":", 1)[-1] if ":" in op else op


def read_profile(logdir: Path, warmup: int, frozen_blocks: int) -> dict:
    """Op time per step by part and by kind, from the one XSpace the profiler wrote under logdir."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = logdir.glob("plugins/profile/*/*.xplane.pb")
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    (host,) = (plane for plane in space.planes if plane.name == "/host:CPU")
    names = host.event_metadata
    calls = sorted(
        (line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps)
        for line in host.lines
        for event in line.events
        if STEP_CALL.match(names[event.metadata_id].name)
    )[warmup:]
    if not calls:
        raise SystemExit(f"no step calls after the {warmup} warm-up steps in {path}")
    start, end = calls[0][0], calls[-1][0] + calls[-1][1]
    by_part: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    for line in host.lines:
        if not line.name.startswith("tf_Compute"):  # the executor's inter-op threads, where ops are recorded
            continue
        for event in line.events:
            op = names[event.metadata_id].name
            begins = line.timestamp_ns * 1000 + event.offset_ps
            if op.startswith("ExecutorState") or not start <= begins <= end:
                continue
            ms = event.duration_ps / 1e9 / len(calls)
            by_part[part_of(op, frozen_blocks)] += ms
            by_kind[op_kind(op)] += ms
    return {
        "steps": len(calls),
        "step_wall_ms": statistics.median(duration / 1e9 for _, duration in calls),
        "op_ms": sum(by_part.values()),
        "parts_ms": {part: by_part[part] for part in PARTS},
        "kinds_ms": dict(by_kind.most_common()),
    }


def profile_demo(args: argparse.Namespace, workdir: Path) -> dict:
    import tensorflow as tf

    from tfod_wrap import train
    from tfod_wrap.core.recipe import RECIPES

    pipeline = prepare_demo(workdir, DEMO_IMAGES)
    recipe = RECIPES[DEMO_RECIPE]
    frozen = max((int(m.group(1)) for spec in recipe.freeze if (m := FREEZE_SPEC.match(spec))), default=0)
    logdir = workdir / "profile"
    started = time.perf_counter()
    tf.profiler.experimental.start(str(logdir))
    try:
        train.train(
            pipeline,
            workdir / "model",
            recipe,
            steps=args.warmup + args.steps,
            checkpoint_every=10**9,
            log=lambda *_: None,
        )
    finally:
        tf.profiler.experimental.stop()
    result = read_profile(logdir, args.warmup, frozen)
    conditions = {"recipe": DEMO_RECIPE, "frozen_blocks": frozen, "steps": args.steps, "warmup": args.warmup}
    return {
        "machine": machine() | {"tensorflow": tf.__version__},
        "conditions": conditions,
        **result,
        "total_seconds": time.perf_counter() - started,
    }


def markdown(result: dict, kinds: int = 12) -> str:
    total = result["op_ms"]
    lines = [
        f"{result['steps']} steps profiled; median step call {result['step_wall_ms']:.0f} ms wall (under the "
        f"profiler); op time {total:.0f} ms per step",
        "",
        "| part of the step | op ms per step | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {part} | {ms:.1f} | {ms / total:.0%} |" for part, ms in result["parts_ms"].items()]
    lines += ["", "| kind of op | op ms per step | share |", "|---|---:|---:|"]
    top = list(result["kinds_ms"].items())[:kinds]
    lines += [f"| {kind} | {ms:.1f} | {ms / total:.0%} |" for kind, ms in top]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps profiled after the warm-up (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out (default 3)")
    parser.add_argument("--workdir", type=Path, help="data, model and profile (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    result = in_workdir(args.workdir, "bench-step-profile-", lambda workdir: profile_demo(args, workdir))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
