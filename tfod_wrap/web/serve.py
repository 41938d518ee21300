"""A small static server for the webcam page: the page, one exported model and its runtimes, nothing else.

Routes (everything else is 404):

    /, /FILE                               the page: files directly inside tfod_wrap/web/static/ (index.html,
                                           style.css, main.js and the ES modules it imports)
    /model/FILE                            files directly inside the model folder (model.json, shards, metadata.json)
    /model/formats.json                    what the page may run, fastest first (`formats`): {"formats": ["tflite",
                                           "tfjs"]} when the export beside the TF.js folder has a TFLite model with
                                           embedded metadata (MODEL_DIR/../tflite/model.tflite) and MediaPipe Tasks
                                           is installed, else {"formats": ["tfjs"]}
    /model/tflite/FILE                     that TFLite folder's model.tflite and metadata.json, when it is offered
    /vendor/tfjs/FILE                      node_modules/@tensorflow/tfjs/dist/FILE
    /vendor/tfjs-backend-wasm/FILE         node_modules/@tensorflow/tfjs-backend-wasm/dist/FILE
    /vendor/mediapipe/FILE                 node_modules/@mediapipe/tasks-vision/FILE (vision_bundle.mjs)
    /vendor/mediapipe/wasm/FILE            node_modules/@mediapipe/tasks-vision/wasm/FILE (its XNNPACK wasm)

A path with `..`, a backslash, an encoded slash, an empty segment (`//`), a NUL or a file name starting with a dot is
refused with 403 before any file-system access; a file that resolves (through symlinks) outside its folder is refused
with 403 too. Every response carries the cross-origin isolation headers, so the page is `crossOriginIsolated` and the
wasm backend can use threads (SharedArrayBuffer).

Against hostile clients: a Host header that does not name this server (localhost, 127.0.0.1, [::1] or the address
listened on, with its port) is refused with 403, so a DNS-rebinding page cannot read it; a connection that sends
nothing for IDLE_TIMEOUT_S is closed; the listen backlog takes bursts of hundreds of connections; control characters
are escaped in the log; clients that go away mid-response are not errors.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.nodejs import node_modules

S = TypeVar("S", bound=ThreadingHTTPServer)

STATIC = Path(__file__).resolve().parent / "static"
FORMATS_FILE = "formats.json"  # served (and written into a site) beside the model's files: what the page may run
TFLITE_FILES = ("model.tflite", "metadata.json")  # what the page's TFLite route offers of the TFLite export
MEDIAPIPE = "@mediapipe/tasks-vision"  # MediaPipe Tasks for the web: runs the TFLite export on XNNPACK wasm

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".cjs": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

# Sent with every response, errors included.
COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")  # names of this machine a Host header may use
WILDCARDS = ("0.0.0.0", "::", "")  # listening on every address: the page is opened on a loopback one
# A client that sends nothing for this long is dropped: ten half-sent requests held threads for 90 s and more, and a
# browser's idle keep-alive connection simply reconnects.
IDLE_TIMEOUT_S = 5
# The listen backlog: the default 5 dropped 4-22% of a 200-request burst on loopback (the page's model shards and
# TF.js files come in bursts); the kernel caps it at net.core.somaxconn.
BACKLOG = 1024
# Control characters (C0, DEL, C1) as \xNN: a request line is the client's text, and raw escapes in it would reach
# the terminal (retitle, recolour, rewrite what the user sees).
ESCAPES = str.maketrans({code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]})


def page_url(host: str, port: int) -> str:
    """The address to open for a server listening on host:port (a wildcard: the loopback address of its family)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def check_port(port: int) -> None:
    """A UserError for a port outside 0-65535 (bind would raise OverflowError with a traceback)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: a port is a number from 0 to 65535")


class Refused(Exception):
    """A request path that must never reach the file system (answered 403)."""


def check_model_dir(model_dir: str | Path) -> Path:
    """The model folder, resolved; a UserError naming it unless it holds model.json and a readable metadata.json."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; pass the TF.js export folder (model.json + metadata.json)")
    missing = [name for name in ("model.json", "metadata.json") if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{folder}: {' and '.join(missing)} missing; pass the TF.js folder written by `tfod-wrap export` "
            "(model.json, its .bin shards and metadata.json)"
        )
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{folder / 'metadata.json'}: not readable JSON ({error})") from error
    if not isinstance(metadata, dict) or not {"input", "outputs", "classes"} <= metadata.keys():
        raise UserError(f"{folder / 'metadata.json'}: not tfod-wrap detector metadata (needs input, outputs, classes)")
    return folder.resolve()


def tflite_beside(model_dir: Path) -> Path | None:
    """The TFLite export folder beside the TF.js folder (both written by one `tfod-wrap export`) when its
    model.tflite carries TFLite metadata, which MediaPipe's ObjectDetector needs for labels and normalisation:
    the exporter appends labels.txt as a zip archive to the model (tfod_wrap/export/tflite_metadata.py), so an
    export made before it embedded metadata has none and stays on TF.js. None otherwise."""
    model = model_dir.parent / "tflite" / "model.tflite"
    try:
        with zipfile.ZipFile(model) as archive:
            labelled = "labels.txt" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    return model.parent.resolve() if labelled and (model.parent / "metadata.json").is_file() else None


def mediapipe_folder(modules: Path) -> Path | None:
    """MediaPipe Tasks' installed package folder, or None when `tfod-wrap install-web` predates it."""
    folder = modules / MEDIAPIPE
    return folder.resolve() if (folder / "vision_bundle.mjs").is_file() else None


def formats(model_dir: Path, modules: Path) -> list[str]:
    """What the page may run for the TF.js folder, fastest first: "tflite" (MediaPipe, XNNPACK) when the export has
    a TFLite model with metadata and MediaPipe Tasks is installed, and always "tfjs"."""
    offered = ["tflite"] if tflite_beside(model_dir) and mediapipe_folder(modules) else []
    return [*offered, "tfjs"]


def _segments(raw_path: str) -> list[str]:
    """The decoded segments of a request path; Refused for anything that could leave the served folders."""
    if not raw_path.startswith("/"):
        raise Refused("not an origin-form path")
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    raw_segments = path[1:].split("/")
    # `//x` (an absolute path glued on) and `a//b` are refused; only a trailing `/` (a folder) is let through.
    if any(segment == "" for segment in raw_segments[:-1]):
        raise Refused("empty path segment")
    segments = []
    for raw in raw_segments:
        segment = unquote(raw, errors="strict")
        if ".." in segment or "/" in segment or "\\" in segment or "\x00" in segment or ":" in segment:
            raise Refused(f"unsafe path segment {raw!r}")
        if segment.startswith(".") or segment.startswith("~"):
            raise Refused(f"hidden or home path segment {raw!r}")
        segments.append(segment)
    return segments


def _inside(folder: Path, name: str) -> Path | None:
    """folder/name when it is a regular file directly inside folder (after resolving symlinks); Refused if it
    resolves outside; None if there is no such file."""
    if not name:
        return None
    candidate = folder / name
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, RuntimeError) as error:  # symlink loops and the like
        raise Refused(str(error)) from error
    if resolved.parent != folder:
        raise Refused(f"{name} resolves outside its folder")
    return resolved if resolved.is_file() else None


class WebServer(ThreadingHTTPServer):
    """The page's server; `url` is the address to open in the browser."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], model_dir: Path, modules: Path, log: bool = False):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.names = {*LOCAL_NAMES, address[0].lower().strip("[]")}
        self.wildcard = address[0] in WILDCARDS
        self.routes = {
            "model": model_dir,
            "vendor/tfjs": (modules / "@tensorflow" / "tfjs" / "dist").resolve(),
            "vendor/tfjs-backend-wasm": (modules / "@tensorflow" / "tfjs-backend-wasm" / "dist").resolve(),
        }
        self.formats = formats(model_dir, modules)
        if "tflite" in self.formats:
            mediapipe = mediapipe_folder(modules)
            self.routes |= {"model/tflite": tflite_beside(model_dir), "vendor/mediapipe": mediapipe}
            self.routes["vendor/mediapipe/wasm"] = mediapipe / "wasm"
        # served from memory: the model folder is the user's, never written into
        self.generated = {f"model/{FORMATS_FILE}": json.dumps({"formats": self.formats}).encode()}
        self.static = STATIC.resolve()
        self.model_dir = model_dir
        self.log = log
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        return page_url(*self.server_address[:2])

    def host_allowed(self, header: str | None) -> bool:
        """Whether a Host header names this server (DNS rebinding: a page of an attacker's name that resolves to
        127.0.0.1 sends that name). No header (HTTP/1.0) is no such page. Listening on every address, any IP
        address is allowed too: other machines open the page by this one's address, never by a rebindable name."""
        if header is None:
            return True
        try:
            parts = urlsplit(f"//{header}")
            name, port = (parts.hostname or "").lower(), parts.port or 80
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None or port != self.server_address[1]:
            return False
        return name in self.names or (self.wildcard and _is_ip_address(name))

    def handle_error(self, request, client_address) -> None:
        # A client that closed or reset its connection (a closed tab, a cancelled download) is no error to report.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def locate(self, raw_path: str) -> Path | bytes | None:
        """The file a request path names (or the generated body of formats.json), None for 404; raises Refused for
        403."""
        segments = _segments(raw_path)
        if segments == [""]:
            return self.static / "index.html"
        if len(segments) == 1:
            return _inside(self.static, segments[0])
        if "/".join(segments) in self.generated:
            return self.generated["/".join(segments)]
        prefix, name = "/".join(segments[:-1]), segments[-1]
        folder = self.routes.get(prefix)
        if prefix == "model/tflite" and name not in TFLITE_FILES:
            return None  # the TFLite folder's other files (a user's notes, a copy) are not the page's
        return None if folder is None else _inside(folder, name)


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S  # socketserver sets it on the connection: every read and write waits at most this

    def version_string(self) -> str:
        return "tfod-wrap"

    def end_headers(self) -> None:
        for key, value in COMMON_HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        self._respond(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        # The request target as sent: http.server folds a leading `//` into `/` in self.path, hiding `//etc/passwd`.
        words = self.requestline.split()
        target = words[1] if len(words) == 3 else self.path
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(HTTPStatus.FORBIDDEN)
            return
        try:
            path = self.server.locate(target)
        except (Refused, UnicodeDecodeError):
            self._error(HTTPStatus.FORBIDDEN)
            return
        if path is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        if isinstance(path, bytes):
            self._send(path, "application/json", body)
            return
        try:
            handle = open(path, "rb")  # noqa: SIM115  (closed below, after streaming)
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                try:
                    while chunk := handle.read(1 << 20):
                        self.wfile.write(chunk)
                except (ConnectionError, TimeoutError):  # the client went away or stopped reading
                    self.close_connection = True

    def _send(self, content: bytes, content_type: str, body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)

    def _error(self, status: HTTPStatus) -> None:
        message = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(message)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Quiet: one line for a failed request (a missing shard shows up), nothing for the rest unless asked.
        status = int(code) if str(code).isdigit() else 0
        if self.server.log or status >= 400:
            self.log_message('"%s" %s', self.requestline, str(code))

    def log_error(self, format: str, *args) -> None:  # noqa: A002  (http.server's signature)
        # A connection closed after IDLE_TIMEOUT_S is routine (browsers keep idle keep-alive connections open):
        # quiet unless asked, as successful requests are.
        if self.server.log or not format.startswith("Request timed out"):
            super().log_error(format, *args)

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (http.server's signature)
        print(f"tfod-wrap serve: {(format % args).translate(ESCAPES)}", file=sys.stderr)


def make_server(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log: bool = False) -> WebServer:
    """A bound server (not yet serving) for the model folder; port 0 picks a free port (see `server.url`)."""
    check_port(port)
    folder = check_model_dir(model_dir)
    modules = node_modules()
    try:
        return WebServer((host, port), folder, modules, log=log)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}; pick another --port") from error


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: Callable[[str], object] | None = None,
    log: bool = False,
) -> None:
    """Serve the page for the model folder until interrupted; `ready(url)` is called once the socket is bound."""
    server = make_server(model_dir, host, port, log=log)
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever()
    finally:
        server.server_close()


@contextmanager
def serving(model_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[WebServer]:
    """A server running in a background thread for the duration of the block (tests, benchmarks):

    with serving("export/tfjs") as server:
        state = run_page(server.url, clip)
    """
    with in_background(make_server(model_dir, host, port), "tfod-wrap-serve") as server:
        yield server


@contextmanager
def in_background(server: S, name: str) -> Iterator[S]:
    """`server` serving in a daemon thread for the duration of the block, then shut down and closed."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def camera_note(host: str) -> str | None:
    """Why the camera may not start for this host, or None: getUserMedia needs a secure context."""
    if host in LOCAL_NAMES:
        return None
    return (
        f"bound to {host}: other machines can load the page, but browsers allow the camera only on https or "
        "on localhost/127.0.0.1; on this machine open the 127.0.0.1 address (image drop works anywhere)"
    )
