"""ONNX from the exported SavedModel, through tf2onnx: the whole serving graph, the model's own resize and
normalisation, and TFOD's non-max suppression (tf2onnx maps TensorFlow's NonMaxSuppressionV5 onto ONNX's
NonMaxSuppression op), so onnxruntime gives the same outputs, by the same names, as the SavedModel's signature.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tfod_wrap.export.formats import ExportError
from tfod_wrap.export.tfjs import OUTPUT_DESCRIPTIONS

# ONNX opset 17: what onnxruntime (1.14+), TensorRT 8.6+ and OpenVINO 2023+ all take
OPSET = 17


def convert_to_onnx(saved_model: Path, output: Path):
    """Write `output` (.onnx) from the SavedModel's serving_default signature; returns the onnx.ModelProto.

    Unsupported TensorFlow ops are an ExportError naming them (tf2onnx would otherwise leave them in the graph,
    and onnxruntime would refuse the file only when it is loaded)."""
    import onnx
    from tf2onnx import convert, tf_loader

    with _quiet("tf2onnx"):
        graph_def, inputs, outputs, renamed = tf_loader.from_saved_model(
            str(saved_model), None, None, tag="serve", signatures=["serving_default"], return_tensors_to_rename=True
        )
        try:
            proto, _ = convert.from_graph_def(
                graph_def, input_names=inputs, output_names=outputs, opset=OPSET, tensors_to_rename=renamed
            )
        except (ValueError, NotImplementedError, KeyError) as error:
            raise ExportError(f"ONNX export: tf2onnx cannot convert this model ({_first_line(error)})") from None
    # an op tf2onnx could not map stays in the graph under its TensorFlow name, which no ONNX schema has
    unconverted = sorted({node.op_type for node in _nodes(proto.graph) if not onnx.defs.has(node.op_type, node.domain)})
    if unconverted:
        raise ExportError(
            f"ONNX export: tf2onnx has no ONNX form for TensorFlow ops {', '.join(unconverted)} of this model; "
            "export --formats saved_model (or tflite for an SSD) instead"
        )
    onnx.checker.check_model(proto)
    output.write_bytes(proto.SerializeToString())
    return proto


def onnx_metadata(proto, classes: dict[str, int], resize_to: list[int] | None, **extra) -> dict:
    """metadata.json: the classes, the input and every output by name, with shapes as the graph declares them
    (-1 where a size is known only at run time)."""
    import onnx

    def described(value) -> dict:
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}

    (image,) = proto.graph.input
    return {
        "format": "tfod-wrap-detector-onnx",
        "version": 1,
        "opset": OPSET,
        **extra,
        "classes": [{"id": class_id, "name": name} for name, class_id in sorted(classes.items(), key=lambda i: i[1])],
        "input": {
            "name": image.name,
            **described(image),
            "resize_to": resize_to,
            "color": "RGB",
            "value_range": [0, 255],
            "preprocessing": "none: the graph resizes and normalises any image size itself, as the SavedModel does",
        },
        "outputs": {
            value.name: {**described(value), "description": OUTPUT_DESCRIPTIONS.get(value.name, "")}
            for value in proto.graph.output
        },
        "non_max_suppression": "in the graph (ONNX NonMaxSuppression, TFOD's per-class NMS as in the SavedModel)",
    }


def _nodes(graph) -> Iterator:
    """Every node of `graph` and of the subgraphs of its loops and conditionals."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                yield from _nodes(subgraph)


def _first_line(error: Exception) -> str:
    return re.sub(r"\s+", " ", str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """tf2onnx logs every step at INFO; keep its warnings only for the duration."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
