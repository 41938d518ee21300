"""Fixes that make the TFOD API (tf-models-research-object-detection 2.8) run on the pinned stack.

Both fixes are installed as import hooks, so `import tfod_wrap` stays cheap: nothing here imports
TensorFlow. See shared/notes/stack.md for why each one is needed.

1. The package ships `object_detection/protos/*_pb2.py` made by an old protoc; protobuf >= 4 refuses
   them ("Descriptors cannot be created directly"). We rebuild each module from the serialized
   descriptor embedded in the shipped file, with the builder API that current protoc output uses, so
   the fast upb runtime works and no environment variable is needed.
2. tf-slim 1.1.0 calls `control_flow_ops.case/cond/while_loop/Assert`, removed from that module in
   TF 2.13; reading TFRecords through `object_detection.inputs` fails without them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from tfod_wrap.compat.protos import ShippedProtoFinder
from tfod_wrap.compat.tfslim import TfSlimFinder, patch_control_flow_ops

_applied = False


def apply() -> None:
    """Install both fixes (idempotent). Called by `import tfod_wrap`."""
    global _applied
    if _applied:
        return
    sys.meta_path.insert(0, ShippedProtoFinder())
    if "tf_slim" in sys.modules:
        patch_control_flow_ops()
    else:
        sys.meta_path.insert(0, TfSlimFinder())
    _applied = True


def check_stack() -> None:
    """Import the TFOD entry points the project relies on; raise if the stack is broken.

    `make install` runs this once, so a broken environment is reported at install time, not at the
    first training run.
    """
    apply()
    for module in (
        "object_detection.protos.pipeline_pb2",
        "object_detection.builders.model_builder",
        "object_detection.inputs",
        "object_detection.exporter_lib_v2",
    ):
        importlib.import_module(module)
    from google.protobuf.internal import api_implementation

    print(f"TFOD API stack OK (protobuf runtime: {api_implementation.Type()})")
