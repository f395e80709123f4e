r"""Mean squared error, halved and averaged over the batch: a ``Loss``.

Forward, for predictions ``y`` and targets ``t`` of the same shape ``(N, ...)``::

    L = 0.5 * sum((y - t)**2) / N      # the book's 0.5 * sum of squares, per sample

Backward::

    dy = dL * (y - t) / N
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_rank, require_same_shape
from ..core import Loss


def forward(y, t):
    require_rank("mse", "predictions", y, min_rank=1, hint=" (a batch axis first)")
    require_same_shape("mse", "targets", t, "predictions", y)
    diff = y - jnp.asarray(t, y.dtype)
    return 0.5 * jnp.sum(diff * diff) / y.shape[0], diff


def backward(diff, dloss):
    return dloss * diff / diff.shape[0]


mse = Loss(forward, backward)
