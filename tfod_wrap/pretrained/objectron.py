"""The TFOD-exported TFLite SSD MobileNet V2 (Open Images V4, 23 classes) inside npm's @mediapipe/objectron.

The package's `objectron_solution_packed_assets.data` is an Emscripten file package: files laid end to end, their
names and byte ranges listed in `objectron_solution_packed_assets_loader.js` (`loadPackage({"files": [...]})`).
It holds the model (`object_detection_ssd_mobilenetv2_oidv4_fp16.tflite`, bytes 184..9,987,912) and its label map
(`object_detection_oidv4_labelmap.txt`, bytes 0..184: `???` for the background, then the 23 class names in the
model's class order). Both are checked against pinned sha256 values. Apache-2.0, as the package says.

The package comes from the project's node_modules (`make install`); if it is not there, `locate_package` fetches it
once with `npm pack` into the cache (an explicit user request; offline it fails within about a minute, saying so).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import claim_output

PACKAGE = "@mediapipe/objectron"
VERSION = "0.4.1675468480"
LICENSE = "Apache-2.0"
DATA_FILE = "objectron_solution_packed_assets.data"
LOADER_FILE = "objectron_solution_packed_assets_loader.js"
MODEL_ENTRY = "object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"
LABELS_ENTRY = "object_detection_oidv4_labelmap.txt"
# What the loader of version VERSION says; a loader giving other ranges is refused (checked, not trusted).
MODEL_RANGE = (184, 9_987_912)
LABELS_RANGE = (0, 184)
MODEL_SHA256 = "d0a5255bf8c4f5a0bc4240741a76c41d5e939f7655078f945f50ab53a9375da6"
LABELS_SHA256 = "c148336a65f673013609a923fdcbdeec0f49df935045029c3746a3828a0e80e0"
NPM_TIMEOUT_S = 90


@dataclass(frozen=True)
class ObjectronModel:
    package_dir: Path
    version: str
    data_file: Path
    tflite: bytes
    byte_range: tuple[int, int]
    sha256: str
    labels: list[str]  # the 23 class names, ids 1..23 (the background row `???` dropped)

    def source(self) -> dict:
        return {
            "package": PACKAGE,
            "version": self.version,
            "license": LICENSE,
            "file": DATA_FILE,
            "entry": MODEL_ENTRY,
            "byte_range": list(self.byte_range),
            "sha256": self.sha256,
            "labels": f"{LABELS_ENTRY} (bytes {LABELS_RANGE[0]}..{LABELS_RANGE[1]} of {DATA_FILE})",
        }


def locate_package(*, fetch: bool = True, log=print) -> Path:
    """The @mediapipe/objectron folder: the project's node_modules, else the cache, else `npm pack` into the cache."""
    from tfod_wrap.core import nodejs

    try:
        candidates = [nodejs.node_modules() / PACKAGE]
    except UserError:
        candidates = []  # TF.js missing: the objectron package may still be in the cache
    cached = cache_folder() / "package"
    for folder in [*candidates, cached]:
        if (folder / DATA_FILE).is_file() and (folder / LOADER_FILE).is_file():
            return folder
    if not fetch:
        raise UserError(f"npm package {PACKAGE}@{VERSION} not found (run `make install`)")
    return fetch_package(log=log)


def cache_folder() -> Path:
    from tfod_wrap.core.weights import cache_dir

    return cache_dir() / "npm" / f"mediapipe-objectron-{VERSION}"


def fetch_package(*, log=print) -> Path:
    """`npm pack @mediapipe/objectron@VERSION`, unpacked into the cache; returns the package folder."""
    npm = shutil.which("npm")
    spec = f"{PACKAGE}@{VERSION}"
    if npm is None:
        raise UserError(f"npm package {spec} is not installed and `npm` is not on PATH to fetch it; run `make install`")
    target = cache_folder()
    log(f"fetching {spec} with npm pack into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".npm-pack-") as scratch:
        command = [npm, "pack", spec, "--pack-destination", scratch, "--fetch-retries=0", "--fetch-timeout=20000"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(
                f"`npm pack {spec}` gave no answer in {NPM_TIMEOUT_S} s: the npm registry looks unreachable. "
                "Install it with `make install` where the registry can be reached."
            ) from None
        tarballs = list(Path(scratch).glob("*.tgz"))
        if result.returncode != 0 or len(tarballs) != 1:
            detail = (result.stderr or result.stdout).strip()[-800:]
            raise UserError(f"`npm pack {spec}` failed (offline? no registry access?): {detail}")
        # the cache's own folder; still claimed, since TFOD_WRAP_CACHE may point anywhere
        with claim_output(target, "objectron package", legacy=_earlier_cache) as staging:
            try:
                with tarfile.open(tarballs[0]) as archive:
                    archive.extractall(staging, filter="data")
            except (tarfile.TarError, OSError) as error:
                raise UserError(f"{tarballs[0].name}: not a readable npm tarball ({error})") from None
            if not (staging / "package" / DATA_FILE).is_file():
                raise UserError(f"{spec}: the npm tarball has no package/{DATA_FILE}")
    return target / "package"


def _earlier_cache(target: Path) -> bool:
    """The package unpacked by the versions before the ownership marker: package/ and nothing else."""
    return [path.name for path in target.iterdir()] == ["package"] and (target / "package" / DATA_FILE).is_file()


def packed_files(loader: Path) -> dict[str, tuple[int, int]]:
    """{file name: (start, end)} from the Emscripten loader's `loadPackage({"files": [...]})` call."""
    text = loader.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"loadPackage\((\{.*?\})\);", text, re.DOTALL)
    try:
        files = json.loads(match.group(1))["files"] if match else None
        return {Path(item["filename"]).name: (int(item["start"]), int(item["end"])) for item in files or []}
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{loader}: cannot read the packed file list ({error})") from None


def load(package_dir: str | Path | None = None, *, fetch: bool = True, log=print) -> ObjectronModel:
    """Extract and check the TFLite model and the label map from the package (located or fetched if not given)."""
    folder = Path(package_dir) if package_dir else locate_package(fetch=fetch, log=log)
    data_file, loader = folder / DATA_FILE, folder / LOADER_FILE
    for path in (data_file, loader):
        if not path.is_file():
            raise UserError(f"{path}: missing; not a {PACKAGE} package folder")
    files = packed_files(loader)
    for entry, pinned in ((MODEL_ENTRY, MODEL_RANGE), (LABELS_ENTRY, LABELS_RANGE)):
        if files.get(entry) != pinned:
            raise UserError(
                f"{loader}: {entry} is listed at {files.get(entry)}, expected bytes {pinned[0]}..{pinned[1]} "
                f"(a {PACKAGE} version other than {VERSION}?)"
            )
    data = data_file.read_bytes()
    model = _checked(data, files[MODEL_ENTRY], MODEL_SHA256, data_file, MODEL_ENTRY)
    labels = _checked(data, files[LABELS_ENTRY], LABELS_SHA256, data_file, LABELS_ENTRY)
    labels = labels.decode("utf-8").splitlines()
    if labels[0] != "???" or len(labels) != 24:
        raise UserError(f"{data_file}: unexpected label map {labels[:3]}... (expected ??? then 23 names)")
    return ObjectronModel(
        package_dir=folder,
        version=_version(folder),
        data_file=data_file,
        tflite=model,
        byte_range=files[MODEL_ENTRY],
        sha256=MODEL_SHA256,
        labels=labels[1:],
    )


def _checked(data: bytes, byte_range: tuple[int, int], pinned: str, data_file: Path, entry: str) -> bytes:
    start, end = byte_range
    if len(data) < end:
        raise UserError(f"{data_file}: {len(data)} bytes, too short for {entry} at bytes {start}..{end}")
    part = data[start:end]
    digest = hashlib.sha256(part).hexdigest()
    if digest != pinned:
        raise UserError(
            f"{data_file}: bytes {start}..{end} ({entry}) have sha256 {digest}, expected {pinned}; the file is "
            f"corrupt or not from {PACKAGE}@{VERSION} (reinstall it: make install)"
        )
    return part


def _version(folder: Path) -> str:
    try:
        return json.loads((folder / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return VERSION  # the sha256 check already proved the bytes are this version's
