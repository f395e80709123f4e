"""The one registry of every built-in node, layer, loss and network.

Each ``Case`` can build, from a PRNG key and an input shape, a ``Layer`` with its params,
an input ``x`` and the targets bound into it (``None`` but for losses and networks),
with ``x`` drawn away from kinks (ReLU's 0) and poles (log's and 1/x's 0).
The test suite is parametrized over ``CASES`` (hand backward vs ``jax.vjp`` of the
independent reference forward, vs finite differences, jit, vmap) and ``pure-backprop
check`` walks it, so adding a case here is all it takes to have a new layer checked.
Losses enter as ``with_targets(loss, targets)`` so they are layers like the rest.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import graphs, nodes
from .core import Layer, freeze, serial, with_targets
from .layers import affine, batch_norm, dropout, mse, relu, sigmoid, softmax_cross_entropy, tanh, with_weight_decay
from .layers import avg_pool2d, conv2d, flatten, max_pool2d
from .network import mlp


class Case(NamedTuple):
    name: str
    kind: str  # "node", "graph", "layer", "loss" or "network"
    build: Callable[[jax.Array, tuple[int, ...]], tuple[Layer, Any, Any, Any]]  # layer, params, x, targets
    shapes: tuple[tuple[int, ...], ...]


def normal(key, shape):
    return jax.random.normal(key, shape)


def away_from_zero(key, shape, low=0.1):
    """Entries of magnitude in [low, 1 + low) with random signs: no ReLU kink within a step."""
    k_sign, k_mag = jax.random.split(key)
    return jnp.where(jax.random.bernoulli(k_sign, 0.5, shape), 1.0, -1.0) * (low + jax.random.uniform(k_mag, shape))


def positive(key, shape):
    return jax.random.uniform(key, shape, minval=0.5, maxval=2.0)


def _unary(layer, draw=normal):
    def build(key, shape):
        return layer, (), draw(key, shape), None

    return build


def _pair(layer, shape_b, draw_b=normal):
    def build(key, shape):
        ka, kb = jax.random.split(key)
        return layer, (), (normal(ka, shape), draw_b(kb, shape_b(shape))), None

    return build


def _jitter(key, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def _with_params(layer, draw=normal):
    def build(key, shape):
        k_init, k_x = jax.random.split(key)
        params = _jitter(k_init, layer.init(k_init, shape)[0])
        return layer, params, draw(k_x, shape), None

    return build


def _loss(loss, targets):
    def build(key, shape):
        k_x, k_t = jax.random.split(key)
        t = targets(k_t, shape)
        return with_targets(loss, t), (), 3.0 * normal(k_x, shape), t

    return build


def labels(key, shape):
    return jax.random.randint(key, shape[:1], 0, shape[1])


def soft_targets(key, shape):
    return jax.nn.softmax(jax.random.normal(key, shape), axis=1)


def _network(hidden, activation, classes=4, draw=normal):
    def build(key, shape):
        k_init, k_x, k_t = jax.random.split(key, 3)
        net = mlp(hidden, classes, activation)
        params, _ = net.init(k_init, shape)
        params = _jitter(k_init, params)  # nonzero biases: no unit sits exactly on ReLU's kink
        t = labels(k_t, (shape[0], classes))
        return serial(net, with_targets(softmax_cross_entropy, t)), (params, ()), draw(k_x, shape), t

    return build


DROP_RATE, DROPOUT_KEY, WEIGHT_DECAY = 0.3, jax.random.PRNGKey(42), 0.1


def batch_norm_state(features):
    """Running averages away from the initial (0, 1), so eval mode is tested off its start."""
    return {"mean": jnp.linspace(-0.5, 0.5, features), "var": jnp.linspace(0.5, 2.0, features)}


def _batch_norm(train):
    def build(key, shape):
        k_init, k_x = jax.random.split(key)
        layer = batch_norm()
        params, _, _ = layer.init(k_init, shape)
        return freeze(layer, batch_norm_state(shape[1]), None, train), _jitter(k_init, params), normal(k_x, shape), None

    return build


def _weight_decay(key, shape):
    """``affine(3) -> mse`` plus ``0.5 * lambda * sum(W**2)``: the penalty and its gradient ``lambda * W``."""
    k_init, k_x, k_t = jax.random.split(key, 3)
    net = affine(3)
    params = _jitter(k_init, net.init(k_init, shape)[0])
    t = normal(k_t, (shape[0], 3))
    return with_weight_decay(serial(net, with_targets(mse, t)), WEIGHT_DECAY), (params, ()), normal(k_x, shape), t


def _mlp_extend(key, shape, classes=4):
    """Three hidden ReLU layers, each with batch norm and dropout, the loss and weight decay."""
    k_init, k_x, k_t = jax.random.split(key, 3)
    net = mlp((6, 5, 4), classes, "relu", batchnorm=True, drop_rate=DROP_RATE)
    params, state, _ = net.init(k_init, shape)
    t = labels(k_t, (shape[0], classes))
    layer = serial(freeze(net, state, DROPOUT_KEY, True), with_targets(softmax_cross_entropy, t))
    return with_weight_decay(layer, WEIGHT_DECAY), (_jitter(k_init, params), ()), normal(k_x, shape), t


def distinct(key, shape):
    """A random permutation of ``n`` evenly spaced values in (-1, 1]: no two entries tie, and no
    finite-difference step (about ``6e-6 |x|``) closes the gap ``2 / n`` between two of them, so
    max pooling has no kink at the point or within a step."""
    n = math.prod(shape)
    return (2.0 * (jax.random.permutation(key, n) + 1) / n - 1.0).reshape(shape)


CASES: tuple[Case, ...] = (
    # computational-graph nodes
    Case("add", "node", _pair(nodes.add, lambda s: s), ((3,), (4, 5))),
    Case("multiply", "node", _pair(nodes.multiply, lambda s: s), ((3,), (4, 5))),
    Case("multiply_broadcast", "node", _pair(nodes.multiply, lambda s: s[:-1] + (1,)), ((4, 5), (2, 3))),
    Case("matmul", "node", _pair(nodes.matmul, lambda s: (s[1], 3)), ((1, 3), (4, 5))),
    Case("bias_add", "node", _pair(nodes.bias_add, lambda s: s[1:]), ((1, 3), (4, 5))),
    Case("negate", "node", _unary(nodes.negate), ((3,), (4, 5))),
    Case("exp", "node", _unary(nodes.exp), ((3,), (4, 5))),
    Case("add_constant", "node", _unary(nodes.add_constant(1.0)), ((3,), (4, 5))),
    Case("multiply_constant", "node", _unary(nodes.multiply_constant(-2.5)), ((3,), (4, 5))),
    Case("reciprocal", "node", _unary(nodes.reciprocal, positive), ((3,), (4, 5))),
    Case("log", "node", _unary(nodes.log, positive), ((3,), (4, 5))),
    Case("sum", "node", _unary(nodes.sum()), ((3,), (4, 5))),
    Case("sum_rows", "node", _unary(nodes.sum(axis=1, keepdims=True)), ((4, 5), (2, 3))),
    # the note's composed graphs
    Case("sigmoid_graph", "graph", lambda k, s: (graphs.sigmoid_graph, ((),) * 4, normal(k, s), None), ((3,), (4, 5))),
    Case("softmax_cross_entropy_graph", "graph", _loss(graphs.softmax_cross_entropy_graph, soft_targets), ((2, 3), (5, 10))),
    # layers
    Case("affine", "layer", _with_params(affine(3)), ((2, 4), (5, 2, 3))),
    Case("relu", "layer", _unary(relu, away_from_zero), ((3,), (4, 5))),
    Case("sigmoid", "layer", _unary(sigmoid), ((3,), (4, 5))),
    Case("tanh", "layer", _unary(tanh), ((3,), (4, 5))),
    Case("softmax_cross_entropy", "loss", _loss(softmax_cross_entropy, labels), ((2, 3), (5, 10))),
    Case("softmax_cross_entropy_soft", "loss", _loss(softmax_cross_entropy, soft_targets), ((2, 3), (5, 10))),
    Case("mse", "loss", _loss(mse, lambda k, s: normal(k, s)), ((2, 3), (5, 4))),
    # networks: three hidden layers and the loss
    Case("mlp_relu", "network", _network((6, 5, 4), "relu"), ((3, 7), (8, 5))),
    Case("mlp_sigmoid", "network", _network((6, 5, 4), "sigmoid"), ((3, 7),)),
    Case("mlp_tanh", "network", _network((6, 5, 4), "tanh"), ((3, 7),)),
    Case("two_layer_net", "network", _network((50,), "relu", classes=10), ((8, 64),)),
    # chapter 6: batch norm (train mode: the statistics depend on x; batches of several samples),
    # dropout with its key held fixed, the weight-decay penalty, and MultiLayerNetExtend with all three
    Case("batch_norm_train", "layer", _batch_norm(True), ((4, 3), (6, 5), (3, 2, 3, 4))),
    Case("batch_norm_eval", "layer", _batch_norm(False), ((4, 3), (3, 2, 3, 4))),
    Case("dropout", "layer", lambda k, s: (freeze(dropout(DROP_RATE), (), DROPOUT_KEY, True), (), normal(k, s), None),
         ((4, 5), (2, 3, 4, 4))),
    Case("dropout_eval", "layer", _unary(freeze(dropout(DROP_RATE), (), None, False)), ((4, 5),)),
    Case("weight_decay", "loss", _weight_decay, ((5, 4),)),
    Case("mlp_extend", "network", _mlp_extend, ((6, 7),)),
    # chapter 7: convolution and pooling. conv2d: each formulation at stride 1 and 2, padding 0, 1
    # and 2, non-square inputs and filters, batch 1; (7 + 4 - 3) % 2 = 0 but (6 - 3) % 2 = 1 leaves
    # a remainder column. "auto" at (1, 4, 5, 6) runs "mixed" (K = 36, over-padded), at (2, 1, 4, 5)
    # im2col. Max pooling draws distinct values (no ties: a tie is a kink).
    Case("conv2d_im2col", "layer", _with_params(conv2d(4, (3, 2), padding=1, method="im2col")), ((2, 3, 7, 6), (1, 2, 5, 8))),
    Case("conv2d_im2col_stride2", "layer", _with_params(conv2d(3, 3, stride=2, padding=(2, 0), method="im2col")), ((2, 2, 7, 6),)),
    Case("conv2d_conv", "layer", _with_params(conv2d(4, (3, 2), padding=1, method="conv")), ((2, 3, 7, 6),)),
    Case("conv2d_conv_stride2", "layer", _with_params(conv2d(3, 3, stride=2, padding=(2, 0), method="conv")), ((2, 2, 7, 6),)),
    Case("conv2d_auto", "layer", _with_params(conv2d(2, 3, padding=2)), ((1, 4, 5, 6), (2, 1, 4, 5))),
    Case("conv2d_unpadded", "layer", _with_params(conv2d(3, (2, 3), stride=(2, 1), method="conv")), ((1, 3, 6, 7),)),
    Case("max_pool2d", "layer", _unary(max_pool2d(2, stride=2, padding=1), distinct), ((2, 3, 7, 6),)),
    Case("max_pool2d_overlap", "layer", _unary(max_pool2d((3, 2), stride=(2, 1), padding=1), distinct), ((2, 2, 7, 6),)),
    Case("avg_pool2d", "layer", _unary(avg_pool2d(2, stride=2, padding=1)), ((2, 3, 7, 6),)),
    Case("avg_pool2d_overlap", "layer", _unary(avg_pool2d((3, 2), stride=(2, 1), padding=1)), ((2, 2, 7, 6),)),
    Case("flatten", "layer", _unary(flatten), ((2, 3, 4, 5),)),
)

BY_NAME = {case.name: case for case in CASES}
