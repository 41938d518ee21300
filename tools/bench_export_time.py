"""Benchmark how long `export` takes, and how long its SavedModel takes to open, with and without the functions Keras
adds to a SavedModel for each layer of the model.

TFOD's exporters (exporter_lib_v2, export_tflite_graph_lib_tf2) save the detection module with
`tf.saved_model.save`, and tf_keras then traces and stores a call function for every layer of the model as well:
functions no TFOD export is ever called through. `export` saves without them (`without_layer_functions`, Keras'
own `save_traces=False`); "kept" below restores TFOD's behaviour by replacing that context with a no-op, so both
settings run the same code otherwise, alternating, in one process.

For SSD MobileNet V2 at 320x320 and SSD MobileNet V2 FPNLite 320 (tools/bench_export.py's models: generated 640x480
data, --steps training steps from random initialisation):
1. `export.export(..., formats=("saved_model", "tfjs", "tflite", "onnx"), verify=True)`, --rounds times per setting,
   alternating: wall seconds of the whole export and of each format as export.json reports them;
2. `SavedModelDetector(saved_model)` (what eval, detect and --verify do to open an export): seconds to load the
   SavedModel of each setting, --rounds times alternating, and whether both return the same detections on a val
   image (they must: only functions nobody calls differ).
Medians per setting and the ratio kept/dropped (> 1: the export without layer functions is faster).
3. The TF.js conversion of that SavedModel alone (`convert_to_tfjs`), --rounds times alternating, with tensorflowjs'
   own batch-norm folding (a Python loop over every kernel weight) and with tfod-wrap's vectorised pass in its place
   (`export/tfjs_batch_norms.py`): median seconds, the ratio, and whether the two wrote the same weight files byte
   for byte and the same model.json.
`--part` runs 1-2 (layer-functions), 3 (tfjs-folding) or all.

    .venv/bin/python tools/bench_export_time.py [--rounds 3] [--steps 2] [--images 24] [--models NAME ...]
                                                [--part all|layer-functions|tfjs-folding] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
from bench_common import in_workdir, load_and_total, machine  # tools/ is on sys.path when run as a script
from bench_export import MODELS, load_images, prepare_data, progress, train_model

import tfod_wrap  # noqa: F401  (must come before any object_detection import)
from tfod_wrap.export import parity, savedmodel, tfjs, tflite

FORMATS = ("saved_model", "tfjs", "tflite", "onnx")
SETTINGS = ("kept", "dropped")  # the layer functions: kept as TFOD's exporters keep them, dropped as export does


def layer_functions(setting: str) -> contextlib.AbstractContextManager:
    """The export code as it is ("dropped"), or with TFOD's saving restored ("kept")."""
    if setting == "dropped":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for module in (savedmodel, tflite):
        stack.enter_context(mock.patch.object(module, "without_layer_functions", contextlib.nullcontext))
    return stack


def time_exports(pipeline: Path, model_dir: Path, folder: Path, rounds: int) -> dict:
    from tfod_wrap import export

    runs = {setting: [] for setting in SETTINGS}
    for round_index in range(rounds):
        for setting in SETTINGS:
            progress(f"  export round {round_index + 1}/{rounds}, layer functions {setting} ...")
            output = folder / f"export-{setting}"
            started = time.perf_counter()
            with layer_functions(setting):
                report = export.export(pipeline, model_dir, output, formats=FORMATS, verify=True, log=lambda *_: None)
            runs[setting].append(
                {
                    "seconds": time.perf_counter() - started,
                    "formats": {name: report["formats"][name]["seconds"] for name in FORMATS},
                    "saved_model_mib": report["formats"]["saved_model"]["bytes"] / 2**20,
                    "verify_passed": all(result["passed"] for result in report["verify"]["formats"].values()),
                }
            )
    return runs


def time_loads(folder: Path, image: np.ndarray, rounds: int) -> dict:
    from tfod_wrap.core.detector import SavedModelDetector

    seconds = {setting: [] for setting in SETTINGS}
    found = {}
    for _ in range(rounds):
        for setting in SETTINGS:
            started = time.perf_counter()
            detector = SavedModelDetector(folder / f"export-{setting}" / "saved_model")
            seconds[setting].append(time.perf_counter() - started)
            found[setting] = detector(image)
    # every output --verify compares (raw scores and boxes included) equal, not merely within a tolerance
    same = not any(parity.compare(found["kept"], found["dropped"]).values())
    return {"seconds": seconds, "same_detections": same}


def time_tfjs_folding(saved_model: Path, folder: Path, rounds: int) -> dict:
    """`convert_to_tfjs` with tensorflowjs' own folding ("loop") and with the vectorised pass ("vectorised")."""
    seconds = {"loop": [], "vectorised": []}
    for round_index in range(rounds):
        for setting in seconds:
            progress(f"  tfjs round {round_index + 1}/{rounds}, batch-norm folding: {setting} ...")
            own_folding_only = mock.patch.object(tfjs, "vectorised_batch_norm_folding", contextlib.nullcontext)
            started = time.perf_counter()
            with own_folding_only if setting == "loop" else contextlib.nullcontext():
                tfjs.convert_to_tfjs(saved_model, folder / f"tfjs-{setting}")
            seconds[setting].append(time.perf_counter() - started)
    outputs = [folder / f"tfjs-{setting}" for setting in seconds]
    weights = [{path.name: path.read_bytes() for path in output.glob("*.bin")} for output in outputs]
    # model.json is compared as JSON: tensorflowjs writes a node's attrs in an order that differs between two
    # conversions of the same SavedModel
    graphs = [json.loads((output / "model.json").read_text()) for output in outputs]
    median = {setting: statistics.median(values) for setting, values in seconds.items()}
    return {
        "seconds": seconds,
        "median_seconds": median,
        "ratio": median["loop"] / median["vectorised"],
        "same_weights": weights[0] == weights[1],
        "same_graph": graphs[0] == graphs[1],
    }


def summarise(exports: dict, loads: dict) -> dict:
    median = {setting: statistics.median(run["seconds"] for run in exports[setting]) for setting in SETTINGS}
    per_format = {
        name: {setting: statistics.median(run["formats"][name] for run in exports[setting]) for setting in SETTINGS}
        for name in FORMATS
    }
    load = {setting: statistics.median(loads["seconds"][setting]) for setting in SETTINGS}
    return {
        "export_seconds": median,
        "export_ratio": median["kept"] / median["dropped"],
        "format_seconds": per_format,
        "saved_model_mib": {setting: exports[setting][0]["saved_model_mib"] for setting in SETTINGS},
        "load_seconds": load,
        "load_ratio": load["kept"] / load["dropped"],
        "same_detections": loads["same_detections"],
        "verify_passed": all(run["verify_passed"] for setting in SETTINGS for run in exports[setting]),
    }


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    started = time.perf_counter()
    load_before = os.getloadavg()
    progress(f"generating {args.images} images and records in {workdir} ...")
    records = prepare_data(workdir, args.images)
    image = load_images(records, 1)[0]
    models = {}
    for name in args.models:
        progress(f"{name}: training {args.steps} steps ...")
        pipeline, model_dir = train_model(name, records, workdir, args.steps)
        models[name] = {}
        if args.part in ("all", "layer-functions"):
            exports = time_exports(pipeline, model_dir, model_dir.parent, args.rounds)
            loads = time_loads(model_dir.parent, image, args.rounds)
            models[name] |= {"exports": exports, "loads": loads, **summarise(exports, loads)}
        if args.part in ("all", "tfjs-folding"):
            from tfod_wrap import export

            saved_model = model_dir.parent / "export-tfjs-source"
            export.export(pipeline, model_dir, saved_model, formats=("saved_model",), log=lambda *_: None)
            folding = time_tfjs_folding(saved_model / "saved_model", model_dir.parent, args.rounds)
            models[name]["tfjs_folding"] = folding
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "rounds": args.rounds,
        "formats": list(FORMATS),
        "models": models,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "total_seconds": time.perf_counter() - started,
    }


def markdown(results: dict) -> str:
    models = results["models"]
    tables = [layer_functions_table(models)] if all("exports" in model for model in models.values()) else []
    if all("tfjs_folding" in model for model in models.values()):
        tables.append(tfjs_folding_table(models))
    return "\n\n".join(tables)


def tfjs_folding_table(models: dict) -> str:
    lines = [
        "| model | tfjs, tensorflowjs' folding (s) | tfjs, vectorised folding (s) | ratio | same weights (bytes) "
        "| same model.json (as JSON) |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in models.items():
        folding = model["tfjs_folding"]
        median = folding["median_seconds"]
        lines.append(
            f"| {name} | {median['loop']:.1f} | {median['vectorised']:.1f} | {folding['ratio']:.2f}x "
            f"| {folding['same_weights']} | {folding['same_graph']} |"
        )
    return "\n".join(lines)


def layer_functions_table(models: dict) -> str:
    lines = [
        "| model | export kept (s) | export dropped (s) | ratio "
        "| saved_model / tfjs / tflite / onnx, kept -> dropped (s) | SavedModel MiB "
        "| load kept (s) | load dropped (s) | ratio | same detections |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, model in models.items():
        formats = " / ".join(
            f"{seconds['kept']:.0f} -> {seconds['dropped']:.0f}" for seconds in model["format_seconds"].values()
        )
        mib = model["saved_model_mib"]
        lines.append(
            f"| {name} | {model['export_seconds']['kept']:.1f} | {model['export_seconds']['dropped']:.1f} "
            f"| {model['export_ratio']:.2f}x | {formats} | {mib['kept']:.1f} -> {mib['dropped']:.1f} "
            f"| {model['load_seconds']['kept']:.2f} | {model['load_seconds']['dropped']:.2f} "
            f"| {model['load_ratio']:.2f}x | {model['same_detections']} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="exports and loads per setting (default 3)")
    parser.add_argument("--steps", type=int, default=2, help="training steps, batch 2 (default 2)")
    parser.add_argument("--images", type=int, default=24, help="generated 640x480 images (default 24)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument(
        "--part", choices=("all", "layer-functions", "tfjs-folding"), default="all", help="what to time (default all)"
    )
    parser.add_argument("--workdir", type=Path, help="data, models and exports (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="results as JSON (default: none)")
    return parser.parse_args()


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args()
    results = in_workdir(args.workdir, "bench-export-time-", lambda workdir: benchmark(args, workdir))
    print(markdown(results))
    verified = [model["verify_passed"] for model in results["models"].values() if "verify_passed" in model]
    print(f"\nverify passed in every export: {all(verified)}; " if verified else "", load_and_total(results), sep="")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
