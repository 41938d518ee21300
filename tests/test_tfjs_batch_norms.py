"""tfod-wrap's batch-norm folding for the TF.js converter builds exactly the graph tensorflowjs' own pass builds."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflowjs.converters import fold_batch_norms as tfjs_folding

from tfod_wrap.export.tfjs_batch_norms import fold_batch_norms, vectorised_batch_norm_folding


def graph_with_batch_norms() -> graph_pb2.GraphDef:
    """Every case the converter meets: a batch norm after a Conv2D, after a depthwise convolution with a channel
    multiplier, after a BiasAdd and an Add (the bias on either side) of a constant, one after no convolution (not
    folded), and a control input on a folded batch norm. Random parameters of mixed magnitudes, so that weights
    rounded another way than tensorflowjs rounds them would differ."""
    rng = np.random.default_rng(0)

    def constant(*shape: int, low: float = -1.0) -> tf.Tensor:
        values = rng.uniform(low, 1.0, shape) * 10.0 ** rng.integers(-4, 3, shape)
        return tf.constant(values.astype(np.float32))

    def norm(tensor: tf.Tensor, name: str) -> tf.Tensor:
        channels = tensor.shape[-1]
        parameters = constant(channels), constant(channels), constant(channels), constant(channels, low=0.0)
        scale, offset, mean, variance = parameters
        return tf.compat.v1.nn.fused_batch_norm(
            tensor, scale, offset, mean, variance, epsilon=1e-3, is_training=False, name=name
        )[0]

    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [1, 16, 16, 3], name="image")
        first = norm(tf.nn.conv2d(image, constant(3, 3, 3, 8), 1, "SAME"), "conv_norm")
        deep = norm(tf.nn.depthwise_conv2d(first, constant(3, 3, 8, 2), [1, 1, 1, 1], "SAME"), "depthwise_norm")
        biased = norm(tf.nn.bias_add(tf.nn.conv2d(deep, constant(1, 1, 16, 8), 1, "SAME"), constant(8)), "bias_norm")
        added = norm(tf.add(constant(8), tf.nn.conv2d(biased, constant(1, 1, 8, 8), 1, "SAME")), "add_norm")
        unfolded = norm(tf.nn.relu(added), "lone_norm")
        with tf.control_dependencies([graph.get_operation_by_name("conv_norm")]):
            tf.identity(unfolded, name="output")
    return graph.as_graph_def()


def copy(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    copied = graph_pb2.GraphDef()
    copied.CopyFrom(graph_def)  # tensorflowjs' pass edits the graph it is given
    return copied


def test_the_vectorised_folding_builds_tensorflowjs_graph_to_the_byte():
    graph_def = graph_with_batch_norms()
    theirs = tfjs_folding.fold_batch_norms(copy(graph_def))
    ours = fold_batch_norms(copy(graph_def))
    left = [node.name for node in ours.node if node.op == "FusedBatchNormV3"]
    assert left == ["lone_norm"]  # the others folded, by this pass alone
    assert [node.name for node in ours.node] == [node.name for node in theirs.node]
    assert ours.SerializeToString() == theirs.SerializeToString()
    # what the converter calls during the block; the attrs' order counts (model.json lists them in it): plain bytes
    with vectorised_batch_norm_folding():
        both = tfjs_folding.fold_batch_norms(copy(graph_def))
    assert both.SerializeToString() == theirs.SerializeToString()
    assert tfjs_folding.fold_batch_norms.__module__ == "tensorflowjs.converters.fold_batch_norms"  # put back


def test_the_folded_graph_computes_what_the_batch_norms_computed():
    graph_def = graph_with_batch_norms()
    image = np.random.default_rng(1).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    outputs = []
    for version in (graph_def, fold_batch_norms(copy(graph_def))):
        with tf.Graph().as_default() as graph:
            tf.graph_util.import_graph_def(version, name="")
            with tf.compat.v1.Session(graph=graph) as session:
                outputs.append(session.run("output:0", {"image:0": image}))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-3, atol=1e-3 * np.abs(outputs[0]).max())
