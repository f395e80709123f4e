r"""An arbitrary-precision oracle for every element-wise node and activation.

``jax.vjp`` of the reference and finite differences cannot see a backward that is right to
1e-6 but wrong in its last digits, or that returns 0 where the true derivative is 1e-17 (the
old ``tanh`` backward, ``1 - y**2``, did both). Here each function's forward and backward are
compared, entry by entry, with ``mpmath`` evaluated at 256 bits (77 digits), and the error is
measured in ulps of the true value in the input's own format::

    ulps = |got - true| / ulp(true),   ulp(v) = 2**(max(floor(log2|v|), emin) - p + 1)

The inputs cover the whole finite range of float64 and float32: a grid of magnitudes
log-spaced (in base 2) from the smallest subnormal to the largest finite value, both signs,
plus special points (0, the smallest normal and subnormal, the largest finite value and the
thresholds where ``exp`` overflows or underflows, where ``sigmoid`` and ``tanh`` round to
+-1, where their derivatives underflow) and uniform samples where the functions curve.
Backward is checked with ``dy = 1`` (so ``dx`` is the derivative itself) and with a random
``dy`` (expected ``dy * f'(x)``, ``dy`` taken exactly).

Where the true value overflows the expected result is +-inf; where it is +-inf or NaN
(``1/0``, ``log(0)``) it must be exactly that. Two rules come from the platform, not from the
layers, and are applied to every function alike:

* XLA on CPU runs with subnormals flushed to zero, on input and output (DAZ/FTZ:
  ``jnp.float32(1e-45) * 1 == 0``, ``jnp.log(5e-324) == -inf``). So a subnormal input is
  also accepted as read as a signed zero (the smaller of the two errors counts), and where
  the true result is below the smallest normal number an exact 0 is accepted.
* float32 ``jnp.log`` of a subnormal input gives either the flushed ``log(0) = -inf`` or about
  -103.97 whatever the input, depending on where the entry sits in the array (measured: the
  vectorized loop and its scalar tail differ), never the true value in [-103.28, -87.34]. The
  ``log`` node calls ``jnp.log`` and cannot do better under DAZ: any rescaling of a subnormal
  is itself flushed. Those inputs are only checked to give -inf or a value in
  [-104, log(smallest normal)] (see ``_known``).

With a random ``dy``, where ``f'(x)`` itself is below the smallest normal number (flushed to 0)
or overflows, ``dy * f'(x)`` may be 0 or +-inf accordingly even when the exact product is
representable: the backward multiplies by ``f'(x)`` (or by ``y``), as ``jax.grad`` does.

Tolerances (``TOLERANCE``) are a few ulps, set just above the worst error measured on XLA CPU
and explained per function; run ``python tests/test_precision.py`` to print the measured
table. The composed ``sigmoid_graph`` is checked only where it can be accurate (see
``test_sigmoid_graph_is_accurate_only_where_its_intermediates_do_not_underflow``).

NaN inputs must give NaN (forward, and dx wherever f' depends on x), and +-inf inputs the limits
of f and f' (``test_nan_propagates_and_infinities_give_the_limits``). The last test puts every
registry layer and loss at inputs of +-1e4, in float32 and
float64: forward and backward finite and equal to ``jax.vjp`` of the reference.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from pure_backprop import graphs, nodes
from pure_backprop.layers import gelu, gelu_tanh, relu, sigmoid, tanh
from pure_backprop.registry import CASES

mp = mpmath.MPContext()  # a context of our own, so the global mpmath precision is left alone
mp.prec = 256

FORMATS = {  # precision p (with the hidden bit), smallest normal exponent, largest exponent
    "float64": (53, -1022, 1023),
    "float32": (24, -126, 127),
}


# --- the oracle: each function and its derivative at 256 bits -----------------------------

def _sigmoid(v):
    return 1 / (1 + mp.exp(-v))


def _spec_negate(x, v):
    return -v, mp.mpf(-1)


def _spec_exp(x, v):
    e = mp.exp(v)
    return e, e


def _spec_log(x, v):  # domain x >= +0
    if x == 0:
        return mp.mpf("-inf"), mp.mpf("inf")
    return mp.log(v), 1 / v


def _spec_reciprocal(x, v):
    if x == 0:
        return mp.mpf(math.copysign(math.inf, x)), mp.mpf("-inf")
    return 1 / v, -1 / (v * v)


def _spec_add_constant(x, v):
    return v + 1, mp.mpf(1)


def _spec_multiply_constant(x, v):
    return mp.mpf(-2.5) * v, mp.mpf(-2.5)


def _spec_relu(x, v):
    return (v, mp.mpf(1)) if x > 0 else (mp.mpf(0), mp.mpf(0))


def _spec_sigmoid(x, v):
    # s * (1 - s) as s(x) * s(-x): 1 - s(x) would cancel even at 256 bits for x near 1e308
    return _sigmoid(v), _sigmoid(v) * _sigmoid(-v)


def _spec_tanh(x, v):
    return mp.tanh(v), mp.sech(v) ** 2


GELU_A = mp.mpf("0.044715")


def _gelu_terms(v):
    """The two terms of the exact GELU's slope, ``Phi(v)`` and ``v phi(v)``."""
    return mp.erfc(-v / mp.sqrt(2)) / 2, v * mp.exp(-v * v / 2) / mp.sqrt(2 * mp.pi)


def _spec_gelu(x, v):
    if abs(v) > 1e6:  # Phi is 1 or below 1e-(10**11): mpmath's erfc does not go there
        return (v, mp.mpf(1)) if v > 0 else (mp.mpf(0), mp.mpf(0))
    cdf, tail = _gelu_terms(v)
    return v * cdf, cdf + tail


def _gelu_tanh_terms(v):
    """``(w, s, x s sigmoid(-w) w')`` of the tanh form: ``w = 2u``, ``s = sigmoid(w)``."""
    c = 2 * mp.sqrt(2 / mp.pi)
    w = c * v * (1 + GELU_A * v * v)
    s, s_minus = 1 / (1 + mp.exp(-w)), 1 / (1 + mp.exp(w))
    return w, s, v * s * s_minus * c * (1 + 3 * GELU_A * v * v)


def _spec_gelu_tanh(x, v):
    _, s, tail = _gelu_tanh_terms(v)
    return v * s, s + tail


def _condition_gelu(v):
    """The slope is the sum ``Phi + x phi``: near its zero (x ~ -0.75) its error is counted in
    ulps of the larger term, the factor ``(|Phi| + |x phi|) / |Phi + x phi|``."""
    if abs(v) > 1e6:
        return 1, 1
    cdf, tail = _gelu_terms(v)
    return 1, max(1, (abs(cdf) + abs(tail)) / abs(cdf + tail))


def _condition_gelu_tanh(v):
    """``sigmoid(w)`` moves by ``|w|`` relative ulps per ulp of ``w``, which is rounded, and
    ``w'`` x / w`` is at most 3: the factor ``1 + 3 |w|``; the slope, a sum like the exact
    form's, also has the factor of its terms."""
    if abs(v) > 1e6:
        return 1, 1
    w, s, tail = _gelu_tanh_terms(v)
    k = 1 + 3 * abs(w)
    return k, k * max(1, (abs(s) + abs(tail)) / abs(s + tail))


# name -> (layer, params, oracle, domain); domain "all" or "nonnegative"
FUNCTIONS = {
    "negate": (nodes.negate, (), _spec_negate, "all"),
    "exp": (nodes.exp, (), _spec_exp, "all"),
    "log": (nodes.log, (), _spec_log, "nonnegative"),
    "reciprocal": (nodes.reciprocal, (), _spec_reciprocal, "all"),
    "add_constant": (nodes.add_constant(1.0), (), _spec_add_constant, "all"),
    "multiply_constant": (nodes.multiply_constant(-2.5), (), _spec_multiply_constant, "all"),
    "relu": (relu, (), _spec_relu, "all"),
    "sigmoid": (sigmoid, (), _spec_sigmoid, "all"),
    "tanh": (tanh, (), _spec_tanh, "all"),
    "sigmoid_graph": (graphs.sigmoid_graph, ((),) * 4, _spec_sigmoid, "all"),
    "gelu": (gelu, (), _spec_gelu, "all"),
    "gelu_tanh": (gelu_tanh, (), _spec_gelu_tanh, "all"),
}

# Functions whose error is judged against their conditioning, not in plain ulps: name -> the
# factors (forward, slope) by which their ulps are divided at an input (the others: 1).
CONDITION = {"gelu": _condition_gelu, "gelu_tanh": _condition_gelu_tanh}

# The largest error allowed, in ulps: (forward, dx with dy = 1, dx with a random dy), per format.
# A correctly rounded operation is within 0.5 ulp; every further rounding, and every input that
# is itself an ulp off, adds up to about one more. Each bound sits just above the worst error
# measured on XLA CPU (python tests/test_precision.py prints them).
TOLERANCE = {
    "negate": {"float64": (0, 0, 0), "float32": (0, 0, 0)},  # exact: a sign flip
    # y = exp(x) is XLA's exp, within 1.3 ulps, except float32 just below overflow: 4.1 ulps at
    # x = 88.7228 (the platform's kernel; the node can only call it). dx = dy * y: one more rounding.
    "exp": {"float64": (1.5, 1.5, 2.5), "float32": (4.5, 4.5, 4.5)},
    "log": {"float64": (1, 0.5, 0.5), "float32": (1, 0.5, 0.5)},  # dx = dy / x: one division
    # y = 1/x correctly rounded; dx = -(dy * y) * y carries y's error twice and two roundings
    "reciprocal": {"float64": (0.5, 2, 3), "float32": (0.5, 2, 3)},
    "add_constant": {"float64": (0.5, 0, 0), "float32": (0.5, 0, 0)},  # one rounding; dx = dy exactly
    "multiply_constant": {"float64": (0.5, 0, 0.5), "float32": (0.5, 0, 0.5)},
    "relu": {"float64": (0, 0, 0), "float32": (0, 0, 0)},  # exact (dx = 0 at x == 0, the convention)
    # y = 1/(1+e) or e/(1+e), e = exp(-|x|): exp, a sum, a quotient; dx = (dy*y)*(1-y), two of them
    "sigmoid": {"float64": (2, 3, 4), "float32": (2, 3, 4)},
    # y from expm1, dx = (dy*s)*s with s = 2e/(1+e*e), e = exp(-|x|): s's error counts twice
    "tanh": {"float64": (3, 4.5, 4.5), "float32": (3, 4.5, 4.5)},
    # four nodes, each within an ulp; dx = dy * y*y * exp(-x) compounds them (where it is valid)
    "sigmoid_graph": {"float64": (2, 4.5, 4.5), "float32": (2, 4.5, 4.5)},
    # erfc (XLA's, within 8 ulps where it is used, x > -4), the split exp(-x**2 / 2), Mills's
    # continued fraction in the tail (x**2 ulps without them); the slope in ulps of its larger term
    "gelu": {"float64": (8.5, 4, 4), "float32": (7.5, 3.5, 3.5)},
    # in ulps times 1 + 3 |w| (CONDITION; 1,170 plain ulps at x = -20): w's roundings, the sigmoid's
    "gelu_tanh": {"float64": (1.5, 2, 2.5), "float32": (1.5, 2, 2.5)},
}

# Where the composed sigmoid graph can be accurate: dx = dy * y**2 * exp(-x) needs y**2 above
# the smallest normal number, i.e. x > log(tiny) / 2 (-354.4 in float64, -43.7 in float32).
GRAPH_VALID_FROM = {"float64": -354.0, "float32": -43.0}


# --- inputs -------------------------------------------------------------------------------

def inputs(dtype: str) -> np.ndarray:
    """Both signs of a base-2 log-spaced grid over the whole finite range, special points and
    uniform samples, as distinct values of ``dtype``."""
    np_dtype = np.dtype(dtype)
    info = np.finfo(np_dtype)
    p, emin, emax = FORMATS[dtype]
    exponents = np.linspace(emin - p + 1, emax + 1, 401 if dtype == "float64" else 201)
    grid = np.minimum(np.exp2(np.clip(exponents, None, emax + 1 - 1e-9)), float(info.max))
    with np.errstate(over="ignore"):
        log_max, log_tiny = np.log(float(info.max)), np.log(float(info.tiny))
        log_smallest = np.log(float(info.smallest_subnormal))
        special = [
            0.0, float(info.smallest_subnormal), float(info.tiny), float(info.max), 1.0, 0.5, 2.0,
            log_max, log_tiny, log_smallest, log_max / 2, log_tiny / 2, log_smallest / 2,
            math.atanh(1 - float(info.epsneg)), 0.5 * math.log(2 / float(info.eps)),  # tanh rounds to 1
            -np.log(float(info.eps)), -np.log(float(info.epsneg)),  # sigmoid rounds to 1
            1e4, 36.7, 19.06, 20.0, 15.0, 10.0, 9.01, 17.33, 44.4, 88.0, 700.0, 710.5, 745.2,
        ]
    with np.errstate(over="ignore"):
        special = np.asarray(special, np.float64).astype(np_dtype)
        special = special[np.isfinite(special)]
        up, down = np.nextafter(special, np_dtype.type(np.inf)), np.nextafter(special, np_dtype.type(0))
    rng = np.random.default_rng(0)
    uniform = np.concatenate([rng.uniform(0, 3, 60), rng.uniform(0, 40, 90), rng.uniform(0, 800, 60)])
    every = np.concatenate([grid.astype(np_dtype), special, up, down, uniform.astype(np_dtype)])
    every = every[np.isfinite(every)]
    return np.unique(np.concatenate([every, -every]))


# --- the comparison -----------------------------------------------------------------------

_LIMITS = {  # the smallest magnitude that rounds to inf, and the smallest normal number
    dtype: (mp.ldexp(2 - mp.ldexp(1, -p), emax), mp.ldexp(1, emin))
    for dtype, (p, emin, emax) in FORMATS.items()
}


def ulps(got: float, true, dtype: str) -> float:
    """Error of ``got`` in ulps of ``true`` in ``dtype``; 0 for matching infinities and NaNs,
    and inf for any other non-finite mismatch. An exact 0 for a true value below the smallest
    normal number counts as 0 (flush to zero)."""
    p, emin, _ = FORMATS[dtype]
    overflow, tiny = _LIMITS[dtype]
    if mp.isnan(true):
        return 0.0 if math.isnan(got) else math.inf
    if mp.isinf(true) or abs(true) >= overflow:
        return 0.0 if got == (math.inf if true > 0 else -math.inf) else math.inf
    if not math.isfinite(got):
        return math.inf
    if got == 0 and abs(true) < tiny:
        return 0.0
    _, man, exp, bc = true._mpf_
    exponent = exp + bc - 1 if man else emin  # floor(log2 |true|)
    return abs(float(mp.ldexp(mp.mpf(got) - true, p - 1 - max(exponent, emin))))


_TINY = {dtype: float(np.finfo(np.dtype(dtype)).tiny) for dtype in FORMATS}


def _is_subnormal(x: float, dtype: str) -> bool:
    return x != 0 and abs(x) < _TINY[dtype]


def _known(name: str, dtype: str, x: float) -> bool:
    """The documented platform exception: float32 jnp.log of a subnormal (see the module doc)."""
    return name == "log" and dtype == "float32" and _is_subnormal(x, dtype)


# Points of a function's own: where the exact GELU's exp(-x**2 / 2) starts carrying a factor
# exp(64) (at x**2 / 2 = 64, |x| = 11.31), on both sides of it.
OWN_POINTS = {"gelu": (11.32, 11.35, 11.39, -11.32, -11.35, -11.39)}


def inputs_in_domain(name: str, dtype: str) -> np.ndarray:
    xs = inputs(dtype)
    if name in OWN_POINTS:
        xs = np.unique(np.concatenate([xs, np.asarray(OWN_POINTS[name], dtype)]))
    if FUNCTIONS[name][3] == "nonnegative":
        xs = xs[(xs > 0) | ((xs == 0) & ~np.signbit(xs))]
    return xs


@functools.lru_cache(maxsize=None)
def evaluate(name: str, dtype: str):
    """The function's forward and its dx for dy = 1 and for a random dy, on every input."""
    layer, params, _, _ = FUNCTIONS[name]
    xs = inputs_in_domain(name, dtype)
    x = jnp.asarray(xs, dtype)
    y, residuals = layer.forward(params, x)
    _, dx_one = layer.backward(params, residuals, jnp.ones_like(y))
    dy = jax.random.normal(jax.random.PRNGKey(1), x.shape, dtype)
    _, dx_random = layer.backward(params, residuals, dy)
    return xs, np.asarray(y), np.asarray(dx_one), np.asarray(dy), np.asarray(dx_random)


@functools.lru_cache(maxsize=None)
def errors(name: str, dtype: str):
    """Per input: (x, ulps of forward, of dx with dy=1, of dx with random dy), platform rules applied."""
    spec = FUNCTIONS[name][2]
    xs, y, dx_one, dy, dx_random = evaluate(name, dtype)
    rows = []
    for i, x in enumerate(xs.tolist()):
        readings = [x] + ([math.copysign(0.0, x)] if _is_subnormal(x, dtype) else [])  # DAZ
        best = None
        for read in readings:
            f, df = spec(read, mp.mpf(read))
            d = mp.mpf(float(dy[i]))
            e = (ulps(float(y[i]), f, dtype), ulps(float(dx_one[i]), df, dtype), ulps(float(dx_random[i]), d * df, dtype))
            if name in CONDITION:
                k_y, k_dx = (float(k) for k in CONDITION[name](mp.mpf(read)))
                e = (e[0] / k_y, e[1] / k_dx, e[2] / k_dx)
            flushed = ulps(0.0, df, dtype) == 0 and dx_random[i] == 0
            overflowed = ulps(math.inf, abs(df), dtype) == 0 and abs(dx_random[i]) == math.inf
            if flushed or overflowed:  # f'(x) itself flushes to 0 or overflows: so does dy * f'(x)
                e = e[:2] + (0.0,)
            best = e if best is None else tuple(map(min, best, e))
        rows.append((x, *best))
    return rows


def worst(rows, column):
    return max(rows, key=lambda r: r[column])


# --- the tests ----------------------------------------------------------------------------

ELEMENTWISE = [name for name in FUNCTIONS if name != "sigmoid_graph"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_forward_and_backward_within_a_few_ulps_over_the_whole_range(name, dtype):
    rows = errors(name, dtype)
    strict = [r for r in rows if not _known(name, dtype, r[0])]
    for column, what in zip((1, 2, 3), ("forward", "dx (dy=1)", "dx (random dy)")):
        x, *errs = worst(strict, column)
        bound = TOLERANCE[name][dtype][column - 1]
        assert errs[column - 1] <= bound, f"{name} {dtype} {what}: {errs[column - 1]:.3g} ulps at x={x!r} (tolerance {bound})"
    known = [r[0] for r in rows if _known(name, dtype, r[0])]
    if known:
        _, y, _, _, _ = evaluate(name, dtype)
        y = y[np.isin(inputs_in_domain(name, dtype), known)]
        assert np.all((y == -np.inf) | ((y >= -104) & (y <= np.log(np.finfo(np.float32).tiny)))), y


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_graph_is_accurate_only_where_its_intermediates_do_not_underflow(dtype):
    """The book's four nodes compute ``y = 1 / (1 + exp(-x))`` and, walking back,
    ``dx = dy * y**2 * exp(-x)``. Each node is within an ulp, and the forward is accurate
    everywhere, but for x below ``log(tiny) / 2`` the intermediate ``y**2`` underflows while the
    true ``dx ~ e**x`` is still a normal number, so dx comes back 0, and below ``-log(max)``
    ``exp(-x)`` overflows and dx is ``0 * inf = NaN``. That is inherent to the composition
    (no node sees both factors); the closed-form ``sigmoid`` layer is accurate there."""
    rows = errors("sigmoid_graph", dtype)
    x, forward_err, _, _ = worst(rows, 1)
    assert forward_err <= TOLERANCE["sigmoid_graph"][dtype][0], (x, forward_err)
    valid = [r for r in rows if r[0] >= GRAPH_VALID_FROM[dtype]]
    for column in (2, 3):
        x, *errs = worst(valid, column)
        assert errs[column - 1] <= TOLERANCE["sigmoid_graph"][dtype][column - 1], (x, errs)
    # the documented failure below the range, so the limits stated above stay true
    _, _, dx, _, _ = evaluate("sigmoid_graph", dtype)
    xs = inputs(dtype)
    log_max = float(np.log(np.finfo(np.dtype(dtype)).max))
    assert np.all(dx[(xs < GRAPH_VALID_FROM[dtype] - 1) & (xs > -log_max + 1)] == 0)
    assert np.all(np.isnan(dx[xs < -log_max - 1]))


inf, nan = math.inf, math.nan
# f(+inf), f'(+inf), f(-inf), f'(-inf), f'(NaN): the limits, and dx at NaN (NaN unless f' is constant)
LIMITS = {
    "negate": (-inf, -1, inf, -1, -1),
    "exp": (inf, inf, 0, 0, nan),
    "log": (inf, 0, None, None, nan),  # -inf is outside log's domain
    "reciprocal": (0, 0, 0, 0, nan),
    "add_constant": (inf, 1, -inf, 1, 1),
    "multiply_constant": (-inf, -2.5, inf, -2.5, -2.5),
    "relu": (inf, 1, 0, 0, nan),
    "sigmoid": (1, 0, 0, 0, nan),
    "tanh": (1, 0, -1, 0, nan),
    "sigmoid_graph": (1, 0, 0, nan, nan),  # dx = y**2 * exp(-x) = 0 * inf at -inf (documented above)
    "gelu": (inf, 1, 0, 0, nan),
    "gelu_tanh": (inf, 1, 0, 0, nan),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_nan_propagates_and_infinities_give_the_limits(name, dtype):
    """Regression for relu, which mapped NaN to 0: no NaN or inf may turn silently into a finite value."""
    layer, params, _, _ = FUNCTIONS[name]
    f_pos, df_pos, f_neg, df_neg, df_nan = LIMITS[name]
    points, expected_y, expected_dx = [nan, inf], [nan, f_pos], [df_nan, df_pos]
    if f_neg is not None:
        points, expected_y, expected_dx = points + [-inf], expected_y + [f_neg], expected_dx + [df_neg]
    x = jnp.asarray(points, dtype)
    y, residuals = layer.forward(params, x)
    _, dx = layer.backward(params, residuals, jnp.ones_like(y))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(expected_y, dtype), err_msg=f"{name} forward at {points}")
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(expected_dx, dtype), err_msg=f"{name} dx at {points}")


def test_the_tanh_derivative_no_longer_cancels():
    """Regression: ``1 - tanh(x)**2`` lost relative precision for large |x| (4e-8 at 10, 4e-4 at
    15, 11x too large at 19, exactly 0 beyond 19.1 where the true value is 1.7e-17 at 20)."""
    x = jnp.array([10.0, 15.0, 19.0, 20.0, -20.0, 100.0, 354.0, 1e4])
    _, residuals = tanh.forward((), x)
    _, dx = tanh.backward((), residuals, jnp.ones_like(x))
    for xi, got in zip(x.tolist(), dx.tolist()):
        assert ulps(got, mp.sech(xi) ** 2, "float64") <= TOLERANCE["tanh"]["float64"][1], (xi, got)
    assert float(dx[3]) == pytest.approx(1.6993104e-17, rel=1e-7)


# --- the softmax losses' gradient at confident predictions ----------------------------------

def _confident_rows(dtype):
    """Scores (R, 4) whose target, class 0, gets ``p = 1 - 10**-k`` for k = 1 .. 36 (float64)
    or 1 .. 16 (float32), the other classes sharing the rest unequally; and a few rows where the
    target is the unlikely class instead."""
    rows = []
    for k in range(1, 37 if dtype == "float64" else 17):
        margin = k * math.log(10)
        rows.append([margin, 0.0, -0.5, -2.0])
        rows.append([-margin, 0.0, -0.5, -2.0])
    return np.asarray(rows, dtype)


def _exact_gradient(row, target, n):
    """``(p - onehot(target)) / n`` for one row, at 256 bits."""
    e = [mp.exp(mp.mpf(float(v))) for v in row]
    total = mp.fsum(e)
    return [(e[j] / total - (1 if j == target else 0)) / n for j in range(len(row))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("targets", ["labels", "one-hot rows", "time steps"])
def test_the_softmax_losses_gradient_and_loss_keep_their_digits_at_confident_predictions(targets, dtype):
    """Each entry of ``dx`` within a few ulps of itself where the target's probability is 1 -
    1e-36 .. 0.9: the target's entry ``p - 1`` is taken as minus the other probabilities'
    sum. (``p * s - t`` kept 7 of 16 digits there at ``p = 1 - 1e-9`` and gave 0 from ``p =
    1 - 1e-17``, where the true entry is -1e-17; ``jax.vjp`` of ``lse(x) - x_t`` does the same.)"""
    from pure_backprop.core import with_targets
    from pure_backprop.layers import softmax_cross_entropy, time_softmax_cross_entropy

    x = jnp.asarray(_confident_rows(dtype))
    n = x.shape[0]
    labels = jnp.zeros(n, jnp.int32)
    if targets == "time steps":  # (1, R, 4): R steps of one sequence, each counted
        loss = with_targets(time_softmax_cross_entropy, labels[None])
        _, residuals = loss.forward((), x[None])
        dx = loss.backward((), residuals, jnp.ones((), dtype))[1][0]
    else:
        t = labels if targets == "labels" else jax.nn.one_hot(labels, 4, dtype=dtype)
        loss = with_targets(softmax_cross_entropy, t)
        _, residuals = loss.forward((), x)
        dx = loss.backward((), residuals, jnp.ones((), dtype))[1]
    assert dx.dtype == dtype
    # p_j = exp(x_j - max x) / total: the rounding of x_j - max x, half an ulp of it, comes out
    # of exp as a relative error of |x_j - max x| / 2 ulps (exp's own conditioning), so each
    # entry is held to 4 ulps more than that, the target's (a sum of the others) to 4 more than
    # the row's largest
    def bound(row, j):
        return 4 + (max(row) - min(row) if j == 0 else max(row) - row[j])

    worst = max((ulps(got, true, dtype) / bound(row, j), i, j) for i, row in enumerate(np.asarray(x).tolist())
                for j, (got, true) in enumerate(zip(np.asarray(dx[i]).tolist(), _exact_gradient(row, 0, n))))
    assert worst[0] <= 1, worst
    # and the loss of each row alone, -log p_0, held the same way (1e-36 at the most confident
    # row, where log(sum(exp(z))) rounds the sum to 1 and the loss to 0)
    for row in np.asarray(x).tolist():
        one = jnp.asarray([row], dtype)
        if targets == "time steps":
            loss = time_softmax_cross_entropy.forward(one[None], jnp.zeros((1, 1), jnp.int32))[0]
        else:
            loss = softmax_cross_entropy.forward(one, t[:1])[0]
        true = mp.log(mp.fsum(mp.exp(mp.mpf(v) - mp.mpf(row[0])) for v in row))
        assert ulps(float(loss), true, dtype) <= bound(row, 0), (row, float(loss), true)


# --- targets keep their precision ------------------------------------------------------------

def test_targets_are_not_rounded_to_the_dtype_of_the_predictions():
    """Regression: targets were cast to the scores' dtype, so a float32 target of 1000.3 became
    1000.0 against float16 predictions (loss 0, gradient 0). Now the loss is computed in the
    common dtype and the gradient comes back in the predictions' dtype, like jax.grad."""
    import reference as ref
    from pure_backprop.layers import mse, softmax_cross_entropy

    @jax.jit  # one compilation rather than one per float16 operation
    def losses(y, t, scores, rows):
        loss, residuals = mse.forward(y, t)
        ce, ce_residuals = softmax_cross_entropy.forward(scores, rows)
        return ((loss, mse.backward(residuals, jnp.ones_like(loss)), jax.grad(ref.mse)(y, t)),
                (ce, softmax_cross_entropy.backward(ce_residuals, jnp.ones_like(ce)),
                 ref.softmax_cross_entropy(scores.astype(jnp.float32), rows),
                 jax.grad(ref.softmax_cross_entropy)(scores.astype(jnp.float32), rows)))

    y, t = jnp.array([[1000.0], [2.0]], jnp.float16), jnp.array([[1000.3], [2.5]], jnp.float32)
    scores = jnp.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], jnp.float16)
    rows = jnp.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], jnp.float32)
    (loss, dy, expected_dy), (ce, dx, expected_ce, exact_dx) = losses(y, t, scores, rows)

    assert loss.dtype == jnp.float32 and dy.dtype == jnp.float16
    np.testing.assert_allclose(loss, 0.5 * ((np.float32(1000.3) - np.float32(1000)) ** 2 + 0.25) / 2, rtol=1e-6)
    np.testing.assert_array_equal(dy, expected_dy)  # jax.grad of the reference, which promotes
    assert float(dy[0, 0]) != 0

    assert ce.dtype == jnp.float32 and dx.dtype == jnp.float16
    np.testing.assert_allclose(ce, expected_ce, rtol=1e-6)
    # computed in float32 and rounded once to float16 (one float16 ulp is 1e-3 relative); the
    # reference differentiated at float16 scores would run its log-sum-exp in float16 and is 8e-3 off
    np.testing.assert_allclose(dx.astype(jnp.float32), exact_dx, rtol=1e-3)


# --- +-1e4 for every layer and loss of the registry ----------------------------------------

# Nodes and the literal graphs are left out: exp(1e4) overflows by definition. Networks are
# compositions of the layers and losses checked here (and test_layers checks them at ordinary
# inputs); leaving them out keeps this test to one compilation per layer and format.
BIG_KINDS = ("layer", "loss")
BIG = [pytest.param(case, id=case.name) for case in CASES if case.kind in BIG_KINDS]
# Layers that are ill-conditioned at +-1e4, for any implementation: self-attention's scores reach
# 1e8, where one rounding of q or k (an ulp of 1e8 is 8 in float32) moves a score by more than the
# gaps between scores, and the weights become a coin toss between near-tied keys; the block's
# layer norm sees rows of four equal entries, whose mean carries an ulp of 1e4 into
# ``x - mean`` and divides it by ``sqrt(eps)``. There the hand pass and jax.vjp of the reference
# round differently and both are right: these are held to finite results (no overflow, no NaN),
# and test_attention.py measures the softmax they share at large, well-separated scores against mpmath.
FINITE_ONLY_AT_1E4 = {"causal_self_attention", "causal_self_attention_one_head", "causal_self_attention_lean",
                      "transformer_block"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", BIG)
def test_inputs_of_1e4_give_finite_results_equal_to_jax_grad(case, dtype):
    from test_layers import REFERENCES, build, rel_error  # the registry's references, and its built cases

    if case.name not in REFERENCES:
        pytest.skip(f"{case.name} has no reference (test_layers.test_every_case_has_a_reference says so)")
    layer, params, x, targets = build(case, case.shapes[0])  # float64, shared with test_layers
    floating = lambda a: jnp.issubdtype(a.dtype, jnp.floating)  # noqa: E731
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype) if floating(a) else a, params)
    x = jax.tree_util.tree_map(lambda a: jnp.where(a >= 0, 1e4, -1e4).astype(dtype) if floating(a) else a, x)

    @jax.jit  # one compilation per case and format
    def both(params, x, dy):
        y, residuals = layer.forward(params, x)
        expected_y, vjp = jax.vjp(lambda p, v: REFERENCES[case.name](p, v, targets), params, x)
        return (y, layer.backward(params, residuals, dy)), (expected_y, vjp(dy))

    y = jax.eval_shape(lambda p, v: layer.forward(p, v)[0], params, x)  # a pair (hs, state) for recurrent layers
    rng = np.random.default_rng(7)
    dy = jax.tree_util.tree_map(lambda leaf: rng.standard_normal(leaf.shape).astype(dtype), y)
    # float32 all the way: under x64 off, the targets bound into a loss (float64 rows, int64
    # labels) are canonicalized to float32 and int32 as they enter the compiled function.
    with jax.enable_x64(dtype == "float64"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Explicitly requested dtype (float|int)64", UserWarning)
        hand, oracle = both(params, x, dy)
    hand, oracle = jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(oracle)
    assert len(hand) == len(oracle)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for a, b in zip(hand, oracle):
        assert a.dtype == b.dtype and bool(jnp.all(jnp.isfinite(a))), (case.name, a)
        if case.name not in FINITE_ONLY_AT_1E4:
            assert rel_error(a, b) <= tolerance, (case.name, rel_error(a, b))


# --- the measured table -------------------------------------------------------------------

if __name__ == "__main__":  # python tests/test_precision.py [names...]: the worst error per function
    jax.config.update("jax_enable_x64", True)
    for name in sys.argv[1:] or FUNCTIONS:
        for dtype in FORMATS:
            rows = errors(name, dtype)
            rows = [r for r in rows if not _known(name, dtype, r[0])]
            if name == "sigmoid_graph":
                rows = [r for r in rows if r[0] >= GRAPH_VALID_FROM[dtype]]
            cells = []
            for column in (1, 2, 3):
                x, *errs = worst(rows, column)
                cells.append(f"{errs[column - 1]:9.3g} (x={x:.6g})")
            print(f"{name:18s} {dtype}  forward {cells[0]}  dx(dy=1) {cells[1]}  dx(dy) {cells[2]}", flush=True)
