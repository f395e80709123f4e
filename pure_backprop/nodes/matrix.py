r"""Matrix nodes: the matrix product and the broadcast bias add (the two halves of the
affine layer). Both take ``x = (a, b)`` and return ``dx = (da, db)``.

Matrix product, ``X: (N, D)``, ``W: (D, M)`` (the vector example ``[1, 2, 3] . [4, 5, 6] = 32``:
``dx`` is the other factor, transposed to sit where the input was)::

    Y  = X @ W
    dX = dY @ W.T          # (N, M) @ (M, D)
    dW = X.T @ dY          # (D, N) @ (N, M)

Bias add, ``X: (N, M)``, ``b: (M,)`` broadcast to every row::

    Y  = X + b
    dX = dY
    db = sum(dY, axis=0)   # each b_j fed N outputs, so its gradient sums the N rows
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_pair, require_rank
from ..core import Layer


def _matmul_shape(x_shape, w_shape):
    if len(x_shape) != 2 or len(w_shape) != 2 or x_shape[1] != w_shape[0]:
        raise ValueError(
            f"matmul: X shape {tuple(x_shape)} and W shape {tuple(w_shape)} do not chain "
            f"(needs X: (N, D) and W: (D, M))"
        )
    return (x_shape[0], w_shape[1])


def _matmul_forward(params, x):
    X, W = require_pair("matmul", x)
    _matmul_shape(jnp.shape(X), jnp.shape(W))
    return X @ W, (X, W)


def _matmul_backward(params, residuals, dY):
    X, W = residuals
    return (), (dY @ W.T, X.T @ dY)


def _bias_shape(x_shape, b_shape):
    if len(x_shape) != 2 or tuple(b_shape) != (x_shape[1],):
        raise ValueError(
            f"bias_add: X shape {tuple(x_shape)} and b shape {tuple(b_shape)} do not match "
            f"(needs X: (N, M) and b: (M,))"
        )
    return tuple(x_shape)


def _bias_forward(params, x):
    X, b = require_pair("bias_add", x)
    require_rank("bias_add", "X", X, rank=2)
    _bias_shape(jnp.shape(X), jnp.shape(b))
    return X + b[None, :], None


def _bias_backward(params, residuals, dY):
    return (), (dY, jnp.sum(dY, axis=0))


matmul = Layer(lambda key, s, dtype=jnp.float32: ((), _matmul_shape(*s)), _matmul_forward, _matmul_backward)
bias_add = Layer(lambda key, s, dtype=jnp.float32: ((), _bias_shape(*s)), _bias_forward, _bias_backward)
