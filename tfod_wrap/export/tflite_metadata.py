"""TFLite metadata embedded in the exported .tflite: what MediaPipe Tasks' ObjectDetector (and the TFLite Task
Library) read to run a detector without being told anything else.

    embed_metadata(model_path, labels, normalisation, outputs, name=..., description=...)

It writes, in the TFLite metadata schema (mediapipe/tasks/metadata/metadata_schema.fbs, file identifier M001):
the input image (RGB, normalisation as mean and std, value range), the four outputs of the
TFLite_Detection_PostProcess op by meaning ("location": [ymin, xmin, ymax, xmax] ratios, "category": 0-based class
index into labels.txt, "score", "number of detections"), the first three grouped as one detection result, and
labels.txt itself, which the schema keeps in a zip archive appended to the model (stored, not compressed: readers
map it in place). The metadata flatbuffer is written with flatbuffers' Builder directly: the schema's generated
Python lives in packages the stack cannot install (tflite-support is unmaintained and pins old protobuf; mediapipe
brings opencv-contrib-python beside opencv-python-headless), and the handful of tables needed are short. The model
flatbuffer is edited with TensorFlow's own generated TFLite schema: the metadata goes in as a buffer named by a
"TFLITE_METADATA" entry of Model.metadata, as the schema prescribes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import flatbuffers
import numpy as np

from tfod_wrap.core.files import atomic_write_bytes

METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry readers look for
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
# the oldest metadata parser that reads every field written here: output_tensor_groups came with schema 1.2.0
MIN_PARSER_VERSION = "1.2.0"
# the post-processing op's outputs in its own order (core.tflite.postprocess_tensors' keys), with the names and
# descriptions MediaPipe's detector graph matches them by
OUTPUTS = {
    "detection_boxes": ("location", "Boxes [ymin, xmin, ymax, xmax] as ratios of the image height and width."),
    "detection_classes": ("category", f"Class index, 0-based: line N of {LABELS_FILE} (the label map id minus 1)."),
    "detection_scores": ("score", "Scores 0..1, best first."),
    "num_detections": ("number of detections", "How many rows of the other outputs hold detections."),
}
GROUP = "detection_result"

# enum values and union tags of metadata_schema.fbs
_RGB = 1  # ColorSpaceType
_BOUNDARIES = 1  # BoundingBoxType; CoordinateType RATIO is 0, the default
_TENSOR_VALUE_LABELS = 3  # AssociatedFileType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES, _BOUNDING_BOX_PROPERTIES = 1, 2, 3  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_BOX_INDEX = [1, 0, 3, 2]  # where left, top, right and bottom sit in a [ymin, xmin, ymax, xmax] box


def embed_metadata(
    model_path: Path,
    labels: Sequence[str],
    normalisation: dict[str, list[float]],
    outputs: Sequence[str],
    *,
    name: str,
    description: str,
) -> bytes:
    """Rewrite `model_path` with its metadata and labels.txt embedded; returns the metadata flatbuffer.

    `labels`: line N names class index N. `normalisation`: per-channel "scale" and "offset" of the pixels
    (0..255), as core.detector.Detector.normalisation gives them. `outputs`: the OUTPUTS key of each of the
    model's outputs, in the model's output order (the metadata lists its tensors in that order).
    """
    metadata = metadata_buffer(normalisation, outputs, name=name, description=description)
    model = _with_metadata(model_path.read_bytes(), metadata)
    atomic_write_bytes(model_path, _append_zip(model, {LABELS_FILE: "".join(f"{label}\n" for label in labels)}))
    return metadata


def metadata_buffer(
    normalisation: dict[str, list[float]],
    outputs: Sequence[str],
    *,
    name: str,
    description: str,
) -> bytes:
    """The ModelMetadata flatbuffer (see embed_metadata); the category tensor names labels.txt, whose content goes
    into the zip appended to the model."""
    if sorted(outputs) != sorted(OUTPUTS):
        raise ValueError(f"the model's outputs must be {', '.join(OUTPUTS)} in some order, not {outputs}")
    builder = flatbuffers.Builder(1024)
    input_tensor = _input_tensor(builder, normalisation)
    output_tensors = [_output_tensor(builder, key) for key in outputs]
    group = _table(
        builder,
        {
            0: builder.CreateString(GROUP),
            1: _vector(builder, [builder.CreateString(OUTPUTS[key][0]) for key in OUTPUTS if key != "num_detections"]),
        },
    )
    subgraph = _table(
        builder,
        {
            2: _vector(builder, [input_tensor]),  # input_tensor_metadata
            3: _vector(builder, output_tensors),  # output_tensor_metadata
            8: _vector(builder, [group]),  # output_tensor_groups
        },
    )
    model = _table(
        builder,
        {
            0: builder.CreateString(name),
            1: builder.CreateString(description),
            3: _vector(builder, [subgraph]),  # subgraph_metadata
            7: builder.CreateString(MIN_PARSER_VERSION),
        },
    )
    builder.Finish(model, file_identifier=METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _input_tensor(builder: flatbuffers.Builder, normalisation: dict[str, list[float]]) -> int:
    """The image: RGB, normalised as (pixel - mean) / std, so values from (0 - mean) / std to (255 - mean) / std."""
    scale = np.asarray(normalisation["scale"], np.float64)
    offset = np.asarray(normalisation["offset"], np.float64)
    std, mean = 1 / scale, -offset / scale
    image = _table(builder, {0: (_RGB, "int8")})
    content = _table(builder, {0: (_IMAGE_PROPERTIES, "uint8"), 1: image})
    normalise = _table(
        builder,
        {0: builder.CreateNumpyVector(mean.astype(np.float32)), 1: builder.CreateNumpyVector(std.astype(np.float32))},
    )
    unit = _table(builder, {0: (_NORMALIZATION_OPTIONS, "uint8"), 1: normalise})
    stats = _table(
        builder,
        {
            0: builder.CreateNumpyVector(((255 - mean) / std).astype(np.float32)),  # max
            1: builder.CreateNumpyVector(((0 - mean) / std).astype(np.float32)),  # min
        },
    )
    return _table(
        builder,
        {
            0: builder.CreateString("image"),
            1: builder.CreateString("RGB image, resized to the input size (bilinear), normalised per channel."),
            3: content,
            4: _vector(builder, [unit]),  # process_units
            5: stats,
        },
    )


def _output_tensor(builder: flatbuffers.Builder, key: str) -> int:
    name, description = OUTPUTS[key]
    fields = {0: builder.CreateString(name), 1: builder.CreateString(description)}
    # dimension 2 of [1, detections, ...] runs over the detections
    if key != "num_detections":
        value_range = _table(builder, {0: (2, "int32"), 1: (2, "int32")})
        if key == "detection_boxes":
            box = _table(
                builder, {0: builder.CreateNumpyVector(np.asarray(_BOX_INDEX, np.uint32)), 1: (_BOUNDARIES, "int8")}
            )
            content = _table(builder, {0: (_BOUNDING_BOX_PROPERTIES, "uint8"), 1: box, 2: value_range})
        else:
            feature = _table(builder, {})
            content = _table(builder, {0: (_FEATURE_PROPERTIES, "uint8"), 1: feature, 2: value_range})
        fields[3] = content
    if key == "detection_classes":
        labels = _table(
            builder,
            {
                0: builder.CreateString(LABELS_FILE),
                1: builder.CreateString("Class names, line N for class index N."),
                2: (_TENSOR_VALUE_LABELS, "int8"),
            },
        )
        fields[6] = _vector(builder, [labels])  # associated_files
    return _table(builder, fields)


def _table(builder: flatbuffers.Builder, fields: dict[int, int | tuple[int, str]]) -> int:
    """A table from its fields by slot (the field's position in the schema, a union taking two: type, value): an
    offset of something already built, or (value, scalar type)."""
    builder.StartObject(max(fields, default=-1) + 1)
    for slot, value in fields.items():
        if isinstance(value, tuple):
            number, kind = value
            {"int8": builder.PrependInt8Slot, "uint8": builder.PrependUint8Slot, "int32": builder.PrependInt32Slot}[
                kind
            ](slot, number, 0)
        else:
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
    return builder.EndObject()


def _vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _with_metadata(model: bytes, metadata: bytes) -> bytes:
    """The TFLite flatbuffer with `metadata` as a buffer that a TFLITE_METADATA entry names (replacing an earlier
    one), the converter's own entries kept."""
    from tensorflow.lite.python import schema_py_generated as schema

    if model[4:8] != MODEL_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
    kept = [item for item in tree.metadata or [] if _text(item.name) != METADATA_NAME]
    tree.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(model) + len(metadata) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    return bytes(builder.Output())


def _text(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else value or ""


def _append_zip(data: bytes, files: dict[str, str]) -> bytes:
    """`data` followed by a zip archive of `files`, stored uncompressed, whose offsets count from the start of
    `data` (zipfile's append mode on a file that is not a zip): the TFLite metadata schema's way to carry
    associated files, which readers find from the end of the model file."""
    archive = io.BytesIO(data)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as zipped:
        for name, content in files.items():
            zipped.writestr(name, content)
    return archive.getvalue()
