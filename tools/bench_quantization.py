"""Size, latency and accuracy of one trained run's exports, per format and quantisation (issue 21's table).

For each quantisation (none, float16, uint8): `export.export(..., verify=True)` of the run's latest checkpoint to
every format that stores it (SavedModel, TF.js, TFLite; ONNX at none only). `--verify` scores each format on the
pipeline's whole eval split with the same COCO code as `tfod-wrap eval` (mAP@0.5, beside the checkpoint's) and
calibrates uint8 TFLite on training images, never eval ones. Then latency per image on --latency-images eval
images, through tools/bench_export.py's measurements (SavedModel; TFLite at 1 thread and at every core; TF.js on
wasm in Node) plus ONNX in onnxruntime, each timed --repeats times after --warmup untimed runs, medians, with
the other processes' load sampled around every measurement.

    .venv/bin/python tools/bench_quantization.py --pipeline runs/demo/pipeline.config --model-dir runs/demo \
        --workdir /tmp/quant [--reuse] [--json docs/bench_quantization.json]

--reuse keeps the exports found in --workdir from an earlier run (only the latency is measured again);
--accuracy-only leaves the latency out.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import sys
from pathlib import Path

from bench_common import machine  # tools/ is on sys.path when run as a script
from bench_export import Measured, QuietWait, latency_row, measure_latency, progress, timed_runs

from tfod_wrap.core.manifests import ExportManifest
from tfod_wrap.export.formats import FORMATS, QUANTIZE, ExportError

MIB = 2**20
TARGET = 0.02  # uint8 within this much mAP@0.5 of float32 (issue 21)


def export_each(pipeline: Path, model_dir: Path, workdir: Path, reuse: bool) -> dict[str, ExportManifest]:
    """{quantisation: export.json} of one verified export per quantisation, each to every format storing it."""
    from tfod_wrap import export

    reports = {}
    for quantize in QUANTIZE:
        folder = workdir / f"export-{quantize}"
        if not (reuse and (folder / ExportManifest.FILE).is_file()):
            formats = tuple(
                name for name, entry in FORMATS.items() if quantize in entry.quantize or name == "saved_model"
            )
            progress(f"export {', '.join(formats)} at quantize={quantize} with --verify ...")
            try:
                export.export(
                    pipeline, model_dir, folder, formats=formats, quantize=quantize, verify=True, log=progress
                )
            except ExportError as error:  # a failed parity check still writes its report: the table shows it
                progress(f"  {error}".splitlines()[0])
        reports[quantize] = ExportManifest.from_json(json.loads((folder / ExportManifest.FILE).read_text()))
    return reports


def onnx_latency(model: Path, images: list, warmup: int, repeats: int) -> dict:
    from tfod_wrap.core.detector import ONNXDetector

    detector = ONNXDetector(model)
    times = []
    for image in images:
        times += timed_runs(lambda image=image: detector(image), warmup, repeats)
    size = "x".join(str(side) for side in images[0].shape[1::-1])
    return latency_row(times, runtime="onnxruntime", threads=os.cpu_count(), input=f"{size} uint8")


def measure_all(args: argparse.Namespace, reports: dict[str, ExportManifest], images: list) -> list[dict]:
    """bench_export's latency rows (but the pre-resized TF.js one) and ONNX's, each with its format and weights."""
    quiet = QuietWait(args.wait_quiet)
    latency = measure_latency(args.pipeline, reports, images, args, quiet)
    latency = [row for row in latency if "pre-resized" not in row["label"]]
    progress("  latency: ONNX in onnxruntime ...")
    quiet()
    with Measured() as measured:
        onnx = onnx_latency(
            Path(reports["none"].formats["onnx"]["path"]) / "model.onnx", images, args.warmup, args.repeats
        )
    latency.append(onnx | {"label": "ONNX in onnxruntime", "load": measured.load})
    return [label_row(row) for row in latency]


def rows(reports: dict[str, ExportManifest], latency: list[dict]) -> list[dict]:
    """One row per (format, quantisation): size, latencies, mAP@0.5 and its difference to the checkpoint's."""
    table = []
    for quantize, report in reports.items():
        accuracy = report.verify["accuracy"]
        for name, written in report.formats.items():
            if name == "saved_model" and quantize != "none":
                continue  # the same float32 SavedModel in every export
            parity = report.verify["formats"].get(name, {})
            score = accuracy["formats"].get(name)
            table.append(
                {
                    "format": name,
                    "quantization": quantize,
                    "mib": written["bytes"] / MIB,
                    "latency_ms": {
                        f"{row['threads']} thread{'s' if row['threads'] > 1 else ''}": row["median_ms"]
                        for row in latency
                        if row["format"] == name and row["quantization"] == quantize
                    },
                    "map50": score,
                    "map50_change": None if score is None else score - accuracy["checkpoint"],
                    "max_difference": max(parity.get("max_difference", {}).values(), default=None),
                    "tolerance": parity.get("tolerance"),
                    "passed": parity.get("passed"),
                }
            )
    return table


def label_row(row: dict) -> dict:
    """The format and quantisation a bench_export latency row measured, from its label."""
    label = row["label"]
    name = {"Saved": "saved_model", "TFLit": "tflite", "TF.js": "tfjs", "ONNX ": "onnx"}[label[:5]]
    quantize = next((q for q in QUANTIZE if f" {q}" in label), "none")
    return row | {"format": name, "quantization": quantize}


def markdown(results: dict) -> str:
    lines = [
        f"checkpoint mAP@0.5 on the eval split ({results['eval_images']} images): {results['checkpoint_map50']:.4f}",
        "",
        "| format | weights | MiB | latency ms, 1 thread | all cores | mAP@0.5 | change | largest output difference "
        "(tolerance) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["table"]:
        one = row["latency_ms"].get("1 thread")
        many = next((ms for threads, ms in row["latency_ms"].items() if threads != "1 thread"), None)
        parity = "n/a" if row["max_difference"] is None else f"{row['max_difference']:.1e} ({row['tolerance']})"
        lines.append(
            f"| {row['format']} | {row['quantization']} | {row['mib']:.2f} | {_cell(one, '.1f')} | "
            f"{_cell(many, '.1f')} | {_cell(row['map50'], '.4f')} | {_cell(row['map50_change'], '+.4f')} | {parity} |"
        )
    loaded = [f"{row['label']} ({row['load']['other_cores']:.2f})" for row in results["latency"]]
    if loaded:
        lines += ["", "other load during each latency measurement (cores): " + "; ".join(loaded)]
    return "\n".join(lines)


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True, help="the exports, one folder per quantisation")
    parser.add_argument("--reuse", action="store_true", help="keep the exports already in --workdir")
    parser.add_argument("--latency-images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--wait-quiet", type=float, default=300)
    parser.add_argument("--accuracy-only", action="store_true", help="sizes and mAP@0.5, no latency")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    from tfod_wrap.core import pipeline as configs
    from tfod_wrap.core.records import decode_image, expand_record_paths, read_examples

    args.workdir.mkdir(parents=True, exist_ok=True)
    with Measured() as exported:
        reports = export_each(args.pipeline, args.model_dir, args.workdir, args.reuse)
    paths = configs.load(args.pipeline).eval_input_reader[0].tf_record_input_reader.input_path
    examples = itertools.islice(read_examples(expand_record_paths(list(paths))), args.latency_images)
    images = [decode_image(example.features.feature) for _, example in examples]
    latency = [] if args.accuracy_only else measure_all(args, reports, images)
    accuracy = reports["none"].verify["accuracy"]
    results = {
        "machine": machine() | {"tensorflow": tf.__version__},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "run": str(args.model_dir.resolve()),
        "checkpoint": reports["none"].checkpoint,
        "eval_images": accuracy["images"],
        "checkpoint_map50": accuracy["checkpoint"],
        "export_load": exported.load,
        "table": rows(reports, latency),
        "latency": latency,
    }
    uint8 = [row for row in results["table"] if row["quantization"] == "uint8" and row["map50"] is not None]
    float32 = {row["format"]: row["map50"] for row in results["table"] if row["quantization"] == "none"}
    results["uint8_within_target"] = {
        row["format"]: float32[row["format"]] - row["map50"] <= TARGET for row in uint8 if row["format"] in float32
    }
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
