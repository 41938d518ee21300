"""Fixes that make the TFOD API (tf-models-research-object-detection 2.8) run on the pinned stack.

`apply()` (run by `import tfod_wrap`) installs them as import hooks, so importing the package stays cheap:
nothing here imports TensorFlow.

1. Keras: TFOD's Keras models are written for Keras 2. TensorFlow 2.16+ ships Keras 3 as `tf.keras` unless
   `TF_USE_LEGACY_KERAS=1` is set before TensorFlow loads, which then serves tf-keras (Keras 2).
2. Protobuf: the package ships `object_detection/protos/*_pb2.py` made by an old protoc, which protobuf >= 4
   refuses ("Descriptors cannot be created directly"). Each module is rebuilt from the serialized descriptor
   embedded in the shipped file, with the builder API that current protoc output uses.
3. Modules imported at load time but never used by tfod-wrap, and missing from the stack
   (`tf.compat.v1.estimator`, removed in TF 2.16; `tensorflow_io`): import-only stand-ins (`stubs.py`).
4. Post-import patches (`hooks.py`): tf-slim's removed `control_flow_ops` names, Pillow's removed
   `FreeTypeFont.getsize`.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import warnings
from importlib import metadata

from tfod_wrap.compat import hooks
from tfod_wrap.compat.protos import ShippedProtoFinder
from tfod_wrap.compat.stubs import StubFinder

SUPPORTED_PYTHONS = ((3, 10), (3, 11), (3, 12))
_applied = False


class StackError(RuntimeError):
    """The installed packages cannot run the TFOD API; the message says what to do."""


def apply() -> None:
    """Install the fixes (idempotent). Called by `import tfod_wrap`."""
    global _applied
    if _applied:
        return
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # tensorflowjs imports TF Decision Forests, which prints an advert on import, and tensorflow_hub imports
    # pkg_resources, which warns of its own removal (setuptools is pinned below 81, where it still exists).
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    sys.meta_path.insert(0, ShippedProtoFinder())
    sys.meta_path.insert(0, StubFinder())
    hooks.install()
    _applied = True


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "missing"


def check_stack() -> str:
    """Import the TFOD entry points the project relies on and name the stack; raise StackError if it is broken.

    `make install` runs this once, so a broken environment is reported at install time, not at the first
    training run.
    """
    apply()
    missing = [name for name in ("tf-models-research-object-detection", "lvis") if _version(name) == "missing"]
    if missing:
        raise StackError(
            f"{', '.join(missing)} not installed; they go in without their own pins: "
            "pip install --no-deps tf-models-research-object-detection==2.8.0.post1 lvis==0.5.3"
        )
    import tensorflow as tf

    # Keras 2 (tf-keras, or TF 2.15's own) keeps Layer in `...engine.base_layer`; Keras 3 in `keras.src.layers`.
    if ".engine." not in tf.keras.layers.Layer.__module__:
        raise StackError(
            "tf.keras is Keras 3, which the TFOD API cannot use: TensorFlow was imported before tfod_wrap. "
            "Import tfod_wrap first, or set TF_USE_LEGACY_KERAS=1 before starting Python"
        )
    for module in (
        "object_detection.protos.pipeline_pb2",
        "object_detection.builders.model_builder",
        "object_detection.inputs",
        "object_detection.exporter_lib_v2",
    ):
        importlib.import_module(module)
    from google.protobuf.internal import api_implementation

    return (
        f"TFOD API stack OK: Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"tf-keras {_version('tf-keras')}, protobuf {_version('protobuf')} ({api_implementation.Type()}), "
        f"tensorflowjs {_version('tensorflowjs')}, object_detection {_version('tf-models-research-object-detection')}"
    )
