"""The webcam page as a self-contained static site (`tfod-wrap export ... --site DIR`): any static host serves it.

    build_site("export/tfjs", "site")       # the page, the model, TF.js and its wasm binaries, sw.js, host configs

Layout (the routes of `tfod-wrap serve`, so the page is the same file in both):

    index.html, style.css, *.js     the page (tfod_wrap/web/static/), every path in it relative: any folder of a host
    sw.js                           adds COOP/COEP/CORP to the site's own responses, for hosts that cannot set
                                    headers (the page registers it and reloads once; see static/isolation.js)
    model/                          model.json, its weight shards, metadata.json; formats.json (what the page may
                                    run, fastest first: serve.formats)
    model/tflite/                   model.tflite (with its embedded TFLite metadata) and metadata.json, when the
                                    export beside the TF.js folder has them: the page runs it on MediaPipe
    vendor/mediapipe/               then MediaPipe Tasks: vision_bundle.mjs, wasm/vision_wasm_module_internal.js, .wasm
                                    (the SIMD build as an ES module, for the page's workers) and
                                    wasm/vision_wasm_internal.js, .wasm (the same as a script, for the page's own thread
                                    when workers fail); a browser without wasm SIMD falls back to TF.js
    vendor/tfjs/tf.min.js           TF.js (WebGL and CPU backends)
    vendor/tfjs-backend-wasm/       its wasm backend: the script and the three binaries (plain, SIMD, threaded SIMD)
    _headers, netlify.toml,         the isolation headers for Netlify and Cloudflare Pages, Netlify, Vercel
    vercel.json
    .nojekyll                       GitHub Pages publishes the folder as it is

Nothing is loaded from another origin. `serving_folder` serves a folder the way a host that sets no headers does
(Python's http.server), recording each request: for the tests and the site benchmark.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_text, check_output, claim_output
from tfod_wrap.core.nodejs import node_modules
from tfod_wrap.core.resources import package_file
from tfod_wrap.web.serve import (
    FORMATS_FILE,
    MEDIAPIPE,
    STATIC,
    TFLITE_FILES,
    check_model_dir,
    in_background,
    mediapipe_folder,
    tflite_beside,
)

KIND = "site"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)
HOSTING = package_file("web", "hosting")
HOST_FILES = ("sw.js", "_headers", "netlify.toml", "vercel.json")
# node_modules files -> the site's paths: what the page loads (model.js: TFJS, WASM_FOLDER)
RUNTIME = {
    "@tensorflow/tfjs/dist/tf.min.js": "vendor/tfjs/tf.min.js",
    "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js": "vendor/tfjs-backend-wasm/tf-backend-wasm.min.js",
    "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm": "vendor/tfjs-backend-wasm/tfjs-backend-wasm.wasm",
    "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm": (
        "vendor/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm"
    ),
    "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm": (
        "vendor/tfjs-backend-wasm/tfjs-backend-wasm-threaded-simd.wasm"
    ),
}
# @mediapipe/tasks-vision files -> the site's paths: what the page loads when it runs the TFLite model (mediapipe.js)
MEDIAPIPE_RUNTIME = {
    "vision_bundle.mjs": "vendor/mediapipe/vision_bundle.mjs",
    "wasm/vision_wasm_internal.js": "vendor/mediapipe/wasm/vision_wasm_internal.js",
    "wasm/vision_wasm_internal.wasm": "vendor/mediapipe/wasm/vision_wasm_internal.wasm",
    "wasm/vision_wasm_module_internal.js": "vendor/mediapipe/wasm/vision_wasm_module_internal.js",
    "wasm/vision_wasm_module_internal.wasm": "vendor/mediapipe/wasm/vision_wasm_module_internal.wasm",
}
# `export --site` without --quantize: with --verify, the smallest weights that pass it (a quantised format passes
# when its mAP@0.5 on the eval split stays within 0.02 of the checkpoint's: export.verify.MAP_KEPT), tried smallest
# first, each try a whole export; without --verify nothing is measured, and the site gets SITE_QUANTIZE, which halves
# the download and kept the detections within 8e-4 of the checkpoint's on the models measured (docs/BENCHMARKS.md).
SMALLEST_FIRST = ("uint8", "float16", "none")
SITE_QUANTIZE = "float16"
SITE_FORMATS = ("tfjs", "tflite")  # the formats of an export that the page runs


def quantization_choices(measured: bool, stored: set[str]) -> list[str]:
    """The quantisations to export a site's model with, in the order to try them: only those every requested
    format stores (`stored`); all of them smallest first when `measured` (--verify scores each try), else one."""
    if not measured:
        return [SITE_QUANTIZE if SITE_QUANTIZE in stored else "none"]
    return [quantize for quantize in SMALLEST_FIRST if quantize in stored]


def accuracy_lost(export_report: dict) -> tuple[str, float] | None:
    """(format, mAP@0.5 lost against the checkpoint) for the site format of an export.json that lost most, or None
    when its --verify measured no mAP (no --verify, or eval records it could not score)."""
    accuracy = export_report.get("verify", {}).get("accuracy", {})
    scores = {name: accuracy.get("formats", {}).get(name) for name in SITE_FORMATS if name in export_report["formats"]}
    if accuracy.get("checkpoint") is None or None in scores.values() or not scores:
        return None
    name = min(scores, key=scores.get)
    return name, round(accuracy["checkpoint"] - scores[name], 4)


def model_files(model_dir: Path) -> list[str]:
    """The files of a TF.js graph model folder that the page loads: model.json, its shards, metadata.json; a
    UserError naming the folder when one is missing or model.json is not a graph model."""
    model_json = model_dir / "model.json"
    try:
        topology = json.loads(model_json.read_text())
        shards = [path for group in topology["weightsManifest"] for path in group["paths"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{model_json}: not a TF.js graph model.json ({error})") from None
    unsafe = [path for path in shards if not isinstance(path, str) or "/" in path or "\\" in path or path[:1] == "."]
    if unsafe:
        raise UserError(f"{model_json}: weight shard paths must be file names beside it, not {unsafe[0]!r}")
    missing = [path for path in shards if not (model_dir / path).is_file()]
    if missing:
        raise UserError(f"{model_dir}: weight shards {', '.join(missing[:3])} listed in model.json are missing")
    return ["model.json", *shards, "metadata.json"]


def check_site(output: str | Path) -> None:
    """The refusals of `build_site` that do not depend on the model, for a caller to make before its own work: an
    output folder that is not empty, absent or an earlier site; TF.js's files not installed."""
    check_output(Path(output), KIND)
    modules = node_modules()
    missing = [source for source in RUNTIME if not (modules / source).is_file()]
    if missing:
        raise UserError(f"{modules}: {missing[0]} is missing; run `tfod-wrap install-web` (the site copies it)")


def build_site(model_dir: str | Path, output: str | Path, log: Callable[[str], None] = print) -> dict:
    """Write the site for the TF.js model folder into `output` (replaced whole at the end, and only when it is
    empty, absent or an earlier site). Returns {"path", "bytes", "files": {relative path: bytes}, "quantization"}."""
    model_dir = check_model_dir(model_dir)
    names = model_files(model_dir)
    modules = node_modules()
    output = Path(output)
    with claim_output(output, KIND) as staging:
        for page_file in sorted(STATIC.iterdir()):
            if page_file.is_file() and not page_file.name.startswith("."):
                _copy(page_file, staging / page_file.name)
        for name in names:
            _copy(model_dir / name, staging / "model" / name)
        for source, target in RUNTIME.items():
            _copy(modules / source, staging / target)
        formats = _copy_tflite(model_dir, modules, staging)
        atomic_write_text(staging / "model" / FORMATS_FILE, json.dumps({"formats": formats}))
        for name in HOST_FILES:
            _copy(HOSTING / name, staging / name)
        atomic_write_text(staging / ".nojekyll", "")
    written = sorted(path for path in output.rglob("*") if path.is_file())
    files = {path.relative_to(output).as_posix(): path.stat().st_size for path in written}
    metadata = json.loads((model_dir / "metadata.json").read_text())
    report = {
        "path": str(output),
        "bytes": sum(files.values()),
        "files": files,
        "quantization": metadata.get("quantization", "none"),
        "formats": formats,
    }
    log(
        f"site: {report['bytes'] / 2**20:.1f} MiB in {output} ({report['quantization']} weights; the page runs "
        f"{' or '.join(formats)})"
    )
    return report


def _copy_tflite(model_dir: Path, modules: Path, staging: Path) -> list[str]:
    """The TFLite model beside the TF.js folder and MediaPipe's runtime into the site when the export has a TFLite
    model with metadata; the formats the page may run, fastest first."""
    tflite = tflite_beside(model_dir)
    if tflite is None:
        return ["tfjs"]
    mediapipe = mediapipe_folder(modules)
    if mediapipe is None:
        raise UserError(
            f"{modules}: {MEDIAPIPE} is missing; run `tfod-wrap install-web` (the site runs {tflite}/model.tflite "
            "on it)"
        )
    for name in TFLITE_FILES:
        _copy(tflite / name, staging / "model" / "tflite" / name)
    for source, target in MEDIAPIPE_RUNTIME.items():
        _copy(mediapipe / source, staging / target)
    return ["tflite", "tfjs"]


def _copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise UserError(f"{source}: missing; the site needs it (run `tfod-wrap install-web` for TF.js files)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


# ---- a host that sets no headers ----------------------------------------------------------------------------------


class _CountingWriter:
    """A connection's writer that counts the bytes going out (headers and bodies)."""

    def __init__(self, stream, counter: list[int]):
        self.stream, self.counter = stream, counter

    def write(self, data) -> int:
        self.counter[0] += len(data)
        return self.stream.write(data)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


class _PlainHandler(SimpleHTTPRequestHandler):
    """http.server's own file handler, quiet, recording each request (path, status) and the bytes sent."""

    def __init__(self, *args, records: list[dict], sent: list[int], **kwargs):
        self.records, self.sent = records, sent
        super().__init__(*args, **kwargs)

    def setup(self) -> None:
        super().setup()
        self.wfile = _CountingWriter(self.wfile, self.sent)

    def log_request(self, code="-", size="-") -> None:
        self.records.append({"path": self.path, "status": int(code) if str(code).isdigit() else 0})

    def log_message(self, format, *args) -> None:  # noqa: A002  (http.server's signature)
        pass


class PlainServer(ThreadingHTTPServer):
    """Python's http.server on a folder; `requests` lists what was asked, `bytes_sent` counts what went out."""

    daemon_threads = True

    def __init__(self, folder: Path):
        self.requests: list[dict] = []
        self.sent = [0]
        handler = partial(_PlainHandler, directory=str(folder), records=self.requests, sent=self.sent)
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    @property
    def bytes_sent(self) -> int:
        return self.sent[0]


@contextmanager
def serving_folder(folder: str | Path) -> Iterator[PlainServer]:
    """A plain static server (no COOP/COEP or any other special header) on `folder`, in a background thread."""
    with in_background(PlainServer(Path(folder)), "tfod-wrap-site") as server:
        yield server
