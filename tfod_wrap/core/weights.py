"""Where a model's weights come from: the cache of pretrained weights, the start a template gets by default
(`tfod-wrap config TEMPLATE` without --checkpoint), and the origin of any fine-tune checkpoint (for config show and
the training log).

The default start, in order: the template's model-zoo checkpoint already in the cache; for ssd_mobilenet_v2, the
offline import of @mediapipe/objectron's TFLite model already in the cache; the zoo download (only when the network
answers, once, into the cache); for ssd_mobilenet_v2, the offline import, made now and cached. Where none of them
is possible the config stops and names the options: nobody gets a silent random start. The last two make new
weights, which is the `pretrained` stage's work: only they import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import read_json_object

# Our templates and the zoo tarball each was taken from (the TF2 Detection Model Zoo table).
TEMPLATE_TARBALLS = {
    "ssd_mobilenet_v2": "ssd_mobilenet_v2_320x320_coco17_tpu-8",
    "ssd_mobilenet_v2_fpnlite_320": "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8",
    "ssd_mobilenet_v2_fpnlite_640": "ssd_mobilenet_v2_fpnlite_640x640_coco17_tpu-8",
    "ssd_mobilenet_v1_fpn_640": "ssd_mobilenet_v1_fpn_640x640_coco17_tpu-8",
    "ssd_resnet50_v1_fpn_640": "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8",
    "efficientdet_d0": "efficientdet_d0_coco17_tpu-32",
    "centernet_resnet50_v2_512": "centernet_resnet50_v2_512x512_coco17_tpu-8",
    "faster_rcnn_resnet50_v1_640": "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8",
}
MATCH_FILE = "template_match.txt"  # a zoo download's comparison with our template, beside its checkpoint
IMPORT_KIND = "tfod-wrap pretrained import-tflite"  # report.json's kind of an offline import
OBJECTRON_TEMPLATE = "ssd_mobilenet_v2"  # the architecture of the TFLite model @mediapipe/objectron bundles
OBJECTRON_FOLDER = "objectron_ssd_mobilenet_v2"


@dataclass(frozen=True)
class PretrainedStart:
    folder: Path  # holds checkpoint/ckpt-0 (a zoo folder, or an import)
    checkpoint_type: str
    origin: str  # one line: where the weights come from


class NoPretrainedStart(UserError):
    """No pretrained weights can be had for a template here."""


def cache_dir() -> Path:
    """$TFOD_WRAP_CACHE, else $XDG_CACHE_HOME/tfod-wrap, else ~/.cache/tfod-wrap."""
    if os.environ.get("TFOD_WRAP_CACHE"):
        return Path(os.environ["TFOD_WRAP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfod-wrap"


def default_start(template: str, *, log=print) -> PretrainedStart:
    """The pretrained weights for `template` (see the module docstring); raises NoPretrainedStart with the options."""
    if template not in TEMPLATE_TARBALLS:
        raise NoPretrainedStart(f"{template}: no pretrained weights are known for it; pass --checkpoint PREFIX or none")
    zoo = cache_dir() / "models" / TEMPLATE_TARBALLS[template]
    imported = cache_dir() / "models" / OBJECTRON_FOLDER
    if _has_checkpoint(zoo):
        return _start(zoo)
    if template == OBJECTRON_TEMPLATE and _has_checkpoint(imported):
        return _start(imported)
    from tfod_wrap.pretrained import download, import_objectron

    try:
        return _start(download(template, log=log))
    except UserError as offline:
        if template != OBJECTRON_TEMPLATE:
            raise NoPretrainedStart(_options(template)) from None
        log(f"{offline}\nno download: importing the offline SSD MobileNet V2 instead (once, into {imported})")
    import_objectron(imported, log=log)
    return _start(imported)


def checkpoint_origin(prefix: str | Path) -> str:
    """Where a fine_tune_checkpoint's weights come from, read from the files tfod-wrap wrote beside it."""
    prefix = Path(prefix)
    folder = prefix.parent.parent if prefix.parent.name == "checkpoint" else prefix.parent
    report = read_json_object(folder / "report.json") or {}
    if report.get("kind") == IMPORT_KIND:
        source = report.get("source", {})
        return (
            f"{source.get('package')}@{source.get('version')}'s TFLite SSD MobileNet V2 (Open Images V4), "
            "imported offline by tfod-wrap pretrained import-tflite"
        )
    if (folder / MATCH_FILE).is_file():
        return f"TF2 model zoo {folder.name} (COCO 2017), via tfod-wrap pretrained download"
    return "a checkpoint given with --checkpoint"


def _start(folder: Path) -> PretrainedStart:
    return PretrainedStart(folder, "detection", checkpoint_origin(folder / "checkpoint" / "ckpt-0"))


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoint" / "ckpt-0.index").is_file()


def _options(template: str) -> str:
    name = TEMPLATE_TARBALLS[template]
    return (
        f"{template}: no pretrained weights in the cache and the model-zoo download failed (offline?). Options: "
        f"copy {name}.tar.gz over and run "
        f"`tfod-wrap pretrained download {template} --archive PATH` (cached, then used by default); pass "
        "--checkpoint PREFIX (a checkpoint or model-zoo folder); or --checkpoint none to train from random "
        "weights, knowingly"
    )
