"""TFRecords of tf.train.Example: the writer (without TensorFlow) and the reader, for every stage.

Writing: the encoding workers must start fast and stay small, so they never import TensorFlow. We declare the
same messages as tensorflow/core/example/{example,feature}.proto (same field numbers and types, hence
the same bytes on the wire) in a package of our own, and frame records with crc32c exactly as
TFRecordWriter does. Tests read the output back with TensorFlow's own parsers.

Reading: TensorFlow's TFRecordDataset and tf.train.Example, each problem one line naming the file.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tfod_wrap.core.errors import UserError

if TYPE_CHECKING:
    import numpy as np


class RecordsError(UserError):
    """TFRecords that cannot be read; the message names the file."""


_Field = descriptor_pb2.FieldDescriptorProto


def _list_message(name: str, field_type: int) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    message.field.add(name="value", number=1, type=field_type, label=_Field.LABEL_REPEATED)
    return message


PACKAGE = "tfod_wrap.example"


def _message_field(message, name: str, number: int, type_name: str, repeated: bool = False, **extra) -> None:
    label = _Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL
    message.field.add(
        name=name, number=number, type=_Field.TYPE_MESSAGE, type_name=f".{PACKAGE}.{type_name}", label=label, **extra
    )


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file_proto = descriptor_pb2.FileDescriptorProto(name="tfod_wrap/example.proto", package=PACKAGE, syntax="proto3")
    file_proto.message_type.extend(
        [
            _list_message("BytesList", _Field.TYPE_BYTES),
            _list_message("FloatList", _Field.TYPE_FLOAT),
            _list_message("Int64List", _Field.TYPE_INT64),
        ]
    )
    feature = file_proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, kind in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        list_name = "".join(part.capitalize() for part in kind.split("_"))
        _message_field(feature, kind, number, list_name, oneof_index=0)
    features = file_proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_Field.TYPE_STRING, label=_Field.LABEL_OPTIONAL)
    _message_field(entry, "value", 2, "Feature")
    _message_field(features, "feature", 1, "Features.FeatureEntry", repeated=True)
    _message_field(file_proto.message_type.add(name="Example"), "features", 1, "Features")
    return file_proto


def _example_class():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_build_file())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Example"))


Example = _example_class()


def build_example(
    *,
    bytes_features: dict[str, list[bytes]],
    int64_features: dict[str, list[int]],
    float_features: dict[str, list[float]],
) -> bytes:
    """Serialize a tf.train.Example. The kind of each key is explicit: TensorFlow's parser rejects a
    kind mismatch even for an empty list (an image with no objects has empty box lists)."""
    example = Example()
    feature_map = example.features.feature
    for features, kind in (
        (bytes_features, "bytes_list"),
        (int64_features, "int64_list"),
        (float_features, "float_list"),
    ):
        for key, values in features.items():
            value_list = getattr(feature_map[key], kind)
            value_list.SetInParent()
            value_list.value.extend(values)
    return example.SerializeToString()


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def frame_record(record: bytes) -> bytes:
    """One TFRecord entry: length, crc of length, data, crc of data (as TFRecordWriter writes it)."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


def expand_record_paths(paths: list[str]) -> list[str]:
    """Files, shard globs (`train.record-?????-of-00004`) and folders (every *.record* inside)."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            matches = sorted(glob.glob(os.path.join(path, "*.record*")))
        else:
            matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        missing = [match for match in matches if not os.path.isfile(match)]
        if not matches or missing:
            raise RecordsError(f"{path}: no such TFRecord file")
        found.extend(matches)
    return found


def read_examples(files: list[str]) -> Iterator[tuple[str, object]]:
    """(file, tf.train.Example) of every record. A file that is not a TFRecord file (binary junk, text, a
    truncated write) or holds something other than tf.train.Example is a RecordsError naming it."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    for file in files:
        try:
            for record in tf.data.TFRecordDataset([file]):
                yield file, tf.train.Example.FromString(record.numpy())
        except tf.errors.DataLossError:
            raise RecordsError(f"{file}: not a TFRecord file, or a truncated one (corrupted record)") from None
        except DecodeError:
            raise RecordsError(f"{file}: its records are not tf.train.Example protos") from None


def feature_values(features: Mapping, key: str) -> list:
    """The values of one feature of `example.features.feature`, whatever its kind; [] when absent."""
    value = features.get(key)
    kind = value.WhichOneof("kind") if value is not None else None
    return list(getattr(value, kind).value) if kind else []


def decode_image(features: Mapping) -> np.ndarray:
    """The record's image/encoded as RGB uint8 [H, W, 3], decoded by TensorFlow as training decodes it."""
    import tensorflow as tf

    encoded = feature_values(features, "image/encoded")
    if not encoded:
        raise RecordsError("a record without image/encoded")
    return tf.io.decode_image(encoded[0], channels=3, expand_animations=False).numpy()
