r"""Tanh: ``y = tanh(x)``.

Forward and backward::

    y  = tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))
    dx = dy * (1 - y**2)      # d tanh / dx = 1 - tanh(x)**2, so only y is kept
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_same_shape
from ..core import Layer, no_params


def forward(params, x):
    del params
    y = jnp.tanh(x)
    return y, y


def backward(params, y, dy):
    del params
    require_same_shape("tanh", "dy", dy, "y", y)
    return (), dy * (1 - y * y)


tanh = Layer(no_params, forward, backward)
