"""Reading the small text inputs (pipeline.config, label maps, report.json) so that a wrong path is an error
naming the file, never a traceback, a hang or an exhausted memory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tfod_wrap.core.errors import UserError

# Far above any real config, label map or report (COCO's 90-class label map is 4 KiB); a bigger file is not one.
MAX_TEXT_BYTES = 64 * 2**20


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a regular file. FIFOs and devices are refused before they are opened (/dev/zero never
    ends, a FIFO blocks for ever), folders, symlink loops and unreadable files name the OS's reason."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as error:
        raise UserError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file (a device, FIFO or socket), not a {what}")
    if info.st_size > MAX_TEXT_BYTES:
        raise UserError(f"{path}: {info.st_size / 2**20:.0f} MiB is far too large for a {what}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start}), not a {what}") from None


def read_json(path: str | Path, what: str):
    """Parsed JSON of a file read as `read_text` does; a syntax error names the file, line and column."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except RecursionError:  # e.g. 100000 nested brackets
        raise UserError(f"{path}: JSON nested too deeply to be a {what}") from None
