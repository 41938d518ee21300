"""`tfod-wrap pretrained download`: TF2 model-zoo tarballs, unpacked into a cache, their config checked against ours.

The only network access in tfod-wrap, and only on this explicit request. Offline it fails within seconds and
says how to unpack a tarball copied over by hand (`--archive`).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_text, check_output, claim_output
from tfod_wrap.core.pipeline import diff, format_diff, load
from tfod_wrap.core.weights import MATCH_FILE, TEMPLATE_TARBALLS, cache_dir

ZOO_URL = "http://download.tensorflow.org/models/object_detection/tf2/20200711/"
CONNECT_TIMEOUT_S = 10
KIND = "pretrained download"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)


def tarball_name(model: str) -> str:
    """A template name (ssd_mobilenet_v2) or a zoo tarball name, with or without .tar.gz."""
    name = model.removesuffix(".tar.gz")
    return TEMPLATE_TARBALLS.get(name, name)


def download(model: str, *, archive: str | Path | None = None, output: str | Path | None = None, log=print) -> Path:
    """Fetch (or take `archive`) and unpack a zoo model; returns its folder (checkpoint/, pipeline.config, ...).

    A folder that already holds the unpacked model is returned as is: the download happens once.
    """
    name = tarball_name(model)
    target = Path(output) if output else cache_dir() / "models" / name
    if (target / "checkpoint" / "ckpt-0.index").is_file():
        log(f"{name}: already in {target}")
        return target
    check_output(target, KIND, legacy=_earlier_download)  # before a download of minutes
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.download-") as scratch:
        tarball = Path(archive) if archive else _fetch(name, Path(scratch) / f"{name}.tar.gz", log)
        with claim_output(target, KIND, legacy=_earlier_download) as staging:
            _unpack(tarball, staging)
            note = template_match(staging / "pipeline.config", model)
            atomic_write_text(staging / MATCH_FILE, note + "\n")
    log(f"{name}: unpacked into {target}\n{note}")
    return target


def _earlier_download(target: Path) -> bool:
    """A model unpacked by the versions before the ownership marker: its MATCH_FILE, as template_match writes it,
    beside a pipeline.config."""
    try:
        note = (target / MATCH_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return (target / "pipeline.config").is_file() and note.startswith(("model section ", "no tfod-wrap template "))


def _fetch(name: str, destination: Path, log) -> Path:
    url = os.environ.get("TFOD_WRAP_ZOO_URL", ZOO_URL) + f"{name}.tar.gz"
    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response, open(destination, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except urllib.error.HTTPError as error:
        raise UserError(f"{url}: HTTP {error.code}; is {name!r} a TF2 model-zoo model? ({error.reason})") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"{url}: cannot download ({reason}). This machine looks offline: copy {name}.tar.gz here and run "
            f"`tfod-wrap pretrained download {name} --archive PATH`"
        ) from None
    return destination


def _unpack(tarball: Path, staging: Path) -> None:
    """Extract the tarball's single top folder into `staging` (the "data" filter refuses links and ../ escapes)."""
    if not tarball.is_file():  # a device (/dev/zero) reads for ever and a FIFO blocks: never open them
        raise UserError(f"{tarball}: not a regular file; --archive takes a model-zoo .tar.gz")
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(staging / ".unpacked", filter="data")
    except (tarfile.TarError, OSError) as error:
        raise UserError(f"{tarball}: not a readable model-zoo tarball ({error})") from None
    tops = list((staging / ".unpacked").iterdir())
    root = tops[0] if len(tops) == 1 and tops[0].is_dir() else staging / ".unpacked"
    for item in root.iterdir():
        item.rename(staging / item.name)
    shutil.rmtree(staging / ".unpacked")
    if not (staging / "checkpoint" / "ckpt-0.index").is_file() or not (staging / "pipeline.config").is_file():
        raise UserError(f"{tarball}: no checkpoint/ckpt-0 and pipeline.config inside; not a TF2 model-zoo tarball")


def template_match(pipeline: Path, model: str) -> str:
    """How the tarball's pipeline.config compares with our template of the same model (the model section only:
    paths and schedules differ by design)."""
    template = next((key for key, value in TEMPLATE_TARBALLS.items() if value == tarball_name(model)), None)
    if template is None:
        return f"no tfod-wrap template for {model}: use its pipeline.config with `tfod-wrap config FILE`"
    differences = diff(load(template).model, load(pipeline).model)
    if not differences:
        return f"model section identical to pipelines/{template}.config: use `tfod-wrap config {template} --checkpoint`"
    listed = format_diff(differences)
    return f"model section differs from pipelines/{template}.config in {len(differences)} fields:\n{listed}"
