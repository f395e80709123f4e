r"""ReLU: ``y = max(x, 0)``.

Forward and backward::

    y  = max(x, 0)
    dx = dy * (x > 0)     # dy/dx is 1 where x > 0 and 0 where x < 0; at exactly 0 we take 0, like jax

The residual is the boolean mask ``x > 0`` (the book's ``self.mask``), so the backward
pass needs no copy of ``x``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_same_shape
from ..core import Layer, no_params


def forward(params, x):
    del params
    positive = x > 0
    return jnp.where(positive, x, jnp.zeros_like(x)), positive


def backward(params, positive, dy):
    del params
    require_same_shape("relu", "dy", dy, "x", positive)
    return (), dy * positive


relu = Layer(no_params, forward, backward)
