r"""Arithmetic nodes of the computational graph: add, multiply, negate, and their
constant forms. Two-input nodes take ``x = (a, b)`` and return ``dx = (da, db)``.

Add (the book's "addition passes the gradient straight through")::

    y = a + b             da = dy,  db = dy

Multiply (the book's "swap the inputs": the apple example's price and tax)::

    y = a * b             da = dy * b,  db = dy * a

``b`` may have size 1 along an axis where ``a`` does not (same rank, e.g. ``(N, C) * (N, 1)``
in the softmax graph); that axis was broadcast forward, so ``db`` sums over it.

Negate::

    y = -x                dx = -dy

Add a constant ``c`` (the sigmoid's ``1 + x``; ``c`` is not a parameter)::

    y = x + c             dx = dy

Multiply by a constant ``c`` (a scalar, or an array of ``x``'s shape such as the targets
``t`` of the cross-entropy)::

    y = c * x             dx = c * dy
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_pair, require_same_shape
from ..core import Layer, no_params


def _pair_shape(name, shape_a, shape_b, allow_size1=False):
    shape_a, shape_b = tuple(shape_a), tuple(shape_b)
    ok = shape_a == shape_b or (
        allow_size1
        and len(shape_a) == len(shape_b)
        and all(sb in (sa, 1) for sa, sb in zip(shape_a, shape_b))
    )
    if not ok:
        rule = "equal shapes, or b of size 1 where a is not" if allow_size1 else "equal shapes"
        raise ValueError(f"{name}: a shape {shape_a} and b shape {shape_b} are incompatible (needs {rule})")
    return shape_a


def _pair_init(name, allow_size1=False):
    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype  # no params
        return (), _pair_shape(name, *in_shape, allow_size1=allow_size1)

    return init


def _add_forward(params, x):
    a, b = require_pair("add", x)
    _pair_shape("add", jnp.shape(a), jnp.shape(b))
    return a + b, None


def _add_backward(params, residuals, dy):
    return (), (dy, dy)


def _multiply_forward(params, x):
    a, b = require_pair("multiply", x)
    _pair_shape("multiply", jnp.shape(a), jnp.shape(b), allow_size1=True)
    return a * b, (a, b)


def _multiply_backward(params, residuals, dy):
    a, b = residuals
    require_same_shape("multiply", "dy", dy, "a", a)
    summed = tuple(i for i, (sa, sb) in enumerate(zip(a.shape, b.shape)) if sa != sb)
    db = jnp.sum(dy * a, axis=summed, keepdims=True) if summed else dy * a
    return (), (dy * b, db)


def _negate_forward(params, x):
    return -x, None


def _negate_backward(params, residuals, dy):
    return (), -dy


add = Layer(_pair_init("add"), _add_forward, _add_backward)
multiply = Layer(_pair_init("multiply", allow_size1=True), _multiply_forward, _multiply_backward)
negate = Layer(no_params, _negate_forward, _negate_backward)


def add_constant(c) -> Layer:
    """``y = x + c`` for a fixed scalar ``c``."""
    if jnp.ndim(c) != 0:
        raise ValueError(f"add_constant: c must be a scalar, got shape {jnp.shape(c)}")

    def forward(params, x):
        return x + c, None

    def backward(params, residuals, dy):
        return (), dy

    return Layer(no_params, forward, backward)


def multiply_constant(c) -> Layer:
    """``y = c * x`` for a fixed scalar ``c`` or a fixed array ``c`` of ``x``'s shape."""

    def forward(params, x):
        if jnp.ndim(c) != 0:
            require_same_shape("multiply_constant", "c", c, "x", x)
        return c * x, None

    def backward(params, residuals, dy):
        return (), c * dy

    return Layer(no_params, forward, backward)
