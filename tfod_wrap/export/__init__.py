"""Stage 5: a checkpoint -> SavedModel, TF.js graph model, TFLite and ONNX, checked for parity (`tfod-wrap export`).

Output folder:
    saved_model/  checkpoint/  pipeline.config   exporter_lib_v2's own layout (what model_main users know)
    label_map.pbtxt
    tfjs/         model.json + shards + metadata.json (labels, input, outputs by name)
    tflite/       model.tflite + metadata.json (SSD models only)
    onnx/         model.onnx (the whole serving graph, NMS included) + metadata.json
    export.json   what was written, sizes, the checkpoint, and the parity report when --verify ran

The formats are a table (`formats.FORMATS`, no TensorFlow: the command line reads its choices there); the work is
in `exporter`, which imports TensorFlow, so this package loads it only when `export` or `parity` is first used.
"""

from __future__ import annotations

import importlib

from tfod_wrap.export.formats import DEFAULT_FORMATS, FORMATS, INPUT_TYPES, QUANTIZE, ExportError, ParityError

# name -> (module, attribute or None for the module itself), imported on first use
_HEAVY = {
    "export": ("tfod_wrap.export.exporter", "export"),
    "verify_table": ("tfod_wrap.export.exporter", "verify_table"),
    "parity": ("tfod_wrap.export.verify", None),
}

__all__ = ["DEFAULT_FORMATS", "FORMATS", "INPUT_TYPES", "QUANTIZE", "ExportError", "ParityError", *_HEAVY]


def __getattr__(name: str):
    if name not in _HEAVY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _HEAVY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
