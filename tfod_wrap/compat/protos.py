"""Rebuild the TFOD API's shipped `_pb2` modules for protobuf >= 4 (fix 1 in stack.md)."""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
from types import ModuleType

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import builder

PROTO_PACKAGE = "object_detection.protos"


def serialized_descriptor(path: str) -> bytes:
    """The `serialized_pb=b'...'` literal of a generated file, read with `ast` (the file is never run)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "serialized_pb" and isinstance(keyword.value, ast.Constant):
                    return keyword.value.value
    raise ImportError(f"{path}: no serialized_pb descriptor found; not a protoc-generated file?")


def _module_for_proto(proto_file: str) -> str:
    """'object_detection/protos/ssd.proto' -> 'object_detection.protos.ssd_pb2'."""
    return proto_file.removesuffix(".proto").replace("/", ".") + "_pb2"


class _ShippedProtoLoader(importlib.abc.Loader):
    def __init__(self, path: str):
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object is fine

    def exec_module(self, module: ModuleType) -> None:
        serialized = serialized_descriptor(self.path)
        file_proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        # Dependencies first: the pool only accepts a file whose imports it already holds.
        for dependency in file_proto.dependency:
            importlib.import_module(_module_for_proto(dependency))
        pool = descriptor_pool.Default()
        try:
            file_descriptor = pool.FindFileByName(file_proto.name)
        except KeyError:
            file_descriptor = pool.AddSerializedFile(serialized)
        builder.BuildMessageAndEnumDescriptors(file_descriptor, module.__dict__)
        builder.BuildTopDescriptorsAndMessages(file_descriptor, module.__name__, module.__dict__)


class ShippedProtoFinder(importlib.abc.MetaPathFinder):
    """Serves `object_detection.protos.*_pb2` imports from the shipped files' descriptors."""

    def find_spec(self, fullname, path, target=None):
        package, _, leaf = fullname.rpartition(".")
        if package != PROTO_PACKAGE or not leaf.endswith("_pb2"):
            return None
        for entry in path or ():
            candidate = os.path.join(entry, leaf + ".py")
            if os.path.isfile(candidate):
                return importlib.util.spec_from_file_location(
                    fullname, candidate, loader=_ShippedProtoLoader(candidate)
                )
        return None
