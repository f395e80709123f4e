r"""Batch normalization (Ioffe and Szegedy 2015; the book's chapter 6.3): a ``StatefulLayer``.

Statistics are taken per feature for ``(N, D)`` input and **per channel** for ``(N, C, H, W)``
input, i.e. over the axes ``A = (0,)`` or ``A = (0, 2, 3)``, ``m`` values each
(``m = N`` or ``N * H * W``). The book flattens a 4-D input to ``(N, C*H*W)`` and so keeps one
mean per *pixel*; a convolution shares its filter over every position, so its outputs at all
positions of one channel come from the same distribution and should share one mean and one
variance (as in the paper, PyTorch's ``BatchNorm2d`` and flax's ``BatchNorm``). That also
gives ``C`` scale/shift pairs instead of ``C*H*W``.

Forward in train mode, as the book's graph (every array broadcast over ``A``)::

    mu  = sum(x) / m                      # over A, per feature/channel
    xc  = x - mu
    var = sum(xc**2) / m                  # biased, as the paper and the book
    std = sqrt(var + eps)                 # eps = 1e-5 (the book's 10e-7 is 1e-6)
    xn  = xc / std
    y   = gamma * xn + beta

and the running averages come out as new values: ``mean' = momentum * mean + (1 - momentum) * mu``,
``var' = momentum * var + (1 - momentum) * var_batch``. They start at mean 0 and **variance 1**,
not the book's 0, which made eval mode divide by ``sqrt(eps)`` until the averages warmed up.

Backward in train mode, node by node from the output back (the book's derivation; each line
is the chain rule through one node, ``sum`` is over ``A`` keeping dims)::

    dbeta  = sum(dy)                      # y = ... + beta, beta broadcast over A
    dgamma = sum(dy * xn)                 # y = gamma * xn + ...
    dxn    = gamma * dy
    dxc    = dxn / std                    # xn = xc * (1/std): the xc branch
    dstd   = -sum(dxn * xc / std**2)      #                    the 1/std branch
    dvar   = 0.5 * dstd / std             # std = sqrt(var + eps)
    dxc   += (2 / m) * xc * dvar          # var = sum(xc**2) / m: the second path into xc
    dmu    = -sum(dxc)                    # xc = x - mu
    dx     = dxc + dmu / m                # mu = sum(x) / m: the second path into x

Multiplied out this is the closed form ``dx = (gamma / (m * std)) * (m*dy - sum(dy) - xn*sum(dy*xn))``;
the staged form is kept because every line can be read off the graph. A batch of one (``m = 1``)
gives ``y = beta`` and ``dx = 0``: the book's gradient check used exactly that batch and could
not fail; the registry checks batches of several samples.

Eval mode normalizes with the running averages, which do not depend on ``x``, so the graph
is one affine map per feature and the backward is short::

    xn = (x - mean) / sqrt(var + eps);   y = gamma * xn + beta
    dbeta = sum(dy);   dgamma = sum(dy * xn);   dx = gamma * dy / sqrt(var + eps)

The state never gets a gradient. Params ``{"gamma": ones, "beta": zeros}`` and state
``{"mean": zeros, "var": ones}``, each of shape ``(D,)`` or ``(C,)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from ..checks import require_same_shape
from ..core import StatefulLayer, check_train


class TrainResiduals(NamedTuple):
    xn: object
    xc: object
    std: object


class EvalResiduals(NamedTuple):
    xn: object
    std: object


def batch_norm(momentum: float = 0.9, eps: float = 1e-5) -> StatefulLayer:
    """Batch normalization over the batch (and spatial) axes; ``momentum`` weighs the old
    running average (the book's 0.9), ``eps`` is added to the variance."""
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"batch_norm: momentum must be a float in [0, 1), got {momentum!r}")
    if not isinstance(eps, (int, float)) or not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"batch_norm: eps must be a positive finite float, got {eps!r}")

    def init(key, in_shape, dtype=jnp.float32):
        del key
        features = _features(in_shape, "in_shape")
        params = {"gamma": jnp.ones((features,), dtype), "beta": jnp.zeros((features,), dtype)}
        state = {"mean": jnp.zeros((features,), dtype), "var": jnp.ones((features,), dtype)}
        return params, state, in_shape

    def forward(params, state, x, key, train):
        del key
        check_train(train, "batch_norm")
        axes, shape = _axes(x, params, state)
        gamma, beta = params["gamma"].reshape(shape), params["beta"].reshape(shape)
        if train:
            if math.prod(x.shape[a] for a in axes) < 2:
                raise ValueError(f"batch_norm: train mode needs at least 2 values per feature to normalize, "
                                 f"got x of shape {x.shape} (a batch of one gives y = beta and dx = 0)")
            mu = jnp.mean(x, axis=axes, keepdims=True)
            xc = x - mu
            var = jnp.mean(xc * xc, axis=axes, keepdims=True)
            std = jnp.sqrt(var + eps)
            xn = xc / std
            new_state = {  # in the state's own dtype, so a scanned epoch's carry keeps its type
                "mean": (momentum * state["mean"] + (1 - momentum) * mu.reshape(-1)).astype(state["mean"].dtype),
                "var": (momentum * state["var"] + (1 - momentum) * var.reshape(-1)).astype(state["var"].dtype),
            }
            return gamma * xn + beta, new_state, TrainResiduals(xn, xc, std)
        std = jnp.sqrt(state["var"].reshape(shape) + eps)
        xn = (x - state["mean"].reshape(shape)) / std
        return gamma * xn + beta, state, EvalResiduals(xn, std)

    def backward(params, residuals, dy):
        xn = residuals.xn
        require_same_shape("batch_norm", "dy", dy, "x", xn)
        axes, shape = _axes(xn, params)
        gamma = params["gamma"].reshape(shape)
        grads = {"gamma": jnp.sum(dy * xn, axis=axes), "beta": jnp.sum(dy, axis=axes)}
        dxn = gamma * dy
        if isinstance(residuals, EvalResiduals):
            return grads, dxn / residuals.std
        xc, std = residuals.xc, residuals.std
        m = math.prod(xn.shape[a] for a in axes)
        dxc = dxn / std
        dstd = -jnp.sum(dxn * xc / (std * std), axis=axes, keepdims=True)
        dvar = 0.5 * dstd / std
        dxc = dxc + (2.0 / m) * xc * dvar
        dmu = -jnp.sum(dxc, axis=axes, keepdims=True)
        return grads, dxc + dmu / m

    return StatefulLayer(init, forward, backward)


def _features(shape, arg):
    if len(shape) not in (2, 4):
        raise ValueError(f"batch_norm: {arg} must be (N, D) or (N, C, H, W), got shape {tuple(shape)}")
    return shape[1]


def _axes(x, params, state=None):
    """The axes the statistics run over and the broadcast shape of one feature's numbers."""
    features = _features(x.shape, "x")
    for name, tree in (("params", params), ("state", state or {})):
        for k, v in tree.items():
            if v.shape != (features,):
                raise ValueError(f"batch_norm: {name}[{k!r}] has shape {v.shape} but x of shape {x.shape} "
                                 f"has {features} features/channels; expected {(features,)}")
    if x.ndim == 2:
        return (0,), (1, features)
    return (0, 2, 3), (1, features, 1, 1)
