"""Independent reference forwards for chapter 7: convolution, pooling, flatten.

Nothing here imports ``pure_backprop``; each function takes ``(params, x)`` like a layer's
forward and returns only the output, written straight from ``jax.lax``'s own operations (no
im2col, no hand-made windows), so that ``jax.vjp`` of them is an oracle for the hand backward
passes. Max pooling uses ``lax.reduce_window`` with ``lax.max``: its gradient goes to the first
maximum of a window, like the book's argmax; ``jnp.max`` over reshaped windows would split ties.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


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
