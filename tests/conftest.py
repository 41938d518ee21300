"""Shared fixtures: small real images and annotation files written in each format."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfod_wrap  # noqa: E402,F401  (applies the compat fixes before any object_detection import)

REPO = Path(__file__).resolve().parents[1]


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills once per test run: under pytest-xdist every worker has its own session, so the
    first worker to ask builds it under a lock in the run's shared temp folder and the others wait, then reuse it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base folders sit side by side in one folder of this run
    root = root / "built-once"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build in another worker left
            build(folder)
            done.touch()
    return folder


# Module fixtures cheap enough to make on each xdist worker (a few tiny images): their tests spread over the workers.
CHEAP_MODULE_FIXTURES = {"records", "valid_inputs", "configs"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` and `make check` run two pytest-xdist workers with --dist loadgroup, which hands out work units
    (a group, or a test on its own) in the order of this list (with --no-loadscope-reorder). A module fixture is
    made once per worker, so the tests of a module that share one (a training run, an export) form a group that
    goes to one worker; the rest spread one by one.

    The session detector is built once for both workers (`built_once`) and takes minutes. So the largest unit that
    uses it goes first: one worker builds it, then runs that unit's tests; the units that do not need it come next,
    largest first (as xdist's own reordering would put them), for the other worker to run meanwhile; the other
    units that use it come last. Left to xdist's reordering by size, a group that uses the detector started early
    and its worker waited for the build (36 s of a 7.5-minute run)."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures a test function uses
        definitions = info.name2fixturedefs if info else {}
        shared = [
            name
            for name in item.fixturenames
            if name not in CHEAP_MODULE_FIXTURES and any(d.scope == "module" for d in definitions.get(name, ()))
        ]
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
        units.setdefault(item.module.__name__ if shared else item.nodeid, []).append(item)
    users: list[list[pytest.Item]] = []
    others: list[list[pytest.Item]] = []
    for unit in units.values():
        (users if any("trained_detector" in item.fixturenames for item in unit) else others).append(unit)
    builder = max(users, key=len, default=[])
    rest = [unit for unit in users if unit is not builder]
    ordered = [builder, *sorted(others, key=len, reverse=True), *sorted(rest, key=len, reverse=True)]
    items[:] = [item for unit in ordered for item in unit]


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A small image with texture (a flat colour would hide decoding and orientation mistakes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128.0)], axis=-1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[dict], shuffle_tags: bool = False) -> str:
    """A Pascal VOC annotation; `shuffle_tags` writes tags in an unusual order, as some tools do."""
    parts = []
    for obj in objects:
        box = "".join(
            f"<{k}>{obj[k]}</{k}>"
            for k in (("ymax", "xmax", "ymin", "xmin") if shuffle_tags else ("xmin", "ymin", "xmax", "ymax"))
        )
        extra = "".join(f"<{k}>{obj[k]}</{k}>" for k in ("difficult", "truncated", "pose") if k in obj)
        body = [f"<bndbox>{box}</bndbox>", f"<name>{obj['name']}</name>", extra]
        parts.append("<object>" + "".join(reversed(body) if not shuffle_tags else body) + "</object>")
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    head = [f"<filename>{filename}</filename>", size_xml, "<folder>images</folder>"]
    ordered = parts + head if shuffle_tags else head + parts
    return "<annotation>" + "".join(ordered) + "</annotation>"


@pytest.fixture
def voc_dataset(tmp_path: Path):
    """Write images + VOC XML into tmp_path/voc; returns a function taking a list of image specs."""

    def make(specs: list[dict], folder: str = "voc") -> Path:
        root = tmp_path / folder
        root.mkdir(exist_ok=True)
        for index, spec in enumerate(specs):
            name = spec.get("file", f"img{index:03d}.jpg")
            size = spec.get("size", (64, 48))
            if spec.get("write_image", True):
                image = spec.get("image") or photo(*size, seed=index)
                image.save(root / name, **spec.get("save", {}))
            annotated = spec.get("annotated_size", size)
            xml = voc_xml(name, annotated, spec.get("objects", []), spec.get("shuffle", False))
            (root / Path(name).with_suffix(".xml").name).write_text(xml)
        return root

    return make


def tiny_voc(folder: Path, count: int, classes: str = "ab", size=(96, 72), box=(10, 8, 70, 60)) -> Path:
    """`count` textured images, one box each, classes taking turns: the data of the model-level tests."""
    folder.mkdir(parents=True, exist_ok=True)
    xmin, ymin, xmax, ymax = box
    for index in range(count):
        photo(*size, seed=index).save(folder / f"{index}.jpg")
        (folder / f"{index}.xml").write_text(
            f"<annotation><filename>{index}.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"</size><object><name>{classes[index % len(classes)]}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}"
            f"</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>"
        )
    return folder


def write_coco(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_csv(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    return path


def read_examples(paths) -> list:
    """Records read back with TensorFlow's own TFRecord reader and tf.train.Example parser."""
    import tensorflow as tf

    files = [str(p) for p in paths]
    return [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(files)]


def feature(example, key: str) -> list:
    value = example.features.feature[key]
    return list(getattr(value, value.WhichOneof("kind")).value)


def checkpoint_values(checkpoint: str | Path) -> dict[str, np.ndarray]:
    """Every float tensor of a checkpoint (the model's variables and the optimizer's slots), by checkpoint key."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint))
    return {
        key: reader.get_tensor(key) for key, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes, to prove inputs are never modified."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def pythons_own_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler within the block, as a command started from a terminal has (the one pytest
    runs tests under may not be)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class SendsCtrlCWhenFreed:
    """Made and freed at once, it is a Ctrl-C that Python drops: its handler runs inside __del__, where Python prints
    "Exception ignored" for what it raises (as in a garbage-collector callback) instead of raising it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


class TrainedDetector(NamedTuple):
    """An SSD MobileNet V2 (160x160) fitted to red rectangles and blue ellipses, and its export in every format
    (SavedModel, TF.js, TFLite, ONNX), verified."""

    pipeline: Path
    model_dir: Path
    export_dir: Path
    report: dict
    image: Path  # a training image: one red rectangle at `box`
    class_name: str
    box: list[float]  # [ymin, xmin, ymax, xmax], normalised


def shapes_voc(folder: Path, count: int, size=(320, 240), seed: int = 0) -> list[tuple[str, str, list[float]]]:
    """Textured photos with one red rectangle or blue ellipse each, in VOC; returns (file, class, box)."""
    from PIL import ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    written = []
    for index in range(count):
        image = photo(width, height, seed=index)
        w, h = int(rng.integers(width // 4, width // 2)), int(rng.integers(height // 4, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        name = "rectangle" if index % 2 == 0 else "ellipse"
        draw = ImageDraw.Draw(image)
        if name == "rectangle":
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=(220, 30, 30))
        else:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=(30, 60, 220))
        image.save(folder / f"{index}.png")
        objects = [{"name": name, "xmin": x0, "ymin": y0, "xmax": x0 + w, "ymax": y0 + h}]
        (folder / f"{index}.xml").write_text(voc_xml(f"{index}.png", size, objects))
        written.append((f"{index}.png", name, [y0 / height, x0 / width, (y0 + h) / height, (x0 + w) / width]))
    return written


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory) -> TrainedDetector:
    """300 seeded steps of Adam without augmentation: enough to detect its own training shapes at scores above 0.9.
    Built once per test run (all xdist workers share it); the tests only read it."""
    root = built_once(tmp_path_factory, "detector", build_detector)
    file, name, box = json.loads((root / "first-shape.json").read_text())
    report = json.loads((root / "export-report.json").read_text())
    return TrainedDetector(
        root / "pipeline.config", root / "model", root / "export", report, root / "voc" / file, name, box
    )


def build_detector(root: Path) -> None:
    from tfod_wrap import config, export, train
    from tfod_wrap.data import convert

    shapes = shapes_voc(root / "voc", 16)
    (root / "first-shape.json").write_text(json.dumps(shapes[0]))
    convert(root / "voc", root / "records", workers=1)
    pipeline = root / "pipeline.config"
    config.configure(
        "ssd_mobilenet_v2",
        pipeline,
        data=root / "records",
        checkpoint="none",
        batch_size=4,
        steps=300,
        overrides=[
            "model.image_resizer.fixed_shape_resizer.height=160",
            "model.image_resizer.fixed_shape_resizer.width=160",
            "train_config.data_augmentation_options=[]",
            "train_config.optimizer.adam_optimizer.learning_rate.constant_learning_rate.learning_rate=0.002",
        ],
        check=False,
    )
    train.train(pipeline, root / "model", seed=0, log=lambda *_: None)  # the same detector every run
    report = export.export(
        pipeline,
        root / "model",
        root / "export",
        formats=("saved_model", "tfjs", "tflite", "onnx"),
        verify=True,
        log=lambda *_: None,
    )
    (root / "export-report.json").write_text(json.dumps(report))


@pytest.fixture(scope="session")
def pretrained_cache(tmp_path_factory) -> Path:
    """A tfod-wrap cache in which the default pretrained start of ssd_mobilenet_v2 was made with the model zoo
    unreachable (as on this machine and in CI): the offline import of @mediapipe/objectron's SSD MobileNet V2,
    checked against the TFLite interpreter on three photos. Made once per test run; the tests only read it."""
    return built_once(tmp_path_factory, "pretrained", build_pretrained_cache) / "cache"


def build_pretrained_cache(root: Path) -> None:
    from tfod_wrap.core.weights import default_start

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFOD_WRAP_CACHE", str(root / "cache"))
        patch.setenv("TFOD_WRAP_ZOO_URL", "http://127.0.0.1:9/")  # refuses connections at once
        start = default_start("ssd_mobilenet_v2", log=lambda *_: None)
    (root / "imported.txt").write_text(str(start.folder))


@pytest.fixture(scope="session")
def objectron_import(pretrained_cache) -> Path:
    """That import's folder (what `pretrained import-tflite` writes), for the tests that read or start from it."""
    return Path((pretrained_cache.parent / "imported.txt").read_text())


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """Two training steps of a 2-class SSD MobileNet V2 at 160x160 from random weights on 4 train and 4 val images
    (records/, pipeline.config, model/ with ckpt-0 and ckpt-2) and its SavedModel (export/): the run the eval and
    hardening tests read. Built once per test run; a test that writes into the run works on a copy."""
    return built_once(tmp_path_factory, "small-run", build_small_run)


def build_small_run(root: Path) -> None:
    from object_detection import exporter_lib_v2

    from tfod_wrap import config, train
    from tfod_wrap.data import convert

    convert(tiny_voc(root / "voc", 8), root / "records", split="train=0.5,val=0.5", workers=1)
    pipeline = root / "pipeline.config"
    size = [f"model.image_resizer.fixed_shape_resizer.{side}=160" for side in ("height", "width")]
    config.configure(
        "ssd_mobilenet_v2",
        pipeline,
        data=root / "records",
        checkpoint="none",
        batch_size=2,
        steps=2,
        overrides=size,
        check=False,
    )
    train.train(pipeline, root / "model", seed=0, log=lambda *_: None)  # the same run every time
    proto = config.load(pipeline)
    exporter_lib_v2.export_inference_graph("image_tensor", proto, str(root / "model"), str(root / "export"))
