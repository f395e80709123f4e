r"""Layer normalization (Ba, Kiros and Hinton 2016): batch normalization's graph taken over the
features of each position instead of over the batch.

For ``x`` of shape ``(..., D)`` (a transformer's ``(N, T, D)``), every position ``x[i]`` (a row of
``D`` features) is normalized on its own, with learnable ``gamma`` and ``beta`` of shape ``(D,)``.
Forward, each sum over the last axis, ``D`` values, broadcast back over it::

    mu  = sum(x) / D
    xc  = x - mu
    var = sum(xc**2) / D                  # biased, as PyTorch's nn.LayerNorm
    std = sqrt(var + eps)                 # eps = 1e-5, PyTorch's default
    xn  = xc / std
    y   = gamma * xn + beta

Nothing depends on the batch: the same in training and inference, no running averages, no state.

Backward. ``gamma`` and ``beta`` are shared by every position, so their gradients sum over all
the leading axes (``sum_rows``); the rest is batch norm's derivation (``batch_norm.py``) with the
sums over the last axis::

    dbeta  = sum_rows(dy)                 # y = ... + beta, beta broadcast over the positions
    dgamma = sum_rows(dy * xn)            # y = gamma * xn + ...
    dxn    = gamma * dy
    dxc    = dxn / std                    # xn = xc * (1/std): the xc branch
    dstd   = -sum(dxn * xc / std**2)      #                    the 1/std branch
    dvar   = 0.5 * dstd / std             # std = sqrt(var + eps)
    dxc   += (2 / D) * xc * dvar          # var = sum(xc**2) / D: the second path into xc
    dmu    = -sum(dxc)                    # xc = x - mu
    dx     = dxc + dmu / D                # mu = sum(x) / D: the second path into x

Substituting line by line (``xc / std = xn``), the two paths through ``var`` and ``mu`` collapse
into the form computed, with ``mean`` over the last axis::

    dx = (dxn - mean(dxn) - xn * mean(dxn * xn)) / std

It takes out of ``dxn`` the constants and the direction of ``xn``, along which the normalization
cannot move its output, and scales by ``1 / std``. So ``sum(dx) = 0`` for every position, whatever
``dy``, and ``sum(dx * xn) = sum(dxn * xn) (1 - mean(xn**2)) / std``, where ``1 - mean(xn**2) =
eps / (var + eps)``: 0 but for ``eps``'s share.

Numerics. The variance is the mean of squares of ``xc`` (two passes), never
``mean(x**2) - mu**2``, which cancels when ``|mu| >> std`` (float32 rows centred at 1e4 with
spread 1 would lose every digit). ``eps`` keeps ``1 / std`` finite for a constant row: there
``xn = 0``, ``y = beta`` and ``dx = gamma * (dy - mean(dy)) / sqrt(eps)``, as for ``jax.grad``.
The residuals are ``xn`` and ``1 / std`` (per position), not ``x``: the backward needs nothing
else.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..checks import require_rank
from ..core import Layer
from .softmax_cross_entropy import require_floating

NAME = "layer_norm"


class LayerNormResiduals(NamedTuple):
    xn: jax.Array  # x normalized, shape of x
    inv_std: jax.Array  # 1 / sqrt(var + eps), shape of x with the last axis of size 1


def layer_norm(eps: float = 1e-5) -> Layer:
    """Layer normalization over the last axis; ``eps`` is added to the variance.

    ``init(key, in_shape, dtype)`` returns ``{"gamma": ones (D,), "beta": zeros (D,)}`` and
    ``in_shape``; the input has at least one axis and its last one, ``D``, at least one entry.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"{NAME}: eps must be a positive finite float, got {eps!r}")

    def init(key, in_shape, dtype=jnp.float32):
        del key
        if len(in_shape) < 1 or in_shape[-1] < 1:
            raise ValueError(f"{NAME}: in_shape must end in the features (..., D) with D >= 1, got {tuple(in_shape)}")
        d = in_shape[-1]
        return {"gamma": jnp.ones((d,), dtype), "beta": jnp.zeros((d,), dtype)}, tuple(in_shape)

    def forward(params, x):
        gamma, beta = _params(params)
        _check(x, gamma, beta)
        mu = jnp.mean(x, axis=-1, keepdims=True)
        xc = x - mu
        inv_std = 1.0 / jnp.sqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
        xn = xc * inv_std
        lead = (1,) * (x.ndim - 1)  # gamma and beta serve every position (explicitly: no rank promotion)
        return gamma.reshape(lead + (-1,)) * xn + beta.reshape(lead + (-1,)), LayerNormResiduals(xn, inv_std)

    return Layer(init, forward, backward)


def backward(params, residuals, dy):
    gamma, _ = _params(params)
    xn, inv_std = residuals
    if jnp.shape(dy) != jnp.shape(xn):
        raise ValueError(f"{NAME}: dy shape {jnp.shape(dy)} does not match output shape {jnp.shape(xn)}")
    rows = tuple(range(xn.ndim - 1))  # gamma and beta are shared by every position
    dxn = gamma.reshape((1,) * len(rows) + (-1,)) * dy
    mean = lambda a: jnp.mean(a, axis=-1, keepdims=True)  # noqa: E731
    dx = (dxn - mean(dxn) - xn * mean(dxn * xn)) * inv_std
    return {"gamma": jnp.sum(dy * xn, axis=rows), "beta": jnp.sum(dy, axis=rows)}, dx


def _params(params):
    if not isinstance(params, dict) or set(params) != {"gamma", "beta"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{NAME}: params must be a dict with keys ['beta', 'gamma'], got {got}")
    return params["gamma"], params["beta"]


def _check(x, gamma, beta):
    require_floating(NAME, "x", x)
    require_rank(NAME, "x", x, min_rank=1, hint=" (..., D): the features last")
    d = x.shape[-1]
    if d == 0:
        raise ValueError(f"{NAME}: x has no features to normalize over (shape {x.shape}); give D >= 1")
    for arg, value in (("gamma", gamma), ("beta", beta)):
        if jnp.shape(value) != (d,):
            raise ValueError(f"{NAME}: {arg} shape {jnp.shape(value)} does not match x shape {x.shape}; "
                             f"expected (D,) = {(d,)}")
