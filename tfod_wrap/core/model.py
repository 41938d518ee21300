"""The TFOD model of a pipeline: built in one place, its variables created, a checkpoint restored into it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.pipeline import load, meta_architecture


def build_model(pipeline, *, is_training: bool = False, built: bool = False):
    """The pipeline's detection model (`pipeline`: a TrainEvalPipelineConfig, a template name or a file), by TFOD's
    model builder; with `built`, its variables created too (`ensure_built`)."""
    from object_detection.builders import model_builder

    config = pipeline if hasattr(pipeline, "DESCRIPTOR") else load(pipeline)
    model = model_builder.build(config.model, is_training=is_training)
    if built:
        ensure_built(model, config)
    return model


def ensure_built(model, pipeline_config) -> None:
    """Create every variable with one forward pass on zeros at the configured input size.

    Runs in inference mode, as model_lib_v2's `_ensure_model_is_built` does: Faster R-CNN's training-mode
    predict needs groundtruth, and batch-norm statistics must not learn from an image of zeros.
    """
    height, width = input_size(pipeline_config)
    was_training = model._is_training  # noqa: SLF001
    model._is_training = False  # noqa: SLF001
    try:
        with inference_phase():
            images, true_shapes = model.preprocess(tf.zeros([1, height, width, 3]))
            model.predict(images, true_shapes)
    finally:
        model._is_training = was_training  # noqa: SLF001


def input_size(pipeline_config) -> tuple[int, int]:
    """fixed_shape_resizer's size, keep_aspect_ratio_resizer's max_dimension (square), else 320x320."""
    resizer = meta_architecture(pipeline_config).image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        return resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width
    if kind == "keep_aspect_ratio_resizer":
        side = resizer.keep_aspect_ratio_resizer.max_dimension
        return side, side
    return 320, 320  # variables do not depend on the input size; any size the resizer accepts will do


@contextlib.contextmanager
def inference_phase() -> Iterator[None]:
    """Keras learning phase 0 for the block: a training step traced earlier may have left it at 1."""
    with contextlib.ExitStack() as stack:
        with warnings.catch_warnings():
            # Deprecated, but the learning phase is what TFOD's batch-norm layers read when called with training=None.
            warnings.simplefilter("ignore")
            stack.enter_context(tf.keras.backend.learning_phase_scope(0))
        yield


def end_training_phase() -> None:
    """Set Keras's learning phase back to 0. Tracing a training step sets it to 1 for the whole process, and a
    model built after that in the same process (an export, a detector) would run the batch norms that read it
    (CenterNet's ResNet v2) in training mode: on batch statistics, and a graph the TF.js converter cannot freeze."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated, but it is what those batch norms read
        tf.keras.backend.set_learning_phase(0)


def restore(model, checkpoint: str | Path, *, complete: bool = False) -> None:
    """Restore a checkpoint into a built model. A truncated checkpoint, one whose files are gone (a stale
    `checkpoint` state file) or one of another model (num_classes) is one UserError line naming it, not a
    TensorFlow traceback. With `complete`, every object of the checkpoint must have found its variable."""
    try:
        status = tf.train.Checkpoint(model=model).restore(str(checkpoint))
        status.assert_consumed() if complete else status.expect_partial()
    except (ValueError, IndexError, AssertionError, tf.errors.OpError) as error:  # IndexError: a truncated file
        reason = (error.message if isinstance(error, tf.errors.OpError) else str(error)).strip().splitlines()[0]
        raise UserError(f"{checkpoint}: cannot restore it for this pipeline's model: {reason}") from None
