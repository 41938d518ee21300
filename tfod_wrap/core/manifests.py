"""The output folders the stages hand each other, as typed objects: a folder class that knows its files, and the
manifest (the JSON file the stage writes there) as a dataclass that reads, checks and writes it.

    RecordsFolder  `tfod-wrap tfrecords`: report.json (RecordsManifest), label_map.pbtxt, the record files
    RunFolder      `tfod-wrap train`: pipeline.config, recipe.json, the checkpoints
    ExportFolder   `tfod-wrap export`: export.json (ExportManifest), label_map.pbtxt, one folder per format
    DetectFolder   `tfod-wrap detect`: summary.json (DetectSummary), detections.json, images.json

A manifest's JSON keeps the keys, order and values the README documents; `to_json` gives exactly that. Reading one
that is missing, not JSON, or not the stage's is one ManifestError line naming the file. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_json
from tfod_wrap.core.textfiles import read_json

M = TypeVar("M", bound="Manifest")


class ManifestError(UserError):
    """A stage's manifest file that is missing or not what that stage writes; the message names the file."""


@dataclass
class Manifest:
    """Base of the manifests: FILE is its name in the folder, WHAT the stage that writes it (for messages), TYPES
    the JSON types of the keys that decide whether a file is one. Fields without a default are required keys."""

    FILE: ClassVar[str]
    WHAT: ClassVar[str]
    TYPES: ClassVar[dict[str, type | tuple[type, ...]]] = {}

    @classmethod
    def read(cls: type[M], folder: str | Path) -> M:
        """The manifest in `folder`; ManifestError when it is missing or not this stage's."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise ManifestError(f"{path}: missing; {Path(folder)} is not an output folder of {cls.WHAT}")
        try:
            data = read_json(path, cls.FILE)
        except UserError as error:
            raise ManifestError(str(error)) from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls: type[M], data: Any, path: str | Path | None = None) -> M:
        """The manifest of parsed JSON, checked: the required keys there, TYPES' keys of their type; keys it does not
        know are left out."""
        problem = cls._problem(data)
        if problem:
            article = "an" if cls.FILE[0] in "aeiou" else "a"
            raise ManifestError(f"{path or cls.FILE}: not {article} {cls.FILE} of {cls.WHAT} ({problem})")
        names = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    @classmethod
    def _problem(cls, data: Any) -> str | None:
        """What makes `data` not this manifest, or None."""
        if not isinstance(data, dict):
            return f"a JSON {_JSON_NAMES.get(type(data), type(data).__name__)}, not an object"
        for item in dataclasses.fields(cls):
            required = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
            if required and item.name not in data:
                return f"no {item.name!r}"
        for key, kind in cls.TYPES.items():
            if key in data and not isinstance(data[key], kind):
                return f"{key!r} is not a {_JSON_NAMES.get(kind, 'number')}"
        return None

    def to_json(self) -> dict:
        """The file's content: the fields in order, optional ones (None) left out."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / self.FILE
        atomic_write_json(path, self.to_json())
        return path


class OutputFolder(Generic[M]):
    """A stage's output folder; `manifest` is the file the stage wrote there (MANIFEST), read on first use."""

    MANIFEST: ClassVar[type[Manifest]]

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @cached_property
    def manifest(self) -> M:
        return self.MANIFEST.read(self.path)


_JSON_NAMES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


# ---- tfrecords --------------------------------------------------------------------------------------------------


@dataclass
class RecordsManifest(Manifest):
    """report.json of `tfod-wrap tfrecords`: what was read, written and skipped, and each split's record files."""

    FILE: ClassVar[str] = "report.json"
    WHAT: ClassVar[str] = "`tfod-wrap tfrecords`"
    TYPES: ClassVar[dict] = {"splits": dict, "label_map": str}

    splits: dict[str, dict]
    tool: str | None = None
    version: str | None = None
    created: str | None = None
    input: str | None = None
    format: str | None = None
    seed: int | None = None
    shards: int | None = None
    label_map: str = "label_map.pbtxt"  # reports before the key was written had the label map by this name
    classes: dict[str, int] | None = None
    images_written: int | None = None
    images_skipped: int | None = None
    boxes_per_class: dict[str, int] | None = None
    problem_counts: dict[str, int] | None = None
    image_handling: dict[str, int] | None = None
    tiling: dict | None = None  # `--tile`: the options and counts of tiles and boxes
    skipped: list[dict] | None = None
    box_problems: list[dict] | None = None

    @classmethod
    def _problem(cls, data: Any) -> str | None:
        problem = super()._problem(data)
        if problem:
            return problem
        patterns = [
            isinstance(split, dict) and isinstance(split.get("pattern"), str) for split in data["splits"].values()
        ]
        return None if patterns and all(patterns) else "no splits with record patterns"

    def to_json(self) -> dict:
        # the order `tfod-wrap tfrecords` has always written, splits after the counts
        order = [item.name for item in dataclasses.fields(self) if item.name != "splits"]
        order.insert(order.index("skipped"), "splits")
        content = dataclasses.asdict(self)
        return {key: content[key] for key in order if content[key] is not None}


class RecordsFolder(OutputFolder[RecordsManifest]):
    """The output folder of `tfod-wrap tfrecords`."""

    MANIFEST = RecordsManifest

    @property
    def label_map(self) -> Path:
        return self.path / self.manifest.label_map

    def split_pattern(self, split: str) -> Path:
        """The glob of one split's record files (what TFOD's input_path takes)."""
        return self.path / self.manifest.splits[split]["pattern"]


# ---- train ------------------------------------------------------------------------------------------------------


class RunFolder:
    """A training run's model dir: pipeline.config, the run recipe (recipe.json) and the checkpoints kept."""

    PIPELINE = "pipeline.config"
    RECIPE = "recipe.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def pipeline(self) -> Path:
        return self.path / self.PIPELINE

    @property
    def recipe(self) -> Path:
        return self.path / self.RECIPE

    def model_warning(self, config, given: str | Path) -> str | None:
        """A warning when the run's own pipeline.config, the one train trained with, describes another model than
        `config` (read from `given`), post-processing aside: `train --time-budget` and `--set` change the input
        size, anchors or classes, and the checkpoints then restore wrongly or not at all. None when they agree."""
        from tfod_wrap.core import pipeline as configs

        if not self.pipeline.is_file() or self.pipeline.resolve() == Path(given).resolve():
            return None
        changes = configs.diff(configs.load(self.pipeline).model, config.model)
        changes = [change for change in changes if "post_processing" not in change[0]]
        if not changes:
            return None
        path, trained, other = changes[0]
        return (
            f"warning: {given} has model.{path} = {other!r} where {self.pipeline}, the pipeline this run trained "
            f"with, has {trained!r} ({len(changes)} model fields differ); to use the model as trained, pass "
            f"--pipeline {self.pipeline}"
        )

    def checkpoints(self, which: str = "latest") -> list[str]:
        """Checkpoint prefixes of the run (see core.checkpoints.find_checkpoints for `which`)."""
        from tfod_wrap.core.checkpoints import find_checkpoints  # TensorFlow reads the state file

        return find_checkpoints(self.path, which)


# ---- export -----------------------------------------------------------------------------------------------------


@dataclass
class ExportManifest(Manifest):
    """export.json of `tfod-wrap export`: the pipeline and checkpoint, each format written (path, bytes, seconds
    and its settings), with --verify the parity report, and the model card's facts (MODEL_CARD.md beside it)."""

    FILE: ClassVar[str] = "export.json"
    WHAT: ClassVar[str] = "`tfod-wrap export`"
    TYPES: ClassVar[dict] = {"pipeline": str, "checkpoint": str, "formats": dict, "verify": dict, "card": dict}

    pipeline: str
    checkpoint: str
    formats: dict[str, dict] = field(default_factory=dict)
    verify: dict | None = None
    card: dict | None = None

    @classmethod
    def _problem(cls, data: Any) -> str | None:
        problem = super()._problem(data)
        if problem:
            return problem
        if not all(
            isinstance(entry, dict) and isinstance(entry.get("path"), str) for entry in data["formats"].values()
        ):
            return "a format without a path"
        if "verify" in data and not isinstance(data["verify"].get("formats"), dict):
            return "'verify' without formats"
        return None

    def failed_formats(self) -> list[str]:
        """The formats whose parity check failed (none without --verify)."""
        return [name for name, result in (self.verify or {}).get("formats", {}).items() if not result["passed"]]

    def verify_table(self) -> str:
        """The parity report as a table: the largest difference per output and format, and the tolerance; then
        the mAP@0.5 of the checkpoint and of each format on the eval split, where it was measured."""
        results = (self.verify or {}).get("formats", {})
        keys = sorted({key for result in results.values() for key in result["max_difference"]})
        lines = [f"{'format':<12}" + "".join(f"{key:>22}" for key in keys) + f"{'tolerance':>11}  result"]
        for name, result in results.items():
            cells = "".join(f"{result['max_difference'].get(key, float('nan')):>22.2e}" for key in keys)
            tolerance = f"{result['tolerance']:.2g}" + (
                f"/{result['raw_tolerance']:.2g}" if "raw_tolerance" in result else ""
            )
            verdict = ("ok" if result["passed"] else "FAILED") + (
                f" ({result['judged_by']})" if "judged_by" in result else ""
            )
            lines.append(f"{name:<12}{cells}{tolerance:>11}  {verdict}")
        accuracy = (self.verify or {}).get("accuracy")
        if accuracy and "error" in accuracy:
            lines.append(f"{accuracy['metric']} not measured: {accuracy['error']}")
        elif accuracy:
            scores = {"checkpoint": accuracy["checkpoint"], **accuracy["formats"]}
            measured = ", ".join(f"{name} {value:.4f}" for name, value in scores.items())
            lines.append(f"{accuracy['metric']} on the {accuracy['images']} eval images: {measured}")
        return "\n".join(lines)


class ExportFolder(OutputFolder[ExportManifest]):
    """The output folder of `tfod-wrap export`: exporter_lib_v2's saved_model/, checkpoint/ and pipeline.config,
    label_map.pbtxt, a folder per further format, and export.json."""

    MANIFEST = ExportManifest
    LABEL_MAP = "label_map.pbtxt"

    @property
    def label_map(self) -> Path:
        return self.path / self.LABEL_MAP

    def format(self, name: str) -> Path:
        """The folder of one format (saved_model, tfjs, tflite)."""
        return self.path / name


# ---- detect -----------------------------------------------------------------------------------------------------


@dataclass
class DetectSummary(Manifest):
    """summary.json of `tfod-wrap detect`: each model's latency and files, what was written and skipped, the
    options and TensorFlow's threads."""

    FILE: ClassVar[str] = "summary.json"
    WHAT: ClassVar[str] = "`tfod-wrap detect`"
    TYPES: ClassVar[dict] = {"models": list, "frames": int, "seconds": (int, float), "videos": list, "skipped": list}

    output: str
    models: list[dict]
    frames: int
    seconds: float
    fps: float
    images: int
    videos: list
    skipped: list[dict]
    min_score: float
    batch: int
    concurrent_calls: int
    tensorflow_threads: dict[str, int]
    tiling: dict | None = None  # `--tile`: the sliced inference's options


class DetectFolder(OutputFolder[DetectSummary]):
    """The output folder of `tfod-wrap detect`: summary.json, detections.json, images.json, images/ and videos/
    (in one folder per model when several ran)."""

    MANIFEST = DetectSummary
    DETECTIONS = "detections.json"
    IMAGES = "images.json"
