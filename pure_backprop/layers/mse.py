r"""Mean squared error, halved and averaged over the batch: a ``Loss``.

Forward, for predictions ``y`` and targets ``t`` of the same shape ``(N, ...)``::

    L = 0.5 * sum((y - t)**2) / N      # the book's 0.5 * sum of squares, per sample

Backward::

    dL / dy = 0.5 * 2 * (y - t) / N,   so   dy = dL * (y - t) / N

Dtypes. Predictions must be floating point (integer or bool predictions raise
``ValueError``: a loss of integers has no gradient). Targets are not cast to the predictions'
dtype, which would round them (integer predictions against ``[1.4, 2.6]``; float16
predictions against a float32 target of 1000.3): ``y - t`` is computed in their common
floating dtype (``jnp.result_type``), and so is the loss, while ``dy`` is returned in the
predictions' dtype, like ``jax.grad``. Targets must be an array, not a Python list.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_rank, require_same_shape
from ..core import Loss
from .softmax_cross_entropy import require_array, require_floating


def forward(y, t):
    require_floating("mse", "predictions", y)
    require_rank("mse", "predictions", y, min_rank=1, hint=" (a batch axis first)")
    require_array("mse", "targets", t)
    require_same_shape("mse", "targets", t, "predictions", y)
    common = jnp.result_type(y, t)
    diff = y.astype(common) - jnp.asarray(t, common)
    return 0.5 * jnp.sum(diff * diff) / y.shape[0], (diff, jnp.zeros((), y.dtype))  # the last: dy's dtype


def backward(residuals, dloss):
    diff, like_predictions = residuals
    return (dloss * diff / diff.shape[0]).astype(like_predictions.dtype)


mse = Loss(forward, backward)
