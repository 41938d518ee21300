"""Atomic file and folder writes, shared by every stage: an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.processes import raise_if_interrupted, signals_deferred


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # named before it is created, so an interrupt at any point leaves no temporary file behind (see _unused_name)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.partial"
    try:
        with open(temporary, "xb") as stream:  # mode 0666 less the umask: what open() gives any output
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())  # the bytes on disk before the name: a power loss never leaves an empty file
        os.replace(temporary, path)
        fsync_directory(path.parent)  # and the rename itself on disk
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def fsync_directory(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (POSIX: fsync the folder; not possible on Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse fsync on folders; nothing more can be done there
    finally:
        os.close(handle)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def replace_folder(staging: Path, target: Path) -> None:
    """Move a finished staging folder to `target`, replacing a previous output there.

    The old folder is renamed away first and deleted only after the new one is in place, so at every
    moment `target` is either the complete old output or the complete new one.
    """
    raise_if_interrupted()  # a SIGTERM or Ctrl-C lost on the way must not let its run commit an output
    if not target.exists():
        os.replace(staging, target)
        fsync_directory(target.parent)
        return
    retired = _unused_name(target, "old")
    with signals_deferred():  # Ctrl-C or SIGTERM between the renames would leave no output at `target`
        os.replace(target, retired)
        os.replace(staging, target)
        fsync_directory(target.parent)
        shutil.rmtree(retired)


def _unused_name(target: Path, role: str) -> Path:
    """`.NAME.ROLE-HOST-PID-RANDOM` beside `target`, not created: a caller that creates it inside its `try` can
    never leave it behind when interrupted (a name returned by mkdtemp can be lost between the syscall and the
    assignment, with the folder already on disk)."""
    return target.parent / f".{target.name}.{role}-{_owner_tag()}-{secrets.token_hex(8)}"


def _owner_tag() -> str:
    """host and pid of this process, as staging folders carry them: a later run can tell a dead owner's."""
    host = "".join(char for char in socket.gethostname().split(".")[0] if char.isalnum() or char == "-") or "host"
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete the staging (`.NAME.partial-HOST-PID-*`) and retired (`.NAME.old-HOST-PID-*`) folders of `target`
    that a process of this host left behind when it was killed (its pid no longer runs). Folders of live
    processes, of other hosts (a shared file system) and of unknown owners are left alone."""
    host, _ = _owner_tag().rsplit("-", 1)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-{re.escape(host)}-(\d+)-[^/]+")
    removed = []
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not _alive(int(match.group(2))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A fresh folder beside `target` to build an output in; it replaces `target` whole if the block succeeds.

    Beside, not in /tmp, so the final rename stays on one file system; a failure removes it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = _unused_name(target, "partial")
    try:
        staging.mkdir()
        yield staging
        replace_folder(staging, target)
    finally:
        with signals_deferred():
            shutil.rmtree(staging, ignore_errors=True)


# ---- ownership of output folders ------------------------------------------------------------------------------
# Every command that replaces a folder whole (tfrecords, export, detect, pretrained, sample data) writes this file
# into it and replaces only folders that hold it: a file name no user picks, with the tool's name inside, so a
# user's folder that happens to hold a summary.json or report.json is never taken for an earlier output.
OWNER_FILE = ".tfod-wrap-output.json"
OWNER_TOOL = "tfod-wrap"


def read_json_object(path: Path) -> dict | None:
    """The JSON object in `path`; None when it is missing, unreadable or not an object (the legacy checks ask)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _owner(folder: Path) -> dict | None:
    """The ownership marker of `folder`, or None when it has none (or one that tfod-wrap did not write)."""
    marker = read_json_object(folder / OWNER_FILE)
    if marker is None or marker.get("tool") != OWNER_TOOL or not isinstance(marker.get("kind"), str):
        return None
    return marker


def check_output(target: Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """Raise UserError unless `target` may be replaced by a `kind` output: it is absent, an empty folder, or a
    folder this tool wrote as `kind` that holds nothing else at its top level. `legacy(target)` recognises the
    outputs of versions before the marker existed."""
    if not target.exists():
        return
    if not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder; choose another output folder")
    try:
        entries = {path.name for path in target.iterdir()}
    except OSError as error:
        raise UserError(f"{target}: cannot list the folder ({error.strerror or error}); choose another") from None
    if not entries:
        return
    marker = _owner(target)
    if marker is None:
        if legacy is not None and legacy(target):
            return
        raise UserError(
            f"{target}: a non-empty folder not written by tfod-wrap (no {OWNER_FILE}); refusing to replace it: "
            "choose a new or empty output folder, or remove it yourself"
        )
    if marker["kind"] != kind:
        raise UserError(f"{target}: holds a tfod-wrap {marker['kind']} output, not a {kind} output; choose another")
    foreign = sorted(entries - set(marker.get("entries") or ()) - {OWNER_FILE})
    if foreign:
        raise UserError(
            f"{target}: an earlier {kind} output, but it now also holds {', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}, which tfod-wrap did not write; move them out or choose another"
        )


def mark_output(folder: Path, kind: str) -> None:
    """Write the ownership marker: the kind, the tool version and the top-level entries written (no time, so two
    runs of the same command write the same bytes)."""
    from tfod_wrap import __version__

    entries = sorted(path.name for path in folder.iterdir() if path.name != OWNER_FILE)
    marker = {"tool": OWNER_TOOL, "kind": kind, "version": __version__, "entries": entries}
    atomic_write_json(folder / OWNER_FILE, marker)


@contextmanager
def claim_output(path: Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """A staging folder for a `kind` output that replaces `path` whole when the block succeeds (`staged_folder`),
    marked as this tool's; refuses (UserError) to replace a folder that is not an earlier `kind` output (see
    `check_output`), both before the work and again just before the swap, since the work can take hours."""
    path = Path(path)
    check_output(path, kind, legacy)
    with staged_folder(path) as staging:
        yield staging
        mark_output(staging, kind)
        check_output(path, kind, legacy)
