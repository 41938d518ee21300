"""What `tfod-wrap detect` writes, one frame at a time, into the staging folder that replaces --output at the end.

    images/NAME             each input image drawn (one model), or the side-by-side grid (several models)
    videos/NAME.mp4|.gif    each input video drawn (or as grids), frame for frame: H.264 by default (see
                            H264Writer), MPEG-4 Part 2 with video_codec="mp4v", or GIF
    detections.json         COCO results: image_id, category_id, bbox [x, y, w, h] in pixels, score
    images.json             COCO "images": id, file_name (relative to its input folder; FOLDER/NAME, then numbered,
                            where an earlier input took the name), width, height (and video, for video frames)
    MODEL/detections.json   with several models, one folder per model instead, images.json in each
    summary.json            latency per model, what was written and what was skipped (see detect.detect)

The JSON lists are streamed to their files, so their size does not grow memory; the folder swap makes the
whole output atomic.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import GifImagePlugin, Image

from tfod_wrap.core.detections import Detections
from tfod_wrap.core.files import atomic_write_bytes
from tfod_wrap.core.manifests import DetectFolder
from tfod_wrap.detect import draw
from tfod_wrap.detect.inputs import IMAGE_SUFFIXES, Frame, Skipped, VideoEnd
from tfod_wrap.detect.models import DetectError, Model

DETECTIONS, IMAGES = DetectFolder.DETECTIONS, DetectFolder.IMAGES  # detect writes them, eval reads them
# H.264 through PyAV (its wheels ship FFmpeg with libx264): what browsers play. mp4v is MPEG-4 Part 2, the codec
# OpenCV's pip wheels write into .mp4 (H.264 is not built into them): desktop players only.
VIDEO_CODECS = ("h264", "mp4v")


class JsonList:
    """A JSON list written to its file entry by entry."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self._separator = "[\n"

    def append(self, entry: dict) -> None:
        self._file.write(self._separator + json.dumps(entry))
        self._separator = ",\n"

    def extend(self, entries: list[dict]) -> None:
        if entries:  # one write for the lot: a video frame brings 100 detections
            self._file.write(self._separator + ",\n".join(map(json.dumps, entries)))
            self._separator = ",\n"

    def close(self) -> None:
        self._file.write("[]\n" if self._separator == "[\n" else "\n]\n")
        self._file.close()


class GifWriter:
    """An animated GIF written frame by frame (Pillow's own GIF writer holds every frame until the end): each
    frame gets its own 256-colour palette, the file loops forever."""

    def __init__(self, path: Path, fps: float):
        self._file = open(path, "wb")  # noqa: SIM115  (closed by release())
        self._duration = round(1000 / fps)  # GIF delays are in hundredths of a second; Pillow rounds
        self._started = False

    def write(self, frame: np.ndarray) -> None:
        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).quantize(256, Image.Quantize.FASTOCTREE)
        if not self._started:
            header, _ = GifImagePlugin.getheader(image, info={"loop": 0, "duration": self._duration})
            self._file.write(b"".join(header))
            self._started = True
        self._file.write(b"".join(GifImagePlugin.getdata(image, duration=self._duration, include_color_table=True)))

    def release(self) -> None:
        self._file.write(b";")  # the GIF trailer
        self._file.close()


class H264Writer:
    """An H.264 MP4 that browsers play: yuv420p (the only chroma layout every browser decodes; it halves colour
    resolution, so an odd width or height is padded to even by repeating the last column or row) and the index
    (moov) at the front (+faststart), so playback starts before the whole file has loaded."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        width, height = size
        self._pad = (width % 2, height % 2)
        try:
            self._container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
            # 29.97 and other NTSC rates arrive as floats: as a fraction x/1001 they stay exact
            self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        except (av.FFmpegError, ValueError) as error:
            raise DetectError(f"{path}: PyAV cannot write an H.264 video: {error}") from error
        self._stream.width, self._stream.height = width + self._pad[0], height + self._pad[1]
        self._stream.pix_fmt = "yuv420p"
        self._frames = 0

    def write(self, frame: np.ndarray) -> None:
        if any(self._pad):
            frame = cv2.copyMakeBorder(frame, 0, self._pad[1], 0, self._pad[0], cv2.BORDER_REPLICATE)
        picture = av.VideoFrame.from_ndarray(frame, format="bgr24")
        picture.pts = self._frames  # in frames: the stream's time base is 1/fps
        self._frames += 1
        self._container.mux(self._stream.encode(picture))

    def release(self) -> None:
        self._container.mux(self._stream.encode(None))  # the frames the encoder still holds
        self._container.close()


def video_writer(path: Path, fps: float, size: tuple[int, int], codec: str = "h264"):
    """A writer of BGR frames of `size` (width, height): a GifWriter for .gif, else an H264Writer, or OpenCV's
    VideoWriter with `codec` "mp4v"."""
    if path.suffix == ".gif":
        return GifWriter(path, fps)
    if codec == "h264":
        return H264Writer(path, fps, size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise DetectError(f"{path}: OpenCV cannot write a {codec} video of {size[0]}x{size[1]}")
    return writer


def _unique(name: str, used: set[str]) -> str:
    """`name`, or name-2, name-3, ... (before the suffix) when an earlier input already took it."""
    path, number = Path(name), 1
    while name in used:
        number += 1
        name = str(path.with_name(f"{path.stem}-{number}{path.suffix}"))
    used.add(name)
    return name


class Outputs:
    """Everything detect writes, fed item by item from the writer thread; what was written is in its attributes."""

    def __init__(
        self,
        folder: Path,
        models: list[Model],
        *,
        min_score: float,
        gif: bool,
        video_fps: float | None,
        video_codec: str = "h264",
    ):
        self.folder, self.models, self.min_score = folder, models, min_score
        self.gif, self.video_fps, self.video_codec = gif, video_fps, video_codec
        self.skipped: list[dict] = []
        self.images_written = 0
        self.videos: list[dict] = []
        self._video = None  # (Source, writer, output name, fps) of the video being written
        self._used: set[str] = set()
        folders = [folder] if len(models) == 1 else [folder / model.name for model in models]
        self._detections = [JsonList(path / DETECTIONS) for path in folders]
        self._images = [JsonList(path / IMAGES) for path in folders]

    def add(self, item: Frame | Skipped | VideoEnd, detections: list[Detections] | None = None) -> None:
        if isinstance(item, Frame):
            self._frame(item, detections)
        elif isinstance(item, Skipped):
            self.skipped.append({"path": str(item.path), "reason": item.reason})
        else:
            self._end_video(item)

    def _frame(self, frame: Frame, detections: list[Detections]) -> None:
        picture = self._picture(frame.image, detections)
        height, width = frame.image.shape[:2]
        entry = {"id": frame.image_id, "file_name": frame.source.name, "width": width, "height": height}
        if frame.index:
            entry |= {"file_name": f"{frame.source.name}#{frame.index}", "video": frame.source.name}
            entry["frame"] = frame.index
            self._video_frame(frame, picture)
        else:
            self._image(frame.source.name, picture)
        for found, results, images in zip(detections, self._detections, self._images):
            results.extend(found.to_coco(frame.image_id, width, height))
            images.append(entry)

    def _image(self, source_name: str, picture: np.ndarray) -> None:
        """images/NAME, in the input's format when OpenCV writes it, else PNG."""
        keep = Path(source_name).suffix.lower() in IMAGE_SUFFIXES
        name = _unique(f"images/{source_name}" + ("" if keep else ".png"), self._used)
        ok, encoded = cv2.imencode(Path(name).suffix, picture)
        if not ok:
            raise DetectError(f"{name}: OpenCV cannot encode the drawn image")
        atomic_write_bytes(self.folder / name, encoded.tobytes())
        self.images_written += 1

    def _picture(self, image: np.ndarray, detections: list[Detections]) -> np.ndarray:
        if len(self.models) == 1:  # the frame is not needed afterwards: draw on it
            return draw.draw_detections(image, detections[0], self.models[0].class_names, self.min_score)
        columns = [
            draw.draw_detections(image.copy(), found, model.class_names, self.min_score)
            for model, found in zip(self.models, detections)
        ]
        return draw.grid(columns, [model.name for model in self.models])

    def _video_frame(self, frame: Frame, picture: np.ndarray) -> None:
        if self._video is None or self._video[0] != frame.source:
            suffix = ".gif" if self.gif else ".mp4"
            name = _unique(str(Path("videos") / Path(frame.source.name).with_suffix(suffix)), self._used)
            (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
            fps = self.video_fps or frame.fps
            size = (picture.shape[1], picture.shape[0])
            writer = video_writer(self.folder / name, fps, size, self.video_codec)
            self._video = (frame.source, writer, name, fps)
        self._video[1].write(picture)

    def _end_video(self, end: VideoEnd) -> None:
        source, writer, name, fps = self._video
        writer.release()
        self._video = None
        codec = "gif" if self.gif else self.video_codec
        self.videos.append(
            {"input": str(source.path), "output": name, "frames": end.frames, "fps": fps, "codec": codec}
        )

    def close(self) -> None:
        """Finish the files; also after a failure, so that no handle stays open (the folder is then dropped)."""
        if self._video is not None:
            self._video[1].release()
        for stream in self._detections + self._images:
            stream.close()

    def files(self) -> dict[str, str]:
        """{model name: its detections.json, relative to the output folder}."""
        if len(self.models) == 1:
            return {self.models[0].name: DETECTIONS}
        return {model.name: f"{model.name}/{DETECTIONS}" for model in self.models}
