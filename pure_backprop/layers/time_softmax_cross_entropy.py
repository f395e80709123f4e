r"""Softmax cross-entropy at every time step, with an ignore label: a ``Loss`` (the sequel's
``TimeSoftmaxWithLoss``).

Forward, for scores ``x`` of shape ``(N, T, V)`` and integer targets ``t`` of shape ``(N, T)``.
A position whose target is ``IGNORE_LABEL`` (-1, the book's) is padding: it is not counted.
With ``m[n, k] = (t[n, k] != -1)`` and ``C = sum(m)`` the number of counted positions::

    log p[n, k] = x[n, k] - log(sum_v exp(x[n, k, v]))       # log-softmax over the vocabulary
    L = -(1 / C) * sum over counted (n, k) of log p[n, k, t[n, k]]

the mean over the counted positions, as the book's ``loss /= mask.sum()``: a batch's loss is
the average surprise per real token, whatever the amount of padding (dividing by ``N * T``
instead would shrink the loss and the gradient of a batch in proportion to its padding). A batch in
which every position is ignored has ``C = 0`` and no token to average: its loss is 0 and its
gradient 0 (the mean is taken as ``sum / max(C, 1)``), never ``0 / 0 = NaN``.

Backward. At one counted position, as for ``softmax_cross_entropy``::

    d log p[n, k, c] / d x[n, k, v] = [c == v] - p[n, k, v]
    dL / dx[n, k, v] = (p[n, k, v] - [v == t[n, k]]) / C

and 0 at an ignored position, whose scores the loss does not read. So::

    dx = dL * m[..., None] * (p - onehot(t)) / C

Numerics. ``log p`` is ``z - log1p(r)`` with ``z = x - max(x)`` over the vocabulary and ``r``
the sum of ``exp(z)`` over the words other than the largest (whose ``exp(z)`` is exactly 1), so
scores of +-1e4 neither overflow nor take ``log(0)``, and a confident step keeps its loss
(``log(sum(exp(z)))`` would round ``1 + 1e-18`` to 1 and the loss to 0; the form is
``softmax_cross_entropy.log_softmax_and_softmax``). At the target, ``p_t - 1`` cancels when
``p_t`` is near 1 (``p_t = 1 - 1e-20`` rounds to 1 and ``p_t - 1`` to 0); it is computed as
``-(sum of p over the other words)``, a sum of positive numbers, which keeps its relative
accuracy. ``p`` itself is ``exp(z) / sum(exp(z))``, not ``exp(log p)``, which would add the
rounding of ``log p`` (up to ``|log p| / 2`` ulps) to that of ``z``. Ignored positions are
selected away with ``where``, not multiplied by 0, so non-finite scores there do not reach the
loss or the gradient.

Targets must be an integer array of shape ``(N, T)`` with entries in ``[0, V)`` or equal to
-1. Concrete targets are checked and raise ``ValueError``; under ``jit`` a target out of range
gives a NaN loss and NaN gradient at its position rather than a wrong number.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_rank
from ..core import Loss
from .embedding import require_ids
from .softmax_cross_entropy import log_softmax_and_softmax, require_array, require_floating

NAME = "time_softmax_cross_entropy"
IGNORE_LABEL = -1


def _check(scores, targets):
    require_floating(NAME, "scores", scores)
    require_rank(NAME, "scores", scores, rank=3, hint=" (batch, time, vocabulary)")
    require_array(NAME, "targets", targets)
    n, t, v = scores.shape
    if jnp.shape(targets) != (n, t):
        raise ValueError(f"{NAME}: targets must have shape {(n, t)} for scores of shape {scores.shape}, "
                         f"got targets shape {jnp.shape(targets)} (word ids, not one-hot rows)")
    require_ids(NAME, "targets", targets, v, allowed=IGNORE_LABEL)


def forward(scores, targets):
    _check(scores, targets)
    targets = jnp.asarray(targets)
    vocabulary = scores.shape[2]
    counted = targets != IGNORE_LABEL
    in_range = (targets >= 0) & (targets < vocabulary)
    safe = jnp.where(in_range, targets, 0)
    log_p, p = log_softmax_and_softmax(scores)  # over the vocabulary, accurate at confident steps
    picked = jnp.take_along_axis(log_p, safe[..., None], axis=2)[..., 0]
    picked = jnp.where(in_range, picked, jnp.nan)  # reached only under jit: concrete targets were checked
    count = jnp.maximum(jnp.sum(counted), 1).astype(scores.dtype)
    loss = -jnp.sum(jnp.where(counted, picked, 0)) / count
    return loss, (p, safe, counted, in_range, count)


def backward(residuals, dloss):
    p, safe, counted, in_range, count = residuals
    target = jnp.arange(p.shape[2])[None, None, :] == safe[..., None]
    others = jnp.sum(jnp.where(target, 0, p), axis=2, keepdims=True)  # 1 - p_t without the cancellation
    g = jnp.where(target, -others, p)  # p - onehot(t)
    g = jnp.where(in_range[..., None], g, jnp.nan)
    return jnp.where(counted[..., None], (dloss * g / count).astype(p.dtype), 0)


time_softmax_cross_entropy = Loss(forward, backward)
