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


POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def postprocess_tensors(interpreter) -> dict[str, dict]:
    """The post-processing op's inputs and outputs by meaning (tensor index and name).

    The model's output list is not in a documented order; the TFLite_Detection_PostProcess op's is: it takes
    (box encodings, class scores, anchors) and gives (boxes, classes, scores, count).
    """
    from tfod_wrap.core.errors import UserError

    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == POSTPROCESS_OP]  # noqa: SLF001
    if not ops:
        raise UserError(f"the TFLite model has no {POSTPROCESS_OP} op: not a TFOD SSD TFLite export")
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    keys = ("box_encodings", "raw_detection_scores", "anchors")
    keys += ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    indexes = [*ops[0]["inputs"], *ops[0]["outputs"]]
    return {key: {"index": int(index), "name": names[index]} for key, index in zip(keys, indexes)}


def decode_boxes(encodings, anchors, scales):
    """Faster R-CNN box coding undone: [ty, tx, th, tw] against [y, x, h, w] anchors -> [ymin, xmin, ymax, xmax]."""
    import numpy as np

    offsets = encodings / np.asarray(scales, dtype=np.float32)
    center = offsets[:, :2] * anchors[:, 2:] + anchors[:, :2]
    size = np.exp(offsets[:, 2:]) * anchors[:, 2:]
    return np.concatenate([center - size / 2, center + size / 2], axis=1)


def box_scales(pipeline_config) -> list[float]:
    """The SSD box coder's y, x, height and width scales (what `decode_boxes` divides by)."""
    coder = pipeline_config.model.ssd.box_coder.faster_rcnn_box_coder
    return [coder.y_scale, coder.x_scale, coder.height_scale, coder.width_scale]
