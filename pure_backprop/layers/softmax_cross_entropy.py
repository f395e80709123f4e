r"""Softmax followed by cross-entropy, averaged over the batch: a ``Loss``.

Forward, for scores ``x`` of shape ``(N, C)`` and targets ``t`` (one-hot or soft rows of
shape ``(N, C)``, or integer labels of shape ``(N,)`` turned into one-hot rows)::

    p = softmax(x) = exp(x) / sum(exp(x), axis=1)
    L = -sum(t * log(p)) / N

Backward: chapter 5 walks seven graph nodes (exp, sum, 1/x, multiply, log,
multiply by t, sum, times -1; see ``pure_backprop.graphs.softmax_cross_entropy_graph``).
For one row ``n``, with ``s_n = sum_c t_nc`` (the row's total target mass)::

    log p_nc   = x_nc - log(sum_k exp(x_nk))
    d log p_nc / d x_nj = [c == j] - p_nj                  # the log-sum-exp's derivative is p
    dL / dx_nj = -(1/N) * sum_c t_nc * ([c == j] - p_nj)
               = -(1/N) * (t_nj - p_nj * sum_c t_nc)
               = (p_nj * s_n - t_nj) / N

so, with ``s = sum(t, axis=1, keepdims=True)``::

    dx = dL * (p * s - t) / N

which is the book's ``(p - t) / N`` exactly when every row sums to 1 (labels, one-hot and
probability rows). Rows that do not (all-zero rows, multi-hot rows, counts, unnormalised
label smoothing) need the ``p * s`` term: ``(p - t) / N`` would be wrong there. An all-zero
row contributes nothing to the loss and gets a zero gradient.

Target values. Entries must be non-negative: ``-sum(t * log p)`` has no minimum in ``x`` for a
negative ``t`` (it is a cross-entropy only for ``t >= 0``), so concrete targets with a
negative entry raise ``ValueError``. Under ``jit`` the values are unknown at trace time and
are not checked; the gradient above is still the exact gradient of the formula.

Dtypes. Scores must be floating point (integer or bool scores raise ``ValueError``). Soft
targets are not cast to the scores' dtype: the loss is computed in their common floating
dtype (``jnp.result_type``; float16 scores with float32 targets compute in float32) and
``dx`` is returned in the scores' dtype, like ``jax.grad``. Integer labels make one-hot rows
in the scores' dtype. Labels must be an integer array: float labels, and Python lists, raise
``ValueError`` naming the argument.

Numerics: ``log p`` is computed as ``z - log1p(r)`` with ``z = x - max(x)`` and ``r`` the sum
of ``exp(z)`` over the row's entries other than its largest (whose ``exp(z)`` is exactly 1), so
logits of +-1e4 neither overflow nor produce ``log(0)``, and a confident row keeps its loss:
``log(sum(exp(z)))`` rounds ``1 + 1e-18`` to 1 and the target's ``-log p`` to 0; ``log1p(r)``
gives 1e-18. No ``log(p + 1e-7)`` fudge, which would bias the gradient. The gradient is
computed in the equal form::

    p * s - t = p * (s - t) - t * (1 - p)

because ``p * s - t`` cancels where a confident prediction meets its target (``p = 1 - 1e-9``
against ``t = 1`` keeps only 7 of its 16 digits in float64, and ``p = 1 - 1e-20`` rounds to
1 and gives 0). ``1 - p`` is taken at each row's largest entry as the sum of the row's other
entries, a sum of positive numbers, and elsewhere as ``1 - p`` with ``p <= 1/2``; for one-hot
and label targets each entry is then a product and a sum of positive numbers, accurate to a few
ulps of itself. Integer labels outside ``[0, C)`` raise ``ValueError`` when the
labels are concrete; under ``jit`` they make the loss and gradient NaN rather than wrong.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import require_rank
from ..core import Loss, is_traced

NAME = "softmax_cross_entropy"


def require_array(name: str, arg: str, x):
    """``x`` is an array (or a scalar), not a Python list or tuple whose dtype would be guessed."""
    if isinstance(x, (list, tuple)):
        raise ValueError(f"{name}: {arg} must be an array, got a Python {type(x).__name__}; wrap it in jnp.asarray(...)")


def require_floating(name: str, arg: str, x):
    """``x`` is a floating-point array: scores and predictions are never integers."""
    require_array(name, arg, x)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name}: {arg} must have a floating-point dtype, got {dtype}; convert with {arg}.astype(jnp.float32)"
        )


def targets_as_probabilities(name: str, scores, targets):
    """Target rows for ``scores``: one-hot rows (NaN rows for labels out of range) in the
    scores' dtype for integer labels; otherwise the checked rows in the common floating
    dtype of scores and targets, to which the scores must be promoted too."""
    require_floating(name, "scores", scores)
    require_rank(name, "scores", scores, rank=2, hint=" (batch, classes)")
    require_array(name, "targets", targets)
    n, c = scores.shape
    kind = jnp.result_type(targets)
    if jnp.ndim(targets) == 1 and not jnp.issubdtype(kind, jnp.integer):
        raise ValueError(
            f"{name}: labels of shape {jnp.shape(targets)} must be integers, got dtype {kind}; "
            f"cast with labels.astype(jnp.int32), or pass target rows of shape {(n, c)}"
        )
    if jnp.issubdtype(kind, jnp.integer) and jnp.ndim(targets) != 2:
        if jnp.shape(targets) != (n,):
            raise ValueError(
                f"{name}: integer labels must have shape {(n,)} for scores of shape {scores.shape}, "
                f"got labels shape {jnp.shape(targets)}"
            )
        if not is_traced(targets) and jnp.size(targets):  # an empty batch has no label to be out of range
            concrete = np.asarray(targets)
            low, high = int(concrete.min()), int(concrete.max())
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
    if not is_traced(targets):
        concrete = np.asarray(targets)
        negative = np.argwhere(concrete < 0)
        if len(negative):
            row, col = negative[0]
            raise ValueError(
                f"{name}: targets must be non-negative (probabilities, one-hot or counts), got "
                f"{concrete[row, col]} at row {row}, column {col}; -sum(t * log p) has no minimum for negative t"
            )
    return jnp.asarray(targets, jnp.result_type(scores, targets))


def forward(scores, targets):
    t = targets_as_probabilities(NAME, scores, targets)
    log_p, p = log_softmax_and_softmax(scores.astype(t.dtype))
    loss = -jnp.sum(t * log_p) / scores.shape[0]
    return loss, (p, t, jnp.zeros((), scores.dtype))  # the last: dx's dtype


def log_softmax_and_softmax(x):
    """``(log p, p)``, ``p = softmax(x)`` over the last axis (Numerics): with ``z = x - max(x)``,
    ``e = exp(z)`` and ``r = sum(e) - 1``, ``log p = z - log1p(r)`` and ``p = e / (1 + r)``."""
    z = x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    e = jnp.exp(z)  # exactly 1 at each row's largest entry
    # sum(e) - 1: the top entry adds its e - 1, exactly 0, the rest their e (written e - 1, not 0,
    # so that jax.grad of this forward still sees the top entry's score)
    rest = jnp.sum(jnp.where(_top(e), e - 1, e), axis=-1, keepdims=True)
    # log(sum(e)) would round a confident row's sum to 1 and -log p_t to 0; p as e / (1 + r):
    # exp(log p) would add the rounding of log p, up to |log p| / 2 ulps
    return z - jnp.log1p(rest), e / (1 + rest)


def backward(residuals, dloss):
    p, t, like_scores = residuals
    row_mass = jnp.sum(t, axis=1, keepdims=True)  # s_n; exactly 1 for labels and one-hot rows
    g = p * (row_mass - t) - t * _one_minus(p)  # p * s - t, without its cancellation at p -> 1
    return (dloss * g / p.shape[0]).astype(like_scores.dtype)


def _one_minus(p):
    """``1 - p`` for probability rows ``p`` (N, C), to a few ulps of itself: at each row's
    largest entry as the sum of the others (positive numbers; ``1 - p`` there cancels when
    ``p`` is near 1), elsewhere as ``1 - p`` (such a ``p`` is at most 1/2: no cancellation)."""
    if p.shape[1] == 0:
        return p
    top = _top(p)
    others = jnp.sum(jnp.where(top, 0, p), axis=1, keepdims=True)
    return jnp.where(top, others, 1 - p)


def _top(a):
    """Booleans of ``a``'s shape: each row's (last axis) first largest entry."""
    return jax.lax.broadcasted_iota(jnp.int32, a.shape, a.ndim - 1) == jnp.argmax(a, axis=-1, keepdims=True)


softmax_cross_entropy = Loss(forward, backward)
