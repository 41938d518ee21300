"""The detectors `tfod-wrap detect` runs, whatever their kind, as one Detector: RGB images -> Detections.

Kinds of --model:
    export       a `tfod-wrap export` folder (label_map.pbtxt beside saved_model/), or its saved_model/ folder
    zoo          a model-zoo folder (what `tfod-wrap pretrained download` unpacks: checkpoint/, saved_model/,
                 pipeline.config)
    saved_model  any other folder holding a SavedModel
    hub          a TF Hub handle (http:// or https://), fetched into tensorflow_hub's cache
Every kind is loaded with `tensorflow_hub.load` (a local SavedModel folder is a Hub module) and run as a
`tfod_wrap.core.detector.SavedModelDetector`, through its serving_default signature. TFOD exports, and so the
zoo's and TF Hub's TF2 detection models, all have one, with the outputs used here: detection_boxes (normalised
ymin, xmin, ymax, xmax), detection_classes (label-map ids), detection_scores and num_detections.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import tensorflow as tf

from tfod_wrap.core.detector import SavedModelDetector
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.labelmap import check_label_map

OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
LABEL_MAP = "label_map.pbtxt"
COCO_CLASSES = 90  # TFOD's COCO label map uses ids 1..90 (80 classes, with gaps)
# The PyPI TFOD package leaves out object_detection/data/, so the COCO names ship with tfod-wrap.
COCO_LABEL_MAP = Path(__file__).with_name("mscoco_label_map.pbtxt")
# The address checked before a remote handle is fetched (default: the handle itself).
HUB_CHECK_ENV = "TFOD_WRAP_HUB_URL"
CONNECT_TIMEOUT_S = 10


class DetectError(UserError):
    """A model or input that detect cannot use; the message says which and why."""


class Model(SavedModelDetector):
    """A loaded detector with its name and class names: `model(image)` or `model.batch(images)` (RGB uint8)
    gives Detections, several same-sized images in one call when the model takes a batch."""

    def __init__(self, name: str, source: str, kind: str, loaded, class_names: dict[int, str], labels: str):
        super().__init__(loaded)
        self.name, self.source, self.kind = name, source, kind
        self.class_names, self.labels = class_names, labels


def load_model(spec: str | Path, label_map: str | Path | None = None, name: str | None = None) -> Model:
    """Load a --model (folder or Hub handle) with its class names: `label_map` if given, else the label map beside
    the model, else the COCO names for a Hub model or any model with COCO's 90 class ids."""
    spec = str(spec)
    if is_remote(spec):
        loaded, owner, kind = _load_hub(spec), None, "hub"
    else:
        saved_model, owner = _saved_model_folder(Path(spec))
        kind = _local_kind(owner)
        loaded = _load_local(saved_model)
    _check_outputs(spec, loaded)
    names, labels = _class_names(loaded, kind, owner, Path(label_map) if label_map else None)
    return Model(name or model_name(spec), spec, kind, loaded, names, labels)


def is_remote(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def model_name(spec: str) -> str:
    """A short name for headers and folders: the export or zoo folder's name, or a Hub handle's last two parts."""
    if is_remote(spec):
        parts = [part for part in spec.split("?")[0].split("/")[3:] if part]
        name = "_".join(parts[-2:]) or "hub"
    else:
        path = Path(spec).resolve()
        name = (path.parent if path.name == "saved_model" else path).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _saved_model_folder(path: Path) -> tuple[Path, Path]:
    """(the SavedModel folder, the folder it came in: where its label map would be)."""
    if (path / "saved_model.pb").is_file():
        return path, path.parent if path.name == "saved_model" else path
    if (path / "saved_model" / "saved_model.pb").is_file():
        return path / "saved_model", path
    what = "no such folder" if not path.exists() else "no saved_model.pb in it or in its saved_model/ folder"
    raise DetectError(f"{path}: {what}; pass an export folder, a model-zoo folder, a SavedModel or a TF Hub handle")


def _local_kind(owner: Path) -> str:
    if (owner / LABEL_MAP).is_file():
        return "export"
    if (owner / "pipeline.config").is_file() and (owner / "checkpoint").is_dir():
        return "zoo"
    return "saved_model"


def _load_local(saved_model: Path):
    import tensorflow_hub as hub

    try:
        return hub.load(str(saved_model))
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise DetectError(f"{saved_model}: cannot load the SavedModel ({error})") from None


def _load_hub(handle: str):
    import tensorflow_hub as hub

    if not _in_hub_cache(handle):
        _check_reachable(handle)
    try:
        return hub.load(handle)
    except (OSError, ValueError, tf.errors.OpError, urllib.error.URLError) as error:
        raise DetectError(f"{handle}: tensorflow_hub cannot load it ({error})") from None


def _in_hub_cache(handle: str) -> bool:
    """Whether tensorflow_hub has the handle already (its compressed-format cache: one folder per handle, named
    by the handle's SHA-1), so it loads without the network."""
    from tensorflow_hub import resolver

    folder = Path(resolver.tfhub_cache_dir(use_temp=True)) / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return folder.is_dir() and any(folder.iterdir())


def _check_reachable(handle: str) -> None:
    """Fail within seconds when the Hub cannot be reached: tensorflow_hub's own download has no timeout."""
    url = os.environ.get(HUB_CHECK_ENV) or handle
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=CONNECT_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # a server answered; a wrong handle is then tensorflow_hub's to report
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DetectError(
            f"{handle}: cannot reach {url} ({reason}). This machine looks offline: load the handle once where there "
            "is a network (tensorflow_hub keeps it in $TFHUB_CACHE_DIR), or unpack the model's SavedModel here "
            "and pass its folder to --model"
        ) from None


def _check_outputs(spec: str, loaded) -> None:
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise DetectError(f"{spec}: no serving_default signature; detect runs TFOD-exported detection models")
    _, inputs = signature.structured_input_signature
    missing = [key for key in OUTPUTS if key not in signature.structured_outputs]
    if missing or len(inputs) != 1:
        raise DetectError(
            f"{spec}: not a TFOD detection model: serving_default takes {', '.join(inputs) or 'nothing'} and returns "
            f"{', '.join(sorted(signature.structured_outputs))}; detect needs one image input and {', '.join(OUTPUTS)}"
        )


def _class_names(loaded, kind: str, owner: Path | None, label_map: Path | None) -> tuple[dict[int, str], str]:
    """({id: display name}, where they came from)."""
    beside = owner / LABEL_MAP if owner else None
    path = label_map or (beside if beside and beside.is_file() else None)
    if path:
        return read_names(path), str(path)
    if kind == "hub" or _class_count(loaded) == COCO_CLASSES:
        return read_names(COCO_LABEL_MAP), "COCO"
    return {}, f"class ids: no {LABEL_MAP} beside the model; pass --label-map FILE"


def _class_count(loaded) -> int | None:
    """The number of classes, from the static shape of detection_multiclass_scores (background included)."""
    scores = loaded.signatures["serving_default"].structured_outputs.get("detection_multiclass_scores")
    last = scores.shape[-1] if scores is not None and scores.shape.rank else None
    return last - 1 if last else None


def read_names(path: Path) -> dict[int, str]:
    """{id: display name} of a label map (COCO's names are ids like /m/01g317, its display names are words)."""
    from object_detection.utils import label_map_util

    problems = check_label_map(path)
    if problems:
        raise DetectError("\n".join(problems))
    index = label_map_util.create_category_index_from_labelmap(str(path), use_display_name=True)
    return {class_id: entry["name"] for class_id, entry in index.items()}
