"""Benchmark training speed: how much freezing speeds up a step, and our loop against TFOD's own loop.

Measured, on SSD MobileNet V2 FPNLite 320 (template ssd_mobilenet_v2_fpnlite_320), batch 4, random
initialisation (no pretrained checkpoint), on a generated dataset (--images 320x320 JPEGs with 1-3
ellipses or rectangles on noisy textured backgrounds, Pascal VOC XML, converted with `convert`):

- `tfod_wrap.train.train` with no freezing, `backbone:4`, `backbone:8`, `backbone` and `all-but-heads`;
- TFOD's own `model_lib_v2.train_loop` on the same pipeline.config and records (no freezing), with
  `num_steps_per_iteration=1` so that it, like our loop, runs and logs one step per tf.function call
  (with record_summaries=True that also writes its input-image summary every step);
- once more with `num_steps_per_iteration=20` (TFOD's default is 100): 20 steps per tf.function call,
  summaries only every 20th step, so only a mean per 20 steps can be measured.

Every run is a fresh subprocess (clean TF and Keras state) training --steps steps; each setting runs
--repeats times, in the order A B C ... C B A, and its step times are pooled over the repeats. Both loops write a
`steps_per_sec` scalar after every step to MODEL_DIR/train; the child reads those events back. Three step
times come from them; the two medians skip each run's first --warmup steps (tracing, warm-up):
- "step s": the wall-clock time between consecutive `steps_per_sec` events, i.e. one whole iteration of
  the loop (input, forward, backward, update, summaries, bookkeeping). Same method for both loops.
- "step_fn s": 1 / steps_per_sec as each loop reports it (our loop times the compiled step only; TFOD's
  interval also spans its previous step's summary writing and logging).
- "mean step s": (time of the event at step N - time at step 20) / (N - 20), for every run, the
  20-steps-per-call one included.
Around each run the parent samples the machine's CPU counters: "other load" is the
mean number of cores kept busy by processes other than the run, "steal" the mean number stolen by the
hypervisor; values well above 0 mean the timing was disturbed.

The loss-versus-time plot (docs/bench_train_loss.png, or --plot) shows Loss/total_loss of each run (raw
faint, moving average bold) against the seconds since its first step ended (tracing left out).

With --levers, the loop's speed levers on the demo's setting instead (the `demo` recipe: SSD MobileNet V2 300
from the offline pretrained import, batch 8, backbone:10 frozen, on `tfod-wrap sample` data converted as
`make demo` does): today's loop (the code of --baseline, a checkout of the commit before the levers, when given),
this loop with every lever off (one step per call), each lever alone, and the loop's defaults (every kept lever).
Each setting's step time is the median over its steps after --warmup, a step's time being the wall time of its
call (between the last events of consecutive calls) divided by the steps in the call, so that settings with
several steps per call compare with one-step ones. Settings that are known to be far slower or only confirm a
default (XLA, oneDNN off) run once.

    .venv/bin/python tools/bench_train.py [--steps 40] [--warmup 3] [--repeats 2] [--images 64] [--workdir DIR]
                                          [--json PATH] [--plot PNG]
    .venv/bin/python tools/bench_train.py --levers [--baseline DIR] [--only SETTING,...] [--steps 40] [--repeats 2]
                                          [--json PATH]
    .venv/bin/python tools/bench_train.py --levers --from-json PATH      # the summary of a saved run again

Another process taking a core makes a step far slower than any lever changes it, so the --levers table also
gives medians and ratios over the "quiet" runs only (other load <= 0.2 cores); only those decide what pays.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from bench_common import (  # tools/ is on sys.path when run as a script
    draw_objects,
    in_workdir,
    machine,
    random_boxes,
    voc_xml,
)
from PIL import Image, ImageFilter

import tfod_wrap  # noqa: F401  (must come before any object_detection import)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "ssd_mobilenet_v2_fpnlite_320"
BATCH = 4
SIZE = 320
CLASSES = ("ellipse", "rectangle")
SEED = 0
JPEG_QUALITY = 90
FREEZE_SETTINGS = ("none", "backbone:4", "backbone:8", "backbone", "all-but-heads")
TFOD = "TFOD train_loop"
TFOD_BATCHED = "TFOD train_loop, 20 steps/call"
CALL_STEPS = 20
TARGET_BACKBONE = 0.5
TARGET_OURS_OVER_TFOD = 1.0
SMOOTH = 8
LAST = 10
TOTAL_LOSS = "Loss/total_loss"
RATE = "steps_per_sec"
BUSY_WARNING = 0.2
ROW_FORMAT = (
    ("trainable_variables", "d"),
    ("trainable_params", ",d"),
    ("step_s", ".3f"),
    ("ratio", ".2f"),
    ("step_fn_s", ".3f"),
    ("mean_step_s", ".3f"),
    ("first_step_s", ".1f"),
    ("final_loss", ".3f"),
)

# --levers: recipe changes (and environment) of each setting; "defaults" is the loop as it ships.
TODAY = "today's loop (--baseline code)"
LEVERS_OFF = {"steps_per_call": 1}
LEVERS: dict[str, dict] = {
    "levers off (1 step/call)": {"changes": LEVERS_OFF},
    "10 steps/call": {"changes": {**LEVERS_OFF, "steps_per_call": 10}},
    # a step takes seconds under XLA: fewer steps, still past the warm-up
    "XLA, whole step (jit_compile)": {"changes": {**LEVERS_OFF, "jit_compile": True}, "once": True, "steps": 12},
    "XLA, loss only (xla_loss)": {"changes": {**LEVERS_OFF, "xla_loss": True}},
    "decoded-image cache": {"changes": {**LEVERS_OFF, "cache_images": True}},
    "inter-op threads 1": {"changes": {**LEVERS_OFF, "inter_op_threads": 1}},
    "oneDNN bfloat16": {"changes": {**LEVERS_OFF, "bfloat16": True}},
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": {
        "changes": LEVERS_OFF,
        "env": {"TF_ENABLE_ONEDNN_OPTS": "0"},
        "once": True,
    },
    # TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI or newer; this forces it on the others.
    "oneDNN forced on (TF_ENABLE_ONEDNN_OPTS=1)": {"changes": LEVERS_OFF, "env": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
    "defaults (kept levers)": {"changes": {}},
}
DEMO_RECIPE = "demo"
DEMO_IMAGES = 300
TARGET_LEVERS = 1.5  # today's median step / the defaults' median step
PAYS = 1.10  # a lever pays from 10% cheaper than levers off: two quiet repeats of one setting differ by up to 7%
LEVERS_OFF_NAME = "levers off (1 step/call)"
DEFAULTS = "defaults (kept levers)"


# --- dataset -----------------------------------------------------------------------------------


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """A base colour with a few random sinusoidal stripes and blurred blotches, as float HxWx3."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = np.broadcast_to(rng.uniform(40, 215, size=3), (SIZE, SIZE, 3)).astype(np.float32)
    for _ in range(3):
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 80)
        wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
        image = image + wave[..., None] * rng.uniform(-25, 25, size=3)
    blotches = rng.uniform(0, 255, size=(SIZE // 16, SIZE // 16, 3)).astype(np.uint8)
    blurred = Image.fromarray(blotches).resize((SIZE, SIZE), Image.BILINEAR).filter(ImageFilter.GaussianBlur(4))
    return 0.75 * image + 0.25 * np.asarray(blurred, dtype=np.float32)


def synthetic_photo(rng: np.random.Generator, boxes: list) -> Image.Image:
    """Textured background, the objects drawn on it, then pixel noise over everything."""
    image = Image.fromarray(np.clip(textured_background(rng), 0, 255).astype(np.uint8))
    draw_objects(image, boxes, rng)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 8.0, size=(SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_dataset(folder: Path, count: int) -> None:
    """`count` images with their XML, deterministic from SEED."""
    folder.mkdir(parents=True)
    for index in range(count):
        rng = np.random.default_rng([SEED, index])
        boxes = random_boxes(rng, (SIZE, SIZE), CLASSES, max_boxes=3, box_widths=(40, 180), box_heights=(40, 180))
        filename = f"img_{index:04d}.jpg"
        synthetic_photo(rng, boxes).save(folder / filename, "JPEG", quality=JPEG_QUALITY)
        voc_xml(filename, boxes, (SIZE, SIZE)).write(folder / f"img_{index:04d}.xml", encoding="utf-8")


def prepare(workdir: Path, images: int, steps: int) -> Path:
    """Dataset -> records -> pipeline.config (batch 4, `steps` steps, no fine-tune checkpoint)."""
    from tfod_wrap import config
    from tfod_wrap.data import convert

    voc_dir, records = workdir / "voc", workdir / "records"
    write_dataset(voc_dir, images)
    report = convert(voc_dir, records, split="train=1.0", shards=1)
    if report["images_written"] != images:
        raise SystemExit(f"convert wrote {report['images_written']} of {images} images; see {records}/report.json")
    pipeline = workdir / "pipeline.config"
    overrides = ['train_config.fine_tune_checkpoint=""']  # random init; TFOD's loop would try to load it
    config.configure(
        TEMPLATE,
        pipeline,
        data=records,
        checkpoint="none",
        batch_size=BATCH,
        steps=steps,
        overrides=overrides,
        check=False,
    )
    return pipeline


def prepare_demo(workdir: Path, images: int) -> Path:
    """The demo's inputs as `make demo` makes them: sample data, records (train=0.8, seed 0), the offline
    pretrained import and its pipeline.config pointed at both."""
    data, records, pretrained, pipeline = (workdir / name for name in ("sample", "records", "pretrained", "pipeline"))
    cli = [sys.executable, "-m", "tfod_wrap"]
    for command in (
        ["sample", "--output", data, "--count", images],
        ["tfrecords", "--input", data / "annotations", "--images", data / "images", "--output", records]
        + ["--split", "train=0.8,val=0.2", "--seed", 0],
        ["pretrained", "import-tflite", "--output", pretrained],
        ["config", pretrained / "pipeline.config", "--data", records, "--checkpoint", pretrained]
        + ["--output", pipeline / "pipeline.config"],
    ):
        subprocess.run(cli + [str(part) for part in command], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return pipeline / "pipeline.config"


# --- one training run, in a child process ------------------------------------------------------


def read_scalars(folder: Path, tags: tuple[str, ...]) -> dict[str, dict[int, tuple[float, float]]]:
    """{tag: {step: (wall_time, value)}} from the TensorBoard event files in `folder`."""
    import tensorflow as tf

    scalars: dict[str, dict[int, tuple[float, float]]] = {tag: {} for tag in tags}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag in scalars:
                    number = value.simple_value if value.HasField("simple_value") else tf.make_ndarray(value.tensor)
                    scalars[value.tag][int(event.step)] = (event.wall_time, float(number))
    return scalars


def total_params(log_lines: list[str]) -> tuple[int, int]:
    """(trainable variables, trainable parameters) from the 'total' row of train's variables table."""
    for line in log_lines:
        cells = line.split()
        if cells[:1] == ["total"] and len(cells) == 7:
            return int(cells[3]), int(cells[4].replace(",", ""))
    raise RuntimeError("no 'total' row in the variables table that train() logged")


def train_ours(pipeline: Path, model_dir: Path, freeze: str, steps: int) -> dict:
    from tfod_wrap import train

    lines: list[str] = []

    def log(message: object) -> None:
        lines.extend(str(message).splitlines())

    specs = [] if freeze == "none" else [freeze]
    # Random weights frozen: only the step time is measured here, so train's refusal of that is waived.
    result = train.train(
        pipeline, model_dir, freeze=specs, steps=steps, checkpoint_every=10**9, allow_random_frozen=True, log=log
    )
    variables, params = total_params(lines)
    return {"trainable_variables": variables, "trainable_params": params, "frozen_variables": result.frozen}


def train_lever(pipeline: Path, model_dir: Path, setting: str, steps: int) -> dict:
    """The demo recipe with the setting's recipe changes (none for today's loop, whose code the parent put first
    on PYTHONPATH)."""
    from tfod_wrap import train
    from tfod_wrap.core.recipe import RECIPES

    changes = {} if setting == TODAY else LEVERS[setting]["changes"]
    lines: list[str] = []
    result = train.train(
        pipeline,
        model_dir,
        RECIPES[DEMO_RECIPE],
        steps=steps,
        checkpoint_every=10**9,
        log=lambda message: lines.extend(str(message).splitlines()),
        **changes,
    )
    variables, params = total_params(lines)
    return {"trainable_variables": variables, "trainable_params": params, "frozen_variables": result.frozen}


def train_tfod(pipeline: Path, model_dir: Path, steps: int, steps_per_call: int) -> None:
    from object_detection import model_lib_v2

    model_lib_v2.train_loop(
        pipeline_config_path=str(pipeline),
        model_dir=str(model_dir),
        train_steps=steps,
        checkpoint_every_n=10**9,
        record_summaries=True,
        num_steps_per_iteration=steps_per_call,
    )


def tfod_variables(pipeline: Path) -> dict:
    """What TFOD's loop trains: every trainable variable of the model (built again, after the timed run)."""
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    from tfod_wrap.core.model import ensure_built

    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    model = model_builder.build(configs["model"], is_training=True)
    ensure_built(model, config_util.create_pipeline_proto_from_configs(configs))
    variables = model.trainable_variables
    params = int(sum(np.prod(v.shape) for v in variables))
    return {"trainable_variables": len(variables), "trainable_params": params, "frozen_variables": 0}


def child(args: argparse.Namespace) -> None:
    """Train one setting into args.model_dir and write its events' step times and losses as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    kind, setting = args.child
    started = time.perf_counter()
    if kind == "tfod":
        train_tfod(args.pipeline, args.model_dir, args.steps, args.steps_per_call)
        seconds = time.perf_counter() - started
        info = tfod_variables(args.pipeline)
    elif kind == "lever":
        info = train_lever(args.pipeline, args.model_dir, setting, args.steps)
        seconds = time.perf_counter() - started
    else:
        info = train_ours(args.pipeline, args.model_dir, setting, args.steps)
        seconds = time.perf_counter() - started
    gc.collect()  # the loops' summary writers go out of scope here; collecting them flushes their events
    scalars = read_scalars(args.model_dir / "train", (RATE, TOTAL_LOSS))
    steps = sorted(scalars[RATE])
    if kind != "lever" and steps != list(range(args.steps_per_call, args.steps + 1, args.steps_per_call)):
        raise RuntimeError(f"steps_per_sec events for steps {steps[:3]}..., expected one every {args.steps_per_call}")
    result = {
        **info,
        "steps_per_call": args.steps_per_call,
        "tensorflow": tf.__version__,
        "run_seconds": seconds,
        "steps": steps,
        "wall_time": [scalars[RATE][step][0] for step in steps],
        "steps_per_sec": [scalars[RATE][step][1] for step in steps],
        "loss": [scalars[TOTAL_LOSS][step][1] for step in steps],
    }
    args.result.write_text(json.dumps(result), encoding="utf-8")


def cpu_sample() -> tuple[float, float, float, float]:
    """(wall clock, busy and steal CPU-seconds of the whole machine, CPU-seconds of finished children)."""
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + times.irq + times.softirq
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), busy, times.steal, children.ru_utime + children.ru_stime


def other_load(before: tuple[float, ...], after: tuple[float, ...]) -> dict:
    """Mean cores that other processes kept busy during a run, and mean cores stolen by the hypervisor."""
    wall, busy, steal, mine = (end - start for start, end in zip(before, after, strict=True))
    return {"other_cores": max(busy - mine, 0.0) / wall, "steal_cores": steal / wall}


def run_child(
    kind: str, setting: str, pipeline: Path, run_dir: Path, steps: int, steps_per_call: int = 1, env: dict | None = None
) -> dict:
    """One training run in a fresh interpreter (`env` added to its environment); its output goes to
    run_dir/train.log."""
    run_dir.mkdir(parents=True)
    result = run_dir / "result.json"
    command = [sys.executable, __file__, "--child", kind, setting, "--pipeline", str(pipeline)]
    command += ["--model-dir", str(run_dir / "model"), "--result", str(result), "--steps", str(steps)]
    command += ["--steps-per-call", str(steps_per_call)]
    print(f"training {setting} ({kind}, {steps_per_call} step(s) per call) ...", file=sys.stderr, flush=True)
    before = cpu_sample()
    with open(run_dir / "train.log", "w") as log:
        environment = os.environ | (env or {})
        code = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment, check=False
        ).returncode
    load = other_load(before, cpu_sample())
    if load["other_cores"] > BUSY_WARNING:
        print(f"warning: other processes kept {load['other_cores']:.2f} cores busy during this run", file=sys.stderr)
    if code != 0:
        tail = (run_dir / "train.log").read_text(errors="replace").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        return {"error": f"exit status {code}: {tail[-1] if tail else ''}", **load}
    return {**json.loads(result.read_text(encoding="utf-8")), **load}


# --- summary -----------------------------------------------------------------------------------


def intervals(run: dict, warmup: int) -> tuple[list[float], list[float]]:
    """Step times after warm-up of a one-step-per-call run: wall clock between consecutive events, and
    1/steps_per_sec as the loop reported it."""
    # diff[k] is the time from the end of step k + 1 to the end of step k + 2: steps warmup+1.. remain.
    wall = np.diff(run["wall_time"])[max(warmup - 1, 0) :]
    return [float(value) for value in wall], [1.0 / rate for rate in run["steps_per_sec"][warmup:]]


def mean_step(run: dict) -> float:
    """Seconds per step over steps CALL_STEPS+1..N, from the events at steps CALL_STEPS and N."""
    wall = dict(zip(run["steps"], run["wall_time"], strict=True))
    last = run["steps"][-1]
    return (wall[last] - wall[CALL_STEPS]) / (last - CALL_STEPS)


def step_times(runs: list[dict], warmup: int) -> dict:
    """Medians of the step times of all repeats pooled (one-step-per-call runs only), each repeat's median,
    and the mean step time (every run)."""
    times = {"mean_step_s": statistics.fmean(mean_step(run) for run in runs), "mean_from": CALL_STEPS + 1}
    if runs[0]["steps_per_call"] > 1:
        return times | {"step_s": None, "step_fn_s": None, "samples": 0, "first_step_s": None, "repeat_step_s": []}
    pairs = [intervals(run, warmup) for run in runs]
    return times | {
        "step_s": statistics.median(value for wall, _ in pairs for value in wall),
        "step_fn_s": statistics.median(value for _, reported in pairs for value in reported),
        "samples": sum(len(wall) for wall, _ in pairs),
        "repeat_step_s": [statistics.median(wall) for wall, _ in pairs],
        "first_step_s": statistics.median(1.0 / run["steps_per_sec"][0] for run in runs),
    }


def final_loss(run: dict) -> float:
    """Mean Loss/total_loss over the last LAST steps that have one."""
    last = run["steps"][-1]
    return statistics.fmean(loss for step, loss in zip(run["steps"], run["loss"], strict=True) if step > last - LAST)


def summary_row(runs: list[dict], warmup: int) -> dict:
    """One table row from the repeats of a setting that finished; the load is the worst repeat's."""
    done = [run for run in runs if "error" not in run]
    if not done:
        return {"error": runs[0]["error"]}
    return step_times(done, warmup) | {
        "trainable_variables": done[0]["trainable_variables"],
        "trainable_params": done[0]["trainable_params"],
        "final_loss": statistics.fmean(final_loss(run) for run in done),
        "run_seconds": [run["run_seconds"] for run in done],
        "other_cores": max(run["other_cores"] for run in done),
        "steal_cores": max(run["steal_cores"] for run in done),
        "repeats": len(done),
        "failed": len(runs) - len(done),
    }


def ratio(rows: dict[str, dict], top: str, bottom: str, key: str) -> float | None:
    """rows[top][key] / rows[bottom][key], None where either is missing."""
    numerator, denominator = rows.get(top, {}).get(key), rows.get(bottom, {}).get(key)
    return numerator / denominator if numerator and denominator else None


def summarise(runs: dict[str, list[dict]], warmup: int) -> dict:
    rows = {name: summary_row(repeats, warmup) for name, repeats in runs.items()}
    for name, row in rows.items():
        row["ratio"] = ratio(rows, name, "none", "step_s")
    backbone, ours_over_tfod = rows["backbone"].get("ratio"), ratio(rows, "none", TFOD, "step_s")
    return {
        "rows": rows,
        "ours_over_tfod": ours_over_tfod,
        "ours_over_tfod_step_fn": ratio(rows, "none", TFOD, "step_fn_s"),
        "ours_over_tfod_mean": ratio(rows, "none", TFOD, "mean_step_s"),
        "ours_over_tfod_batched": ratio(rows, "none", TFOD_BATCHED, "mean_step_s"),
        "target_backbone_met": backbone is not None and backbone <= TARGET_BACKBONE,
        "target_tfod_met": ours_over_tfod is not None and ours_over_tfod <= TARGET_OURS_OVER_TFOD,
    }


def cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table_line(name: str, row: dict) -> str:
    if "error" in row:
        return f"| {name} | failed: {row['error']} |" + " |" * 8
    label = f"{name} (x{row['repeats']})" if row["repeats"] > 1 else name
    label += f" ({row['failed']} more failed)" if row["failed"] else ""
    numbers = [cell(row[key], spec) for key, spec in ROW_FORMAT]
    return f"| {label} | " + " | ".join(numbers) + f" | {row['other_cores']:.2f}, {row['steal_cores']:.2f} |"


def repeat_medians(row: dict) -> str:
    return ", ".join(f"{value:.3f}" for value in row.get("repeat_step_s", [])) or "n/a"


def markdown(summary: dict) -> str:
    rows = summary["rows"]
    mean_from = next((row["mean_from"] for row in rows.values() if "mean_from" in row), CALL_STEPS + 1)
    verdict = {True: "met", False: "missed"}
    return "\n".join(
        [
            "| setting | trainable variables | trainable params | median step s | ratio to no freezing "
            f"| median step_fn s | mean step s (steps {mean_from}+) | first step s | final loss "
            "| other load, steal (cores) |",
            "|---|" + "---:|" * 9,
            *(table_line(name, row) for name, row in rows.items()),
            "",
            f"backbone / none = {cell(rows['backbone'].get('ratio'), '.2f')} "
            f"(target <= {TARGET_BACKBONE}: {verdict[summary['target_backbone_met']]})",
            f"ours / TFOD train_loop (no freezing, 1 step per call) = {cell(summary['ours_over_tfod'], '.2f')} by "
            f"median step, {cell(summary['ours_over_tfod_step_fn'], '.2f')} by step_fn, "
            f"{cell(summary['ours_over_tfod_mean'], '.2f')} by mean step "
            f"(target <= {TARGET_OURS_OVER_TFOD}: {verdict[summary['target_tfod_met']]})",
            "median step s of each repeat, in run order: "
            + "; ".join(f"{name} {repeat_medians(row)}" for name, row in rows.items() if row.get("repeat_step_s")),
            f"ours / TFOD train_loop with {CALL_STEPS} steps per call = "
            f"{cell(summary['ours_over_tfod_batched'], '.2f')} by mean step over steps {mean_from}+",
        ]
    )


def moving_average(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start)."""
    sums = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    return (sums[ends] - sums[ends - counts]) / counts


def plot(runs: dict[str, list[dict]], output: Path) -> None:
    """Loss against seconds since the end of the first (tracing) step, one line per setting (first repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for name, repeats in runs.items():
        run = next((run for run in repeats if "error" not in run), None)
        if run is None or run["steps_per_call"] > 1:
            continue
        seconds = np.asarray(run["wall_time"]) - run["wall_time"][0]
        style = "--" if name == TFOD else "-"
        (line,) = axes.plot(seconds, moving_average(run["loss"], SMOOTH), style, label=name, linewidth=2)
        axes.plot(seconds, run["loss"], style, color=line.get_color(), alpha=0.2, linewidth=1)
    axes.set_xlabel("seconds since the end of step 1 (tracing excluded)")
    axes.set_ylabel(f"total loss (moving average of {SMOOTH} steps; raw faint)")
    axes.set_title(f"{TEMPLATE}, batch {BATCH}, random init, {os.cpu_count()} CPU cores")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)


# --- levers ---------------------------------------------------------------------------------------


def call_step_times(run: dict, warmup: int) -> list[float]:
    """Per-step wall times of a run, steps up to `warmup` left out: each call's wall time (between the last events
    of consecutive calls) divided by its steps, once per step. The steps of one call share its steps_per_sec, so
    a call is a run of equal consecutive values (a one-step-per-call loop: every step)."""
    steps, walls, rates = run["steps"], run["wall_time"], run["steps_per_sec"]
    ends = [(step, walls[i]) for i, step in enumerate(steps) if i + 1 == len(steps) or rates[i + 1] != rates[i]]
    times = []
    for (previous, began), (step, ended) in zip(ends, ends[1:]):
        times += [(ended - began) / (step - previous)] * len([s for s in range(previous + 1, step + 1) if s > warmup])
    return times


def lever_row(runs: list[dict], warmup: int) -> dict:
    done = [run for run in runs if "error" not in run]
    load = {key: max(run[key] for run in runs) for key in ("other_cores", "steal_cores")}
    if not done:
        return {"error": runs[0]["error"]} | load
    times = [call_step_times(run, warmup) for run in done]
    quiet = [run for run, repeat in zip(times, done, strict=True) if repeat["other_cores"] <= BUSY_WARNING]
    return load | {
        "step_s": statistics.median(value for run in times for value in run),
        # another process taking a core makes a step ~1.8x slower here: compare the runs it left alone
        "quiet_step_s": statistics.median(value for run in quiet for value in run) if quiet else None,
        "quiet_repeats": len(quiet),
        "repeat_other_cores": [run["other_cores"] for run in done],
        "repeat_step_s": [statistics.median(run) for run in times],
        "samples": sum(len(run) for run in times),
        "step_fn_s": statistics.median(1.0 / rate for run in done for rate in run["steps_per_sec"][warmup:]),
        "first_step_s": statistics.median(1.0 / run["steps_per_sec"][0] for run in done),
        "final_loss": statistics.fmean(final_loss(run) for run in done),
        "run_seconds": [run["run_seconds"] for run in done],
        "repeats": len(done),
        "failed": len(runs) - len(done),
    }


def lever_plan(repeats: int, baseline: bool) -> list[str]:
    """Settings in run order: A B C ... then C B A and so on; the "once" settings only in the first pass."""
    settings = ([TODAY] if baseline else []) + list(LEVERS)
    plan: list[str] = []
    for index in range(repeats):
        one_pass = settings if index % 2 == 0 else settings[::-1]
        plan += [name for name in one_pass if index == 0 or not LEVERS.get(name, {}).get("once")]
    return plan


def lever_summary(runs: dict[str, list[dict]], warmup: int) -> dict:
    rows = {name: lever_row(repeats, warmup) for name, repeats in runs.items() if repeats}
    reference = TODAY if TODAY in rows else LEVERS_OFF_NAME
    for name, row in rows.items():
        row["speedup"] = ratio(rows, reference, name, "step_s")
        row["speedup_off"] = ratio(rows, LEVERS_OFF_NAME, name, "step_s")
        row["quiet_speedup_off"] = ratio(rows, LEVERS_OFF_NAME, name, "quiet_step_s")
        if row["quiet_speedup_off"] is None:  # levers off had no quiet run: the defaults are the same settings
            row["quiet_speedup_off"] = ratio(rows, DEFAULTS, name, "quiet_step_s") if defaults_are_off() else None
    # the loop as it ships: its own row, or levers off when no lever is kept and the defaults did not run
    defaults = DEFAULTS if DEFAULTS in rows or not defaults_are_off() else LEVERS_OFF_NAME
    speedup = ratio(rows, reference, defaults, "quiet_step_s")  # None unless both had a quiet run
    return {
        "rows": rows,
        "reference": reference,
        "defaults": defaults,
        "speedup": speedup,
        "target_met": speedup and speedup >= TARGET_LEVERS,
    }


def best_speedup(row: dict) -> float | None:
    """The speed-up vs levers off from quiet runs (None without one: under load the ratio measures the load)."""
    return row.get("quiet_speedup_off")


def defaults_are_off() -> bool:
    """Whether the loop's defaults are the levers-off settings (no lever kept)."""
    from tfod_wrap.core.recipe import TrainRecipe

    return TrainRecipe() == TrainRecipe(**LEVERS_OFF)


def lever_markdown(summary: dict) -> str:
    rows, reference = summary["rows"], summary["reference"]
    lines = [
        f"| setting | median step s | speed-up vs {reference} | speed-up vs levers off | median step s, quiet runs "
        "| speed-up vs levers off, quiet runs | median step_fn s | first call s | final loss "
        "| other load, steal (cores, worst repeat) | median step s of each repeat (other load) |",
        "|---|" + "---:|" * 10,
    ]
    for name, row in rows.items():
        load = f"{row['other_cores']:.2f}, {row['steal_cores']:.2f}"
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error']} | | | | | | | | {load} | |")
            continue
        cells = [cell(row[key], spec) for key, spec in (("step_s", ".3f"), ("speedup", ".2f"), ("speedup_off", ".2f"))]
        quiet = cell(row["quiet_step_s"], ".3f") + (f" (x{row['quiet_repeats']})" if row["quiet_repeats"] else "")
        cells += [quiet, cell(row["quiet_speedup_off"], ".2f")]
        cells += [cell(row[key], spec) for key, spec in (("step_fn_s", ".3f"), ("first_step_s", ".1f"))]
        repeats = zip(row["repeat_step_s"], row["repeat_other_cores"], strict=True)
        cells += [
            cell(row["final_loss"], ".3f"),
            load,
            ", ".join(f"{step:.3f} ({other:.2f})" for step, other in repeats),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    levers = [name for name in rows if name not in (TODAY, LEVERS_OFF_NAME, DEFAULTS)]
    paid = [name for name in levers if (best_speedup(rows[name]) or 0) >= PAYS]
    unknown = [name for name in levers if best_speedup(rows[name]) is None]
    unpaid = [name for name in levers if name not in paid and name not in unknown]
    verdict = {True: "met", False: "missed", None: "not measured: a run under no other load is missing"}
    verdict = verdict[summary["target_met"] if summary["speedup"] is not None else None]
    lines += [
        "",
        f"paid (>= {PAYS:.2f}x levers off, quiet runs): {', '.join(paid) or 'none'}; did not: "
        f"{', '.join(unpaid) or 'none'}; no quiet run to tell: {', '.join(unknown) or 'none'}",
        f"runs with other load above {BUSY_WARNING} cores are left out of the quiet columns; ratios between runs "
        "under different loads measure the load, not the lever",
        f"{reference} / {summary['defaults']} = {cell(summary['speedup'], '.2f')} by median step of the quiet runs "
        f"(target >= {TARGET_LEVERS}: {verdict})",
    ]
    return "\n".join(lines)


def benchmark_levers(args: argparse.Namespace, workdir: Path) -> dict:
    started = time.perf_counter()
    pipeline = prepare_demo(workdir, args.images)
    plan = lever_plan(args.repeats, args.baseline is not None)
    if args.only:
        chosen = {name.strip() for name in args.only.split(",")}
        unknown = chosen - set(plan)
        if unknown:
            raise SystemExit(
                f"--only: no setting {', '.join(sorted(unknown))}; settings: {', '.join(dict.fromkeys(plan))}"
            )
        plan = [name for name in plan if name in chosen]
    runs: dict[str, list[dict]] = {name: [] for name in dict.fromkeys(plan)}
    for index, name in enumerate(plan):
        env = dict(LEVERS.get(name, {}).get("env", {}))
        if name == TODAY:
            env["PYTHONPATH"] = os.pathsep.join([str(args.baseline.resolve()), os.environ.get("PYTHONPATH", "")])
        steps = LEVERS.get(name, {}).get("steps", args.steps)
        runs[name].append(run_child("lever", name, pipeline, workdir / f"run{index}", steps, env=env))
    summary = lever_summary(runs, args.warmup)
    conditions = {"recipe": DEMO_RECIPE, "images": args.images, "steps": args.steps, "warmup": args.warmup}
    conditions |= {"repeats": args.repeats, "baseline": str(args.baseline) if args.baseline else None}
    tensorflow = next((run["tensorflow"] for repeats in runs.values() for run in repeats if "tensorflow" in run), "?")
    return {
        "machine": machine() | {"tensorflow": tensorflow},
        "conditions": conditions,
        **summary,
        "total_seconds": time.perf_counter() - started,
        "runs": runs,
    }


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the medians (default 3)")
    parser.add_argument("--images", type=int, default=64, help="images in the generated dataset (default 64)")
    parser.add_argument("--workdir", type=Path, help="dataset, records and model dirs (default: a temp dir, removed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench_train_loss.png", help="loss plot PNG")
    parser.add_argument("--levers", action="store_true", help="the loop's speed levers on the demo's setting")
    parser.add_argument("--baseline", type=Path, help="with --levers: a checkout of today's code to time first")
    parser.add_argument("--only", help="with --levers: comma-separated settings to run (default: all)")
    parser.add_argument("--from-json", type=Path, help="with --levers: summarise the runs of a saved --json again")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SETTING"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-call", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.child and args.steps < args.warmup + 20:
        parser.error("--steps must leave at least 20 steps after --warmup")
    if args.levers and args.images == 64:
        args.images = DEMO_IMAGES
    if not args.child and not args.levers and (args.steps % CALL_STEPS or args.steps < 2 * CALL_STEPS):
        parser.error(f"--steps must be a multiple of {CALL_STEPS}, at least {2 * CALL_STEPS}")
    return args


def run_plan(repeats: int) -> list[tuple[str, str, int]]:
    """(kind, setting, steps per call) in run order. The one-step-per-call runs go forward, then backward,
    and so on (A B C ... C B A), so a drift of the machine's speed hits every setting about alike; the
    20-steps-per-call TFOD run comes once, after the first pass."""
    one_pass = [("ours", "none", 1), ("tfod", TFOD, 1)] + [("ours", setting, 1) for setting in FREEZE_SETTINGS[1:]]
    plan = []
    for index in range(repeats):
        plan += one_pass if index % 2 == 0 else one_pass[::-1]
        if index == 0:
            plan.append(("tfod", TFOD_BATCHED, CALL_STEPS))
    return plan


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    started = time.perf_counter()
    pipeline = prepare(workdir, args.images, args.steps)
    runs: dict[str, list[dict]] = {name: [] for name in (*FREEZE_SETTINGS, TFOD, TFOD_BATCHED)}
    for index, (kind, setting, per_call) in enumerate(run_plan(args.repeats)):
        runs[setting].append(run_child(kind, setting, pipeline, workdir / f"run{index}", args.steps, per_call))
    summary = summarise(runs, args.warmup)
    plot(runs, args.plot)
    conditions = {"template": TEMPLATE, "batch": BATCH, "size": SIZE, "images": args.images, "steps": args.steps}
    conditions |= {"warmup": args.warmup, "repeats": args.repeats, "init": "random (no fine_tune_checkpoint)"}
    total = time.perf_counter() - started
    tensorflow = next((run["tensorflow"] for repeats in runs.values() for run in repeats if "tensorflow" in run), "?")
    return {
        "machine": machine() | {"tensorflow": tensorflow},
        "conditions": conditions,
        **summary,
        "total_seconds": total,
        "runs": runs,
    }


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    if args.levers and args.from_json:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        results = saved | lever_summary(saved["runs"], saved["conditions"]["warmup"])
        print(lever_markdown(results))
    elif args.levers:
        results = in_workdir(args.workdir, "bench-train-", lambda workdir: benchmark_levers(args, workdir))
        print(lever_markdown(results))
        print(f"\ntotal {results['total_seconds']:.0f} s")
    else:
        results = in_workdir(args.workdir, "bench-train-", lambda workdir: benchmark(args, workdir))
        print(markdown(results))
        print(f"\ntotal {results['total_seconds']:.0f} s; plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
