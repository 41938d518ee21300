"""Where the project's npm packages are, and running Node on them (the TF.js parity check, the browser tests).

`make install` installs package.json's packages into `.venv/node_modules`, i.e. under the virtual environment's
prefix, so the Python package finds them from `sys.prefix` wherever the checkout is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tfod_wrap.errors import UserError

REQUIRED = ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")


def node_modules() -> Path:
    """The node_modules folder holding TF.js; $TFOD_WRAP_NODE_MODULES overrides the venv's own."""
    folder = Path(os.environ.get("TFOD_WRAP_NODE_MODULES") or Path(sys.prefix) / "node_modules")
    missing = [name for name in REQUIRED if not (folder / name / "package.json").is_file()]
    if missing:
        raise UserError(
            f"{folder}: npm packages {', '.join(missing)} are missing; run `make install` "
            "(or set TFOD_WRAP_NODE_MODULES to a node_modules folder that has them)"
        )
    return folder


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise UserError("`node` (Node.js 18 or newer) is not on PATH; it runs the TF.js model outside the browser")
    return node


def run_node(script: Path, *arguments: str, timeout: float = 600) -> str:
    """Run a Node script; its stderr becomes the error message when it fails."""
    result = subprocess.run(
        [node_executable(), str(script), *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise UserError(f"{script.name} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout
