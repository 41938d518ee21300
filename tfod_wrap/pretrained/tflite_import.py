"""`tfod-wrap pretrained import-tflite`: the TFLite SSD MobileNet V2 of @mediapipe/objectron as a TF2 checkpoint.

The TF2 model zoo cannot be reached offline, but npm's @mediapipe/objectron bundles a TFLite model that the TFOD
API exported from an `ssd_mobilenet_v2` (300x300, 1917 anchors, Open Images V4, 23 classes; see objectron.py).
Its weights are rebuilt into the TFOD Keras model of our `ssd_mobilenet_v2` template:

- The TFLite graph is read op by op: every CONV_2D / DEPTHWISE_CONV_2D with its weights and bias, which are fp16
  constants behind DEQUANTIZE ops (dequantised here exactly as the interpreter does: fp16 -> fp32). A convolution
  whose output is reshaped into the box-encoding or class-prediction concatenation is a box-predictor head (its
  place in the concatenation is the feature map); the others form the feature extractor, a chain in op order.
- The Keras model gives the same list: the MobileNetV2 backbone's convolutions in layer order, the extra feature
  maps' convolutions, the box and class heads per feature map. The two lists are paired by that structure; the
  TF1 scope in each TFLite tensor name (`FeatureExtractor/MobilenetV2/expanded_conv_3/expand`) must name the paired
  Keras layer (`block_3_expand`), and every shape must match exactly.
- Layouts: TFLite CONV_2D kernels are OHWI, Keras HWIO; depthwise kernels are [1, H, W, C*M], Keras [H, W, C, M].
- Batch norm was folded into the convolutions by the converter (kernel scaled, the rest in the bias). Each Keras
  batch norm becomes the identity carrying that bias: gamma 1, beta the bias, moving mean 0, moving variance
  1 - epsilon (so variance + epsilon is exactly 1 in float32 and the layer computes x + bias).
- Since those statistics are not the real ones, the written pipeline.config sets `freeze_batchnorm: true`:
  batch norm then always normalises with the stored (identity) statistics, gamma and beta stay trainable, and
  fine-tuning does not re-normalise the folded activations with batch statistics.

The result is checked before it is kept: the rebuilt model and the TFLite interpreter get the same preprocessed
photos and their raw box encodings and class logits must agree (`verify_import`), and the rebuilt model must find
the cat in scikit-image's `chelsea`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfod_wrap.core.detections import Detections
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_output,
    claim_output,
    read_json_object,
)
from tfod_wrap.core.labelmap import label_map_from_names, read_label_map, write_label_map
from tfod_wrap.core.pipeline import load, save
from tfod_wrap.core.tflite import interpreter as tflite_interpreter
from tfod_wrap.core.tflite import postprocess_tensors
from tfod_wrap.core.weights import IMPORT_KIND
from tfod_wrap.pretrained import objectron

OUTPUT_KIND = "pretrained import-tflite"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)
TEMPLATE = "ssd_mobilenet_v2"
TFLITE_FILE = "objectron_ssd_mobilenetv2_oidv4_fp16.tflite"
CHECKPOINT = "checkpoint/ckpt-0"
INPUT_SIZE = 300
NUM_ANCHORS = 1917
DEFAULT_PHOTOS = ("chelsea", "astronaut", "coffee")
# Both models compute in float32 with the same (fp16-representable) weights, so only the order of floating-point
# operations differs; observed differences are ~1e-5. This bound is far below fp16 resolution of the outputs
# (|logit| up to ~15 -> fp16 step 0.008), and far below what one misplaced weight tensor would cause.
PARITY_ATOL = 2e-3
CAT_MIN_SCORE = 0.5
TF1_BACKBONE_SCOPE = "FeatureExtractor/MobilenetV2/"
BOX_ENCODINGS = "box_encodings"
CLASS_PREDICTIONS = "class_predictions_with_background"


def import_objectron(
    output_dir: str | Path,
    *,
    package_dir: str | Path | None = None,
    photos: Sequence[str] = DEFAULT_PHOTOS,
    log: Callable[..., None] = print,
) -> dict:
    """Write checkpoint/ckpt-0, pipeline.config, label_map.pbtxt, the source .tflite and report.json into
    `output_dir`, atomically, after checking parity with the TFLite interpreter on `photos`. Returns the report."""
    import tensorflow as tf

    from tfod_wrap.core.model import build_model

    output = Path(output_dir)
    check_output(output, OUTPUT_KIND, legacy=earlier_import)
    source = objectron.load(package_dir, log=log)
    log(f"{objectron.PACKAGE}@{source.version}: {objectron.MODEL_ENTRY}, sha256 {source.sha256[:16]}... ok")
    pipeline = imported_pipeline(source.labels, output.resolve() / CHECKPOINT)
    with claim_output(output, OUTPUT_KIND, legacy=earlier_import) as staging:
        atomic_write_bytes(staging / TFLITE_FILE, source.tflite)
        model = build_model(pipeline, built=True)
        transfer = transfer_weights(source.tflite, model)
        log(
            f"{transfer['tflite_tensors']} TFLite weight tensors -> {transfer['keras_variables_from_tflite']} Keras "
            f"variables; {transfer['identity_batch_norms']} batch norms set to identity + folded bias"
        )
        # saved as model_lib_v2 saves (save_counter included: TFOD's restore asserts every object matched)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(staging / "checkpoint"), 1)
        manager.save(checkpoint_number=0)
        atomic_write_text(  # relative, as in model-zoo tarballs: the folder is renamed after this
            staging / "checkpoint" / "checkpoint",
            'model_checkpoint_path: "ckpt-0"\nall_model_checkpoint_paths: "ckpt-0"\n',
        )
        save(pipeline, staging / "pipeline.config")
        write_label_map(label_map_from_names(source.labels), staging / "label_map.pbtxt")
        verification = verify_import(staging, sample_photos(photos))
        for name, result in verification["photos"].items():
            top = result["detections"][0] if result["detections"] else None
            log(
                f"{name}: max |diff| box encodings {result['max_abs_diff_box_encodings']:.2e}, class logits "
                f"{result['max_abs_diff_class_logits']:.2e}; top: {top['class'] if top else '-'} "
                f"{top['score'] if top else 0:.2f}"
            )
        problems = verification_problems(verification)
        if problems:
            raise UserError("the rebuilt model does not match the TFLite model:\n" + "\n".join(problems))
        report = {
            "kind": IMPORT_KIND,
            "source": source.source(),
            "model": {
                "template": TEMPLATE,
                "input_size": [INPUT_SIZE, INPUT_SIZE],
                "anchors": NUM_ANCHORS,
                "num_classes": len(source.labels),
                "labels": source.labels,
                "label_source": (
                    f"{objectron.LABELS_ENTRY} packed in {objectron.DATA_FILE} of {objectron.PACKAGE}@{source.version}"
                ),
            },
            "checkpoint": CHECKPOINT,
            "fine_tune_checkpoint_type": "detection",
            "weights": transfer,
            "notes": [
                "batch norm was folded into the convolutions: each batch norm is identity (gamma 1, mean 0, "
                "variance 1 - epsilon) with beta = the folded bias",
                "pipeline.config sets model.ssd.freeze_batchnorm: true so fine-tuning keeps those statistics",
            ],
            "verification": verification,
        }
        atomic_write_json(staging / "report.json", report)
    log(f"wrote {output}: {CHECKPOINT}, pipeline.config, label_map.pbtxt, {TFLITE_FILE}, report.json")
    return report


def imported_pipeline(labels: Sequence[str], checkpoint: Path):
    """Our ssd_mobilenet_v2 template with everything the TFLite graph fixes set explicitly (the weight transfer
    and the parity check prove them): 23 classes, 300x300, the anchor layout of 1917 boxes, 1x1 heads."""
    from object_detection.protos import train_pb2

    pipeline = load(TEMPLATE)
    ssd = pipeline.model.ssd
    ssd.num_classes = len(labels)
    ssd.freeze_batchnorm = True  # folded batch norm: keep the identity statistics, never batch statistics
    ssd.image_resizer.fixed_shape_resizer.height = INPUT_SIZE
    ssd.image_resizer.fixed_shape_resizer.width = INPUT_SIZE
    anchors = ssd.anchor_generator.ssd_anchor_generator
    anchors.num_layers, anchors.min_scale, anchors.max_scale = 6, 0.2, 0.95
    anchors.aspect_ratios[:] = [1.0, 2.0, 0.5, 3.0, 0.3333]
    anchors.reduce_boxes_in_lowest_layer = True
    predictor = ssd.box_predictor.convolutional_box_predictor
    predictor.kernel_size, predictor.num_layers_before_predictor, predictor.box_code_size = 1, 0, 4
    predictor.use_depthwise = False
    extractor = ssd.feature_extractor
    extractor.type, extractor.depth_multiplier, extractor.min_depth = "ssd_mobilenet_v2_keras", 1.0, 16
    extractor.use_explicit_padding = extractor.use_depthwise = False
    coder = ssd.box_coder.faster_rcnn_box_coder
    coder.y_scale, coder.x_scale, coder.height_scale, coder.width_scale = 10.0, 10.0, 5.0, 5.0
    ssd.post_processing.score_converter = ssd.post_processing.SIGMOID
    train = pipeline.train_config
    train.fine_tune_checkpoint = str(checkpoint)
    train.fine_tune_checkpoint_type = "detection"
    train.fine_tune_checkpoint_version = train_pb2.CheckpointVersion.Value("V2")
    return pipeline


# --- the weight transfer ---------------------------------------------------------------------------------------


@dataclass
class _TfliteConv:
    scope: str  # TF1 scope, e.g. FeatureExtractor/MobilenetV2/expanded_conv_3/expand
    depthwise: bool
    kernel: np.ndarray  # TFLite layout, float32
    bias: np.ndarray
    head: tuple[str, int] | None  # (BOX_ENCODINGS or CLASS_PREDICTIONS, feature map) for predictor heads


@dataclass
class _KerasConv:
    name: str  # the TF1-style name the TFLite scope must map to
    conv: object
    batch_norm: object | None
    head: tuple[str, int] | None


def transfer_weights(tflite: bytes, model) -> dict:
    """Assign the TFLite model's weights to the (built) Keras model; every variable is accounted for."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_content=tflite, experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF
    )
    interpreter.allocate_tensors()
    convs, constants = tflite_convs(interpreter)
    slots = keras_convs(model)
    pairs = _pair(convs, slots)
    assigned: dict[object, str] = {}
    identity = 0
    for source, slot in pairs:
        kernel = _keras_kernel(source, slot)
        _assign(_kernel_variable(slot.conv), kernel, source.scope, assigned)
        if slot.conv.use_bias:
            _assign(slot.conv.bias, source.bias, source.scope, assigned)
            if slot.batch_norm is not None:
                raise UserError(f"{slot.name}: a convolution with a bias followed by batch norm is not supported")
            continue
        norm = slot.batch_norm
        if norm is None or not norm.center:
            raise UserError(f"{slot.name}: no batch norm with beta to carry the folded bias of {source.scope}")
        epsilon = np.float32(norm.epsilon)
        variance = np.float32(1.0) - epsilon
        if np.float32(variance + epsilon) != np.float32(1.0):
            raise UserError(f"{norm.name}: epsilon {norm.epsilon} does not allow an exact identity batch norm")
        _assign(norm.beta, source.bias, source.scope, assigned)
        if norm.scale:
            _assign(norm.gamma, np.ones_like(source.bias), "identity", assigned)
        _assign(norm.moving_mean, np.zeros_like(source.bias), "identity", assigned)
        _assign(norm.moving_variance, np.full_like(source.bias, variance), "identity", assigned)
        identity += 1
    left = [variable.name for variable in model.variables if variable.ref() not in assigned]
    if left:
        raise UserError(f"{len(left)} Keras variables get no TFLite weight: {', '.join(left[:8])}")
    used = 2 * len(convs)
    if used != constants:
        raise UserError(f"the TFLite model has {constants} float weight tensors but only {used} feed convolutions")
    return {
        "tflite_convolutions": len(convs),
        "tflite_tensors": constants,
        "keras_variables": len(model.variables),
        "keras_variables_from_tflite": sum(1 for origin in assigned.values() if origin != "identity"),
        "identity_batch_norms": identity,
        "batch_norm_epsilon": sorted({float(slot.batch_norm.epsilon) for _, slot in pairs if slot.batch_norm}),
    }


def tflite_convs(interpreter) -> tuple[list[_TfliteConv], int]:
    """Every convolution of the TFLite graph in op order, and the number of float weight constants."""
    ops = interpreter._get_ops_details()  # noqa: SLF001  (op order, inputs and outputs: not in the public API)
    ops = [op for op in ops if op["op_name"] != "DELEGATE"]  # a delegate's node repeats the ops it took over
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    outputs = {detail["index"]: detail["name"] for detail in interpreter.get_output_details()}
    producer = {int(index): op for op in ops for index in op["outputs"]}
    consumers: dict[int, list[dict]] = defaultdict(list)
    for op in ops:
        for index in op["inputs"]:
            consumers[int(index)].append(op)

    def constant(index: int) -> tuple[np.ndarray, str]:
        op = producer.get(index)
        if op is not None:
            if op["op_name"] != "DEQUANTIZE":
                raise UserError(f"TFLite tensor {names[index]} is computed by {op['op_name']}, not a weight")
            index = int(op["inputs"][0])
        value = interpreter.get_tensor(index)
        if value.dtype not in (np.float16, np.float32):
            raise UserError(f"TFLite weight {names[index]} is {value.dtype}: only float16/float32 models import")
        return value.astype(np.float32), names[index]

    def head(tensor: int) -> tuple[str, int] | None:
        """Where a convolution's output goes: reshaped into the box or class concatenation (feature map index)."""
        position = None
        for _ in range(4):
            users = consumers.get(tensor, [])
            if len(users) != 1:
                return None
            op = users[0]
            if op["op_name"] == "CONCATENATION" and position is None:
                position = list(op["inputs"]).index(tensor)
            elif op["op_name"] == "TFLite_Detection_PostProcess" and position is not None:
                return (BOX_ENCODINGS, CLASS_PREDICTIONS)[list(op["inputs"]).index(tensor)], position
            elif op["op_name"] != "RESHAPE":
                return None
            tensor = int(op["outputs"][0])
            if tensor in outputs and position is not None:
                kind = outputs[tensor]
                return (BOX_ENCODINGS if "box_encodings" in kind else CLASS_PREDICTIONS, position)
        return None

    convs = []
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        _, weights, bias = (int(index) for index in op["inputs"])
        kernel, kernel_name = constant(weights)
        bias_value, bias_name = constant(bias)
        scope, bias_scope = _scope(kernel_name), _scope(bias_name)
        if scope != bias_scope:
            raise UserError(f"TFLite convolution {kernel_name}: its bias {bias_name} belongs to another layer")
        convs.append(
            _TfliteConv(scope, op["op_name"] == "DEPTHWISE_CONV_2D", kernel, bias_value, head(int(op["outputs"][0])))
        )
    constants = sum(1 for op in ops if op["op_name"] == "DEQUANTIZE")
    return convs, constants


def _scope(tensor_name: str) -> str:
    """The TF1 layer scope of a (possibly fused, `;`-joined) TFLite tensor name."""
    first = tensor_name.split(";")[0]
    match = re.match(r"(.*?)/(?:BatchNorm|Conv2D|BiasAdd|biases|weights|depthwise/depthwise)(?:/|$)", first)
    if not match:
        raise UserError(f"TFLite tensor {tensor_name}: cannot tell which layer it belongs to")
    return match.group(1)


def keras_name(scope: str) -> str:
    """TF1 scope -> the Keras name of the same layer: FeatureExtractor/MobilenetV2/Conv -> Conv1, expanded_conv/X ->
    expanded_conv_X, expanded_conv_N/X -> block_N_X; Conv_1, layer_19_* and BoxPredictor_i/* keep their names."""
    name = scope.removeprefix(TF1_BACKBONE_SCOPE)
    if name == "Conv":
        return "Conv1"
    match = re.fullmatch(r"expanded_conv(?:_(\d+))?/(expand|depthwise|project)", name)
    if match:
        return f"block_{match[1]}_{match[2]}" if match[1] else f"expanded_conv_{match[2]}"
    return name


def keras_convs(model) -> list[_KerasConv]:
    """The convolutions of TFOD's Keras SSD MobileNetV2: backbone (layer order), extra feature maps, heads."""
    import tensorflow as tf

    kinds = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)
    batch_norm = (tf.keras.layers.BatchNormalization, tf.compat.v1.keras.layers.BatchNormalization)  # FreezableBN: v1
    extractor = model._feature_extractor  # noqa: SLF001
    slots = []
    for layer in extractor.classification_backbone.layers:
        if isinstance(layer, kinds):
            following = [node.outbound_layer for node in layer._outbound_nodes]  # noqa: SLF001
            if len(following) != 1 or not isinstance(following[0], batch_norm):
                raise UserError(f"backbone layer {layer.name} is not followed by one batch norm")
            slots.append(_KerasConv(layer.name, layer, following[0], None))
    for net in extractor.feature_map_generator.convolutions:
        for layer, following in zip(net, [*net[1:], None]):
            if isinstance(layer, kinds):
                if not isinstance(following, batch_norm):
                    raise UserError(f"feature map layer {layer.name} is not followed by batch norm")
                slots.append(_KerasConv(layer.name.removesuffix("_conv"), layer, following, None))
    predictor = model._box_predictor  # noqa: SLF001
    if any(getattr(predictor, "_shared_nets", [])):
        raise UserError("box predictor layers before the heads are not in the TFLite model")
    heads = predictor._prediction_heads  # noqa: SLF001
    for kind, attribute, tf1_name in (
        (BOX_ENCODINGS, "_box_encoder_layers", "BoxEncodingPredictor"),
        (CLASS_PREDICTIONS, "_class_predictor_layers", "ClassPredictor"),
    ):
        for index, head in enumerate(heads[kind]):
            layers = [layer for layer in getattr(head, attribute) if layer.weights]
            if len(layers) != 1 or not isinstance(layers[0], tf.keras.layers.Conv2D):
                raise UserError(f"{kind} head {index}: expected one convolution, found {layers}")
            slots.append(_KerasConv(f"BoxPredictor_{index}/{tf1_name}", layers[0], None, (kind, index)))
    return slots


def _pair(convs: list[_TfliteConv], slots: list[_KerasConv]) -> list[tuple[_TfliteConv, _KerasConv]]:
    """Feature-extractor convolutions pair in order, heads by (kind, feature map); names must then agree."""
    body = [conv for conv in convs if conv.head is None]
    keras_body = [slot for slot in slots if slot.head is None]
    if len(body) != len(keras_body):
        raise UserError(f"the TFLite feature extractor has {len(body)} convolutions, the Keras one {len(keras_body)}")
    tflite_heads = {conv.head: conv for conv in convs if conv.head is not None}
    keras_heads = {slot.head: slot for slot in slots if slot.head is not None}
    if set(tflite_heads) != set(keras_heads):
        raise UserError(f"TFLite heads {sorted(tflite_heads)} differ from the Keras heads {sorted(keras_heads)}")
    pairs = [*zip(body, keras_body), *((tflite_heads[key], keras_heads[key]) for key in sorted(keras_heads))]
    for conv, slot in pairs:
        if keras_name(conv.scope) != slot.name:
            raise UserError(f"TFLite layer {conv.scope} lines up with Keras layer {slot.name}: the structures differ")
    return pairs


def _kernel_variable(layer):
    return layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel


def _keras_kernel(conv: _TfliteConv, slot: _KerasConv) -> np.ndarray:
    shape = tuple(_kernel_variable(slot.conv).shape)
    if conv.depthwise != hasattr(slot.conv, "depthwise_kernel"):
        raise UserError(f"{conv.scope} and Keras {slot.name} differ in kind (depthwise or not)")
    if conv.depthwise:  # [1, H, W, C*M] -> [H, W, C, M]
        if conv.kernel.shape[0] != 1 or conv.kernel.size != np.prod(shape):
            raise UserError(f"{conv.scope}: depthwise kernel {conv.kernel.shape} does not fit {slot.name} {shape}")
        kernel = conv.kernel[0].reshape(shape)
    else:  # OHWI -> HWIO
        kernel = conv.kernel.transpose(1, 2, 3, 0)
    if kernel.shape != shape:
        raise UserError(f"{conv.scope}: kernel {conv.kernel.shape} does not fit Keras {slot.name} {shape}")
    return kernel


def _assign(variable, value: np.ndarray, origin: str, assigned: dict) -> None:
    if tuple(variable.shape) != value.shape:
        raise UserError(f"{variable.name}: shape {tuple(variable.shape)}, but {origin} gives {value.shape}")
    if variable.ref() in assigned:
        raise UserError(f"{variable.name}: assigned twice ({assigned[variable.ref()]} and {origin})")
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))
    assigned[variable.ref()] = origin


# --- verification ------------------------------------------------------------------------------------------------


def sample_photos(names: Sequence[str] = DEFAULT_PHOTOS) -> dict[str, np.ndarray]:
    """RGB uint8 photos bundled with scikit-image (skimage.data.<name>())."""
    import skimage.data

    photos = {}
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise UserError(f"skimage.data has no photo {name!r}")
        image = np.asarray(loader())
        if image.ndim != 3 or image.shape[-1] != 3:
            raise UserError(f"skimage.data.{name}() is not an RGB photo (shape {image.shape})")
        photos[name] = image.astype(np.uint8)
    return photos


def verify_import(output_dir: str | Path, images: Mapping[str, np.ndarray] | None = None) -> dict:
    """Restore `output_dir`'s checkpoint into a model built from its pipeline.config and compare it with its .tflite
    on `images` (name -> RGB uint8; default: DEFAULT_PHOTOS): the same preprocessed 300x300 input into both, then the
    max absolute difference of the raw box encodings and class logits (the TFLite outputs), and the rebuilt model's
    own postprocessed detections (class names from label_map.pbtxt). Nothing is asserted; see
    `verification_problems`."""
    from tfod_wrap.core.detector import CheckpointDetector

    folder = Path(output_dir)
    detector = CheckpointDetector(folder / "pipeline.config", folder / CHECKPOINT, complete=True)
    names = {class_id: name for name, class_id in read_label_map(folder / "label_map.pbtxt").items()}
    interpreter = tflite_interpreter(folder / TFLITE_FILE, num_threads=2, preserve_all_tensors=True)
    box_index, score_index, converted = raw_output_tensors(interpreter)
    results = {}
    for name, image in (images if images is not None else sample_photos()).items():
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], detector.preprocess(image))
        interpreter.invoke()
        found = detector(image)
        keras_boxes = found.raw[BOX_ENCODINGS].reshape(1, NUM_ANCHORS, 4)
        keras_scores = found.raw[CLASS_PREDICTIONS][np.newaxis]
        if converted:  # a TFLite graph with the post-processing op takes scores after the score converter
            keras_scores = detector.model._score_conversion_fn(keras_scores).numpy()  # noqa: SLF001
        tflite_boxes = interpreter.get_tensor(box_index).reshape(keras_boxes.shape)
        tflite_scores = interpreter.get_tensor(score_index).reshape(keras_scores.shape)
        results[name] = {
            "max_abs_diff_box_encodings": float(np.abs(keras_boxes - tflite_boxes).max()),
            "max_abs_diff_class_logits": float(np.abs(keras_scores - tflite_scores).max()),
            "max_abs_class_logit": float(np.abs(tflite_scores).max()),
            "detections": _top_detections(found, names),
        }
    return {
        "tolerance_abs": PARITY_ATOL,
        "compared": "raw box encodings [1917, 4] and class logits [1917, 24] for one preprocessed 300x300 input",
        "photos": results,
    }


def verification_problems(verification: dict) -> list[str]:
    """What disqualifies an import: parity beyond the tolerance, or no Cat (> CAT_MIN_SCORE) in `chelsea`."""
    problems = []
    tolerance = verification["tolerance_abs"]
    for name, result in verification["photos"].items():
        for key in ("max_abs_diff_box_encodings", "max_abs_diff_class_logits"):
            if not result[key] <= tolerance:
                problems.append(f"{name}: {key} = {result[key]:.3g} > {tolerance}")
    chelsea = verification["photos"].get("chelsea")
    if chelsea is not None and cat_score(chelsea) <= CAT_MIN_SCORE:
        problems.append(f"chelsea: no Cat detected above {CAT_MIN_SCORE} (got {chelsea['detections'][:3]})")
    return problems


def cat_score(result: dict) -> float:
    return max((item["score"] for item in result["detections"] if item["class"] == "Cat"), default=0.0)


def raw_output_tensors(interpreter) -> tuple[int, int, bool]:
    """(box encodings, class scores, whether the scores are already converted) tensor indexes. A TFOD TFLite export
    feeds them to the TFLite_Detection_PostProcess op (core.tflite.postprocess_tensors finds them, scores after the
    score converter); MediaPipe's model has no such op and ends at raw_outputs/box_encodings and
    raw_outputs/class_predictions (logits)."""
    try:
        tensors = postprocess_tensors(interpreter)
    except UserError:
        outputs = {detail["name"]: detail["index"] for detail in interpreter.get_output_details()}
        if {"raw_outputs/box_encodings", "raw_outputs/class_predictions"} - set(outputs):
            raise UserError(
                f"the TFLite model has neither the post-processing op nor raw outputs: {list(outputs)}"
            ) from None
        return outputs["raw_outputs/box_encodings"], outputs["raw_outputs/class_predictions"], False
    return tensors["box_encodings"]["index"], tensors["raw_detection_scores"]["index"], True


def _top_detections(found: Detections, names: dict[int, str], count: int = 5) -> list[dict]:
    return [
        {
            "class": names.get(int(label), str(label)),
            "score": round(float(score), 4),
            "box": [round(float(value), 4) for value in box],
        }
        for box, label, score in zip(found.boxes[:count], found.classes[:count], found.scores[:count])
    ]


def earlier_import(output: Path) -> bool:
    """An import of the versions before the ownership marker: report.json of IMPORT_KIND, and nothing in the folder
    but what the import writes."""
    report = read_json_object(output / "report.json")
    written = {"checkpoint", "pipeline.config", "label_map.pbtxt", "report.json", TFLITE_FILE}
    return report is not None and report.get("kind") == IMPORT_KIND and {p.name for p in output.iterdir()} <= written
