"""The webcam page and `tfod-wrap serve`: what the server serves and refuses (raw HTTP requests), and the real page
in headless Chromium with a fake camera (Debian's chromium and ffmpeg, playwright-core; `make install` installs
them, so their absence is a failure, not a skip)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tfod_wrap import cli, web
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.nodejs import node_modules
from tfod_wrap.core.tflite import interpreter, postprocess_tensors
from tfod_wrap.export.verify import TOLERANCE
from tfod_wrap.web import make_clip, make_server, run_page, serving
from tfod_wrap.web.serve import IDLE_TIMEOUT_S, page_url

CLI = str(Path(sys.executable).parent / "tfod-wrap")

SECRET = b"outside-the-served-folders"

METADATA = {
    "format": "tfod-wrap-detector",
    "version": 1,
    "architecture": "ssd",
    "classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "input": {"name": "input_tensor", "dtype": "int32", "shape": [1, -1, -1, 3], "resize_to": [160, 160]},
    "outputs": {
        name: {"tensor": f"Identity_{index}:0"}
        for index, name in enumerate(("detection_boxes", "detection_classes", "detection_scores", "num_detections"))
    },
    "execute": "executeAsync",
}


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A model folder with the files the server must serve, beside a secret it must never give out."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    folder = tmp_path / "tfjs"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"format": "graph-model", "weightsManifest": []}))
    (folder / "metadata.json").write_text(json.dumps(METADATA))
    (folder / "group1-shard1of1.bin").write_bytes(bytes(range(256)) * 4)
    (folder / ".hidden").write_bytes(SECRET)
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.json").write_text("{}")
    (folder / "outside.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "alias.json").symlink_to(folder / "metadata.json")
    return folder


@pytest.fixture
def server(model_folder: Path):
    with serving(model_folder) as running:
        yield running


def fetch(server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One raw request: http.client sends the path as written (urllib would normalise `..` away)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def assert_isolation_headers(headers: dict[str, str]) -> None:
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    assert headers["cache-control"] == "no-cache"


# ---- the server -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", "text/html", b'<script type="module" src="main.js">'),
        ("/index.html", "text/html", b'<link rel="stylesheet" href="style.css">'),
        ("/main.js", "text/javascript", b'from "./model.js"'),
        ("/model.js", "text/javascript", b"vendor/tfjs/tf.min.js"),
        ("/isolation.js", "text/javascript", b"serviceWorker"),
        ("/style.css", "text/css", b".stage"),
        ("/vendor/tfjs/tf.min.js", "text/javascript", b"loadGraphModel"),
        ("/vendor/tfjs-backend-wasm/tf-backend-wasm.min.js", "text/javascript", b"setWasmPaths"),
        ("/vendor/tfjs-backend-wasm/tfjs-backend-wasm.wasm", "application/wasm", b"\x00asm"),
        ("/vendor/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm", "application/wasm", b"\x00asm"),
        ("/vendor/tfjs-backend-wasm/tfjs-backend-wasm-threaded-simd.wasm", "application/wasm", b"\x00asm"),
        ("/mediapipe.js", "text/javascript", b"vendor/mediapipe/vision_bundle.mjs"),
        # no TFLite model beside this TF.js folder: the page is told to run TF.js only
        ("/model/formats.json", "application/json", b'{"formats": ["tfjs"]}'),
    ],
)
def test_serves_the_page_and_tfjs(server, path, content_type, marker):
    status, headers, body = fetch(server, path)
    assert status == 200
    assert headers["content-type"].split(";")[0] == content_type
    assert int(headers["content-length"]) == len(body)
    assert marker in body
    assert_isolation_headers(headers)


def test_serves_every_module_of_the_page_as_javascript(server):
    """The page is ES modules with no build step: every module main.js imports, and theirs, is served with a
    JavaScript MIME type (a browser refuses a module script of any other type), and no .js file is left out."""
    static = Path(web.__file__).parent / "static"
    seen, pending = set(), ["main.js"]
    while pending:
        name = pending.pop()
        seen.add(name)
        status, headers, body = fetch(server, f"/{name}")
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8"), name
        assert body == (static / name).read_bytes()
        # imports, and the worker scripts the page starts (by an address made absolute)
        found = re.findall(r'(?:from |absolute\()"(?:\./)?([\w-]+\.js)"', body.decode())
        pending += set(found) - seen - set(pending)
    assert seen == {path.name for path in static.glob("*.js")}
    assert {"model.js", "camera.js", "drawing.js", "controls.js", "state.js", "isolation.js"} <= seen
    assert {"mediapipe.js", "mediapipe_task.js", "mediapipe_worker.js"} <= seen


def test_serves_the_model_files_byte_for_byte(server, model_folder):
    for name, content_type in [
        ("model.json", "application/json"),
        ("metadata.json", "application/json"),
        ("group1-shard1of1.bin", "application/octet-stream"),
        ("alias.json", "application/json"),  # a symlink that stays inside the folder is fine
    ]:
        status, headers, body = fetch(server, f"/model/{name}")
        assert status == 200, name
        assert headers["content-type"] == content_type
        assert body == (model_folder / name).read_bytes()
        assert_isolation_headers(headers)
    status, headers, body = fetch(server, "/model/model.json?cache=1")
    assert status == 200
    status, headers, body = fetch(server, "/model/group1-shard1of1.bin", method="HEAD")
    assert (status, headers["content-length"], body) == (200, "1024", b"")


def test_vendor_files_are_the_installed_tfjs(server):
    dist = node_modules() / "@tensorflow" / "tfjs" / "dist"
    assert fetch(server, "/vendor/tfjs/tf.min.js")[2] == (dist / "tf.min.js").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/favicon.ico",
        "/model/missing.json",
        "/model/",
        "/model",
        "/model/sub",  # a folder
        "/model/sub/nested.json",  # only files directly inside the model folder
        "/vendor/tfjs/",
        "/vendor/tfjs/missing.js",
        "/vendor/other/x.js",
        "/vendor/tfjs-backend-wasm/tf-backend-wasm.min.js/x",
        "/app.js",  # the page before its ES modules
        "/static/main.js",
        "/serve.py",
        "/etc/passwd",
        "/model/%252e%252e/secret.txt",  # decoded once only: a file literally named %2e%2e
    ],
)
def test_unknown_paths_are_404(server, path):
    status, headers, body = fetch(server, path)
    assert status == 404
    assert SECRET not in body
    assert_isolation_headers(headers)


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/model/../secret.txt",
        "/model/../../../../../../etc/passwd",
        "/vendor/tfjs/../../../../../../../../etc/passwd",
        "/model/%2e%2e/secret.txt",
        "/model/%2E%2E/secret.txt",
        "/model/.%2e/secret.txt",
        "/model/..%2fsecret.txt",  # encoded slash
        "/model/%2e%2e%2fsecret.txt",
        "/model/%2fetc%2fpasswd",  # an absolute path in one segment
        "/model//etc/passwd",
        "//etc/passwd",
        "/model/..%5csecret.txt",  # backslashes
        "/model/%5c..%5csecret.txt",
        "/model/\\..\\secret.txt",
        "/model/C:%5cWindows",
        "/model/outside.txt",  # a symlink resolving outside the model folder
        "/model/.hidden",
        "/model/%00model.json",
        "/model/%ff.json",  # not UTF-8
        "http://127.0.0.1/model/model.json",  # not an origin-form path
        "/vendor/tfjs-backend-wasm/%2e%2e/package.json",
    ],
)
def test_escapes_are_refused_with_403(server, path):
    status, headers, body = fetch(server, path)
    assert status == 403, path
    assert SECRET not in body
    assert_isolation_headers(headers)


def test_other_methods_are_refused(server):
    status, headers, _ = fetch(server, "/model/model.json", method="POST")
    assert status == 501
    assert_isolation_headers(headers)


def test_model_folder_is_checked_at_start(tmp_path, model_folder):
    with pytest.raises(UserError, match=str(tmp_path / "missing")):
        make_server(tmp_path / "missing", port=0)
    (model_folder / "metadata.json").unlink()
    with pytest.raises(UserError, match=rf"{model_folder}: metadata.json missing"):
        make_server(model_folder, port=0)
    (model_folder / "metadata.json").write_text("{not json")
    with pytest.raises(UserError, match="metadata.json: not readable JSON"):
        make_server(model_folder, port=0)


def test_server_binds_localhost_and_names_the_url(model_folder):
    server = make_server(model_folder, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(UserError, match="pick another --port"):
            make_server(model_folder, port=server.server_address[1])
    finally:
        server.server_close()


def test_cli_serve_help_and_bad_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    assert all(option in text for option in ("--model", "--port", "--host"))
    assert cli.main(["serve", "--model", str(tmp_path)]) == 2
    assert "model.json and metadata.json missing" in capsys.readouterr().err


# ---- hostile and careless clients (issue 18.8) -----------------------------------------------------------------


def raw_request(server, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are on one connection; everything the server answers until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_control_characters_are_escaped_in_the_log(server, capsys):
    """A request line with an escape sequence must not reach the terminal raw (it could retitle, recolour or
    rewrite what the user sees); it is logged with its control characters escaped."""
    answer = raw_request(server, b"GET /\x1b]0;owned\x07\x1b[2J\x9b31m HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404")
    logged = capsys.readouterr().err
    assert "404" in logged and "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m" in logged
    assert not any(character in logged for character in "\x1b\x07\x9b")


def test_partial_requests_are_dropped_after_the_idle_timeout(server, capsys):
    """Ten clients that send half a request and wait hold no thread for long: each is closed within a few
    seconds, quietly (an idle keep-alive connection of a browser is closed the same way), and the server goes
    on answering."""
    assert IDLE_TIMEOUT_S <= 5
    started = time.monotonic()
    clients = [socket.create_connection(server.server_address[:2], timeout=IDLE_TIMEOUT_S + 5) for _ in range(10)]
    try:
        for client in clients:
            client.sendall(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1")  # no end of the headers, ever
        for client in clients:
            assert client.recv(65536) == b""  # closed by the server (a timeout here raises)
    finally:
        for client in clients:
            client.close()
    assert time.monotonic() - started < IDLE_TIMEOUT_S + 3
    assert fetch(server, "/index.html")[0] == 200
    assert capsys.readouterr().err == ""


def test_a_burst_of_200_requests_is_answered_in_full(server):
    """200 clients connecting at once on loopback: the listen backlog holds them all, none is dropped or reset."""
    barrier = threading.Barrier(200, timeout=30)

    def one(_) -> int:
        barrier.wait()
        try:
            return fetch(server, "/model/model.json")[0]
        except OSError as error:
            return repr(error)

    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200, Counter(map(str, statuses))


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("[::1]:{port}", 200),
        ("evil.example:{port}", 403),  # DNS rebinding: a name of the attacker's that resolves to 127.0.0.1
        ("127.0.0.1.nip.io:{port}", 403),
        ("localhost.evil.example:{port}", 403),
        ("127.0.0.1:1", 403),  # the right name on another port: another origin
        ("127.0.0.1", 403),  # port 80, then
        ("localhost:{port}@evil.example", 403),
        ("", 403),
    ],
)
def test_host_header_must_name_this_server(server, host, status):
    port = server.server_address[1]
    request = f"GET /model/model.json HTTP/1.1\r\nHost: {host.format(port=port)}\r\nConnection: close\r\n\r\n"
    answer = raw_request(server, request.encode())
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:80]
    assert (b"weightsManifest" in answer) == (status == 200)


def test_url_names_the_address_listened_on():
    assert page_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert page_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert page_url("::1", 8000) == "http://[::1]:8000/"  # bound to IPv6 loopback only: 127.0.0.1 is not reachable
    assert page_url("::", 8000) == "http://[::1]:8000/"
    assert page_url("fe80::1", 80) == "http://[fe80::1]:80/"
    assert page_url("localhost", 8000) == "http://localhost:8000/"


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_cli_port_out_of_range_is_one_clear_line(model_folder, port):
    done = subprocess.run(
        [CLI, "serve", "--model", str(model_folder), "--port", port], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --port {port}: a port is a number from 0 to 65535"]


def test_client_disconnects_print_no_traceback(server, model_folder, capsys):
    """Clients that go away (a closed tab mid-download, a reset keep-alive connection) are not errors."""
    (model_folder / "big.bin").write_bytes(bytes(32 << 20))
    for request in (b"GET /model/big.bin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", b"GET /main.js HTTP/1.1\r\n"):
        client = socket.create_connection(server.server_address[:2], timeout=10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        client.sendall(request.replace(b"{port}", str(server.server_address[1]).encode()))
        if b"big" in request:
            client.recv(1024)  # the download has started
        client.close()
    time.sleep(1)  # the server meets the reset on its next write or read
    assert fetch(server, "/index.html")[0] == 200
    logged = capsys.readouterr().err
    assert "Traceback" not in logged and "Exception occurred" not in logged, logged


# ---- the page in headless Chromium ----------------------------------------------------------------------------


def test_browser_tools_are_installed():
    """chromium and ffmpeg come with `make install`: missing, the page tests cannot run at all."""
    assert shutil.which("chromium"), "chromium is missing: run `make install` (apt-get install chromium)"
    assert shutil.which("ffmpeg"), "ffmpeg is missing: run `make install` (apt-get install ffmpeg)"


def shapes_image(path: Path, size=(320, 240)) -> Path:
    """A red rectangle on grey: a frame like the trained fixture's, not one of its training images."""
    image = Image.new("RGB", size, (190, 190, 190))
    width, height = size
    ImageDraw.Draw(image).rectangle([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(220, 30, 30))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("camera")
    image = shapes_image(folder / "shapes.png")
    return image, make_clip(image, folder / "clip.y4m", size=(320, 240))


@pytest.fixture
def sample_model(trained_detector) -> Path:
    """The TF.js folder of the trained fixture's export (conftest.trained_detector)."""
    return trained_detector.export_dir / "tfjs"


def test_page_runs_on_the_fake_camera(sample_model, camera_clip):
    """TF.js, as ?runtime=tfjs forces it on an export that has a TFLite model too (the MediaPipe path's test is
    test_page_runs_the_tflite_export_on_mediapipe)."""
    image, clip = camera_clip
    with serving(sample_model) as server:
        state = run_page(server.url, clip, frames=12, image=image, query={"runtime": "tfjs"}, timeout=60)
    assert state["error"] is None, state
    assert not state["timedOut"], state
    assert state["ready"] is True
    assert state["runtime"] == "tfjs" and state["shown"]["runtime"] == "TF.js"
    # Headless with --disable-gpu: WebGL is SwiftShader (software) at best, which the page skips for wasm.
    assert state["backend"] == "wasm", state
    assert "webgl" in state["backendErrors"]
    assert state["crossOriginIsolated"] is True  # COOP/COEP work: the wasm backend may use threads
    assert state["isolation"] == {"isolated": True, "via": "headers", "reason": None}  # no service worker needed
    assert state["wasm"]["threads"] is True
    assert state["shown"]["isolation"] == "on (headers)"
    assert len(state["navigations"]) == 1  # no reload
    assert state["frames"] >= 12
    assert state["fps"] > 0
    assert state["inferenceMs"] > 0
    assert state["numTensors"]["early"] == state["numTensors"]["late"], "tensors leak per frame"
    assert any(line.startswith("log: tfod-wrap: {") for line in state["console"])
    assert isinstance(state["lastDetections"], list)
    # The same model on a chosen image (the file input; dropping goes through the same code).
    assert state["image"]["error"] is None
    assert state["image"]["source"] == "image"
    assert state["image"]["numTensors"] == state["numTensors"]["late"]


def test_page_backend_and_workers_parameters(sample_model, camera_clip):
    _, clip = camera_clip
    with serving(sample_model) as server:
        forced = run_page(server.url, clip, frames=3, backend="wasm", timeout=60)
        bogus = run_page(server.url, clip, frames=3, backend="bogus", timeout=30)
        workers = run_page(server.url, clip, frames=3, query={"workers": "two"}, timeout=30)
    assert forced["error"] is None, forced
    assert forced["backend"] == "wasm"
    assert forced["backendErrors"] == {}  # forced: nothing else was tried (a TF.js backend means TF.js, not TFLite)
    assert forced["runtime"] == "tfjs"
    assert forced["frames"] >= 3
    assert bogus["ready"] is False
    assert "?backend=bogus: unknown backend" in bogus["error"]
    # refused up front like ?backend=, not taken for a MediaPipe failure that quietly falls back to TF.js
    assert workers["ready"] is False
    assert "?workers=two: expected a whole number from 0 to" in workers["error"]


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [ymin, xmin, ymax, xmax] boxes."""
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture
def browser_model(trained_detector):
    """(tfjs_dir, image_path, expected_class_name, expected_box [ymin, xmin, ymax, xmax] normalised)."""
    detector = trained_detector
    return detector.export_dir / "tfjs", detector.image, detector.class_name, detector.box


def test_page_detects_the_known_object(browser_model, tmp_path):
    tfjs_dir, image, expected_name, expected_box = browser_model
    clip = make_clip(image, tmp_path / "clip.y4m")
    with serving(tfjs_dir) as server:
        state = run_page(server.url, clip, frames=8, backend="wasm", image=image, timeout=60)
    assert state["error"] is None, state
    assert state["numTensors"]["early"] == state["numTensors"]["late"]
    for where, detections in (("camera", state["lastDetections"]), ("image", state["image"]["detections"])):
        matches = [d for d in detections if d["name"] == expected_name]
        assert matches, f"{where}: no {expected_name} above 0.5 in {detections}"
        best = max(iou(d["box"], expected_box) for d in matches)
        assert best >= 0.5, f"{where}: best IoU {best:.2f} for {expected_name} in {detections}"


def as_mediapipe_reports(box: np.ndarray) -> np.ndarray:
    """A [ymin, xmin, ymax, xmax] box as MediaPipe gives it: its top left corner moved into the image, its height
    and width kept (as tests/test_mediapipe.py finds)."""
    top_left = np.maximum(box[:2], 0.0)
    return np.concatenate([top_left, top_left + box[2:] - box[:2]])


@pytest.mark.parametrize(
    ("workers", "shown"), [("2", "2 workers of 1 thread"), ("0", "1 thread")], ids=["workers", "page-thread"]
)
def test_page_runs_the_tflite_export_on_mediapipe(trained_detector, tmp_path, workers, shown):
    """An export with a TFLite model (metadata embedded) runs on MediaPipe by default, in workers (?workers=2, the
    default on two cores) or on the page's thread (?workers=0): the camera finds the known object, TF.js is not even
    loaded, nothing leaves the page's origin, and on an image the detections are the TFLite interpreter's within the
    export's parity tolerance (the interpreter's are the checkpoint's, as the fixture's export --verify checked). The
    image is the model-sized picture with each pixel an odd-sided block, so MediaPipe's resize back to the model's
    size samples the very pixels the interpreter gets (tests/test_mediapipe.py)."""
    folder = trained_detector.export_dir / "tflite"
    metadata = json.loads((folder / "metadata.json").read_text())
    _, height, width, _ = metadata["input"]["shape"]
    small = np.asarray(Image.open(trained_detector.image).convert("RGB").resize((width, height), Image.BILINEAR))
    image = tmp_path / "blocks.png"
    Image.fromarray(small).resize((width * 9, height * 9), Image.NEAREST).save(image)
    clip = make_clip(trained_detector.image, tmp_path / "clip.y4m", size=(640, 480))
    with serving(trained_detector.export_dir / "tfjs") as server:
        query = {"threshold": "0.05", "workers": workers}
        state = run_page(server.url, clip, frames=8, image=image, query=query, timeout=90)
        origin = server.url.rstrip("/")
    assert state["error"] is None, state
    assert state["runtime"] == "tflite" and state["backendErrors"] == {}, state
    assert state["shown"]["runtime"] == "TFLite (MediaPipe)"
    assert state["shown"]["backend"] == f"wasm (XNNPACK, {shown}, SIMD)"
    assert not [line for line in state["console"] if "mediapipe-workers-failed" in line], state["console"]
    urls = [request["url"] for request in state["requests"]]
    assert f"{origin}/model/tflite/model.tflite" in urls
    build = "vision_wasm_module_internal" if workers != "0" else "vision_wasm_internal"
    assert f"{origin}/vendor/mediapipe/wasm/{build}.wasm" in urls  # the ES-module build in workers
    assert not [url for url in urls if "/vendor/tfjs" in url], "TF.js loaded though MediaPipe ran the model"
    assert [url for url in urls if not url.removeprefix("blob:").startswith(origin + "/")] == []

    camera = [d for d in state["lastDetections"] if d["name"] == trained_detector.class_name and d["score"] > 0.5]
    assert camera and iou(camera[0]["box"], trained_detector.box) >= 0.5, state["lastDetections"]

    loaded = interpreter(str(folder / "model.tflite"))
    tensors = postprocess_tensors(loaded)
    scale, offset = (np.asarray(metadata["input"][key], np.float32) for key in ("scale", "offset"))
    loaded.set_tensor(loaded.get_input_details()[0]["index"], (small * scale + offset)[None].astype(np.float32))
    loaded.invoke()
    out = {key: loaded.get_tensor(tensor["index"])[0] for key, tensor in tensors.items()}
    names = {index: item["name"] for index, item in enumerate(metadata["classes"])}
    expected = [
        (names[int(label)], float(score), as_mediapipe_reports(box))
        for label, score, box in zip(out["detection_classes"], out["detection_scores"], out["detection_boxes"])
        if score >= 0.05
    ]
    got = state["image"]["detections"]
    assert len(got) == len(expected) >= 2, (got, expected)
    tolerance = TOLERANCE[("tflite", "none")]
    for found, (name, score, box) in zip(got, expected):
        assert found["name"] == name, (got, expected)
        assert abs(found["score"] - score) <= tolerance, (found, score)
        assert np.abs(np.asarray(found["box"]) - box).max() <= tolerance, (found, box)


@pytest.mark.long  # MediaPipe Tasks sends its usage log once a minute
def test_mediapipe_usage_logs_never_leave_the_page(trained_detector, tmp_path):
    """MediaPipe Tasks posts usage logs to a Google server every minute; the page's Content-Security-Policy blocks
    them, in its workers too (they start from blob: addresses, which keep the page's policy). Chromium is told to
    send every connection to that server to a local socket instead, which must see none in 70 s of detection.
    Without the policy the same run made 4 connections (docs/BENCHMARKS.md, "MediaPipe in workers")."""
    bundle = (node_modules() / "@mediapipe" / "tasks-vision" / "vision_bundle.mjs").read_text()
    hosts = set(re.findall(r"https://([\w.-]+\.googleapis\.com)/", bundle))
    assert hosts, "the bundle names no Google endpoint: check what it logs to now"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    connections = []

    def accept() -> None:
        while listener.fileno() != -1:
            try:
                connections.append(listener.accept()[0].close())
            except (TimeoutError, OSError):
                continue

    threading.Thread(target=accept, daemon=True).start()
    target = f"127.0.0.1:{listener.getsockname()[1]}"
    clip = make_clip(trained_detector.image, tmp_path / "clip.y4m", size=(640, 480))
    try:
        with serving(trained_detector.export_dir / "tfjs") as server:
            state = run_page(
                server.url,
                clip,
                frames=10**6,
                query={"log": "100000"},
                timeout=70,
                map_hosts=dict.fromkeys(hosts, target),
            )
    finally:
        listener.close()
    assert state["error"] is None and state["runtime"] == "tflite", state
    assert state["wasm"]["workers"] == 2 and state["frames"] > 100, state
    assert connections == [], f"{len(connections)} connections to {sorted(hosts)}"
