r"""The sum node (the book's sigma): adds entries along one axis.

Forward, over ``axis`` (``keepdims=True`` keeps it with size 1)::

    y = sum(x, axis)

Backward: every entry fed the sum with weight 1, so each receives the same ``dy``,
broadcast back along the summed axis (``None`` sums everything to a scalar)::

    dx = broadcast(dy, x.shape)
"""

from __future__ import annotations

import jax.numpy as jnp

from ..core import Layer


def sum(axis: int | None = None, keepdims: bool = False) -> Layer:  # noqa: A001 (the node's name)
    """A node summing along ``axis`` (all axes when ``None``)."""

    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype  # no params
        shape = tuple(in_shape)
        axes = range(len(shape)) if axis is None else [axis % len(shape)]
        out = tuple(1 if i in axes else n for i, n in enumerate(shape) if keepdims or i not in axes)
        return (), out

    def forward(params, x):
        if axis is not None and not -x.ndim <= axis < x.ndim:
            raise ValueError(f"sum: axis {axis} is out of range for x shape {x.shape}")
        return jnp.sum(x, axis=axis, keepdims=keepdims), x

    def backward(params, x, dy):
        if axis is not None and not keepdims:
            dy = jnp.expand_dims(dy, axis)
        return (), jnp.broadcast_to(dy, x.shape)

    return Layer(init, forward, backward)
