r"""Element-wise nodes of the sigmoid and softmax graphs: exp, log, reciprocal.

Exp (its derivative is itself, so the output is the residual)::

    y = exp(x)            dx = dy * y

Log (natural log, so no ``ln`` factor, as the book remarks)::

    y = log(x)            dx = dy / x

Reciprocal (the book's ``1/x`` node)::

    y = 1 / x             dx = -dy / x**2 = -dy * y**2

Numerics: each is within a few ulps of the exact value over the whole finite range of float64
and float32 (``tests/test_precision.py`` measures them against 77-digit arithmetic: ``exp``
1.2 ulps, float32 4.1 just below overflow, which is XLA's kernel; ``log`` 0.5-1; ``1/x`` 0.5
and its ``dx = (-dy * y) * y`` 1.7). ``exp``'s ``dx`` multiplies by ``y``, so where ``exp(x)``
overflows ``dx`` is ``+-inf`` even for ``|dy| < 1``, as ``jax.grad`` gives; NaN propagates.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..core import Layer, no_params


def _exp_forward(params, x):
    y = jnp.exp(x)
    return y, y


def _exp_backward(params, y, dy):
    return (), dy * y


def _log_forward(params, x):
    return jnp.log(x), x


def _log_backward(params, x, dy):
    return (), dy / x


def _reciprocal_forward(params, x):
    y = 1 / x
    return y, y


def _reciprocal_backward(params, y, dy):
    return (), -dy * y * y


exp = Layer(no_params, _exp_forward, _exp_backward)
log = Layer(no_params, _log_forward, _log_backward)
reciprocal = Layer(no_params, _reciprocal_forward, _reciprocal_backward)
