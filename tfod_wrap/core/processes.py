"""Worker processes that never outlive their parent, SIGTERM handled like Ctrl-C, and signals held off while an
output is swapped in.

ProcessPoolExecutor starts its workers and then its manager thread, which alone can stop them: a Ctrl-C or SIGTERM
between the two left the workers waiting for work and the interpreter waiting for them at exit, forever; one inside
the thread's start made shutdown() fail; one inside an after-fork callback was dropped by Python and the run went
on. `worker_pool` starts the pool with those signals held, and `raise_if_interrupted` raises again a SIGTERM or
Ctrl-C that Python dropped anywhere else; `ctrl_c_delivered` also sends a dropped Ctrl-C again.

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
        with signals_deferred():
            executor.submit(int)  # the first task starts the workers and the manager thread, uninterrupted
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    # Ctrl-C reaches the whole process group. This process handles it and shuts the pool down; a worker that took
    # it too printed its traceback, and one cut off while sending a result would leave the pool a partial message.
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
    received: list[KeyboardInterrupt] = []
    lost: list[KeyboardInterrupt] = []

    def interrupt(signum, frame) -> None:
        if not received:
            received.append(KeyboardInterrupt("SIGTERM"))
            raise received[0]

    def keep_if_ours(unraisable) -> None:
        if received and unraisable.exc_value is received[0]:
            lost.append(received[0])  # raised again by raise_if_interrupted, where it counts
        else:
            previous_hook(unraisable)

    previous, previous_hook = signal.signal(signal.SIGTERM, interrupt), sys.unraisablehook
    sys.unraisablehook = keep_if_ours
    _LOST.append(lost)
    _RECEIVED.append(received)
    try:
        yield
        raise_if_interrupted()
    except SystemError as error:
        if not received:
            raise
        raise received[0] from error  # what native code made of the SIGTERM (see caused_by_interrupt)
    finally:
        _forget(_RECEIVED, received)
        _forget(_LOST, lost)
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


_LOST: list[list[KeyboardInterrupt]] = []  # per open block of either kind: its interrupts that Python dropped
_RECEIVED: list[list[KeyboardInterrupt]] = []  # per open block of either kind: the interrupts its signals raised
RESEND_SECONDS = 0.05


def _forget(registry: list[list[KeyboardInterrupt]], entry: list[KeyboardInterrupt]) -> None:
    """Take a block's list out of a registry by identity (list.remove takes the first equal one: any empty list)."""
    for index, each in enumerate(registry):
        if each is entry:
            del registry[index]
            return


@contextlib.contextmanager
def ctrl_c_delivered() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt as Python's own handler does, and one that Python drops is
    sent again. A signal's handler runs in whatever Python code the main thread is in; where that is a garbage
    collector callback (JAX, which TensorFlow's TFLite converter imports, installs one) or a __del__, Python
    prints "Exception ignored" and the command went on as if no key had been pressed. Only where Python's own
    handler is in place (not where Ctrl-C is ignored, as in a background job)."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[KeyboardInterrupt] = []
    dropped: list[KeyboardInterrupt] = []  # each taken once: raised by raise_if_interrupted, or sent again
    open_block = threading.Event()
    open_block.set()

    def interrupt(signum, frame) -> None:
        received.append(KeyboardInterrupt())
        raise received[-1]

    def send_again(lost: KeyboardInterrupt) -> None:
        try:
            dropped.remove(lost)
        except ValueError:  # raise_if_interrupted raised it meanwhile
            return
        if open_block.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    def resend_if_ours(unraisable) -> None:
        if any(unraisable.exc_value is ours for ours in received):
            # A command that commits its output within the delay would otherwise finish as if no key was pressed
            dropped.append(unraisable.exc_value)
            threading.Timer(RESEND_SECONDS, send_again, (unraisable.exc_value,)).start()
        else:
            previous_hook(unraisable)

    previous_hook = sys.unraisablehook
    signal.signal(signal.SIGINT, interrupt)
    sys.unraisablehook = resend_if_ours
    _RECEIVED.append(received)
    _LOST.append(dropped)
    try:
        yield
    except SystemError as error:
        if not received:
            raise
        raise KeyboardInterrupt from error  # what native code made of a Ctrl-C (see caused_by_interrupt)
    finally:
        open_block.clear()
        _forget(_RECEIVED, received)
        _forget(_LOST, dropped)
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, signal.default_int_handler)


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether `error` is an interrupt, or the SystemError that native code makes of one (a KeyboardInterrupt raised
    in a Python callback that TensorFlow's C++ code ran while tracing a function: "bad argument to internal
    function"), judged by an interrupt having arrived in an open `ctrl_c_delivered` or `terminate_as_interrupt`."""
    return isinstance(error, KeyboardInterrupt) or (isinstance(error, SystemError) and any(_RECEIVED))


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt of a SIGTERM or Ctrl-C that Python dropped, for the places where work would
    otherwise go on (between results, before an output is committed). A signal's handler runs in whatever Python
    code the main thread is in; where that is a callback whose exceptions Python reports and ignores (an at-fork
    handler while a worker starts, a __del__, a garbage-collector callback), the KeyboardInterrupt never reaches
    the command."""
    for lost in _LOST:
        try:
            interrupt = lost.pop()
        except IndexError:  # none, or ctrl_c_delivered's timer took it just now
            continue
        raise interrupt


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
