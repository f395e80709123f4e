r"""Affine layer: the weighted sum of chapter 5, ``y = x W + b``.

Forward (``x`` of shape ``(N, d1, d2, ...)`` is flattened to ``(N, D)`` as in the book)::

    x2 = reshape(x, (N, D))          # D = d1 * d2 * ...
    y  = x2 @ W + b                  # W: (D, M), b: (M,), y: (N, M)

Backward, on the computational graph (matrix-product node, then broadcast-bias node)::

    db = sum(dy, axis=0)             # b was broadcast over the N rows, so its gradient sums them
    dW = x2.T @ dy                   # (D, N) @ (N, M): the transpose sits where x was
    dx = reshape(dy @ W.T, x.shape)  # (N, M) @ (M, D), reshaped back to x's own shape

``affine(M, bias=False)`` drops ``b`` (params ``{"W"}`` only): used before batch norm, whose
mean subtraction cancels any bias exactly (``db`` would be identically 0 and its shift is
``beta``'s job).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..checks import require_rank
from ..core import Layer
from ..initializers import HE_NORMAL


def affine(out_dim: int, w_init=None, b_init=None, bias: bool = True) -> Layer:
    """A fully connected layer with ``out_dim`` outputs.

    ``w_init(key, shape, dtype)`` defaults to He normal (``jax.nn.initializers.he_normal``,
    std ``sqrt(2 / D)``); ``b_init`` defaults to zeros. Params: ``{"W": (D, out_dim), "b": (out_dim,)}``,
    or ``{"W"}`` alone with ``bias=False``.
    """
    if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
        raise ValueError(f"affine: out_dim must be a positive int, got {out_dim!r}")
    w_init = w_init or HE_NORMAL
    b_init = b_init or jax.nn.initializers.zeros

    def init(key, in_shape, dtype=jnp.float32):
        if len(in_shape) < 2:
            raise ValueError(f"affine: in_shape must be (batch, features...), got {tuple(in_shape)}")
        in_dim = math.prod(in_shape[1:])
        k_w, k_b = jax.random.split(key)
        params = {"W": w_init(k_w, (in_dim, out_dim), dtype)}
        if bias:
            params["b"] = b_init(k_b, (out_dim,), dtype)
        return params, (in_shape[0], out_dim)

    def forward(params, x):
        _check_keys(params, bias)
        W = params["W"]
        _check(x, W, params.get("b"))
        y = x.reshape(x.shape[0], -1) @ W
        return (y + params["b"][None, :] if bias else y), x

    def backward(params, x, dy):
        W = params["W"]
        x2 = x.reshape(x.shape[0], -1)
        if dy.shape != (x.shape[0], W.shape[1]):
            raise ValueError(f"affine: dy shape {dy.shape} does not match output shape {(x.shape[0], W.shape[1])}")
        grads = {"W": x2.T @ dy, "b": jnp.sum(dy, axis=0)} if bias else {"W": x2.T @ dy}
        dx = (dy @ W.T).reshape(x.shape)
        return grads, dx

    return Layer(init, forward, backward)


def _check_keys(params, bias):
    expected = {"W", "b"} if bias else {"W"}
    if not isinstance(params, dict) or set(params) != expected:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"affine: params must be a dict with keys {sorted(expected)}, got {got}")


def _check(x, W, b):
    require_rank("affine", "x", x, min_rank=2, hint=" (a batch axis first, then features)")
    require_rank("affine", "W", W, rank=2)
    if x.shape[0] == 0:
        raise ValueError(f"affine: x is an empty batch (shape {x.shape}); give at least one sample")
    features = math.prod(x.shape[1:])
    if features != W.shape[0]:
        raise ValueError(
            f"affine: input has {features} features but W expects {W.shape[0]} "
            f"(x.shape={x.shape}, W.shape={W.shape})"
        )
    if b is not None and b.shape != (W.shape[1],):
        raise ValueError(f"affine: b shape {b.shape} does not match W shape {W.shape}; expected {(W.shape[1],)}")
