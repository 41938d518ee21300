"""TF.js graph model from an exported SavedModel, repaired for TF.js's backends, with a metadata.json beside it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_json
from tfod_wrap.export.tfjs_batch_norms import vectorised_batch_norm_folding

# what each exported output is; the page and user code look outputs up by these names, never by position
OUTPUT_DESCRIPTIONS = {
    "detection_boxes": "boxes [ymin, xmin, ymax, xmax], normalised to 0..1, best first",
    "detection_classes": "class ids, 1-based, as in `classes`",
    "detection_scores": "scores 0..1, descending",
    "num_detections": "number of valid rows in the detection_* outputs",
    "detection_multiclass_scores": "every class's score (background first) for each detection",
    "detection_anchor_indices": "the anchor each detection came from",
    "raw_detection_boxes": "decoded boxes of every anchor before non-max suppression",
    "raw_detection_scores": "scores of every anchor for every class (background first) before non-max suppression",
}
# tensorflowjs quantises weights only (activations stay float32), with one affine range per tensor
QUANTIZATION = {"none": None, "float16": {"float16": "*"}, "uint8": {"uint8": "*"}}
# Under uint8, the weights of these ops stay float16: a depthwise kernel with its batch norm folded in has channels
# whose ranges differ by orders of magnitude, and one uint8 range for the tensor flattens the small ones. On the demo
# model (SSD MobileNet V2) uint8 everywhere cost 0.037 mAP@0.5 (0.883 against the checkpoint's 0.920); with the 17
# depthwise kernels and offsets in float16 it lost nothing, for 1.4% more bytes (docs/BENCHMARKS.md).
FLOAT16_UNDER_UINT8 = ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")


def convert_to_tfjs(saved_model: Path, output_dir: Path, quantize: str = "none") -> Path:
    """tensorflowjs_converter, then the graph fixes below; returns the model.json path. uint8 converts twice: the
    float32 graph names the weights that stay float16 (FLOAT16_UNDER_UINT8), which only the converted graph knows."""
    dtypes = QUANTIZATION[quantize]
    if quantize == "uint8":
        with tempfile.TemporaryDirectory(prefix="tfod-wrap-tfjs-") as draft:
            kept = float16_weights(json.loads(_convert(saved_model, Path(draft), None).read_text()))
        dtypes = {"uint8": True, "float16": kept} if kept else dtypes
    model_json = _convert(saved_model, output_dir, dtypes)
    topology = json.loads(model_json.read_text())
    if repair_float_to_bool_casts(topology):
        atomic_write_json(model_json, topology)
    return model_json


def _convert(saved_model: Path, output_dir: Path, dtypes: dict | None) -> Path:
    from tensorflowjs.converters import tf_saved_model_conversion_v2

    # Assert/CheckNumerics have no TF.js kernels; the converter refuses the graph unless they are stripped
    try:
        with vectorised_batch_norm_folding():
            tf_saved_model_conversion_v2.convert_tf_saved_model(
                str(saved_model),
                str(output_dir),
                quantization_dtype_map=dtypes,
                strip_debug_ops=True,
                use_structured_outputs_names=True,
            )
    except ValueError as error:
        raise _unsupported_ops(error) from None
    return output_dir / "model.json"


def float16_weights(topology: dict) -> list[str]:
    """The weights (constant inputs after the first) of the FLOAT16_UNDER_UINT8 ops of a converted graph."""
    weights = {weight["name"] for group in topology["weightsManifest"] for weight in group["weights"]}
    nodes = [node for graph in _graphs(topology) for node in graph if node["op"] in FLOAT16_UNDER_UINT8]
    return sorted({name for node in nodes for name in node["input"][1:] if name in weights})


def _graphs(topology: dict) -> list[list[dict]]:
    """The node lists of a model.json: the main graph's and each library function's."""
    model = topology["modelTopology"]
    return [model.get("node", []), *(f.get("nodeDef", []) for f in model.get("library", {}).get("function", []))]


def _unsupported_ops(error: ValueError) -> Exception:
    """The converter's "Unsupported Ops" refusal as one line naming the ops; any other error as it was.

    CenterNet ResNet50 v2 ends up here: a pre-activation batch norm follows no convolution, so it cannot be
    folded, and TensorFlow's graph optimizer fuses it with its ReLU into _FusedBatchNormEx, which TF.js lacks.
    """
    text = str(error)
    if "Unsupported Ops" not in text:
        return error
    ops = ", ".join(line.strip() for line in text.splitlines()[1:] if line.strip()) or "unnamed"
    return UserError(
        f"TF.js cannot run this model: after TensorFlow's graph optimisation it keeps ops TF.js has no kernels "
        f"for ({ops}); export --formats saved_model (or tflite for an SSD) instead"
    )


def output_shapes(model_json: Path, outputs: dict[str, str]) -> dict[str, list[int]]:
    """Each output's shape from the converted graph's signature; fails if a tensor name is not an output there."""
    signature = json.loads(model_json.read_text())["signature"]["outputs"].values()
    shapes = {
        item["name"]: [int(dim.get("size", -1)) for dim in item["tensorShape"].get("dim", [])] for item in signature
    }
    missing = sorted(name for name, tensor in outputs.items() if tensor not in shapes)
    if missing:
        raise UserError(f"{model_json}: outputs {', '.join(missing)} are not in the converted graph's signature")
    return {name: shapes[tensor] for name, tensor in outputs.items()}


def repair_float_to_bool_casts(topology: dict) -> int:
    """Rewrite Cast(float -> bool) as Cast(Sign(Abs(x))); returns how many casts were rewritten.

    TF.js 4.22's wasm backend casts float to bool by truncating to an integer, so 0.3 becomes false. The TFOD
    postprocessor casts box areas (all below 1 in normalised coordinates) to bool to drop empty boxes, and on
    wasm every detection vanished. Sign(Abs(x)) is exactly 0 or 1 (NaN stays NaN), which every backend casts
    right.
    """
    repaired = 0
    for nodes in _graphs(topology):
        for node in list(nodes):
            attributes = node.get("attr", {})
            if node["op"] != "Cast" or attributes.get("DstT", {}).get("type") != "DT_BOOL":
                continue
            source = attributes.get("SrcT", {}).get("type")
            if source not in ("DT_FLOAT", "DT_HALF"):
                continue
            float_type = {"T": {"type": source}}
            absolute = {
                "name": f"{node['name']}/tfod_wrap_abs",
                "op": "Abs",
                "input": node["input"][:1],
                "attr": float_type,
            }
            sign = {
                "name": f"{node['name']}/tfod_wrap_sign",
                "op": "Sign",
                "input": [absolute["name"]],
                "attr": float_type,
            }
            nodes.extend([absolute, sign])
            node["input"] = [sign["name"], *node["input"][1:]]
            repaired += 1
    return repaired


def tfjs_metadata(
    outputs: dict[str, str],
    shapes: dict[str, list[int]],
    classes: dict[str, int],
    input_type: str,
    resize_to: list[int] | None,
    **extra,
) -> dict:
    """metadata.json: everything a client needs to run the model without reading the graph."""
    return {
        "format": "tfod-wrap-detector",
        "version": 1,
        **extra,
        "classes": [{"id": class_id, "name": name} for name, class_id in sorted(classes.items(), key=lambda i: i[1])],
        "input": {
            "name": "input_tensor",
            # TF.js has no uint8 tensors: the uint8 input takes int32 (what tf.browser.fromPixels returns)
            "dtype": "int32" if input_type == "image_tensor" else "float32",
            "shape": [1, -1, -1, 3],
            "resize_to": resize_to,
            "color": "RGB",
            "value_range": [0, 255],
        },
        "outputs": {
            name: {"tensor": tensor, "shape": shapes[name], "description": OUTPUT_DESCRIPTIONS.get(name, "")}
            for name, tensor in outputs.items()
        },
        # NonMaxSuppressionV5 and the TensorList loop are async ops: model.execute() throws on this graph
        "execute": "executeAsync",
    }
