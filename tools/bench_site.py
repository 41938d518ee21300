"""What a visitor of the static site (`tfod-wrap export --site`) downloads on first load, and how long the page
takes to its first detection, per TF.js weight quantisation (float32, float16, uint8).

For each quantisation: `export.export(..., formats=("saved_model", "tfjs"), quantize=Q, verify=True)` of one
training run (the parity report against the checkpoint comes with it), then `web.site.build_site`, then
--repeats page runs, each in a fresh headless Chromium (empty cache, no service worker yet: a first visit)
against Python's http.server on the site folder (no special headers: the page isolates itself through its
service worker, one reload). Per run: the bytes the server sent (headers and bodies, the reload's 304s included),
and the time from the start of the navigation to the first camera frame with a detection above 0.5 (the page's
clock; Chromium's start is not counted). Loopback: no network time is in these figures.

    .venv/bin/python tools/bench_site.py --pipeline RUN/pipeline.config --model-dir RUN --image IMG --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import in_workdir, machine  # noqa: E402

QUANTIZATIONS = {"float32": "none", "float16": "float16", "uint8": "uint8"}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def page_runs(site: Path, clip: Path, repeats: int) -> list[dict]:
    from tfod_wrap.web import run_page
    from tfod_wrap.web.site import serving_folder

    runs = []
    for _ in range(repeats):
        load_before = os.getloadavg()[0]
        with serving_folder(site) as server:
            state = run_page(server.url, clip, frames=5, timeout=120)
            bytes_sent, requests = server.bytes_sent, len(server.requests)
        origin = server.url.rstrip("/")
        runs.append(
            {
                "bytes": bytes_sent,
                "requests": requests,
                "first_detection_ms": state["firstDetectionMs"],
                "error": state["error"],
                "isolation": state["isolation"],
                "wasm": state["wasm"],
                "navigations": len(state["navigations"]),
                "foreign_requests": [r["url"] for r in state["requests"] if not r["url"].startswith(origin)],
                "inference_ms": state["inferenceMs"],
                "best_score": max((d["score"] for d in state["lastDetections"]), default=None),
                "load_average_before": load_before,
            }
        )
        progress(f"  {bytes_sent / 2**20:.2f} MiB, first detection {state['firstDetectionMs']:.0f} ms")
    return runs


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    from tfod_wrap import export
    from tfod_wrap.web import make_clip
    from tfod_wrap.web.site import build_site

    clip = make_clip(args.image, workdir / "clip.y4m")
    results = {"machine": machine(), "load_average_start": os.getloadavg(), "quantizations": {}}
    for label, quantize in QUANTIZATIONS.items():
        progress(f"{label}: export")
        report = export.export(
            args.pipeline,
            args.model_dir,
            workdir / f"export-{label}",
            formats=("saved_model", "tfjs"),
            quantize=quantize,
            verify=True,
            verify_images=args.verify_images,
            log=lambda _: None,
        )
        site = build_site(workdir / f"export-{label}" / "tfjs", workdir / f"site-{label}", log=lambda _: None)
        runs = page_runs(workdir / f"site-{label}", clip, args.repeats)
        results["quantizations"][label] = {
            "site_bytes": site["bytes"],
            "model_bytes": sum(size for path, size in site["files"].items() if path.startswith("model/")),
            "first_load_bytes": statistics.median(run["bytes"] for run in runs),
            "first_detection_ms": statistics.median(run["first_detection_ms"] for run in runs),
            "parity": report["verify"]["formats"]["tfjs"],
            "runs": runs,
        }
    results["load_average_end"] = os.getloadavg()
    return results


def markdown(results: dict) -> str:
    lines = [
        "| TF.js weights | model MiB | site folder MiB | first-load MiB | first detection s (median) | "
        "largest difference from the checkpoint (tolerance) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, row in results["quantizations"].items():
        parity = row["parity"]
        worst = max(parity["max_difference"].values())
        lines.append(
            f"| {label} | {row['model_bytes'] / 2**20:.2f} | {row['site_bytes'] / 2**20:.2f} | "
            f"{row['first_load_bytes'] / 2**20:.2f} | {row['first_detection_ms'] / 1000:.2f} | "
            f"{worst:.1e} ({parity['tolerance']}, {'passed' if parity['passed'] else 'FAILED'}) |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, required=True, help="pipeline.config of a training run")
    parser.add_argument("--model-dir", type=Path, required=True, help="its model dir (latest checkpoint)")
    parser.add_argument("--image", type=Path, required=True, help="an image the detector finds its object in")
    parser.add_argument("--repeats", type=int, default=3, help="first visits per quantisation (3)")
    parser.add_argument("--verify-images", type=int, default=16, help="eval images for the parity check (16)")
    parser.add_argument("--workdir", type=Path, help="new or empty folder, kept (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    results = in_workdir(args.workdir, "tfod-wrap-bench-site-", lambda folder: benchmark(args, folder))
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
