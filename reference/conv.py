"""Independent reference forwards for chapters 7 and 8: convolution, pooling, flatten, and the
two convolutional networks with their loss.

Nothing here imports ``pure_backprop``; each function takes ``(params, x)`` like a layer's
forward and returns only the output, written straight from ``jax.lax``'s own operations (no
im2col, no hand-made windows), so that ``jax.vjp`` of them is an oracle for the hand backward
passes. Max pooling uses ``lax.reduce_window`` with ``lax.max``: its gradient goes to the first
maximum of a window, like the book's argmax; ``jnp.max`` over reshaped windows would split ties.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import affine, relu, softmax_cross_entropy
from .regularization import dropout


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(stride=1, padding=0):
    """NCHW input, OIHW filters ``params["W"]``, bias ``params["b"]`` per output channel."""
    s, p = _pair(stride), _pair(padding)

    def forward(params, x):
        y = lax.conv_general_dilated(x, params["W"], s, [(p[0], p[0]), (p[1], p[1])],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + params["b"].reshape(1, -1, 1, 1)

    return forward


def _window_args(window, stride, padding):
    k = _pair(window)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    return (1, 1) + k, (1, 1) + s, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1]))


def max_pool2d(window, stride=None, padding=0):
    """Max over each window of ``x`` padded with ``-inf``."""
    dims, strides, pads = _window_args(window, stride, padding)
    return lambda params, x: lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)


def avg_pool2d(window, stride=None, padding=0):
    """Sum over each window of ``x`` padded with zeros, divided by the window area (padding counted)."""
    dims, strides, pads = _window_args(window, stride, padding)
    area = dims[2] * dims[3]
    return lambda params, x: lax.reduce_window(x, 0.0, lax.add, dims, strides, pads) / area


def flatten(params, x):
    return x.reshape(x.shape[0], -1)


# --- the networks of chapters 7 and 8, with softmax cross-entropy ---------------------------
# ``params`` is the package's tuple, one entry per layer of the ``serial`` stack (``()`` for a
# layer without parameters), so the layers are walked in the documented order.

def simple_conv_net(params, x, targets):
    """SimpleConvNet: conv (stride 1, pad 0) -> ReLU -> max pool 2x2 stride 2 -> flatten ->
    affine -> ReLU -> affine, then the mean softmax cross-entropy."""
    conv, _, _, _, hidden, _, out = params
    h = max_pool2d(2, 2)(None, relu(None, conv2d(1, 0)(conv, x)))
    scores = affine(out, relu(None, affine(hidden, flatten(None, h))))
    return softmax_cross_entropy(scores, targets)


def deep_conv_net(blocks, paddings, drop_rate, key):
    """The deep CNN in train mode: per block, ``conv 3x3 (its padding) -> ReLU`` per width and a
    2x2 max pool; then flatten -> affine -> ReLU -> dropout -> affine -> dropout, and the loss.
    Layer ``i`` of the stack draws its dropout mask from ``jax.random.split(key, n_layers)[i]``
    (the documented rule of ``serial``)."""
    widths = [w for block in blocks for w in block]
    n_layers = 2 * len(widths) + len(blocks) + 6

    def forward(params, x, targets):
        assert len(params) == n_layers, (len(params), n_layers)
        keys = jax.random.split(key, n_layers)
        h, i, pads = x, 0, iter(paddings)
        for block in blocks:
            for _ in block:
                h = relu(None, conv2d(1, next(pads))(params[i], h))
                i += 2
            h = max_pool2d(2, 2)(None, h)
            i += 1
        h = relu(None, affine(params[i + 1], flatten(None, h)))           # flatten, affine, ReLU
        h = dropout(drop_rate, keys[i + 3])(None, h)
        scores = dropout(drop_rate, keys[i + 5])(None, affine(params[i + 4], h))
        return softmax_cross_entropy(scores, targets)

    return forward
