r"""GELU, the Gaussian error linear unit (Hendrycks and Gimpel 2016): ``y = x * Phi(x)``, the
input weighted by the probability that a standard normal falls below it. Two forms, each with the
derivative of its own formula (not of the other's).

Exact (``gelu``, PyTorch's ``approximate="none"``), ``Phi`` the normal CDF and ``phi`` its density::

    Phi(x) = erfc(-x / sqrt(2)) / 2
    phi(x) = exp(-x**2 / 2) / sqrt(2 pi)
    y      = x * Phi(x)
    dx     = dy * (Phi(x) + x * phi(x))          # the product rule; Phi' = phi

The tanh approximation (``gelu_tanh``, GPT-2's and PyTorch's ``approximate="tanh"``), with
``a = 0.044715``::

    y = x / 2 * (1 + tanh(u)),   u = sqrt(2 / pi) * (x + a x**3)

Since ``(1 + tanh(u)) / 2 = sigmoid(2 u)`` it is computed as ``y = x * s``, ``s = sigmoid(v)``,
``v = 2 u = 2 sqrt(2 / pi) x (1 + a x**2)``. With ``sigmoid' = s (1 - s)`` and
``1 - s = sigmoid(-v)``::

    v'  = 2 sqrt(2 / pi) (1 + 3 a x**2)
    dx  = dy * (s + x * s * sigmoid(-v) * v')
        = dy * s * (1 + x v' sigmoid(-v))

Numerics (measured against 256-bit arithmetic over the whole finite range of float64 and
float32 in ``tests/test_precision.py``).

* ``Phi`` comes from ``erfc``, not ``(1 + erf(x / sqrt 2)) / 2``: for ``x < 0`` the latter is
  ``1 + (-1 + tiny)`` and loses every digit below 1e-16 (``Phi(-10) = 7.6e-24`` would be 0).
* ``phi`` is ``exp(-x**2 / 2)`` with ``x**2`` split as ``h**2 + (x - h)(x + h)``, ``h`` the input
  rounded to sixteenths, so that ``h**2 / 2`` is exact: rounding ``x**2`` itself would cost
  ``x**2`` ulps (700 at ``x = -37``).
* The exact form's tail, ``x <= -4``: XLA's ``erfc`` is 256 ulps off at ``x = -33`` (float64),
  and ``Phi(x) + x phi(x)`` subtracts two numbers of nearly the same size there. With ``t = -x``
  and Mills's ratio ``m = Phi(-t) / phi(t)`` (its continued fraction ``1 / (t + 1 / (t + 2 / (t
  + ...))``, positive terms only), ``y = -t phi(t) m`` and ``dy/dx = phi(t) (m - t)``, where
  ``m < 1 / t <= t / 16``: no cancellation. ``phi`` is carried times ``exp(64)`` there and scaled
  back last, so nothing underflows before the result does. Exact form: within 9 ulps for ``y``
  and for ``dy/dx`` everywhere but near the zero of ``dy/dx``.
* ``dy/dx`` has a zero, at ``x ~ -0.7518`` (both forms). Near it ``Phi(x) + x phi(x)`` is the
  difference of two numbers of size 0.2: its error is a few ulps of 0.2, not of the small
  result. That is the conditioning of the sum; the test measures it in ulps of its larger term.
* The tanh form's ``sigmoid(v)``, ``sigmoid(-v)`` are the sigmoid layer's, from
  ``e = exp(-|v|)`` in ``(0, 1]``: no overflow, and ``1 - s`` is never a subtraction. Its slope
  is factored as ``s * (1 + x v' sigmoid(-v))``: for ``x << 0`` both terms of
  ``s + x s sigmoid(-v) v'`` are of the order of ``s``, which may underflow while the result does
  not; where ``v < -64``, ``s`` is likewise carried times ``exp(64)``.
* The tanh form for ``x << 0`` is as sensitive to its input as ``exp(v)``: a relative change
  ``d`` of ``x`` changes ``y`` by about ``3 |v| d``, and ``v`` is rounded in the input's
  precision (its constants too). Its error is within a few ulps times ``1 + 3 |v|``: 10 ulps
  where ``|x| <= 3``, 1,200 at ``x = -20`` (float64, ``v = -600``), 70 at ``x = -9`` (float32).
* Limits: ``+inf`` gives ``y = inf``, ``dx = dy``; ``-inf`` gives ``y = 0`` and ``dx = 0``
  (``x * Phi(x)`` would be ``-inf * 0``); NaN gives NaN. ``x**3`` overflows for
  ``|x| > 5.6e102`` (float64): ``v`` is then +-inf and ``s`` 0 or 1, the limits.

The residual is ``x``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from ..checks import require_same_shape
from ..core import Layer, no_params
from .softmax_cross_entropy import require_floating

A = 0.044715  # the cubic coefficient of the tanh approximation
_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_8_OVER_PI = 2 * math.sqrt(2 / math.pi)  # v = 2 u = sqrt(8 / pi) x (1 + a x**2)
_EXP_MINUS_64 = math.exp(-64)
TAIL = 4.0  # the exact form uses Mills's ratio for x <= -TAIL


def _sigmoids(v):
    """``(sigmoid(v), sigmoid(-v))`` from ``e = exp(-|v|)`` (the sigmoid layer's form)."""
    e = jnp.exp(-jnp.abs(v))
    big, small = 1 / (1 + e), e / (1 + e)
    return jnp.where(v >= 0, big, small), jnp.where(v >= 0, small, big)


def _at_infinity(x, value, at_plus, at_minus):
    """``value`` with its limits at ``x = +inf`` and ``-inf`` (where the formula gives ``inf * 0``)."""
    return jnp.where(x == jnp.inf, at_plus, jnp.where(x == -jnp.inf, at_minus, value))


def _check_x(name, x):
    require_floating(name, "x", x)


# --- exact ------------------------------------------------------------------------------------

def _gaussian(t):
    """``(d, scale)`` with ``exp(-t**2 / 2) = d * scale`` to a few ulps, for ``t >= 0``.

    ``t**2`` is split as ``h**2 + (t - h)(t + h)``, ``h`` = ``t`` rounded to sixteenths: ``h**2 / 2``
    is exact, so ``exp(-h**2 / 2)`` carries only exp's own rounding, and the rest is an argument
    of at most ``(t + h) / 32`` (rounding ``t**2`` itself would cost ``t**2`` ulps of the result).
    Where ``h**2 / 2 > 64`` the exponent is shifted by the integer 64 (exactly) and ``scale`` is
    ``exp(-64)``, so ``d`` stays a normal number down to where the result underflows. ``t`` is
    clipped at 64 (the result is 0 beyond 40): ``(t - h)(t + h) / 2`` stays within 4 in size, and
    nothing overflows."""
    t = jnp.minimum(t, 64.0)
    h = jnp.round(t * 16) / 16
    half = 0.5 * (h * h)
    shift = jnp.where(half > 64, 64.0, 0.0).astype(t.dtype)
    d = jnp.exp(shift - half) * jnp.exp(-0.5 * ((t - h) * (t + h)))
    return d, jnp.where(half > 64, _EXP_MINUS_64, 1.0).astype(t.dtype)


def _mills(t):
    """Mills's ratio ``Phi(-t) / phi(t)`` for ``t >= TAIL``, by its continued fraction
    ``1 / (t + 1 / (t + 2 / (t + 3 / (t + ...))))`` (a sum of positive terms, evaluated from the
    inside; its relative error at ``t = 4``, the worst case, is 6e-19 with 40 levels and 3e-11 with
    the 16 of float32)."""
    r = t
    for k in range(40 if t.dtype == jnp.float64 else 16, 0, -1):
        r = t + k / r
    return 1 / r


def _exact(x):
    """``(y, dy/dx)`` of ``x * Phi(x)``: from ``erfc`` for ``x > -TAIL``; in the tail, with
    ``t = -x``, ``Phi(x) = phi(t) m`` (``m`` Mills's ratio), so ``y = -t phi(t) m`` and
    ``dy/dx = phi(t) (m - t)``: products of positive numbers, with ``phi`` kept normal by its scale."""
    t = jnp.maximum(-x, TAIL)  # the tail's branch is computed everywhere; keep it finite
    d, scale = _gaussian(t)
    m = _mills(t)
    tail_y, tail_slope = -((t * d) * m) * scale, -((d * _INV_SQRT_2PI) * (t - m)) * scale
    tail_y = tail_y * _INV_SQRT_2PI
    near = jnp.maximum(x, -TAIL)
    cdf = 0.5 * lax.erfc(-near * _INV_SQRT2)
    d_near, scale_near = _gaussian(jnp.abs(near))
    y = jnp.where(x > -TAIL, near * cdf, tail_y)
    slope = jnp.where(x > -TAIL, cdf + (near * (d_near * _INV_SQRT_2PI)) * scale_near, tail_slope)
    return _at_infinity(x, y, jnp.inf, 0.0), _at_infinity(x, slope, 1.0, 0.0)


def forward(params, x):
    del params
    _check_x("gelu", x)
    return _exact(x)[0], x


def backward(params, x, dy):
    del params
    require_same_shape("gelu", "dy", dy, "x", x)
    return (), dy * _exact(x)[1]


# --- tanh approximation -----------------------------------------------------------------------

def _tanh_form(x):
    """``(y, dy/dx)`` of ``x * sigmoid(v)``, ``v = sqrt(8 / pi) x (1 + a x**2)``.

    Where ``v < -64``, ``sigmoid(v) = exp(v) / (1 + exp(v))`` is ``exp(v)`` to within 1e-28 and is
    kept as ``exp(v + 64)`` times the scale ``exp(-64)``, applied last: ``x * sigmoid(v)`` and the
    slope are normal numbers while ``sigmoid(v)`` alone would already be flushed to 0."""
    v = _SQRT_8_OVER_PI * x * (1 + A * (x * x))
    s, s_minus = _sigmoids(v)
    low = v < -64
    s = jnp.where(low, jnp.exp(jnp.maximum(v, -1e4) + 64), s)  # the clip keeps exp's argument tame
    scale = jnp.where(low, _EXP_MINUS_64, 1.0).astype(x.dtype)
    dv = _SQRT_8_OVER_PI * (1 + (3 * A) * (x * x))
    # x * dv * sigmoid(-v) is 0 wherever sigmoid(-v) is (x >> 0, where x * dv may overflow to inf)
    tail = jnp.where(s_minus == 0, 0.0, (x * s_minus) * dv)
    slope = jnp.where(s == 0, 0.0, s * (1 + tail))  # s == 0 only for x << 0, where 1 + tail may be -inf
    # at +inf: s = 1 and sigmoid(-v) = 0, the slope 1; at -inf: s = 0, the slope 0 (no inf * 0 left)
    return _at_infinity(x, (x * s) * scale, jnp.inf, 0.0), slope * scale


def tanh_forward(params, x):
    del params
    _check_x("gelu_tanh", x)
    return _tanh_form(x)[0], x


def tanh_backward(params, x, dy):
    del params
    require_same_shape("gelu_tanh", "dy", dy, "x", x)
    return (), dy * _tanh_form(x)[1]


gelu = Layer(no_params, forward, backward)
"""The exact GELU, ``x * Phi(x)``."""

gelu_tanh = Layer(no_params, tanh_forward, tanh_backward)
"""GELU's tanh approximation, ``x / 2 * (1 + tanh(sqrt(2 / pi) (x + 0.044715 x**3)))``."""
