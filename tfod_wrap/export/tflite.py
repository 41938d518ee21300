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
from tfod_wrap.core.tflite import interpreter as tflite_interpreter
from tfod_wrap.export.savedmodel import checkpoint_folder

MAX_DETECTIONS = 100
POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def check_supported(pipeline_config) -> None:
    kind = pipeline_config.model.WhichOneof("model")
    if kind != "ssd":
        raise UserError(f"TFLite export supports SSD models (TFOD's TFLite graph); this pipeline's model is {kind}")
    if pipeline_config.model.ssd.image_resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        raise UserError("TFLite export needs model.ssd.image_resizer.fixed_shape_resizer (a fixed input size)")


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


def postprocess_tensors(interpreter) -> dict[str, dict]:
    """The post-processing op's inputs and outputs by meaning (tensor index and name).

    The model's output list is not in a documented order; the TFLite_Detection_PostProcess op's is: it takes
    (box encodings, class scores, anchors) and gives (boxes, classes, scores, count).
    """
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == POSTPROCESS_OP]
    if not ops:
        raise UserError(f"the TFLite model has no {POSTPROCESS_OP} op: not a TFOD SSD TFLite export")
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    keys = ("box_encodings", "raw_detection_scores", "anchors")
    keys += ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    indexes = [*ops[0]["inputs"], *ops[0]["outputs"]]
    return {key: {"index": int(index), "name": names[index]} for key, index in zip(keys, indexes)}


def run_tflite(model: Path, images: list[np.ndarray], box_scales: list[float]) -> list[dict[str, np.ndarray]]:
    """Run the TFLite model on preprocessed images: detections (1-based classes), and every anchor's scores and
    decoded boxes (`box_scales`: the box coder's y, x, height and width scales) as the SavedModel gives them."""
    interpreter = tflite_interpreter(model, preserve_all_tensors=True)
    tensors = postprocess_tensors(interpreter)
    results = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image.astype(np.float32))
        interpreter.invoke()
        result = {key: interpreter.get_tensor(tensor["index"]) for key, tensor in tensors.items()}
        result = {key: value if key == "anchors" else value[0] for key, value in result.items()}
        result["raw_detection_boxes"] = decode_boxes(result.pop("box_encodings"), result.pop("anchors"), box_scales)
        result["detection_classes"] = result["detection_classes"] + 1  # the op's classes are 0-based
        # TFOD's postprocess clips boxes to the image; the TFLite op does not (a box past the edge ends at 1.09)
        result["detection_boxes"] = np.clip(result["detection_boxes"], 0.0, 1.0)
        result["num_detections"] = int(result["num_detections"])
        results.append(result)
    return results


def decode_boxes(encodings: np.ndarray, anchors: np.ndarray, scales: list[float]) -> np.ndarray:
    """Faster R-CNN box coding undone: [ty, tx, th, tw] against [y, x, h, w] anchors -> [ymin, xmin, ymax, xmax]."""
    offsets = encodings / np.asarray(scales, dtype=np.float32)
    center = offsets[:, :2] * anchors[:, 2:] + anchors[:, :2]
    size = np.exp(offsets[:, 2:]) * anchors[:, 2:]
    return np.concatenate([center - size / 2, center + size / 2], axis=1)


def box_scales(pipeline_config) -> list[float]:
    coder = pipeline_config.model.ssd.box_coder.faster_rcnn_box_coder
    return [coder.y_scale, coder.x_scale, coder.height_scale, coder.width_scale]
