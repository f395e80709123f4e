r"""ReLU: ``y = max(x, 0)``.

Forward and backward::

    y  = max(x, 0)
    dx = dy * (x > 0)     # dy/dx is 1 where x > 0 and 0 where x < 0; at exactly 0 we take 0, like jax

NaN is propagated, as by ``jax.nn.relu`` and torch: ``y = NaN`` and ``dx = NaN`` where
``x`` is NaN (a NaN input is not a negative number, so neither branch's slope applies).
The forward is ``where(x <= 0, 0, x)``, not ``where(x > 0, x, 0)``, which would turn NaN
into 0 silently; ``-inf`` gives 0 and ``+inf`` gives ``inf`` (slope 0 and 1).
The backward selects rather than multiplies, so an infinite ``dy`` where ``x < 0`` still gives
0. The residual is ``x`` itself (the book keeps a boolean mask, which has no room for NaN).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_same_shape
from ..core import Layer, no_params


def forward(params, x):
    del params
    return jnp.where(x <= 0, jnp.zeros_like(x), x), x


def backward(params, x, dy):
    del params
    require_same_shape("relu", "dy", dy, "x", x)
    return (), jnp.where(x > 0, dy, jnp.where(x <= 0, 0, jnp.nan))  # x > 0, x <= 0, or NaN


relu = Layer(no_params, forward, backward)
