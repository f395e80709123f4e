r"""Softmax along one axis, with an optional additive mask: the normalization inside attention,
as a layer of its own (the book's ``Softmax`` node, without the loss).

Forward, along ``axis`` (each slice along it is one row), with ``mask`` added to the scores
(0 where a score counts, ``-inf`` where it must get weight 0, or any finite bias)::

    z = x + mask
    y = exp(z - max(z)) / sum(exp(z - max(z)))          # each row sums to 1

Backward. ``d y_i / d z_j = y_i ([i == j] - y_j)``, so ``dz_j = sum_i dy_i y_i ([i == j] - y_j)``,
and the mask is a constant added to ``x``, so ``dx = dz``::

    dx = y * (dy - sum(y * dy))                          # the sum along the row

A masked entry (``-inf``) has ``y = 0`` exactly and so ``dx = 0`` exactly; a row with every entry
masked has nothing to normalize over, and gives ``y = 0`` and ``dx = 0`` (no NaN), as the
attention layers do.

Numerics: the row's maximum over its unmasked entries is subtracted before ``exp`` (no overflow,
the sum at least 1), and the backward is taken as ``y * (g - sum(y * g))`` with
``g = dy - dy[k]``, ``k`` the row's largest weight: equal in exact arithmetic, but it keeps every
entry's relative accuracy when one weight rounds to 1 (``attention.py``'s "Numerics" derives it;
``tests/test_attention.py`` measures it against ``mpmath``). The residual is ``y``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..core import Layer, no_params
from .attention import _softmax, _softmax_backward
from .softmax_cross_entropy import require_floating

NAME = "softmax"


def softmax(axis: int = -1, mask=None) -> Layer:
    """Softmax along ``axis``; ``mask`` is ``None`` or a floating array added to ``x`` before it
    (broadcast to ``x``'s shape: a causal mask of shape ``(T, T)`` serves every batch and head),
    ``-inf`` where an entry gets weight 0. Bound into the layer, like ``with_targets``'s labels."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"{NAME}: axis must be an int, got {axis!r}")
    if mask is not None:
        require_floating(NAME, "mask", mask)

    def forward(params, x):
        del params
        require_floating(NAME, "x", x)
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"{NAME}: axis {axis} is out of range for x shape {x.shape}")
        y = softmax_forward(x, axis, mask)
        return y, y

    def backward(params, y, dy):
        del params
        if jnp.shape(dy) != jnp.shape(y):
            raise ValueError(f"{NAME}: dy shape {jnp.shape(dy)} does not match output shape {jnp.shape(y)}")
        return (), softmax_backward(y, dy, axis)

    return Layer(no_params, forward, backward)


def softmax_forward(x, axis: int = -1, mask=None):
    """The weights ``y``; ``mask`` (additive) must broadcast to ``x.shape`` without changing it."""
    if mask is not None:
        try:
            fits = jnp.broadcast_shapes(jnp.shape(mask), x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{NAME}: mask shape {jnp.shape(mask)} does not broadcast to x shape {x.shape}")
        mask = jnp.broadcast_to(mask, x.shape)
        z = jnp.moveaxis(x + mask, axis, -1)
        real = jnp.moveaxis(mask > -jnp.inf, axis, -1)
        return jnp.moveaxis(_softmax(z, real), -1, axis)
    return jnp.moveaxis(_softmax(jnp.moveaxis(x, axis, -1), None), -1, axis)


def softmax_backward(y, dy, axis: int = -1):
    """``dx = y * (dy - sum(y * dy))`` along ``axis`` (computed as in Numerics)."""
    return jnp.moveaxis(_softmax_backward(jnp.moveaxis(y, axis, -1), jnp.moveaxis(dy, axis, -1)), -1, axis)
