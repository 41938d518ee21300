"""Batch norms folded into the convolutions before them, for the TF.js converter, with array arithmetic.

tensorflowjs' own pass (`fold_batch_norms`) scales the kernel weights one element at a time in a Python loop: most
of an SSD MobileNet V2 conversion (docs/BENCHMARKS.md, "Export time"). This pass builds the
same graph (the same nodes, names, order and bytes: tests/test_tfjs_batch_norms.py) with numpy doing the scaling,
and runs in its place while tensorflowjs converts (`vectorised_batch_norm_folding`). A graph with the legacy
BatchNormWithGlobalNormalization op, which this pass leaves alone, goes through tensorflowjs' pass as well. Batch
norms neither pass can fold (after no convolution, or with parameters that are not constants) stay as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

FUSED_BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV3")
CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")
ADDS = ("BiasAdd", "Add", "AddV2")


@dataclass
class _Fold:
    """A batch norm whose parameters are constants, after a convolution with constant weights (and an optional
    constant bias between them)."""

    norm: object  # the NodeDefs of the graph
    convolution: object
    weights: object
    kernel: np.ndarray  # the weights' values
    add: object | None
    mean: np.ndarray  # less the bias, if any
    offset: np.ndarray
    scale: np.ndarray
    mean_dtype: object  # the mean constant's dtype attr


def fold_batch_norms(graph_def):
    """`graph_def` with every fused batch norm that follows a constant-weight convolution folded into it: the kernel
    scaled, and a BiasAdd of the offset named like the batch norm. A new GraphDef; the nodes kept come first in
    their order, then four nodes per fold (scaled weights, convolution, offset, BiasAdd)."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2

    nodes = {node.name: node for node in graph_def.node}
    if len(nodes) != len(graph_def.node):
        return graph_def  # duplicate names: tensorflowjs' pass refuses the graph with its own message
    folds = [fold for node in graph_def.node if (fold := _match(node, nodes)) is not None]
    removed = {
        node.name
        for fold in folds
        for node in (fold.norm, fold.convolution, fold.weights, fold.add)
        if node is not None
    }
    result = graph_pb2.GraphDef()
    for node in graph_def.node:
        if node.name not in removed:
            # copied twice, as tensorflowjs' pass does: the order of a node's attrs in model.json follows the
            # order protobuf keeps them in, which each copy may change
            kept = node_def_pb2.NodeDef()
            kept.CopyFrom(node)
            kept.input[:] = [name for name in node.input if not (name.startswith("^") and name[1:] in removed)]
            result.node.extend([kept])
    for fold in folds:
        result.node.extend(_folded(fold))
    result.library.CopyFrom(graph_def.library)
    result.versions.CopyFrom(graph_def.versions)
    return result


@contextlib.contextmanager
def vectorised_batch_norm_folding() -> Iterator[None]:
    """tensorflowjs' batch-norm folding replaced by this module's for the block (followed by tensorflowjs' own for a
    graph with the legacy op). Running tensorflowjs' pass on a graph with nothing left to fold would not change
    it, but would copy every node again, and with that reorder some nodes' attrs in model.json."""
    from tensorflowjs.converters import fold_batch_norms as module

    original = module.fold_batch_norms

    def folded(graph_def):
        result = fold_batch_norms(graph_def)
        legacy = any(node.op == "BatchNormWithGlobalNormalization" for node in result.node)
        return original(result) if legacy else result

    module.fold_batch_norms = folded
    try:
        yield
    finally:
        module.fold_batch_norms = original


def _node(nodes: dict, name: str):
    """The node an input names (`name`, `name:1` or `^name`), or None."""
    name = name.removeprefix("^")
    base, _, port = name.rpartition(":")
    return nodes.get(base if base and port.isdigit() else name)


def _constant(node) -> np.ndarray | None:
    from tensorflow.python.framework import tensor_util

    return tensor_util.MakeNdarray(node.attr["value"].tensor) if node is not None and node.op == "Const" else None


def _match(norm, nodes: dict) -> _Fold | None:
    if norm.op not in FUSED_BATCH_NORMS or len(norm.input) < 5:
        return None
    convolution, add, bias = _node(nodes, norm.input[0]), None, None
    if convolution is not None and convolution.op in ADDS:
        add = convolution
        convolution, bias = _node(nodes, add.input[0]), _node(nodes, add.input[1])
        if convolution is None or convolution.op not in CONVOLUTIONS:
            convolution, bias = bias, convolution
    if (bias is not None and bias.op != "Const") or convolution is None or convolution.op not in CONVOLUTIONS:
        return None
    weights = _node(nodes, convolution.input[1])
    kernel = _constant(weights)
    if kernel is None:
        return None
    channels = kernel.shape[3] if convolution.op == "Conv2D" else kernel.shape[2] * kernel.shape[3]
    gamma, beta, mean, variance = (_constant(_node(nodes, name)) for name in norm.input[1:5])
    if mean is not None and bias is not None:
        mean = mean - _constant(bias)
    if any(value is None or value.shape != (channels,) for value in (gamma, beta, mean, variance)):
        return None
    # float64 from here on, as tensorflowjs computes it (a square root per element through Python floats), so
    # the folded weights round to the same float32 values
    scale = (1.0 / np.sqrt((variance + norm.attr["epsilon"].f).astype(np.float64))) * gamma
    offset = (-mean * scale) + beta
    mean_dtype = _node(nodes, norm.input[3]).attr["dtype"]
    return _Fold(norm, convolution, weights, kernel, add, mean, offset, scale, mean_dtype)


def _folded(fold: _Fold) -> list:
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.python.framework import tensor_util

    kernel = fold.kernel
    # Conv2D: one factor per output channel, the kernel's last axis; depthwise: output channel c * multiplier + m
    # comes from input channel c (axis 2) and multiplier m (axis 3)
    depthwise = fold.convolution.op == "DepthwiseConv2dNative"
    factors = fold.scale.reshape(kernel.shape[2], kernel.shape[3]) if depthwise else fold.scale
    scaled = np.multiply(kernel, factors).astype(kernel.dtype)
    name = fold.convolution.name

    def constant(node_name: str, dtype_attr, values: np.ndarray, dtype) -> object:
        node = node_def_pb2.NodeDef(op="Const", name=node_name)
        node.attr["dtype"].CopyFrom(dtype_attr)
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(values, dtype.type, values.shape))
        return node

    weights = constant(f"{name}_weights", fold.weights.attr["dtype"], scaled, kernel.dtype)
    convolution = node_def_pb2.NodeDef()
    convolution.CopyFrom(fold.convolution)
    convolution.input[:] = [weights.name if input == fold.weights.name else input for input in convolution.input]
    offset = constant(f"{name}_bn_offset", fold.mean_dtype, fold.offset, fold.mean.dtype)
    bias_add = node_def_pb2.NodeDef(op="BiasAdd", name=fold.norm.name, input=[convolution.name, offset.name])
    bias_add.attr["T"].CopyFrom(fold.convolution.attr["T"])
    bias_add.attr["data_format"].CopyFrom(fold.convolution.attr["data_format"])
    return [weights, convolution, offset, bias_add]
