r"""Flatten: ``(N, d1, d2, ...) -> (N, d1 d2 ...)``, between the convolutional and affine layers.

Forward and backward (a reshape keeps every entry in its row-major place, so its Jacobian is the
identity on the flat entries and the backward is the inverse reshape)::

    y  = x.reshape(N, d1 * d2 * ...)
    dx = dy.reshape(x.shape)

The residual is ``x`` itself, for its shape (the book's ``Affine`` keeps ``original_x_shape``);
under ``jit`` only its shape is used, so it costs nothing.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ..checks import require_rank
from ..core import Layer


def init(key, in_shape, dtype=jnp.float32):
    del key, dtype  # no params
    if len(in_shape) < 2:
        raise ValueError(f"flatten: in_shape must be (batch, features...), got {tuple(in_shape)}")
    return (), (in_shape[0], math.prod(in_shape[1:]))


def forward(params, x):
    del params
    require_rank("flatten", "x", x, min_rank=2, hint=" (a batch axis first, then features)")
    return x.reshape(x.shape[0], -1), x


def backward(params, x, dy):
    del params
    if dy.shape != (x.shape[0], math.prod(x.shape[1:])):
        raise ValueError(f"flatten: dy shape {dy.shape} does not match output shape {(x.shape[0], math.prod(x.shape[1:]))}")
    return (), dy.reshape(x.shape)


flatten = Layer(init, forward, backward)
