"""Where the project's npm packages are, installing them, and running Node on them (the TF.js parity check, the
browser tests).

The packages are those of tfod_wrap/web/package.json, at the versions of its package-lock.json (both ship in the
wheel). `tfod-wrap install-web` (run by `make install`) installs them with `npm ci` into `PREFIX/node_modules`,
by default under the Python environment's prefix, so the package finds them from `sys.prefix` wherever it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.resources import package_file

REQUIRED = ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")


def node_modules() -> Path:
    """The node_modules folder holding TF.js; $TFOD_WRAP_NODE_MODULES overrides the venv's own."""
    folder = Path(os.environ.get("TFOD_WRAP_NODE_MODULES") or Path(sys.prefix) / "node_modules")
    missing = [name for name in REQUIRED if not (folder / name / "package.json").is_file()]
    if missing:
        raise UserError(
            f"{folder}: npm packages {', '.join(missing)} are missing; run `tfod-wrap install-web` "
            "(npm ci into the environment's prefix; `make install` in a checkout does it too), or set "
            "TFOD_WRAP_NODE_MODULES to a node_modules folder that has them"
        )
    return folder


def install_packages(prefix: str | Path | None = None, log=print) -> Path:
    """`npm ci` of the shipped package.json + package-lock.json into PREFIX/node_modules (default: sys.prefix).

    A no-op when the lock file there is already the shipped one."""
    prefix = Path(prefix or sys.prefix)
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("`npm` (Node.js 18 or newer) is not on PATH; install Node.js, then run tfod-wrap install-web")
    lock = package_file("web", "package-lock.json")
    copied_lock = prefix / "package-lock.json"
    installed = (prefix / "node_modules" / ".package-lock.json").is_file()
    if installed and copied_lock.is_file() and copied_lock.read_bytes() == lock.read_bytes():
        return prefix / "node_modules"
    prefix.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(package_file("web", name), prefix / name)
    log(f"npm ci --prefix {prefix}")
    command = [npm, "ci", "--prefix", str(prefix), "--no-audit", "--no-fund", "--prefer-offline"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"npm ci --prefix {prefix} failed: {result.stderr.strip()[-2000:]}")
    return prefix / "node_modules"


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
