"""What a visitor of the static site (`tfod-wrap export --site`) downloads on first load, and how long the page
takes to its first detection, per TF.js weight quantisation (float32, float16, uint8).

For each quantisation: `export.export(..., formats=("saved_model", "tfjs"), quantize=Q, verify=True)` of one
training run (the parity report against the checkpoint comes with it), then `web.site.build_site`. Then --repeats
rounds of page runs (each round visits every quantisation's site, in rotated order), each a first visit in a fresh
headless Chromium (empty cache, no service worker yet) against Python's http.server on the site folder (no special
headers: the page isolates itself through its service worker, one reload). Per run: the bytes the server sent
(headers and bodies, the reload's 304s included), and the time from the start of the navigation to the first
camera frame with a detection above 0.5 (the page's clock; Chromium's start is not counted). Loopback: no network
time is in these figures.

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
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import in_workdir, machine  # noqa: E402

QUANTIZATIONS = {"float32": "none", "float16": "float16", "uint8": "uint8"}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _foreign(url: str, origin: str) -> bool:
    """Whether a request goes outside the site's origin (a blob: URL belongs to the origin inside it; data: URLs
    go nowhere)."""
    return not url.startswith("data:") and urlsplit(url.removeprefix("blob:")).netloc != urlsplit(origin).netloc


def page_run(site: Path, clip: Path) -> dict:
    """One first visit: a fresh Chromium (empty cache, no service worker) on a fresh plain server."""
    from tfod_wrap.web import run_page
    from tfod_wrap.web.site import serving_folder

    load_before = os.getloadavg()[0]
    with serving_folder(site) as server:
        state = run_page(server.url, clip, frames=5, timeout=120)
        bytes_sent, requests = server.bytes_sent, len(server.requests)
    origin = server.url.rstrip("/")
    return {
        "bytes": bytes_sent,
        "requests": requests,
        "first_detection_ms": state["firstDetectionMs"],
        "error": state["error"],
        "isolation": state["isolation"],
        "wasm": state["wasm"],
        "navigations": len(state["navigations"]),
        "foreign_requests": [r["url"] for r in state["requests"] if _foreign(r["url"], origin)],
        "inference_ms": state["inferenceMs"],
        "best_score": max((d["score"] for d in state["lastDetections"]), default=None),
        "load_average_before": load_before,
    }


def export_and_build(args: argparse.Namespace, workdir: Path, label: str) -> dict:
    """The export of one quantisation (with its parity report) and its site, in workdir; reused when --reuse."""
    from tfod_wrap import export
    from tfod_wrap.web.site import build_site

    out, site = workdir / f"export-{label}", workdir / f"site-{label}"
    if args.reuse and (site / "index.html").is_file():
        report = json.loads((out / "export.json").read_text())
    else:
        progress(f"{label}: export")
        report = export.export(
            args.pipeline,
            args.model_dir,
            out,
            formats=("saved_model", "tfjs"),
            quantize=QUANTIZATIONS[label],
            verify=True,
            verify_images=args.verify_images,
            log=lambda _: None,
        )
    files = build_site(out / "tfjs", site, log=lambda _: None)["files"]
    return {"site": site, "files": files, "parity": report["verify"]["formats"]["tfjs"]}


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    from tfod_wrap.web import make_clip

    clip = make_clip(args.image, workdir / "clip.y4m")
    results = {"machine": machine(), "load_average_start": os.getloadavg(), "quantizations": {}}
    built = {label: export_and_build(args, workdir, label) for label in QUANTIZATIONS}
    runs = {label: [] for label in QUANTIZATIONS}
    labels = list(QUANTIZATIONS)
    for repeat in range(args.repeats):  # rounds in rotated order: a busy spell of the machine hits every row
        for label in labels[repeat % len(labels) :] + labels[: repeat % len(labels)]:
            run = page_run(built[label]["site"], clip)
            runs[label].append(run)
            progress(f"{label}: {run['bytes'] / 2**20:.2f} MiB, first detection {run['first_detection_ms']:.0f} ms")
    for label, made in built.items():
        files = made["files"]
        results["quantizations"][label] = {
            "site_bytes": sum(files.values()),
            "model_bytes": sum(size for path, size in files.items() if path.startswith("model/")),
            "first_load_bytes": statistics.median(run["bytes"] for run in runs[label]),
            "first_detection_ms": statistics.median(run["first_detection_ms"] for run in runs[label]),
            "parity": made["parity"],
            "runs": runs[label],
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
        verdict = "passed" if parity["passed"] else "FAILED"
        if "judged_by" in parity:  # a quantised format, decided by its mAP@0.5 against the checkpoint's
            verdict += f" on mAP@0.5, {parity['map_change']:+.4f}"
        lines.append(
            f"| {label} | {row['model_bytes'] / 2**20:.2f} | {row['site_bytes'] / 2**20:.2f} | "
            f"{row['first_load_bytes'] / 2**20:.2f} | {row['first_detection_ms'] / 1000:.2f} | "
            f"{worst:.1e} ({parity['tolerance']}, {verdict}) |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, required=True, help="pipeline.config of a training run")
    parser.add_argument("--model-dir", type=Path, required=True, help="its model dir (latest checkpoint)")
    parser.add_argument("--image", type=Path, required=True, help="an image the detector finds its object in")
    parser.add_argument("--repeats", type=int, default=5, help="first visits per quantisation (5)")
    parser.add_argument("--verify-images", type=int, default=16, help="eval images for the parity check (16)")
    parser.add_argument("--workdir", type=Path, help="new or empty folder, kept (default: a temporary one)")
    parser.add_argument(
        "--reuse", action="store_true", help="take the exports of an earlier run in --workdir (page runs only)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.reuse:
        if args.workdir is None:
            raise SystemExit("--reuse needs the --workdir of an earlier run")
        results = benchmark(args, args.workdir)
    else:
        results = in_workdir(args.workdir, "tfod-wrap-bench-site-", lambda folder: benchmark(args, folder))
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
