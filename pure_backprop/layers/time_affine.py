r"""Time affine: one affine map applied at every time step (the sequel's ``TimeAffine``).

Forward, for a batch of sequences ``x`` of shape ``(N, T, D)``::

    y[n, t] = x[n, t] @ W + b        # W: (D, M), b: (M,), y: (N, T, M)

the same ``W`` and ``b`` at each of the ``T`` steps, computed as one matrix product over the
``N * T`` rows::

    x2 = reshape(x, (N * T, D))
    y  = reshape(x2 @ W + b, (N, T, M))

This is not ``affine`` on the same array: ``affine`` flattens everything after the batch
axis into ``T * D`` features, so its ``W`` would be ``(T * D, M)`` and mix the time steps into
one output per sequence; ``time_affine`` keeps the time axis and maps each step's ``D``
features alone (a language model's scores over the vocabulary at every position).

Backward: the rows of ``x2`` are ``N * T`` samples of one affine layer, so its gradients are
affine's over those rows, with ``dy2 = reshape(dy, (N * T, M))``::

    dW = x2.T @ dy2                   # (D, N*T) @ (N*T, M): every step's contribution summed
    db = sum(dy2, axis=0)             # b is broadcast over all N and T
    dx = reshape(dy2 @ W.T, (N, T, D))

``W`` and ``b`` are shared by the time steps, so their gradients sum over ``t`` as well as
``n`` (the book's ``Simple_TimeAffine`` adds one ``Affine``'s gradients per step; the single
product adds the same terms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..checks import require_rank
from ..core import Layer
from ..initializers import HE_NORMAL

NAME = "time_affine"


def time_affine(out_dim: int, w_init=None, b_init=None) -> Layer:
    """An affine map with ``out_dim`` outputs applied at every step of ``(N, T, D)`` inputs.

    ``w_init(key, shape, dtype)`` defaults to He normal as for ``affine`` (std ``sqrt(2 / D)``),
    ``b_init`` to zeros. Params: ``{"W": (D, out_dim), "b": (out_dim,)}``; output ``(N, T, out_dim)``.
    """
    if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
        raise ValueError(f"{NAME}: out_dim must be a positive int, got {out_dim!r}")
    w_init = w_init or HE_NORMAL
    b_init = b_init or jax.nn.initializers.zeros

    def init(key, in_shape, dtype=jnp.float32):
        if len(in_shape) != 3:
            raise ValueError(f"{NAME}: in_shape must be (batch, time, features), got {tuple(in_shape)}")
        k_w, k_b = jax.random.split(key)
        params = {"W": w_init(k_w, (in_shape[2], out_dim), dtype), "b": b_init(k_b, (out_dim,), dtype)}
        return params, (in_shape[0], in_shape[1], out_dim)

    return Layer(init, forward, backward)


def forward(params, x):
    W, b = _params(params)
    _check(x, W, b)
    n, t, d = x.shape
    y = x.reshape(n * t, d) @ W + b[None, :]
    return y.reshape(n, t, W.shape[1]), x


def backward(params, x, dy):
    W, _ = _params(params)
    n, t, d = x.shape
    expected = (n, t, W.shape[1])
    if jnp.shape(dy) != expected:
        raise ValueError(f"{NAME}: dy shape {jnp.shape(dy)} does not match output shape {expected}")
    x2, dy2 = x.reshape(n * t, d), dy.reshape(n * t, W.shape[1])
    grads = {"W": x2.T @ dy2, "b": jnp.sum(dy2, axis=0)}
    return grads, (dy2 @ W.T).reshape(x.shape)


def _params(params):
    if not isinstance(params, dict) or set(params) != {"W", "b"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{NAME}: params must be a dict with keys ['W', 'b'], got {got}")
    return params["W"], params["b"]


def _check(x, W, b):
    require_rank(NAME, "x", x, rank=3, hint=" (batch, time, features)")
    require_rank(NAME, "W", W, rank=2)
    if x.shape[0] == 0:
        raise ValueError(f"{NAME}: x is an empty batch (shape {x.shape}); give at least one sample")
    if x.shape[2] != W.shape[0]:
        raise ValueError(f"{NAME}: input has {x.shape[2]} features per step but W expects {W.shape[0]} "
                         f"(x.shape={x.shape}, W.shape={W.shape})")
    if jnp.shape(b) != (W.shape[1],):
        raise ValueError(f"{NAME}: b shape {jnp.shape(b)} does not match W shape {W.shape}; expected {(W.shape[1],)}")
