r"""Sigmoid: ``y = 1 / (1 + exp(-x))``.

Chapter 5 builds it from four graph nodes and walks back through them
(see ``pure_backprop.graphs.sigmoid_graph``)::

    x1 = -x           dx  = -dx1
    x2 = exp(x1)      dx1 = dx2 * exp(x1) = dx2 * x2
    x3 = 1 + x2       dx2 = dx3
    y  = 1 / x3       dx3 = -dy / x3**2 = -dy * y**2

Multiplied out, ``dx = dy * y**2 * exp(-x) = dy * y * (1 - y)``, the closed form used here.

Numerics: the forward is evaluated with ``e = exp(-|x|)`` in ``(0, 1]``, ``y = 1 / (1 + e)``
for ``x >= 0`` and ``y = e / (1 + e)`` for ``x < 0``, so no branch overflows even at
``|x| = 1e4`` in float32. ``1 - y`` is kept as ``sigmoid(-x)``, computed the same way,
rather than subtracted from ``y``: at ``x = 30``, ``1 - y`` would lose all but 3 digits.
So ``y``, ``1 - y`` and ``dx = (dy * y) * (1 - y)`` are products and quotients of positive
numbers, accurate to a few ulps relative over the whole finite range (measured against
77-digit arithmetic in ``tests/test_precision.py``: at most 1.7 ulps for ``y`` and 2.5 for
``dx`` at ``dy = 1``, float64 and float32), including where ``y`` or ``dx`` underflow
(``x`` toward -745 in float64, where they round to subnormals or, with XLA's flush to zero on
CPU, to 0, as the true values do). NaN gives NaN; ``x = +-inf`` gives 1 or 0 and ``dx = 0``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..checks import require_same_shape
from ..core import Layer, no_params


def forward(params, x):
    del params
    e = jnp.exp(-jnp.abs(x))
    big, small = 1 / (1 + e), e / (1 + e)  # sigmoid(|x|) and sigmoid(-|x|) = 1 - sigmoid(|x|)
    y = jnp.where(x >= 0, big, small)
    return y, (y, jnp.where(x >= 0, small, big))


def backward(params, residuals, dy):
    del params
    y, one_minus_y = residuals
    require_same_shape("sigmoid", "dy", dy, "y", y)
    return (), dy * y * one_minus_y


sigmoid = Layer(no_params, forward, backward)
