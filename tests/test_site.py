"""The webcam page as a static site (`tfod-wrap export --site`): what the folder holds, and the real page served by a
plain static server that sets no special headers (Python's http.server), in headless Chromium with a fake camera:
it detects the known object, becomes cross-origin isolated through its service worker, and asks nothing of any
other origin."""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tfod_wrap import cli
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import OWNER_FILE
from tfod_wrap.core.nodejs import node_modules
from tfod_wrap.export import verify
from tfod_wrap.web import make_clip, run_page
from tfod_wrap.web import site as site_module
from tfod_wrap.web.serve import STATIC
from tfod_wrap.web.site import (
    HOST_FILES,
    MEDIAPIPE_RUNTIME,
    RUNTIME,
    SITE_QUANTIZE,
    accuracy_lost,
    build_site,
    quantization_choices,
    serving_folder,
)

ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@pytest.fixture(scope="module")
def site(trained_detector, tmp_path_factory) -> Path:
    """The site of the trained fixture's TF.js export (conftest.trained_detector), built once for the module."""
    folder = tmp_path_factory.mktemp("site") / "site"
    build_site(trained_detector.export_dir / "tfjs", folder, log=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def clip(trained_detector, tmp_path_factory) -> Path:
    return make_clip(trained_detector.image, tmp_path_factory.mktemp("clip") / "clip.y4m")


@pytest.fixture(scope="module")
def isolated_run(site, clip) -> tuple[dict, list[dict], str]:
    """One page run on the plain server, shared by the assertions below: (page state, the server's requests, the
    server's origin)."""
    with serving_folder(site) as server:
        state = run_page(server.url, clip, frames=6, timeout=90)
        return state, list(server.requests), server.url.rstrip("/")


def test_site_holds_the_page_model_and_runtime(site, trained_detector):
    tfjs = trained_detector.export_dir / "tfjs"
    manifest = json.loads((tfjs / "model.json").read_text())["weightsManifest"]
    shards = [path for group in manifest for path in group["paths"]]
    for name in ["model.json", "metadata.json", *shards]:
        assert (site / "model" / name).read_bytes() == (tfjs / name).read_bytes(), name
    for source, target in RUNTIME.items():
        assert (site / target).read_bytes() == (node_modules() / source).read_bytes(), target
    # the export's TFLite model and MediaPipe, which the page runs it on, first; TF.js as the fallback
    tflite = trained_detector.export_dir / "tflite"
    for name in ("model.tflite", "metadata.json"):
        assert (site / "model" / "tflite" / name).read_bytes() == (tflite / name).read_bytes(), name
    for source, target in MEDIAPIPE_RUNTIME.items():
        assert (site / target).read_bytes() == (node_modules() / "@mediapipe/tasks-vision" / source).read_bytes()
    assert json.loads((site / "model" / "formats.json").read_text()) == {"formats": ["tflite", "tfjs"]}
    page = {path.name for path in STATIC.iterdir() if path.is_file()}
    assert {"index.html", "main.js", "isolation.js", "style.css"} <= page
    for name in page:
        assert (site / name).read_bytes() == (STATIC / name).read_bytes(), name
    for name in HOST_FILES:
        assert (site / name).is_file(), name
    assert (site / ".nojekyll").is_file()
    assert json.loads((site / OWNER_FILE).read_text())["kind"] == "site"


def test_site_loads_nothing_from_another_origin(site):
    """No absolute address in the page's files: a CDN (or any other host) would break offline use and isolation."""
    for path in [*site.glob("*.js"), site / "index.html", site / "style.css"]:
        text = path.read_text()
        assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", text.replace("http://127.0.0.1", "")), path.name
        assert not re.search(r"""(src|href)=["']/""", text), f"{path.name}: a root-relative path breaks subfolders"


def test_host_configs_set_the_isolation_headers(site):
    headers = (site / "_headers").read_text()
    netlify = (site / "netlify.toml").read_text()
    vercel = json.loads((site / "vercel.json").read_text())
    everything = {entry["key"]: entry["value"] for entry in vercel["headers"][0]["headers"]}
    assert vercel["headers"][0]["source"] == "/(.*)"
    for name, value in ISOLATION.items():
        assert f"  {name}: {value}\n" in headers
        assert f'{name} = "{value}"' in netlify
        assert everything[name] == value


def test_site_replaces_only_its_own_folder(site, trained_detector, tmp_path):
    tfjs = trained_detector.export_dir / "tfjs"
    again = build_site(tfjs, site, log=lambda _: None)  # an earlier site is replaced whole
    assert again["bytes"] == sum(path.stat().st_size for path in site.rglob("*") if path.is_file())
    assert again["files"]["model/model.json"] == (tfjs / "model.json").stat().st_size
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not written by tfod-wrap"):
        build_site(tfjs, mine, log=lambda _: None)
    assert (mine / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="metadata.json missing"):
        build_site(tmp_path / "mine", tmp_path / "new-site", log=lambda _: None)


def test_plain_server_sets_no_isolation_headers(site):
    """The server of the browser tests below is a host that cannot set headers: isolation is the worker's doing."""
    with serving_folder(site) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        names = {name.lower() for name, _ in response.getheaders()}
        connection.close()
    assert response.status == 200
    assert not names & {name.lower() for name in ISOLATION}


def iou(a: list[float], b: list[float]) -> float:
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - height * width
    return height * width / union if union > 0 else 0.0


def test_site_detects_the_known_object(isolated_run, trained_detector):
    state, _, _ = isolated_run
    assert state["error"] is None, state
    assert not state["timedOut"], state
    assert state["runtime"] == "tflite", state  # the export's TFLite model, on MediaPipe
    assert state["backend"] == "wasm", state
    matches = [d for d in state["lastDetections"] if d["name"] == trained_detector.class_name]
    assert matches, state["lastDetections"]
    assert max(iou(d["box"], trained_detector.box) for d in matches) >= 0.5, matches
    assert 0 < state["firstDetectionMs"] < 90_000


def test_site_is_isolated_by_its_service_worker_after_one_reload(isolated_run):
    state, served, origin = isolated_run
    assert state["crossOriginIsolated"] is True
    assert state["isolation"] == {"isolated": True, "via": "service worker", "reason": None}
    # MediaPipe's build: one thread, in each of two workers (the page's default on two cores)
    assert state["wasm"] == {"threads": False, "simd": True, "engine": "XNNPACK", "workers": 2}
    assert state["shown"] == {  # the page says so
        "runtime": "TFLite (MediaPipe)",
        "backend": "wasm (XNNPACK, 2 workers of 1 thread, SIMD)",
        "isolation": "on (service worker)",
    }
    assert state["navigations"] == [f"{origin}/", f"{origin}/"]  # the first load, then one reload
    assert any(request["serviceWorker"] for request in state["requests"])  # the worker fetched for the page
    assert {"path": "/sw.js", "status": 200} in served
    # MediaPipe and the model are fetched once, after the reload: the first load stops at the page's own modules
    heavy = [request["path"] for request in served if request["path"].startswith(("/vendor/", "/model/"))]
    assert len(heavy) == len(set(heavy)), heavy
    assert all(request["status"] in (200, 304) for request in served), served


def origin_of(url: str) -> str | None:
    """The origin a request goes to; None for data: URLs, which go nowhere. A blob: URL (the wasm backend's worker
    scripts) belongs to the origin that made it, written inside it."""
    if url.startswith("data:"):
        return None
    parts = urlsplit(url.removeprefix("blob:"))
    return f"{parts.scheme}://{parts.netloc}"


def test_site_asks_nothing_of_another_origin(isolated_run):
    state, served, origin = isolated_run
    urls = [request["url"] for request in state["requests"]]
    assert len(urls) >= len(served)  # the browser saw at least what the server answered
    foreign = [url for url in urls if origin_of(url) not in (origin, None)]
    assert foreign == []
    assert f"{origin}/vendor/mediapipe/wasm/vision_wasm_module_internal.wasm" in urls  # what the workers ran


def test_site_runs_without_isolation(site, clip, trained_detector):
    """A browser without service workers (or a host and browser where isolation fails): wasm on one thread, and
    the page says so. On TF.js, the site's fallback (?runtime=tfjs), which would use threads with isolation."""
    with serving_folder(site) as server:
        state = run_page(server.url, clip, frames=2, query={"isolation": "off", "runtime": "tfjs"}, timeout=90)
        served = {request["path"] for request in server.requests}
    assert state["error"] is None, state
    assert state["crossOriginIsolated"] is False
    assert state["isolation"] == {"isolated": False, "via": None, "reason": "?isolation=off"}
    assert state["wasm"]["threads"] is False
    assert state["shown"] == {
        "runtime": "TF.js",
        "backend": "wasm (1 thread, SIMD)",
        "isolation": "off (wasm: 1 thread)",
    }
    assert len(state["navigations"]) == 1
    assert "/sw.js" not in served
    assert "/vendor/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm" in served  # the single-threaded binary
    assert any(d["name"] == trained_detector.class_name for d in state["lastDetections"]), state["lastDetections"]


def test_no_reload_loop_when_the_worker_cannot_isolate(site, clip, tmp_path):
    """A worker whose responses do not isolate the page (as in a browser that ignores them): the page reloads once,
    then runs on one thread and says why, instead of reloading forever."""
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    (copy / "sw.js").write_text(
        'self.addEventListener("install", () => self.skipWaiting());\n'
        'self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));\n'
        'self.addEventListener("fetch", (event) => event.respondWith(fetch(event.request)));\n'
    )
    with serving_folder(copy) as server:
        state = run_page(server.url, clip, frames=2, timeout=90)
    assert state["error"] is None, state
    assert len(state["navigations"]) == 2  # the one reload, no more
    assert state["isolation"] == {
        "isolated": False,
        "via": None,
        "reason": "the service worker's headers did not isolate the page",
    }
    assert state["wasm"]["threads"] is False and state["frames"] >= 2


def test_cli_site_is_checked_before_the_export(trained_detector, tmp_path, capsys):
    """--site's refusals come before any export work: no tfjs format, a site inside the export, a user's folder."""
    base = ["export", "--pipeline", str(trained_detector.pipeline), "--model-dir", str(trained_detector.model_dir)]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    cases = [
        (["--formats", "saved_model", "--site", str(tmp_path / "s")], "add tfjs to --formats"),
        (["--site", str(tmp_path / "out" / "site")], "must be a folder apart from --output"),
        (["--site", str(mine)], "not written by tfod-wrap"),
    ]
    for extra, message in cases:
        assert cli.main([*base, "--output", str(tmp_path / "out"), *extra]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error, error
    assert not (tmp_path / "out").exists()
    assert (mine / "index.html").read_text() == "my own page"


def test_site_weights_are_tried_smallest_first_when_verify_measures_them():
    assert quantization_choices(True, {"none", "float16", "uint8"}) == ["uint8", "float16", "none"]
    assert quantization_choices(True, {"none"}) == ["none"]  # ONNX requested: float32 only
    assert quantization_choices(False, {"none", "float16", "uint8"}) == [SITE_QUANTIZE]
    assert quantization_choices(False, {"none"}) == ["none"]


def test_accuracy_lost_is_the_site_format_that_lost_most():
    accuracy = {"metric": "mAP@0.5", "checkpoint": 0.9, "formats": {"saved_model": 0.5, "tfjs": 0.89, "tflite": 0.86}}
    report = {"formats": {"saved_model": {}, "tfjs": {}, "tflite": {}}, "verify": {"accuracy": accuracy}}
    assert accuracy_lost(report) == ("tflite", 0.04)  # the SavedModel is not what the page runs
    del report["formats"]["tflite"]
    assert accuracy_lost(report) == ("tfjs", 0.01)
    assert accuracy_lost({"formats": {"tfjs": {}}}) is None  # no --verify
    unscored = {"metric": "mAP@0.5", "error": "val.record: class 'cat' is not in the label map"}
    assert accuracy_lost({"formats": {"tfjs": {}}, "verify": {"accuracy": unscored}}) is None


@pytest.mark.long  # two verified exports
def test_cli_site_exports_again_when_the_smaller_weights_lose_map(trained_detector, tmp_path, monkeypatch, capsys):
    """The rule's loop on the real detector: with an accuracy bar no quantised export can pass, the uint8 export is
    measured, failed and replaced by the next choice, float32, which parity alone decides."""
    monkeypatch.setattr(verify, "MAP_KEPT", -1.0)
    monkeypatch.setattr(site_module, "SMALLEST_FIRST", ("uint8", "none"))
    output, site = tmp_path / "export", tmp_path / "site"
    argv = ["export", "--pipeline", str(trained_detector.pipeline), "--model-dir", str(trained_detector.model_dir)]
    argv += ["--output", str(output), "--formats", "tfjs", "--verify", "--site", str(site)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    tried = (
        r"site: uint8 weights: tfjs mAP@0\.5 [-+][0-9.]+ against the checkpoint's; exporting again with none weights"
    )
    assert re.search(tried, out), out
    report = json.loads((output / "export.json").read_text())
    assert json.loads((output / "tfjs" / "metadata.json").read_text())["quantization"] == "none"
    assert json.loads((site / "model" / "metadata.json").read_text())["quantization"] == "none"
    assert "judged_by" not in report["verify"]["formats"]["tfjs"]  # float32: parity decides
    accuracy = report["verify"]["accuracy"]
    drop = accuracy["checkpoint"] - accuracy["formats"]["tfjs"]
    assert f"(none weights, tfjs mAP@0.5 {abs(drop):.3f} " in out
