"""The TFLite interpreter every stage uses: LiteRT's (`ai_edge_litert`, the package TensorFlow 2.19 names as
the successor of `tf.lite.Interpreter`, which it deprecates with a warning and removes in 2.20)."""

from __future__ import annotations


def interpreter(model_path: str, *, num_threads: int | None = None, preserve_all_tensors: bool = False):
    """An allocated interpreter for a .tflite file (TFOD's detection post-processing op included)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # a stack without LiteRT: TensorFlow's own copy of the same interpreter
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    loaded = Interpreter(
        model_path=str(model_path), num_threads=num_threads, experimental_preserve_all_tensors=preserve_all_tensors
    )
    loaded.allocate_tensors()
    return loaded
