"""TFLite for SSD models: TFOD's TFLite export graph (with the TFLite_Detection_PostProcess op), then the converter.

The TFLite graph starts after preprocessing: it takes a float image already resized to the model's input size and
normalised (`normalisation()` gives the per-channel scale and offset), and its classes are 0-based.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfod_wrap.core.errors import UserError
from tfod_wrap.export.formats import ExportError, check_architecture
from tfod_wrap.export.savedmodel import checkpoint_folder, without_layer_functions

MAX_DETECTIONS = 100


def check_supported(pipeline_config) -> None:
    """ExportError unless TFOD's TFLite graph takes the model: an SSD (the table's architectures) of a fixed size."""
    check_architecture(("tflite",), pipeline_config.model.WhichOneof("model"))
    if pipeline_config.model.ssd.image_resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        raise ExportError("TFLite export needs model.ssd.image_resizer.fixed_shape_resizer (a fixed input size)")


def export_tflite(
    pipeline_config,
    checkpoint: str,
    output: Path,
    quantize: str = "none",
    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
) -> Path:
    """Write `output` (.tflite). `uint8` is full-integer quantisation calibrated on `calibration`'s images,
    which must already be preprocessed ([1, H, W, 3] float32), with float input and outputs kept."""
    from object_detection import export_tflite_graph_lib_tf2

    check_supported(pipeline_config)
    with tempfile.TemporaryDirectory(prefix="tfod-wrap-tflite-") as graph_dir, checkpoint_folder(checkpoint) as folder:
        with without_layer_functions():
            export_tflite_graph_lib_tf2.export_tflite_model(
                pipeline_config, folder, graph_dir, MAX_DETECTIONS, use_regular_nms=False
            )
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(graph_dir) / "saved_model"))
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "uint8":
            if calibration is None:
                raise UserError("uint8 TFLite quantisation needs calibration images (the pipeline's eval records)")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image] for image in calibration())
            # the post-processing op stays float; everything before it runs on int8 kernels where they exist
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        model = converter.convert()
    output.write_bytes(model)
    return output
