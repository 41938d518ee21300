"""SavedModel export through the TFOD API's own exporter_lib_v2, from any checkpoint a run kept."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tensorflow as tf


@contextmanager
def without_layer_functions() -> Iterator[None]:
    """tf.saved_model.save without the functions Keras adds for each layer of the model (Keras' own
    `save_traces=False`): a SavedModel with the same signatures and variables, written about 2x faster and loaded
    3.6-4.3x faster (tfjs and ONNX conversion, eval and detect load it; docs/BENCHMARKS.md, "Export time"), since
    no one calls the layers of a TFOD export."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another Keras layout: save everything, as TFOD's exporters do
        yield
        return
    with keras_option_scope(save_traces=False, in_tf_saved_model_scope=False):
        yield


@contextmanager
def checkpoint_folder(checkpoint: str) -> Iterator[str]:
    """A folder whose latest checkpoint is `checkpoint`: TFOD's exporters only take "the latest in a folder"."""
    with tempfile.TemporaryDirectory(prefix="tfod-wrap-ckpt-") as folder:
        tf.compat.v1.train.update_checkpoint_state(folder, os.path.abspath(checkpoint))
        yield folder


def export_saved_model(pipeline_config, checkpoint: str, output_dir: Path, input_type: str = "image_tensor") -> Path:
    """exporter_lib_v2 into `output_dir`: saved_model/, checkpoint/ and pipeline.config, as model_main users know
    (the SavedModel without per-layer functions: `without_layer_functions`)."""
    from object_detection import exporter_lib_v2

    with checkpoint_folder(checkpoint) as folder, without_layer_functions():
        exporter_lib_v2.export_inference_graph(input_type, pipeline_config, folder, str(output_dir))
    return output_dir / "saved_model"


def signature_outputs(saved_model: Path) -> dict[str, str]:
    """Output name -> tensor name in the graph that tensorflowjs_converter freezes from the serving signature.

    The converter lists the concrete function's flat outputs in sorted-key order (tf.nest's order for dicts)
    and keeps their tensor names; this pairs them up the same way.
    """
    function = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    return dict(zip(sorted(function.structured_outputs), (tensor.name for tensor in function.outputs)))
