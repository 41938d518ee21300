"""`tfod-wrap eval --detections`: score the detections.json that `tfod-wrap detect` wrote against TFRecords.

detect writes, beside detections.json (COCO results), images.json: its image ids with the file name of each
image, relative to the folder it was found in. Records carry `image/filename`; the two are matched by that
name, so the detections count against exactly the ground truth of the image they were made on.
"""

from __future__ import annotations

import json
from pathlib import Path

from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.manifests import DetectFolder
from tfod_wrap.evaluate.run import EvalError, collect, score_collected

DETECTIONS, IMAGES = DetectFolder.DETECTIONS, DetectFolder.IMAGES  # detect writes them, eval reads them


def detections_file(path: str | Path) -> Path:
    """detections.json itself, or the folder holding it (a detect output with one model, or a model's folder)."""
    path = Path(path)
    if path.is_dir():
        if not (path / DETECTIONS).is_file():
            nested = sorted(p.parent.name for p in path.glob(f"*/{DETECTIONS}"))
            hint = f"; it has one folder per model: pass {path}/{nested[0]}" if nested else ""
            raise EvalError(f"{path}: no {DETECTIONS} in this folder{hint}")
        path = path / DETECTIONS
    if not path.is_file():
        raise EvalError(f"{path}: no such file")
    return path


def _read_json(path: Path) -> list:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvalError(f"{path}: cannot read it as JSON ({error})") from None
    if not isinstance(content, list):
        raise EvalError(f"{path}: expected a JSON list")
    return content


def _by_name(images: list[dict], path: Path) -> dict[str, dict]:
    """detect's images by file name, and by base name where that is unambiguous (records often keep only it)."""
    lookup: dict[str, dict] = {}
    bases: dict[str, list[dict]] = {}
    for image in images:
        if "file_name" not in image or "id" not in image:
            raise EvalError(f"{path}: every entry needs an id and a file_name")
        lookup[image["file_name"]] = image
        bases.setdefault(Path(image["file_name"]).name, []).append(image)
    for base, found in bases.items():
        if len(found) == 1:
            lookup.setdefault(base, found[0])
    return lookup


def match_detections(path: Path, groundtruth: dict) -> list[dict]:
    """detect's results re-numbered to the records' image ids; every record must have been detected on."""
    detected = _by_name(_read_json(path.parent / IMAGES), path.parent / IMAGES)
    ids: dict[int, int] = {}
    missing = []
    for image in groundtruth["images"]:
        found = detected.get(image["file_name"]) or detected.get(Path(image["file_name"]).name)
        if found is None:
            missing.append(image["file_name"])
            continue
        if (found.get("width"), found.get("height")) != (image["width"], image["height"]):
            raise EvalError(
                f"{image['file_name']}: detect saw {found.get('width')}x{found.get('height')}, the record holds "
                f"{image['width']}x{image['height']}; not the same image"
            )
        ids[found["id"]] = image["id"]
    if missing:
        raise EvalError(
            f"{len(missing)} record images have no entry in {path.parent / IMAGES} (e.g. {', '.join(missing[:3])}); "
            "run detect over every image of the records"
        )
    return [{**result, "image_id": ids[result["image_id"]]} for result in _read_json(path) if result["image_id"] in ids]


def score_detections(
    detections: str | Path,
    files: list[str],
    label_map: str | Path,
    output_dir: str | Path,
    *,
    score_threshold: float = 0.5,
) -> dict:
    """Metrics of a detect output on the records `files`, written with the plots into output_dir.

    Detections on images that are not in the records are left out; a record image without detections
    entry is an error (scoring it as "nothing found" would be a wrong number).
    """
    path = detections_file(detections)
    groundtruth, _ = collect(files, None, read_label_map(Path(label_map)), label_map=label_map)
    results = match_detections(path, groundtruth)
    return score_collected(files, groundtruth, results, output_dir, score_threshold=score_threshold)
