"""What `tfod-wrap detect` reads: image files, folders (images and videos inside, recursively) and video files,
streamed as frames so that a long video never sits in memory.

OpenCV decodes everything: images with `cv2.imdecode` (EXIF orientation applied, as a viewer shows the photo;
grey, 16-bit and alpha images become 8-bit BGR), videos with its FFmpeg backend one frame at a time. An input
that cannot be read is reported as `Skipped` with the reason, and the stream goes on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import check_output as owned_output
from tfod_wrap.core.files import is_inside
from tfod_wrap.detect.models import DetectError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
DEFAULT_FPS = 25.0  # for a video whose container does not say


class Source(NamedTuple):
    path: Path
    name: str  # relative to the input folder it was found in; a file given by itself: its own name
    video: bool | None  # None: a file given by itself with an unknown suffix, tried as an image, then a video


class Frame(NamedTuple):
    image_id: int  # 1, 2, ... over all inputs in order: a lone video's frame N has id N
    source: Source
    index: int  # frame number in its video, counting from 1; 0 for an image
    image: np.ndarray  # BGR, as OpenCV decodes and encodes
    rgb: np.ndarray  # the same pixels in RGB, what the models take (converted here, in the reader thread)
    fps: float  # a video's frame rate (0 for an image)


class Skipped(NamedTuple):
    path: Path
    reason: str


class VideoEnd(NamedTuple):
    source: Source
    frames: int


def collect(inputs: list[Path]) -> tuple[list[Source], list[Skipped]]:
    """The images and videos named by `inputs` (files, or folders searched recursively), in order, each once, with
    names unique over all inputs (see `_unique_name`)."""
    sources: dict[Path, Source] = {}
    names: set[str] = set()
    skipped = []
    for path in inputs:
        if path.is_dir():
            found = [
                Source(item, item.relative_to(path).as_posix(), item.suffix.lower() in VIDEO_SUFFIXES)
                for item in sorted(path.rglob("*"))
                if item.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                and item.is_file()
                and not item.name.startswith(".")
            ]
            if not found:
                skipped.append(Skipped(path, "no images or videos in this folder"))
        elif path.is_file():
            suffix = path.suffix.lower()
            video = True if suffix in VIDEO_SUFFIXES else False if suffix in IMAGE_SUFFIXES else None
            found = [Source(path, path.name, video)]
        else:
            skipped.append(Skipped(path, "no such file or folder"))
            found = []
        for source in found:
            if source.path.resolve() not in sources:
                folder = (path if path.is_dir() else path.parent).resolve().name
                sources[source.path.resolve()] = source._replace(name=_unique_name(source.name, folder, names))
    return list(sources.values()), skipped


def _unique_name(name: str, folder: str, taken: set[str]) -> str:
    """`name`, or, when an earlier input took it (a/x.jpg and b/x.jpg), FOLDER/name with the folder it was found
    in, numbered if that is taken too: images.json and images/ then hold one entry per input image."""
    prefixed = f"{folder}/{name}" if folder else name
    stem, suffix = Path(name).stem, Path(name).suffix
    numbered = (str(Path(prefixed).with_name(f"{stem}-{number}{suffix}")) for number in itertools.count(2))
    candidate = next(option for option in itertools.chain((name, prefixed), numbered) if option not in taken)
    taken.add(candidate)
    return candidate


def check_output(output: Path, inputs: list[Path], kind: str, legacy: Callable[[Path], bool]) -> None:
    """Refuse an output that would write into an input folder, replace an input, or replace a folder that is not
    an earlier detect output (tfod_wrap.core.files.check_output: its marker of `kind`, or `legacy` recognises it)."""
    for path in inputs:
        if path.is_dir() and is_inside(output, path):
            raise DetectError(f"{output}: inside the input folder {path}; detect never writes into its inputs")
        if path.exists() and is_inside(path, output):
            raise DetectError(f"{path}: inside --output {output}, which detect replaces; choose another --output")
    try:
        owned_output(output, kind, legacy)
    except UserError as error:
        raise DetectError(str(error)) from None


def frame_count(sources: list[Source]) -> int:
    """Images plus the frames the videos' containers announce: the progress bar's total (an estimate)."""
    total = 0
    for source in sources:
        if source.video:
            capture = cv2.VideoCapture(str(source.path))
            total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            capture.release()
        else:
            total += 1
    return total


def read(sources: list[Source]) -> Iterator[Frame | Skipped | VideoEnd]:
    """Every frame of every source in order; Skipped for a source that cannot be read, VideoEnd after a video."""
    next_id = 1
    for source in sources:
        items = _video(source, next_id) if source.video else _image(source, next_id)
        for item in items:
            if isinstance(item, Frame):
                next_id = item.image_id + 1
            yield item


def _image(source: Source, image_id: int) -> Iterator[Frame | Skipped | VideoEnd]:
    try:
        data = np.fromfile(source.path, dtype=np.uint8)
    except OSError as error:
        yield Skipped(source.path, f"cannot read it: {error.strerror or error}")
        return
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is not None:
        yield Frame(image_id, source, 0, image, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 0.0)
    elif source.video is None:  # an unknown suffix: perhaps a video
        yield from _video(source, image_id)
    else:
        yield Skipped(source.path, "not an image OpenCV can decode (corrupt, truncated, empty or another format)")


def _video(source: Source, first_id: int) -> Iterator[Frame | Skipped | VideoEnd]:
    capture = cv2.VideoCapture(str(source.path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    frames = 0
    try:
        while capture.isOpened():
            ok, image = capture.read()
            if not ok:
                break
            frames += 1
            yield Frame(first_id + frames - 1, source, frames, image, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), fps)
    finally:
        capture.release()
    if frames:
        yield VideoEnd(source, frames)
    else:
        what = "a video" if source.video else "an image or a video"
        yield Skipped(source.path, f"not {what} OpenCV can decode (no frame could be read)")
