"""Drive the webcam page in headless Chromium with a fake camera: for the tests and the page benchmark.

    clip = make_clip("photo.png", tmp / "clip.y4m")           # a still image as a short .y4m camera clip
    state = run_page(server.url, clip, frames=20)             # the page's window.tfodWrap after 20 frames

Chromium plays the clip in a loop as its camera (--use-file-for-fake-video-capture).
`play_video(path)` plays a video file in a <video> element to its end (tfod_wrap/web/play_video.cjs). The Node side is
tfod_wrap/web/run_page.cjs on playwright-core (installed by `make install` with TF.js into .venv/node_modules).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.nodejs import node_modules, run_node
from tfod_wrap.core.resources import package_file

RUN_PAGE = package_file("web", "run_page.cjs")
PLAY_VIDEO = package_file("web", "play_video.cjs")


def chromium_executable() -> str:
    """Chromium to drive: $TFOD_WRAP_CHROMIUM, else `chromium` on PATH (Debian's package, `make install`)."""
    found = os.environ.get("TFOD_WRAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise UserError("chromium is not installed; `make install` installs it (apt-get install chromium)")
    return found


def make_clip(
    image: str | Path, out: str | Path, size: tuple[int, int] | None = None, seconds: float = 2, fps: int = 10
) -> Path:
    """A still image as a .y4m clip of `seconds` at `fps` for Chromium's fake camera: scaled to size (width,
    height), or by default kept at its own size (at most 640 wide, aspect kept, even sides for yuv420p).
    Scaling keeps normalised box coordinates, so a box known on the image is the box on the clip."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise UserError("ffmpeg is not installed; `make install` installs it (apt-get install ffmpeg)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scale = f"scale={size[0]}:{size[1]}" if size else "scale='trunc(min(640,iw)/2)*2':-2"
    command = [ffmpeg, "-y", "-loglevel", "error", "-loop", "1", "-i", str(image), "-t", str(seconds)]
    command += ["-r", str(fps), "-vf", scale, "-pix_fmt", "yuv420p", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.is_file():
        raise UserError(f"ffmpeg could not make {out} from {image}: {result.stderr.strip()[-1000:]}")
    return out


def run_page(
    url: str,
    clip: str | Path,
    frames: int = 20,
    *,
    backend: str | None = None,
    image: str | Path | None = None,
    query: dict[str, str] | None = None,
    timeout: float = 60,
    map_hosts: dict[str, str] | None = None,
) -> dict:
    """Open the page in headless Chromium with `clip` as the camera and wait for `frames` processed frames (or an
    error, or `timeout` seconds). With `image`, the file is then chosen in the page's file input and its
    detections come back under "image". `map_hosts` ({"host": "127.0.0.1:PORT"}) sends the browser's connections
    to those hosts to local addresses instead, so a test can see what the page would send elsewhere.

    Returns the page state: ready, backend, fps, frames, inferenceMs, lastDetections, error, crossOriginIsolated,
    isolation ({isolated, via, reason}), wasm ({threads, simd}), shown (the header bar's backend and isolation
    texts), numTensors ({"early": after frame 2, "late": at the end}), seconds (wall time of the wait),
    firstDetectionMs (from the start of the navigation to the first camera frame with a detection above the
    threshold, reloads included), timedOut, console (the page's tfod-wrap: log lines and errors), requests (every
    request of the browser context, workers' included: url, resourceType, serviceWorker), navigations (the main
    frame's documents: two when the page reloaded itself for isolation) and, with `image`, image.
    """
    parameters = dict(query or {})
    if backend:
        parameters["backend"] = backend
    request = {
        "modules": str(node_modules()),
        "chromium": chromium_executable(),
        "url": url,
        "query": parameters,
        "clip": str(Path(clip).resolve()),
        "frames": frames,
        "image": str(Path(image).resolve()) if image else None,
        "timeout_ms": int(timeout * 1000),
        "map_hosts": ", ".join(f"MAP {host} {target}" for host, target in (map_hosts or {}).items()) or None,
    }
    output = run_node(RUN_PAGE, json.dumps(request), timeout=timeout + 60)
    return json.loads(output.strip().splitlines()[-1])


def play_video(video: str | Path, mime_type: str = 'video/mp4; codecs="avc1.640028"', timeout: float = 30) -> dict:
    """Play `video` in headless Chromium's <video> element (muted, served over http from Playwright's router with
    byte ranges) and wait for its `ended` event, an error, or `timeout` seconds.

    Returns canPlayType (of `mime_type`), ended, error ({code, message} or None), duration, currentTime,
    videoWidth, videoHeight, framesDecoded, seconds and timedOut.
    """
    request = {
        "modules": str(node_modules()),
        "chromium": chromium_executable(),
        "video": str(Path(video).resolve()),
        "type": mime_type,
        "timeout_ms": int(timeout * 1000),
    }
    output = run_node(PLAY_VIDEO, json.dumps(request), timeout=timeout + 60)
    return json.loads(output.strip().splitlines()[-1])
