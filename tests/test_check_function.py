"""gradcheck.check_function: a user's own custom_vjp (or custom_jvp, or plain) function checked
against finite differences and, given a reference, against jax.vjp of the reference. Correct,
numerically stable rules pass; the usual bugs fail, naming the argument and the entry; pytrees,
non-array arguments and argnums work; bad settings are refused by name."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pure_backprop import Layer, gradcheck


def _custom_vjp(values, fwd, bwd, nondiff_argnums=()):
    f = jax.custom_vjp(values, nondiff_argnums=nondiff_argnums)
    f.defvjp(fwd, bwd)
    return f


# ---------------------------------------------------------------------------------------------
# The functions: stable forwards with hand-written rules, and references written plainly.

def _softplus(x):  # log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|)
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@jax.custom_vjp
def softplus(x):
    return _softplus(x)


# d softplus / dx = sigmoid(x) = 1 - e^-y: the saved output gives it without a second exp(x)
softplus.defvjp(lambda x: (_softplus(x), _softplus(x)), lambda y, dy: (-dy * jnp.expm1(-y),))


def softplus_reference(x):
    return jnp.log1p(jnp.exp(x))


def _logsumexp(x, axis):  # m + log(sum(e^(x - m))), m the max: no overflow
    m = jnp.max(x, axis=axis, keepdims=True)
    return jnp.squeeze(m, axis) + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis))


def _logsumexp_fwd(x, axis):
    y = _logsumexp(x, axis)
    return y, (x, y, jnp.max(x, axis=axis))


def _logsumexp_bwd(axis, residuals, dy):  # dx = dy * softmax(x) = dy * e^(x - y)
    x, y, _ = residuals
    return (jnp.expand_dims(dy, axis) * jnp.exp(x - jnp.expand_dims(y, axis)),)


logsumexp = _custom_vjp(_logsumexp, _logsumexp_fwd, _logsumexp_bwd, nondiff_argnums=(1,))


def logsumexp_reference(x, axis):
    return jnp.log(jnp.sum(jnp.exp(x), axis=axis))


def _layer_norm(x, eps):  # each row to mean 0 and variance 1: (x - mean) / sqrt(var + eps)
    centered = x - jnp.mean(x, axis=1, keepdims=True)
    return centered / jnp.sqrt(jnp.mean(centered**2, axis=1, keepdims=True) + eps)


def _layer_norm_fwd(x, eps):
    centered = x - jnp.mean(x, axis=1, keepdims=True)
    var = jnp.mean(centered**2, axis=1, keepdims=True)
    inv_std = 1 / jnp.sqrt(var + eps)
    return centered * inv_std, (centered * inv_std, inv_std, var)


def _layer_norm_bwd(eps, residuals, dy):  # dx = (dy - mean(dy) - y mean(dy y)) / sqrt(var + eps)
    y, inv_std, _ = residuals
    mean = functools.partial(jnp.mean, axis=1, keepdims=True)
    return (inv_std * (dy - mean(dy) - y * mean(dy * y)),)


layer_norm = _custom_vjp(_layer_norm, _layer_norm_fwd, _layer_norm_bwd, nondiff_argnums=(1,))


def layer_norm_reference(x, eps):
    mean = jnp.mean(x, axis=1, keepdims=True)
    return (x - mean) / jnp.sqrt(jnp.var(x, axis=1, keepdims=True) + eps)


def _custom_jvp(values, slope):
    f = jax.custom_jvp(values)
    f.defjvp(lambda primals, tangents: (values(primals[0]), slope(primals[0]) * tangents[0]))
    return f


softplus_jvp = _custom_jvp(_softplus, jax.nn.sigmoid)

_X = jnp.array([[-30.0, -1.5, 0.0, 0.7], [0.5, 2.0, 40.0, -3.0], [1.2, -0.4, 3.5, 0.1]])
# row 1 has a small variance (0.0125), where eps = 1e-3 matters
_X_NORM = jnp.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.1, 0.9, 1.2], [-0.7, 0.4, -2.1, 1.6]])
_EPS = 1e-3
_AXIS = 1

# name: (f, args, reference)
CORRECT = {
    "softplus": (softplus, (_X,), softplus_reference),
    "logsumexp": (logsumexp, (_X[:, 1:], _AXIS), logsumexp_reference),
    "layer_norm": (layer_norm, (_X_NORM, _EPS), layer_norm_reference),
    "softplus_custom_jvp": (softplus_jvp, (_X,), softplus_reference),
}


@pytest.mark.parametrize("with_reference", [False, True], ids=["numerical_only", "with_reference"])
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_custom_rules_pass(name, mode, with_reference):
    f, args, reference = CORRECT[name]
    report = gradcheck.check_function(f, *args, reference=reference if with_reference else None, mode=mode)
    assert report.ok and [leaf.path for leaf in report.leaves] == ["args[0]"], str(report)
    leaf = report.leaves[0]
    assert leaf.rel_num < 1e-8, str(report)
    if with_reference:
        assert leaf.jax_compared and leaf.rel_jax < 1e-14, str(report)
    else:  # no jax oracle ran: the row says so instead of showing the hand value compared with itself
        assert not leaf.jax_compared and np.isnan(leaf.rel_jax) and np.isnan(leaf.jax), str(report)


def test_stable_rules_pass_where_the_plain_formula_overflows():
    x = jnp.array([800.0, -800.0, 0.0])
    assert gradcheck.check_function(softplus, x, mode="full").ok
    assert gradcheck.check_function(logsumexp, jnp.array([[800.0, 799.0], [-800.0, 0.0]]), 1, mode="full").ok


# ---------------------------------------------------------------------------------------------
# Bugs. Each input is chosen so that the bug is largest at one entry (or row), whatever dy is;
# the report must name that argument and entry.

def _softplus_with(fwd, bwd):
    return _custom_vjp(_softplus, fwd, bwd)


_X_NEG = jnp.array([[-1.0, -0.5, 0.3], [-6.0, 0.2, -1.5]])  # e^6 at (1, 0) dwarfs the others
_X_ONE_LARGE = jnp.array([[-4.0, -5.0, 6.0], [-6.0, -3.0, -4.5]])  # sigmoid(6) = 0.998 at (0, 2), the rest < 0.05
_X_LSE = jnp.array([[0.0, 0.0, 0.0, 0.1], [3.0, -2.0, -1.0, -3.0], [-3.0, 2.5, -2.0, -1.0]])  # row 0: sum e^(x-m) = 3.9

BUGS = {
    # name: (f, args, reference, the argument named, its entry (or row, "(1, "))
    "softplus_uses_input_not_saved_output": (  # sigmoid as 1 - e^-x: the input where the saved output belongs
        _softplus_with(lambda x: (_softplus(x), x), lambda x, dy: (-dy * jnp.expm1(-x),)),
        (_X_NEG,), softplus_reference, "args[0]", "(1, 0)"),
    "softplus_wrong_sign": (
        _softplus_with(lambda x: (_softplus(x), _softplus(x)), lambda y, dy: (dy * jnp.expm1(-y),)),
        (_X_ONE_LARGE,), softplus_reference, "args[0]", "(0, 2)"),
    "logsumexp_residual_from_the_wrong_place": (  # e^(x - max) for e^(x - y): unnormalized
        _custom_vjp(_logsumexp, _logsumexp_fwd,
                    lambda axis, r, dy: (jnp.expand_dims(dy, axis) * jnp.exp(r[0] - jnp.expand_dims(r[2], axis)),),
                    nondiff_argnums=(1,)),
        (_X_LSE, 1), logsumexp_reference, "args[0]", "(0, 3)"),
    "layer_norm_drops_the_mean_term": (
        _custom_vjp(_layer_norm, _layer_norm_fwd,
                    lambda eps, r, dy: (r[1] * (dy - r[0] * jnp.mean(dy * r[0], axis=1, keepdims=True)),),
                    nondiff_argnums=(1,)),
        (_X_NORM, _EPS), layer_norm_reference, "args[0]", "(1, "),
    "layer_norm_std_saved_before_eps": (  # 1/sqrt(var) for 1/sqrt(var + eps): 4 % off in row 1
        _custom_vjp(_layer_norm, _layer_norm_fwd,
                    lambda eps, r, dy: (_layer_norm_bwd(eps, (r[0], 1 / jnp.sqrt(r[2]), r[2]), dy)[0],),
                    nondiff_argnums=(1,)),
        (_X_NORM, _EPS), layer_norm_reference, "args[0]", "(1, "),
    "custom_jvp_wrong_sign": (  # sigmoid(-x) for sigmoid(x): off by tanh(x / 2), largest at x = 6
        _custom_jvp(_softplus, lambda x: jax.nn.sigmoid(-x)),
        (jnp.array([[0.1, -0.2, 6.0], [0.3, -0.1, 0.2]]),), softplus_reference, "args[0]", "(0, 2)"),
}


@pytest.mark.parametrize("with_reference", [False, True], ids=["numerical_only", "with_reference"])
@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bugs_fail_naming_the_argument_and_the_entry(bug, with_reference):
    f, args, reference, path, entry = BUGS[bug]
    report = gradcheck.check_function(f, *args, reference=reference if with_reference else None, name=bug)
    assert not report.ok, str(report)
    (leaf,) = report.leaves
    assert leaf.path == path and not leaf.ok and leaf.worst.startswith(entry), str(report)
    assert leaf.rel_num > 1e-3, str(report)  # finite differences see it...
    if with_reference:
        assert leaf.rel_jax > 1e-3, str(report)  # ...and so does the reference
    else:  # in pytest: the report's table in the AssertionError
        with pytest.raises(AssertionError, match=re.escape(f"{bug}  {path}  ")):
            gradcheck.assert_function_close(f, *args, name=bug)


# one relative error of 1e-7 (a constant typed to 7 digits, say) in logsumexp's gradient: the
# output is a scalar, so the gradient is dy * softmax(x), largest at the largest x, (3,), whatever dy is
_LSE_OFF = _custom_vjp(_logsumexp, _logsumexp_fwd, lambda axis, r, dy: (_logsumexp_bwd(axis, r, dy)[0] * (1 + 1e-7),),
                       nondiff_argnums=(1,))
_X_VECTOR = jnp.array([0.3, -1.0, 0.8, 1.7, -0.2])


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_relative_error_of_1e_7_fails_against_the_reference(mode):
    report = gradcheck.check_function(_LSE_OFF, _X_VECTOR, 0, reference=logsumexp_reference, mode=mode)
    (leaf,) = report.leaves
    assert not report.ok and leaf.worst == "(3,)", str(report)
    assert 0.9e-7 < leaf.rel_jax < 1.1e-7 and leaf.rel_num < 1e-6, str(report)  # the jax column only
    assert np.isclose(leaf.hand / leaf.jax - 1, 1e-7, rtol=1e-3), str(report)
    # central differences at the default rtol_num = 1e-6 cannot see it; the five-point stencil,
    # accurate to about 1e-12 here, can, with a tighter rtol_num
    assert gradcheck.check_function(_LSE_OFF, _X_VECTOR, 0, mode=mode).ok
    tight = gradcheck.check_function(_LSE_OFF, _X_VECTOR, 0, mode=mode, order=4, rtol_num=1e-9)
    assert not tight.ok and tight.leaves[0].worst == "(3,)" and 0.9e-7 < tight.leaves[0].rel_num < 1.1e-7, str(tight)
    assert gradcheck.check_function(logsumexp, _X_VECTOR, 0, mode=mode, order=4, rtol_num=1e-9).ok


def test_a_wrong_reference_fails_in_the_jax_column_only():
    wrong = lambda x: jnp.log1p(jnp.exp(-x))  # noqa: E731  (a sign slip in the reference, not in softplus)
    report = gradcheck.check_function(softplus, _X, reference=wrong, mode="full")
    (leaf,) = report.leaves
    assert not report.ok and leaf.rel_jax > 0.5 and leaf.rel_num < 1e-8, str(report)
    assert "jax: jax.vjp of the reference <lambda>" in str(report)


# ---------------------------------------------------------------------------------------------
# Outputs and arguments of any structure.

def _pair(x):
    return {"soft": _softplus(x), "tanh": jnp.tanh(x)}


def _pair_bwd(x, dy, swap=False):
    soft, tanh = (dy["tanh"], dy["soft"]) if swap else (dy["soft"], dy["tanh"])
    return (soft * jax.nn.sigmoid(x) + tanh * (1 - jnp.tanh(x) ** 2),)


_PAIR = _custom_vjp(_pair, lambda x: (_pair(x), x), _pair_bwd)
_PAIR_SWAPPED = _custom_vjp(_pair, lambda x: (_pair(x), x), functools.partial(_pair_bwd, swap=True))


def test_a_pytree_output_gets_an_independent_cotangent_per_leaf():
    # two outputs of one shape: had both cotangents been equal, swapping them would go unseen
    x = _X_NORM[:2]
    assert gradcheck.check_function(_PAIR, x, reference=_pair, mode="full").ok
    report = gradcheck.check_function(_PAIR_SWAPPED, x)
    assert not report.ok and report.leaves[0].path == "args[0]", str(report)


@jax.custom_vjp
def _affine(params, x):
    return x @ params["W"] + params["b"][None, :]


def _affine_bwd(residuals, dy, bias_summed=True):
    params, x = residuals
    db = jnp.sum(dy, axis=0) if bias_summed else dy[0]
    return {"W": x.T @ dy, "b": db}, dy @ params["W"].T


_affine.defvjp(lambda params, x: (_affine(params, x), (params, x)), _affine_bwd)
_affine_bias_bug = jax.custom_vjp(_affine.__wrapped__)
_affine_bias_bug.defvjp(lambda params, x: (_affine(params, x), (params, x)), functools.partial(_affine_bwd, bias_summed=False))


def _model(affine, params, inputs, repeat, activation, negate, labels):
    """A function of a dict, a tuple, an int, a string, a bool and an integer array."""
    x, gate = inputs
    h = affine(params, x) * gate
    for _ in range(repeat):
        h = {"softplus": softplus, "tanh": jnp.tanh}[activation](h)
    h = -h if negate else h
    return jnp.take_along_axis(h, labels[:, None], axis=1)[:, 0]


_PARAMS = {"W": jnp.array([[0.5, -1.0], [0.3, 0.8], [-0.6, 0.2]]), "b": jnp.array([0.1, -0.2])}
_INPUTS = (jnp.array([[1.0, -0.5, 0.3], [0.2, 0.9, -1.1], [-0.4, 0.6, 0.7], [1.5, -0.3, 0.2]]),
           jnp.array([[1.0, 0.5], [-0.7, 1.2], [0.3, -0.9], [0.8, 0.4]]))
_STATIC = (2, "softplus", True, jnp.array([0, 1, 1, 0]))


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_pytree_and_non_array_arguments(mode):
    f = functools.partial(_model, _affine)
    reference = functools.partial(_model, lambda p, x: x @ p["W"] + p["b"][None, :])
    report = gradcheck.check_function(f, _PARAMS, _INPUTS, *_STATIC, reference=reference, mode=mode, name="model")
    assert report.ok and report.name == "model", str(report)
    assert [leaf.path for leaf in report.leaves] == ["args[0]['W']", "args[0]['b']", "args[1][0]", "args[1][1]"]
    bug = gradcheck.check_function(functools.partial(_model, _affine_bias_bug), _PARAMS, _INPUTS, *_STATIC, mode=mode)
    assert [leaf.path for leaf in bug.leaves if not leaf.ok] == ["args[0]['b']"], str(bug)


def test_argnums_selects_the_arguments_checked():
    # the rule for w is wrong (2 x dy for x dy); x's is right
    scale = _custom_vjp(lambda x, w: x * w, lambda x, w: (x * w, (x, w)), lambda r, dy: (dy * r[1], 2 * dy * r[0]))
    x, w = _X_NORM[0], jnp.array([0.5, -1.0, 2.0, 0.3], jnp.float32)

    def rows(argnums):
        report = gradcheck.check_function(scale, x, w, argnums=argnums)
        assert report.promoted == ("float32",)  # w, checked or not
        return [(leaf.path, leaf.ok) for leaf in report.leaves]

    assert rows(0) == rows(-2) == [("args[0]", True)]
    # a complex array left out of argnums reaches f as it was given, a NumPy array
    seen = []
    complex_scale = lambda x, c: seen.append(type(c)) or x * jnp.real(c)  # noqa: E731
    assert gradcheck.check_function(complex_scale, x, np.array([1j, 2.0, 1.0, 3j]), argnums=0).ok
    assert seen and set(seen) == {np.ndarray}
    assert rows(1) == rows(-1) == rows((1,)) == [("args[1]", False)]
    assert rows(None) == rows((0, 1)) == rows([1, 0]) == [("args[0]", True), ("args[1]", False)]


# ---------------------------------------------------------------------------------------------
# What check does for a layer, check_function does for a function: float64, kinks, non-finite values.

def test_float32_arguments_are_promoted_and_the_global_flag_kept():
    with jax.enable_x64(False):
        shifted = lambda k, x: softplus(x) + k  # noqa: E731  (k, an integer array, is passed as it is)
        report = gradcheck.check_function(shifted, jnp.int32(3), jnp.asarray(_X, jnp.float32))
        assert report.ok and report.promoted == ("float32",), str(report)
        assert not jax.config.jax_enable_x64


def test_a_kink_with_a_valid_subgradient_is_counted_not_failed():
    relu = _custom_vjp(lambda x: jnp.maximum(x, 0.0), lambda x: (jnp.maximum(x, 0.0), x), lambda x, dy: (dy * (x > 0),))
    report = gradcheck.check_function(relu, jnp.array([[0.0, 1.0, -2.0], [0.0, 0.5, 0.0]]), mode="full")
    assert report.ok and report.kinks == 3, str(report)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_non_finite_custom_gradient_fails_naming_the_entry(mode):
    # sqrt's rule dy / (2 sqrt(x)) is infinite at 0
    sqrt = _custom_vjp(jnp.sqrt, lambda x: (jnp.sqrt(x), jnp.sqrt(x)), lambda y, dy: (dy / (2 * y),))
    report = gradcheck.check_function(sqrt, jnp.array([[1.0, 0.0, 4.0]]), mode=mode)
    assert not report.ok and report.leaves[0].problem.startswith("non-finite hand (0, 1) = "), str(report)


def test_the_report_says_which_oracles_ran():
    plain = str(gradcheck.check_function(softplus, _X[:1], mode="full")).splitlines()
    assert plain[2] == ("  hand: jax.vjp of softplus (its custom rule, if any); jax: not compared (no reference "
                        "given); numerical: finite differences of softplus")
    # the jax columns (rel err jax, jax) read "-"
    assert re.fullmatch(r"softplus  args\[0\]  \(1, 4\)  -            \d\.\de-\d\d            \(0, \d\)  +\S+ +-    \S+ +0      ok",
                        plain[4]), plain
    named = str(gradcheck.check_function(softplus, _X[:1], reference=softplus_reference, name="sp")).splitlines()
    assert named[0] == "gradcheck sp: mode=fast, float64: ok"
    assert named[2] == ("  hand: jax.vjp of sp (its custom rule, if any); jax: jax.vjp of the reference "
                        "softplus_reference; numerical: finite differences of sp")
    assert gradcheck.check_function(functools.partial(jnp.sin), _X[:1]).name == "function"


def test_assert_function_close_returns_the_report_when_it_passes():
    report = gradcheck.assert_function_close(softplus, _X, reference=softplus_reference)
    assert report.ok and report.mode == "fast" and report.leaves[0].path == "args[0]"


# ---------------------------------------------------------------------------------------------
# Bad settings are refused, naming gradcheck, the argument and the fix.

_ARGNUMS = ("gradcheck: argnums must be None (every argument), an argument's index or a tuple of them, each in "
            "[-1, 1) for 1 arguments, got ")
_NOTHING = ("gradcheck: the arguments selected (argnums=%s) hold no floating array entries to check; integer arrays, "
            "strings, flags and Python numbers are passed unchanged (pass jnp.asarray(0.5), not 0.5, to check a "
            "scalar's gradient)")
_UNLIKE = ("gradcheck: the reference returns %s (shapes and dtypes) where f returns ((3, 4), 'float64'); a reference "
           "computes the same values as f")
_BAD = [  # (the arguments changed, the whole message)
    (dict(f=_X), "gradcheck: f must be a function, got ArrayImpl; pass the function first, then its arguments: "
                 "check_function(f, x)"),
    (dict(reference="softplus"), "gradcheck: reference must be a function computing f's values, or None, got str"),
    (dict(argnums=1), _ARGNUMS + "1"),
    (dict(argnums=-2), _ARGNUMS + "-2"),
    (dict(argnums=()), _ARGNUMS + "()"),
    (dict(argnums="0"), _ARGNUMS + "'0'"),
    (dict(argnums=True), _ARGNUMS + "True"),
    (dict(argnums=(0, 1.0)), _ARGNUMS + "(0, 1.0)"),
    (dict(args=()), _NOTHING % "None"),
    (dict(args=(0.5,)), _NOTHING % "None"),
    (dict(args=(jnp.array([1, 2]),)), _NOTHING % "None"),
    (dict(args=(_X[:, :0],)), _NOTHING % "None"),
    (dict(f=lambda x, w: x * w, args=(jnp.array([1, 2]), _X[0, :2]), argnums=0), _NOTHING % "0"),
    (dict(args=(_X.astype(jnp.complex128),)), "gradcheck: args[0] has dtype complex128; gradcheck differentiates real "
                                              "floating values only: leave its argument out of argnums"),
    (dict(f=lambda x: jnp.round(x).astype(jnp.int32)), "gradcheck: f's output y has dtype int32; every output checked "
                                                       "must be floating: check a function that returns only the floating ones"),
    (dict(f=lambda x: {"a": x, "n": x.astype(jnp.float32)}),
     "gradcheck: f's output y['n'] has dtype float32 from float64 arguments; gradcheck compares in float64, so f must "
     "compute in the dtype of its arguments (look for a fixed astype or a float32 constant)"),
    (dict(f=lambda x: x[:0]), "gradcheck: f's output has no entries, so there is nothing to check"),
    (dict(reference=lambda x: x[0]), _UNLIKE % "((4,), 'float64')"),
    (dict(reference=lambda x: softplus_reference(x).astype(jnp.float32)), _UNLIKE % "((3, 4), 'float32')"),
    (dict(reference=lambda x: (softplus_reference(x),)), _UNLIKE % "(((3, 4), 'float64'),)"),
    (dict(mode="slow"), "gradcheck: mode must be 'fast' or 'full', got 'slow'"),
    (dict(step=0.0), "gradcheck: step must be a finite number > 0 (the finite-difference step, relative to the entries' "
                     "magnitude), got 0.0; pass e.g. step=1e-5, or None for the default"),
    (dict(rtol_jax=-1.0), "gradcheck: rtol_jax must be a finite number >= 0 (a tolerance), got -1.0; pass e.g. "
                          "rtol_jax=1e-10 (the default)"),
    (dict(atol=-1e-9), "gradcheck: atol must be a finite number >= 0 (a tolerance), got -1e-09; pass e.g. atol=1e-9, "
                       "or None for the rounding noise"),
]


@pytest.mark.parametrize("kwargs,message", _BAD, ids=[f"{i}-{'-'.join(kwargs)}" for i, (kwargs, _) in enumerate(_BAD)])
def test_bad_settings_are_refused(kwargs, message):
    kwargs = {"f": softplus, "args": (_X,), **kwargs}
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        gradcheck.check_function(kwargs.pop("f"), *kwargs.pop("args"), **kwargs)


# ---------------------------------------------------------------------------------------------
# check_function is check on a Layer made of f: the same settings give the same report.

_SETTINGS = [dict(mode="full", order=4, atol=1e-9, memory_mb=1e-4),
             dict(mode="fast", seed=3, directions=2, step=1e-4, rtol_num=1e-7, rtol_jax=1e-11)]


@pytest.mark.parametrize("settings", _SETTINGS, ids=["full", "fast"])
def test_the_same_report_as_check_on_the_layer_of_f(settings):
    layer = Layer(None, lambda p, x: (softplus(x), x), lambda p, x, dy: ((), jax.vjp(softplus, x)[1](dy)[0]))
    expected = gradcheck.check(layer, (), _X, name="sp", **settings)
    report = gradcheck.check_function(softplus, _X, reference=softplus, name="sp", **settings)
    assert report.ok and expected.ok
    assert dataclasses.replace(report, oracles="") == dataclasses.replace(
        expected, leaves=tuple(dataclasses.replace(leaf, path="args[0]") for leaf in expected.leaves))


def _entry(leaf):
    return tuple(int(i) for i in leaf.worst.strip("()").split(",") if i.strip())


def test_the_cotangent_is_seeded_per_output_leaf():
    # seed s draws normal(PRNGKey(s)) for the first output leaf (as check always has) and
    # normal(fold_in(PRNGKey(s), i)) for leaf i: the hand gradient of x -> (x, 2 x) is dy0 + 2 dy1
    key = jax.random.PRNGKey(5)
    dy = [jax.random.normal(k, _X.shape, jnp.float64) for k in (key, jax.random.fold_in(key, 1))]
    one = gradcheck.check_function(lambda x: x * 1.0, _X, mode="full", seed=5).leaves[0]
    assert one.hand == dy[0][_entry(one)]
    two = gradcheck.check_function(lambda x: {"a": x * 1.0, "b": 2.0 * x}, _X, mode="full", seed=5).leaves[0]
    assert np.isclose(two.hand, (dy[0] + 2 * dy[1])[_entry(two)], rtol=1e-15)
    assert gradcheck.check_function(lambda x: {"a": x * 1.0, "empty": x[:0]}, _X).ok  # an empty output leaf is no output


def test_reports_without_names_and_the_failing_assertion_text():
    report = gradcheck.check_function(softplus, _X[:1], reference=functools.partial(softplus_reference), mode="full")
    assert "jax: jax.vjp of the reference function;" in report.oracles
    plain = gradcheck.check_function(softplus, _X[:1]).leaves[0]
    assert np.isnan(plain.abs_jax) and np.isnan(plain.rel_jax) and np.isnan(plain.jax) and plain.jax_compared is False
    f, args, _, _, _ = BUGS["softplus_wrong_sign"]
    with pytest.raises(AssertionError) as info:
        gradcheck.assert_function_close(f, *args)
    assert str(info.value) == "\n" + str(gradcheck.check_function(f, *args))
    assert gradcheck.check_function(f, *args, atol=10.0).ok  # atol reaches the comparison: 10 excuses the bug


def test_the_defaults_are_checks(monkeypatch):
    # mode, seed, directions, order and step: the same report as check's with no setting given
    layer = Layer(None, lambda p, x: (softplus(x), x), lambda p, x, dy: ((), jax.vjp(softplus, x)[1](dy)[0]))
    expected = gradcheck.check(layer, (), _X)
    report = gradcheck.check_function(softplus, _X, reference=softplus)
    assert report.mode == "fast" and report.directions == 3 and report.leaves[0].worst.startswith("v")
    assert dataclasses.replace(report, oracles="", name="layer") == dataclasses.replace(
        expected, leaves=tuple(dataclasses.replace(leaf, path="args[0]") for leaf in expected.leaves))
    seen = []  # and memory_mb, 256 MiB a chunk
    chunk_size = gradcheck.chunk_size
    monkeypatch.setattr(gradcheck, "chunk_size", lambda m, b: seen.append(m) or chunk_size(m, b))
    assert gradcheck.check_function(softplus, _X, mode="full").ok and seen and set(seen) == {256}
