"""The detect pipeline: three stages joined by bounded queues, so that decoding, inference and drawing/encoding
overlap and memory stays flat (a few frames wait between stages, however long the video).

    reader thread:   inputs.read (decode, BGR -> RGB)
    calling thread:  the models, on batches of same-sized frames (one image per call for models that take 1),
                     `calls` of them at a time (a pool of threads; results kept in order)
    writer thread:   Outputs.add (draw, encode, write, JSON), and the progress bar

The calling thread dispatches the batches and waits for their results, so Ctrl-C reaches it. OpenCV and
TensorFlow release the GIL while they work, so the stages really run at the same time. A failure in any
stage stops the others and is raised here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from tfod_wrap.core.detections import Detections
from tfod_wrap.detect.inputs import Frame, Skipped, VideoEnd
from tfod_wrap.detect.models import Model
from tfod_wrap.detect.outputs import Outputs

_END = object()
_POLL_S = 0.1


class _Stopped(Exception):
    """Another stage failed; this one stops without a second error."""


class _Line:
    """A bounded queue between two stages whose put and get give up once a stage has failed."""

    def __init__(self, size: int, failed: threading.Event):
        self._queue: queue.Queue = queue.Queue(size)
        self._failed = failed

    def put(self, item) -> None:
        while not self._failed.is_set():
            try:
                return self._queue.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
        raise _Stopped

    def __iter__(self):
        while not self._failed.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item
        raise _Stopped


class _Stage(threading.Thread):
    """A daemon thread that keeps the exception of its work and flags the failure to the other stages."""

    def __init__(self, name: str, work: Callable[[], None], failed: threading.Event):
        super().__init__(name=f"detect-{name}", daemon=True)
        self._work, self._failed = work, failed
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except _Stopped:
            pass
        except BaseException as error:  # noqa: BLE001  (handed to the calling thread, which raises it)
            self.error = error
            self._failed.set()


def run(
    items: Iterable[Frame | Skipped | VideoEnd], models: list[Model], outputs: Outputs, batch: int, calls: int, bar
) -> dict[str, list[tuple[float, int]]]:
    """Run every item through the models into `outputs`, with `calls` batches in the models at once; returns
    {model name: [(milliseconds per image, images) of each call]}."""
    failed = threading.Event()
    size = 2 * batch + 2  # enough to keep every stage busy, small enough to keep memory flat
    frames, results = _Line(size, failed), _Line(size, failed)
    stages = [
        _Stage("reader", lambda: _feed(items, frames), failed),
        _Stage("writer", lambda: _write(results, outputs, bar), failed),
    ]
    for stage in stages:
        stage.start()
    latencies: dict[str, list[tuple[float, int]]] = {model.name: [] for model in models}
    try:
        _infer(frames, results, models, batch, calls, latencies)
    except _Stopped:
        pass
    except BaseException:
        failed.set()
        raise
    finally:
        for stage in stages:
            stage.join()
    for stage in stages:
        if stage.error is not None:
            raise stage.error
    return latencies


def _feed(items: Iterable, frames: _Line) -> None:
    for item in items:
        frames.put(item)
    frames.put(_END)


def _write(results: _Line, outputs: Outputs, bar) -> None:
    for item, detections in results:
        outputs.add(item, detections)
        if not isinstance(item, VideoEnd):
            bar.update(1)


def _infer(frames: _Line, results: _Line, models: list[Model], batch: int, calls: int, latencies: dict) -> None:
    """Batches of up to `batch` same-sized frames through every model, `calls` batches at once, results handed
    on in order; other items pass through in order."""
    in_flight: deque[tuple[list[Frame], Future]] = deque()

    def deliver(keep: int) -> None:
        """Hand the oldest batches' results on, in order, until at most `keep` are in flight."""
        while len(in_flight) > keep:
            done, future = in_flight.popleft()
            found = future.result()
            for index, frame in enumerate(done):
                results.put((frame, [per_model[index] for per_model in found]))

    def submit(pending: list[Frame]) -> list[Frame]:
        if pending:
            in_flight.append((pending, pool.submit(_run_models, pending, models, latencies)))
            deliver(keep=calls - 1)
        return []

    with ThreadPoolExecutor(calls, thread_name_prefix="detect-model") as pool:
        pending: list[Frame] = []
        for item in frames:
            if isinstance(item, Frame):
                if pending and item.image.shape != pending[0].image.shape:
                    pending = submit(pending)
                pending.append(item)
                if len(pending) >= batch:
                    pending = submit(pending)
            else:
                pending = submit(pending)
                deliver(keep=0)
                results.put((item, None))
        submit(pending)
        deliver(keep=0)
    results.put(_END)


def _run_models(pending: list[Frame], models: list[Model], latencies: dict) -> list[list[Detections]]:
    """Every model on one batch: [per model: [per frame: detections]]; the time per image goes to `latencies`."""
    images = [frame.rgb for frame in pending]
    found = []
    for model in models:
        started = time.perf_counter()
        runner = getattr(model, "sliced", None) or model  # `detect --tile` gives each model its sliced runner
        found.append(runner.batch(images))
        latencies[model.name].append(((time.perf_counter() - started) * 1000 / len(pending), len(pending)))
    return found
