"""Worker processes that never outlive their parent, SIGTERM handled like Ctrl-C, and signals held off while an
output is swapped in.

ProcessPoolExecutor.shutdown() stops the workers through the pool's manager thread. A Ctrl-C or SIGTERM that lands
after the workers started but before that thread did leaves them waiting for work, and the interpreter waiting for
them at exit, forever: `worker_pool` kills what shutdown() left running. It does not kill workers that the manager
thread still runs: one killed while sending a result leaves a partial message that the thread waits for forever.

A pool worker blocks on a pipe to its parent. When the parent is killed (kill -9, the OOM killer) the pipe
stays open in the other workers and nothing wakes them: they would stay forever. On Linux the kernel sends
them SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a thread in each worker watches the
parent's pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this process when `parent_pid` ends."""
    if not _set_death_signal():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


def _set_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


@contextlib.contextmanager
def worker_pool(
    workers: int, context: BaseContext, initializer: Callable | None = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor shut down on leaving the block (pending work cancelled, running work finished), whose
    workers leave Ctrl-C to this process and never outlive the block."""
    executor = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(initializer, initargs)
    )
    try:
        yield executor
    finally:
        started = list((executor._processes or {}).values())  # noqa: SLF001  (no public list of them)
        executor.shutdown(wait=True, cancel_futures=True)
        for worker in started:
            if worker.is_alive():  # the pool's manager thread never started: nobody told them to stop
                worker.kill()
                worker.join()


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    # Ctrl-C reaches the whole process group. This process handles it and shuts the pool down; a worker
    # interrupted while sending a result would leave a partial message that the pool waits for forever.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, the first SIGTERM raises KeyboardInterrupt, so cleanup (`finally`, staging folders,
    pool shutdown) runs as for Ctrl-C instead of the process vanishing mid-write; later ones are ignored while
    that cleanup runs. Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def interrupt(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


HELD = (signal.SIGINT, signal.SIGTERM)  # what signals_deferred holds: Ctrl-C and the polite kill


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive within the block take effect as it ends, so steps that must happen together
    (the renames that swap an output folder) are never cut between two of them. Only in the main thread, where
    Python delivers signals, and where the handlers were set from Python (one set from C cannot be put back);
    elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, HELD):
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in HELD}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])  # now, to whatever handled it before the block (or its default)
