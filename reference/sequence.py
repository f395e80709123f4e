"""Independent reference forwards for the sequence layers of the sequel: the embedding lookup,
the time-distributed affine map and the time softmax cross-entropy with an ignore label.
Nothing here imports ``pure_backprop``; each is written from its definition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IGNORE_LABEL = -1


def embedding(params, ids):
    """``W[ids]``: the row of the table for each id (ids in range)."""
    return jnp.take(params["W"], ids, axis=0)


def time_affine(params, x):
    """``x[n, t] @ W + b`` at each step, one step at a time."""
    steps = [jnp.einsum("nd,dm->nm", x[:, t, :], params["W"]) + params["b"][None, :] for t in range(x.shape[1])]
    return jnp.stack(steps, axis=1)


def time_softmax_cross_entropy(scores, targets):
    """Mean of ``-log softmax(scores[n, t])[targets[n, t]]`` over the positions whose target is
    not ``IGNORE_LABEL``; 0 when there is none."""
    log_p = jax.nn.log_softmax(scores, axis=-1)
    counted = targets != IGNORE_LABEL
    picked = jnp.take_along_axis(log_p, jnp.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
    total = -jnp.sum(jnp.where(counted, picked, 0.0))
    return total / jnp.maximum(jnp.sum(counted), 1).astype(scores.dtype)
