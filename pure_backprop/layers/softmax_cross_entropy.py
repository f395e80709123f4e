r"""Softmax followed by cross-entropy, averaged over the batch: a ``Loss``.

Forward, for scores ``x`` of shape ``(N, C)`` and targets ``t`` (one-hot or soft rows of
shape ``(N, C)``, or integer labels of shape ``(N,)`` turned into one-hot rows)::

    p = softmax(x) = exp(x) / sum(exp(x), axis=1)
    L = -sum(t * log(p)) / N

Backward: the seed note walks seven graph nodes (exp, sum, 1/x, multiply, log,
multiply by t, sum, times -1; see ``pure_backprop.graphs.softmax_cross_entropy_graph``)
and everything cancels down to::

    dx = dL * (p - t) / N

Numerics: ``log p`` is computed as ``z - log(sum(exp(z)))`` with ``z = x - max(x)``, so
logits of +-1e4 neither overflow nor produce ``log(0)``; no ``log(p + 1e-7)`` fudge, which
would bias the gradient. Integer labels outside ``[0, C)`` raise ``ValueError`` when the
labels are concrete; under ``jit`` they make the loss and gradient NaN rather than wrong.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import require_rank
from ..core import Loss, is_traced

NAME = "softmax_cross_entropy"


def targets_as_probabilities(name: str, scores, targets):
    """One-hot rows for integer labels (NaN rows for labels out of range), checked rows otherwise."""
    require_rank(name, "scores", scores, rank=2, hint=" (batch, classes)")
    n, c = scores.shape
    if jnp.issubdtype(jnp.result_type(targets), jnp.integer) and jnp.ndim(targets) != 2:
        if jnp.shape(targets) != (n,):
            raise ValueError(
                f"{name}: integer labels must have shape {(n,)} for scores of shape {scores.shape}, "
                f"got labels shape {jnp.shape(targets)}"
            )
        if not is_traced(targets):
            concrete = np.asarray(targets)
            low, high = int(concrete.min(initial=0)), int(concrete.max(initial=0))
            if low < 0 or high >= c:
                raise ValueError(
                    f"{name}: labels must lie in [0, {c}) for scores of shape {scores.shape}, "
                    f"got labels from {low} to {high}"
                )
        valid = (targets >= 0) & (targets < c)
        one_hot = jax.nn.one_hot(targets, c, dtype=scores.dtype)
        return jnp.where(valid[:, None], one_hot, jnp.nan)
    if jnp.shape(targets) != scores.shape:
        raise ValueError(
            f"{name}: targets shape {jnp.shape(targets)} does not match scores shape {scores.shape} "
            f"(one-hot targets need one column per class)"
        )
    return jnp.asarray(targets, scores.dtype)


def forward(scores, targets):
    t = targets_as_probabilities(NAME, scores, targets)
    z = scores - jax.lax.stop_gradient(jnp.max(scores, axis=1, keepdims=True))
    log_p = z - jnp.log(jnp.sum(jnp.exp(z), axis=1, keepdims=True))
    loss = -jnp.sum(t * log_p) / scores.shape[0]
    return loss, (jnp.exp(log_p), t)


def backward(residuals, dloss):
    p, t = residuals
    return dloss * (p - t) / p.shape[0]


softmax_cross_entropy = Loss(forward, backward)
