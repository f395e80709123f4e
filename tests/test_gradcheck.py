"""The gradient checker: it catches the classic backward bugs, in fast and full mode, points
at the wrong leaf or entry, raises no false alarm on correct layers, and handles kinks."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pure_backprop import Layer, gradcheck
from pure_backprop.core import no_params
from pure_backprop.layers import affine, relu, sigmoid
from pure_backprop.registry import CASES

AFFINE = affine(3)


def _affine_params():
    params, _ = AFFINE.init(jax.random.PRNGKey(0), (-1, 4))
    params = {"W": params["W"] + 0.0, "b": jnp.array([0.3, -0.2, 0.5])}
    return params, jax.random.normal(jax.random.PRNGKey(1), (5, 4))


def _affine_with(backward):
    return Layer(AFFINE.init, AFFINE.forward, backward)


def _bug_missing_1_over_n():
    from pure_backprop.layers import softmax_cross_entropy as sce
    from pure_backprop import with_targets
    layer = with_targets(sce, jnp.array([0, 2, 1, 1]))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))

    def backward(params, residuals, dloss):  # (p - t), having forgotten the / N of the loss's mean
        return (), layer.backward(params, residuals, dloss)[1] * x.shape[0]

    return Layer(layer.init, layer.forward, backward), (), x, "dx"


def _bug_transposed_weight():
    def backward(params, x, dy):
        return {"W": (dy.T @ x).T.reshape(-1)[::-1].reshape(4, 3), "b": jnp.sum(dy, 0)}, dy @ params["W"].T
    return (_affine_with(backward), *_affine_params(), "params['W']")


def _bug_bias_not_summed():
    def backward(params, x, dy):
        return {"W": x.T @ dy, "b": dy[0]}, dy @ params["W"].T
    return (_affine_with(backward), *_affine_params(), "params['b']")


def _bug_wrong_sign():
    def backward(params, x, dy):
        return {"W": x.T @ dy, "b": jnp.sum(dy, 0)}, -(dy @ params["W"].T)
    return (_affine_with(backward), *_affine_params(), "dx")


def _bug_one_entry_off():
    def backward(params, x, dy):
        dW = x.T @ dy
        return {"W": dW.at[2, 1].multiply(1.01), "b": jnp.sum(dy, 0)}, dy @ params["W"].T
    return (_affine_with(backward), *_affine_params(), "params['W']")


def _bug_wrong_variable():
    def backward(params, x, dy):
        return {"W": x.T @ dy, "b": jnp.sum(dy, 0)}, dy @ jnp.ones_like(params["W"]).T  # dx from the wrong factor
    return (_affine_with(backward), *_affine_params(), "dx")


def _bug_sigmoid_uses_x():
    def forward(params, x):
        y, _ = sigmoid.forward(params, x)
        return y, x

    def backward(params, x, dy):
        return (), dy * x * (1 - x)  # should be y * (1 - y)
    return Layer(no_params, forward, backward), (), jax.random.normal(jax.random.PRNGKey(3), (3, 4)), "dx"


def _bug_normalization_missing_mean_term():
    # y = (x - mean(x)) / std(x) per row; the bug drops the mean of dy from dx
    def forward(params, x):
        mu = x.mean(1, keepdims=True)
        sd = jnp.sqrt(((x - mu) ** 2).mean(1, keepdims=True))
        y = (x - mu) / sd
        return y, (y, sd)

    def backward(params, residuals, dy):
        y, sd = residuals
        return (), (dy - y * (dy * y).mean(1, keepdims=True)) / sd  # missing - dy.mean(1)
    return Layer(no_params, forward, backward), (), jax.random.normal(jax.random.PRNGKey(4), (3, 5)), "dx"


BUGS = {
    "missing_1_over_n": _bug_missing_1_over_n, "transposed_weight": _bug_transposed_weight,
    "bias_not_summed": _bug_bias_not_summed, "wrong_sign": _bug_wrong_sign, "one_entry_off": _bug_one_entry_off,
    "wrong_variable": _bug_wrong_variable, "sigmoid_uses_x": _bug_sigmoid_uses_x,
    "normalization_missing_mean": _bug_normalization_missing_mean_term,
}


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("mode", ["fast", "full", "full, by perturb"])
def test_deliberate_bugs_are_caught(bug, mode, monkeypatch):
    layer, params, x, wrong_leaf = BUGS[bug]()
    if mode == "full, by perturb":  # these layers are small: full mode would evaluate them densely
        monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 0)
        mode = "full"
    report = gradcheck.check(layer, params, x, mode=mode, name=bug)
    assert not report.ok
    failing = [leaf.path for leaf in report.leaves if not leaf.ok]
    assert wrong_leaf in failing, str(report)
    if bug == "one_entry_off":
        leaf = next(leaf for leaf in report.leaves if leaf.path == "params['W']")
        assert failing == ["params['W']"] and leaf.worst == "(2, 1)", str(report)
        if mode == "full":
            assert np.isclose(leaf.hand, 1.01 * leaf.numerical, rtol=1e-6)
    with pytest.raises(AssertionError, match=wrong_leaf.replace("[", r"\[").replace("]", r"\]")):
        gradcheck.assert_close(layer, params, x, mode=mode)


@pytest.mark.parametrize("name", ["mlp_relu", "conv2d_auto", "max_pool2d", "batch_norm_train"])
def test_full_mode_dense_and_perturb_evaluations_agree(name, monkeypatch):
    """Small problems are evaluated densely (one program for all leaves), larger ones by
    ``perturb`` (one per leaf): the numerical gradients of the two agree to rounding."""
    case = next(c for c in CASES if c.name == name)
    with jax.enable_x64(True):
        layer, params, x, _ = case.build(jax.random.PRNGKey(0), case.shapes[0])
    dense = gradcheck.check(layer, params, x, mode="full")
    monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 0)
    by_perturb = gradcheck.check(layer, params, x, mode="full")
    assert dense.ok and by_perturb.ok and len(dense.leaves) == len(by_perturb.leaves)
    for a, b in zip(dense.leaves, by_perturb.leaves):
        assert a.worst == b.worst or abs(a.rel_num - b.rel_num) < 1e-8, (str(dense), str(by_perturb))
        assert abs(a.rel_num - b.rel_num) < 1e-8


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in ("layer", "loss")], ids=lambda c: c.name)
def test_no_false_alarms_over_20_seeds(case):
    failures = []
    for seed in range(20):
        with jax.enable_x64(True):
            layer, params, x, _ = case.build(jax.random.PRNGKey(seed), case.shapes[0])
        report = gradcheck.check(layer, params, x, mode="fast", seed=seed)
        if not report.ok:
            failures.append(str(report))
    assert not failures, failures[0]


def test_a_loss_checked_again_with_other_targets_compiles_nothing_new():
    """``with_targets`` binds its targets as data: the checker's programs take them as inputs,
    so checking the same loss on other labels (a loop over seeds or batches) reuses them, and
    each check sees its own labels."""
    from pure_backprop import with_targets
    from pure_backprop.layers import softmax_cross_entropy as sce
    scores = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    programs = (gradcheck._base, gradcheck._moved_along_every_leaf)
    losses = []
    for k, labels in enumerate((jnp.array([0, 1, 2, 3, 0, 1]), jnp.array([3, 3, 1, 0, 2, 2]))):
        layer = with_targets(sce, labels)
        assert gradcheck.check(layer, (), scores, mode="fast", seed=k).ok
        if k == 0:
            compiled = [f._cache_size() for f in programs]
        with jax.enable_x64(True):
            losses.append(float(gradcheck._base(*gradcheck._taken_apart(layer), (), scores.astype(jnp.float64),
                                                jax.random.PRNGKey(0))[5]))
            want = float(sce.forward(scores.astype(jnp.float64), labels)[0])
        assert losses[-1] == pytest.approx(want, rel=1e-12)
    assert [f._cache_size() for f in programs] == compiled
    assert losses[0] != losses[1]


def test_a_network_and_loss_checked_on_other_batches_compiles_nothing_new():
    from pure_backprop.layers import softmax_cross_entropy as sce
    net = affine(3)
    params, x = _affine_params()
    programs = (gradcheck._base, gradcheck._moved_along_every_leaf)
    for k, labels in enumerate((jnp.array([0, 1, 2, 0, 1]), jnp.array([2, 2, 0, 1, 0]))):
        report = gradcheck.check_loss(net, sce, params, x + k, labels, mode="fast")
        assert report.ok and [leaf.path for leaf in report.leaves] == ["params[0]['W']", "params[0]['b']", "dx"]
        if k == 0:
            compiled = [f._cache_size() for f in programs]
    assert [f._cache_size() for f in programs] == compiled
    from pure_backprop.core import Loss
    twice = Loss(sce.forward, lambda residuals, dloss: 2 * sce.backward(residuals, dloss))  # a wrong backward
    assert not gradcheck.check_loss(net, twice, params, x, jnp.array([0, 1, 2, 0, 1])).ok


def test_a_stateful_network_and_loss_are_checked_as_their_serial_frozen():
    """``check_loss`` of a ``StatefulLayer`` network is ``check`` of ``serial(network, loss)``
    with the state and key held fixed (one entry per layer: the loss's is ``()``)."""
    from pure_backprop import serial, with_targets
    from pure_backprop.core import Loss
    from pure_backprop.layers import batch_norm, softmax_cross_entropy as sce
    net = serial(affine(4), relu, batch_norm(), affine(3))  # (a bias right before batch norm has no gradient)
    params, state, _ = net.init(jax.random.PRNGKey(0), (-1, 5))
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (6, 5)), jnp.array([0, 1, 2, 0, 1, 2])
    report = gradcheck.check_loss(net, sce, params, x, labels, state=(state, ()), mode="full")
    same = gradcheck.check(serial(net, with_targets(sce, labels)), (params, ()), x, state=(state, ()), mode="full")
    assert report.ok and report.name == "network+loss", str(report)
    assert [(leaf.path, leaf.abs_num) for leaf in report.leaves] == [(leaf.path, leaf.abs_num) for leaf in same.leaves]
    twice = Loss(sce.forward, lambda residuals, dloss: 2 * sce.backward(residuals, dloss))
    assert not gradcheck.check_loss(net, twice, params, x, labels, state=(state, ())).ok


def test_relu_exact_zeros_are_kinks_not_failures():
    x = jnp.array([[0.0, 1.0, -2.0], [0.0, 0.0, 3.0]])
    for mode in ("fast", "full"):
        report = gradcheck.check(relu, (), x, mode=mode)
        assert report.ok, str(report)
        if mode == "full":
            assert report.kinks == 3
    # a wrong backward at the kink is still caught: 5 is no subgradient of relu at 0
    bad = Layer(no_params, lambda p, x: (relu.forward(p, x)[0], x > 0), lambda p, r, dy: ((), dy * r + 5.0 * dy * (~r)))
    assert not gradcheck.check(bad, (), x, mode="full").ok


def test_large_magnitude_inputs_pass():
    x = jnp.array([[-1e4, -50.0, 0.5, 50.0, 1e4]])
    assert gradcheck.check(sigmoid, (), x, mode="full").ok
    from pure_backprop.layers import softmax_cross_entropy
    assert gradcheck.check_loss(affine(3), softmax_cross_entropy, _affine_params()[0], 100 * _affine_params()[1],
                                jnp.array([0, 1, 2, 0, 1]), mode="full").ok


def test_runs_in_float64_without_touching_the_global_flag_and_promotes_ints():
    with jax.enable_x64(False):
        report = gradcheck.check(sigmoid, (), jnp.ones((2, 3), jnp.float32), mode="full")
        assert report.ok and report.promoted == ("float32",)
        assert not jax.config.jax_enable_x64
    ints = jnp.array([[1, 2], [3, 4]])
    report = gradcheck.check(sigmoid, (), ints, mode="full")
    assert report.ok and report.promoted == ("int64",)


def test_check_pair_and_order_4_and_memory_bound():
    params, x = _affine_params()
    assert gradcheck.check_pair(AFFINE.forward, AFFINE.backward, params, x, mode="full", order=4).ok
    report = gradcheck.check(AFFINE, params, x, mode="full", memory_mb=1e-4)  # one entry per chunk
    assert report.ok
    assert "params['W']" in str(report) and "ok" in str(report)


def test_check_command_runs_the_registry(capsys):
    from pure_backprop.cli import main
    assert main(["check", "--layer", "affine", "--mode", "full"]) == 0
    out = capsys.readouterr().out
    assert "params['W']" in out and "1 passed, 0 failed" in out


# ---------------------------------------------------------------------------------------------
# Non-finite values: a NaN or infinite hand gradient, jax.vjp gradient, forward output or
# numerical value fails its leaf in both modes, and the report names the entry and the value.

def _affine_bug(entry_fix):
    def backward(params, x, dy):
        grads, dx = AFFINE.backward(params, x, dy)
        return entry_fix(grads, dx)
    return _affine_with(backward)


@jax.custom_jvp
def _square_nan_jvp(x):
    return x * x


@_square_nan_jvp.defjvp
def _square_nan_jvp_rule(primals, tangents):
    (x,), (t,) = primals, tangents
    return x * x, jnp.where(x == x.ravel()[4], jnp.nan, 2 * x) * t  # jax's derivative is NaN at entry (1, 1)


_NX = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
_NONFINITE = {
    # name: (layer, params, x, failing leaf, text the report must show)
    "hand_all_nan": (Layer(no_params, sigmoid.forward, lambda p, r, dy: ((), jnp.full_like(dy, jnp.nan))),
                     (), _NX, "dx", "non-finite hand (0, 0) = nan (6 non-finite entries)"),
    "hand_one_inf_dx": (_affine_bug(lambda g, dx: (g, dx.at[1, 2].set(jnp.inf))), "affine", None, "dx",
                        "non-finite hand (1, 2) = inf"),
    "hand_nan_in_W": (_affine_bug(lambda g, dx: ({**g, "W": g["W"].at[2, 1].set(jnp.nan)}, dx)), "affine", None,
                      "params['W']", "non-finite hand (2, 1) = nan"),
    "hand_minus_inf_in_b": (_affine_bug(lambda g, dx: ({**g, "b": g["b"].at[0].set(-jnp.inf)}, dx)), "affine", None,
                            "params['b']", "non-finite hand (0,) = -inf"),
    "jax_nan": (Layer(no_params, lambda p, x: (_square_nan_jvp(x), x), lambda p, x, dy: ((), 2 * x * dy)),
                (), _NX, "dx", "non-finite jax (1, 1) = nan"),
    "forward_inf": (Layer(no_params, lambda p, x: (jnp.where(x == x.ravel()[2], jnp.inf, x), None),
                          lambda p, r, dy: ((), dy)), (), _NX, "dx", "non-finite forward y (0, 2) = inf"),
    # finite at the point, NaN at every moved point: only the numerical oracle is not finite
    "numerical_nan": (Layer(no_params, lambda p, x: (jnp.where(x == _NX, 2 * x, jnp.nan), None),
                            lambda p, r, dy: ((), 2 * dy)), (), _NX, "dx", "non-finite numerical (0, 0) = nan"),
}


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("case", sorted(_NONFINITE))
def test_non_finite_values_fail_and_are_named(case, mode):
    layer, params, x, leaf_path, shown = _NONFINITE[case]
    if params == "affine":
        params, x = _affine_params()
    report = gradcheck.check(layer, params, x, mode=mode)
    assert not report.ok, str(report)
    leaf = next(leaf for leaf in report.leaves if leaf.path == leaf_path)
    assert not leaf.ok and leaf.problem == shown, str(report)
    if "hand" in shown or "jax" in shown:  # the worst column points at the entry
        assert leaf.worst == shown.split(" = ")[0].split(" ", 2)[2]
    with pytest.raises(AssertionError, match=re.escape(shown)):
        gradcheck.assert_close(layer, params, x, mode=mode)


def test_compare_with_jax_does_not_drop_a_nan():
    from pure_backprop.layers import mse
    params, x = _affine_params()
    nan_b = _affine_bug(lambda g, dx: ({**g, "b": g["b"].at[1].set(jnp.nan)}, dx))
    assert gradcheck.compare_with_jax(AFFINE, mse, params, x, jnp.zeros((5, 3))) < 1e-12
    assert gradcheck.compare_with_jax(nan_b, mse, params, x, jnp.zeros((5, 3))) == np.inf


@pytest.mark.parametrize("mode", ["fast", "full", "full, by perturb"])
def test_an_empty_parameter_leaf_is_skipped_and_the_rest_checked(mode, monkeypatch):
    # an empty leaf is no empty batch; full mode's dense evaluation indexed into it and crashed
    if mode == "full, by perturb":
        monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 0)
        mode = "full"
    layer = Layer(None, lambda p, v: (v * 2.0 + jnp.sum(p["b"]), v), lambda p, r, dy: ({"b": p["b"]}, 2.0 * dy))
    report = gradcheck.check(layer, {"b": jnp.zeros((0,))}, jnp.ones((2, 3)), mode=mode)
    assert report.ok and [leaf.path for leaf in report.leaves] == ["dx"], str(report)
    wrong = Layer(None, layer.forward, lambda p, r, dy: ({"b": p["b"]}, 3.0 * dy))
    assert not gradcheck.check(wrong, {"b": jnp.zeros((0,))}, jnp.ones((2, 3)), mode=mode).ok


def test_a_report_with_nothing_checked_is_not_ok():
    assert not gradcheck.Report("layer", "fast", (), ()).ok


# ---------------------------------------------------------------------------------------------
# Bad settings are refused, naming gradcheck, the argument and the fix.

_INT_OUTPUT = Layer(no_params, lambda p, x: (jnp.round(x).astype(jnp.int32), None), lambda p, r, dy: ((), dy))
_EMPTY_OUTPUT = Layer(no_params, lambda p, x: (x[:, :0], None), lambda p, r, dy: ((), jnp.zeros((2, 3))))
_BAD_SETTINGS = [
    (dict(memory_mb=0), r"gradcheck: memory_mb must be a finite number > 0 .*got 0; pass e\.g\. memory_mb=256"),
    (dict(memory_mb=-1.0), r"gradcheck: memory_mb must be a finite number > 0"),
    (dict(memory_mb=float("nan")), r"gradcheck: memory_mb must be a finite number > 0"),
    (dict(memory_mb=float("inf")), r"gradcheck: memory_mb must be a finite number > 0"),
    (dict(step=0.0), r"gradcheck: step must be a finite number > 0 .*got 0\.0; pass e\.g\. step=1e-5, or None"),
    (dict(step=-1e-5), r"gradcheck: step must be a finite number > 0"),
    (dict(step=float("nan")), r"gradcheck: step must be a finite number > 0"),
    (dict(step=float("inf")), r"gradcheck: step must be a finite number > 0"),
    (dict(rtol_jax=-1e-10), r"gradcheck: rtol_jax must be a finite number >= 0 .*pass e\.g\. rtol_jax=1e-10"),
    (dict(rtol_jax=float("inf")), r"gradcheck: rtol_jax must be a finite number >= 0"),
    (dict(rtol_num=-1e-6), r"gradcheck: rtol_num must be a finite number >= 0 .*pass e\.g\. rtol_num=1e-6"),
    (dict(rtol_num=float("nan")), r"gradcheck: rtol_num must be a finite number >= 0"),
    (dict(atol=-1e-9), r"gradcheck: atol must be a finite number >= 0 .*or None"),
    (dict(atol=float("inf")), r"gradcheck: atol must be a finite number >= 0"),
    (dict(directions=0), r"gradcheck: directions must be an integer >= 1, got 0; pass e\.g\. directions=3"),
    (dict(directions=2.5), r"gradcheck: directions must be an integer >= 1"),
    (dict(seed=-1), r"gradcheck: seed must be an integer in \[0, 2\*\*63\), got -1"),
    (dict(mode="slow"), r"gradcheck: mode must be 'fast' or 'full', got 'slow'"),
    (dict(order=3), r"gradcheck: order must be 2 or 4, got 3"),
    (dict(x=jnp.zeros((0, 4))), r"gradcheck: x is an empty batch \(x has shape \(0, 4\)\); give at least one example"),
    (dict(layer=relu, params=(), x=jnp.zeros((0,))), r"gradcheck: x is an empty batch"),
    (dict(layer=relu, params=(), x=()), r"gradcheck: params and x hold no entries to check"),
    (dict(layer=relu, params=(), x=jnp.array([True, False])), r"gradcheck: x has dtype bool; .*real floating"),
    (dict(params={"W": jnp.ones((4, 3), jnp.complex64), "b": jnp.zeros(3)}), r"gradcheck: params\['W'\] has dtype complex64"),
    (dict(layer=_INT_OUTPUT, params=(), x=jnp.ones((2, 3))), r"gradcheck: the layer's output y has dtype int32"),
    (dict(layer=_EMPTY_OUTPUT, params=(), x=jnp.ones((2, 3))), r"gradcheck: the layer's output y has no entries"),
]


@pytest.mark.parametrize("kwargs,message", _BAD_SETTINGS, ids=lambda v: str(v)[:40] if isinstance(v, dict) else "")
def test_bad_settings_are_refused(kwargs, message):
    params, x = _affine_params()
    kwargs = {"layer": AFFINE, "params": params, "x": x, **kwargs}
    with pytest.raises(ValueError, match=message):
        gradcheck.check(kwargs.pop("layer"), kwargs.pop("params"), kwargs.pop("x"), **kwargs)


def test_good_settings_at_their_limits_are_accepted():
    params, x = _affine_params()
    assert gradcheck.check(AFFINE, params, x, mode="full", rtol_jax=0, atol=0.0, step=np.float32(1e-5),
                           directions=np.int64(1), seed=2**63 - 1, memory_mb=1).ok


# ---------------------------------------------------------------------------------------------
# Near misses: the tolerances, the kink margin and the kink test are tight. Each test sits
# close to a threshold, so that a tolerance 10x or 1000x looser, or a wider kink margin, fails it.

def _affine_scaled(factor):
    """affine whose dW is off by the relative ``factor - 1`` everywhere (jax.vjp sees it)."""
    return _affine_bug(lambda g, dx: ({**g, "W": g["W"] * factor}, dx))


_AFFINE_OFF = {rel: _affine_scaled(1 + rel) for rel in (1e-8, 3e-10, 3e-11)}


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_jax_oracle_catches_a_relative_error_of_1e_8_that_finite_differences_cannot(mode):
    params, x = _affine_params()
    good = gradcheck.check(AFFINE, params, x, mode=mode)
    assert good.ok and all(leaf.rel_jax <= 1e-15 for leaf in good.leaves), str(good)
    report = gradcheck.check(_AFFINE_OFF[1e-8], params, x, mode=mode)
    leaf = next(leaf for leaf in report.leaves if leaf.path == "params['W']")
    assert not report.ok and not leaf.ok, str(report)
    assert 0.9e-8 < leaf.rel_jax < 1.1e-8 and leaf.rel_num < 1e-6, str(report)  # only jax.vjp can see it
    # rtol_jax = 1e-10 is tight: 3e-10 fails, 3e-11 passes
    assert not gradcheck.check(_AFFINE_OFF[3e-10], params, x, mode=mode).ok
    assert gradcheck.check(_AFFINE_OFF[3e-11], params, x, mode=mode).ok


def _shared_bug(f, df):
    """A layer whose forward carries a wrong derivative ``df`` (a custom_jvp), and whose backward
    uses the same ``df``: jax.vjp agrees with the hand gradient; only finite differences can see it."""
    g = jax.custom_jvp(f)
    g.defjvp(lambda primals, tangents: (f(primals[0]), df(primals[0]) * tangents[0]))
    return Layer(no_params, lambda p, x: (g(x), x), lambda p, x, dy: ((), dy * df(x)))


_SIN_OFF = {rel: _shared_bug(jnp.sin, lambda x, r=rel: jnp.cos(x) * (1 + r)) for rel in (3e-6, 3e-7)}
_X1 = jnp.array([[0.7]])  # one entry: fast mode's direction is +-1, so its tolerance is exact too
_X6 = jnp.array([[0.7, -1.3, 2.1], [0.2, -0.4, 1.1]])


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_finite_differences_catch_a_bug_the_forward_shares_with_jax(mode):
    # rtol_num = 1e-6 is tight: off by 3e-6 fails, off by 3e-7 passes
    for x in (_X1, _X6) if mode == "full" else (_X1,):
        report = gradcheck.check(_SIN_OFF[3e-6], (), x, mode=mode)
        assert not report.ok and report.leaves[0].rel_jax == 0.0, str(report)
        assert 2e-6 < report.leaves[0].rel_num < 4e-6, str(report)
        assert report.leaves[0].worst.startswith("("), str(report)  # a failing leaf is reported entry by entry
        assert gradcheck.check(_SIN_OFF[3e-7], (), x, mode=mode).ok


# y = 1000 + x / 1000: a small gradient under a large output, where the rounding-noise term of
# the tolerance (64 eps |<y, dy>| / h, here about 2.4e-6 |dy|) dominates rtol_num * scale
_OFFSET_OFF = {rel: _shared_bug(lambda x: 1e3 + 1e-3 * x, lambda x, r=rel: jnp.full_like(x, 1e-3 * (1 + r)))
               for rel in (1e-2, 1e-3)}


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_the_rounding_noise_allowance_is_tight(mode):
    report = gradcheck.check(_OFFSET_OFF[1e-2], (), _X1, mode=mode)  # off by 1e-5 |dy|
    assert not report.ok, str(report)
    assert gradcheck.check(_OFFSET_OFF[1e-3], (), _X1, mode=mode).ok  # off by 1e-6 |dy|: noise level


# x**4 at |x| >= 10 curves strongly: the one-sided differences at h differ by h * phi'' (about 20
# tolerances), which the old kink test took for a jump; a relative error of 5e-6 hid as a "kink"
_QUARTIC_OFF = _shared_bug(lambda x: x**4, lambda x: 4 * x**3 * (1 + 5e-6))
_QUARTIC = _shared_bug(lambda x: x**4, lambda x: 4 * x**3)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_curvature_is_not_a_kink(mode):
    report = gradcheck.check(_QUARTIC_OFF, (), jnp.array([[10.0, -12.0, 11.0]]), mode=mode)
    assert not report.ok and report.kinks == 0, str(report)
    assert gradcheck.check(_QUARTIC, (), jnp.array([[10.0, -12.0, 11.0]]), mode=mode).ok


def _relu_at_zero(slope):
    """relu whose backward gives ``slope * dy`` at exactly 0; every slope in [0, 1] is a subgradient."""
    def backward(p, x, dy):
        return (), jnp.where(x > 0, dy, jnp.where(x == 0, slope * dy, 0.0))
    return Layer(no_params, lambda p, x: (jnp.where(x > 0, x, 0.0), x), backward)


_ZEROS_X = jnp.array([[0.0, 1.0, -2.0, 0.0], [0.0, 0.5, 3.0, -0.25]])
_SLOPES = {s: _relu_at_zero(s) for s in (0.0, 0.5, 1.0, 1.03, 1.07, -0.07)}


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_kink_subgradient_interval_and_margin(mode):
    # inside [0, 1] (and within the margin of 5 % of the jump) passes, as a kink; just outside fails
    for slope in (0.0, 0.5, 1.0, 1.03):
        report = gradcheck.check(_SLOPES[slope], (), _ZEROS_X, mode=mode)
        assert report.ok and report.kinks == 3, (slope, str(report))
    for slope in (1.07, -0.07):
        report = gradcheck.check(_SLOPES[slope], (), _ZEROS_X, mode=mode)
        assert not report.ok, (slope, str(report))


def _relu_beyond(k, atol):
    """relu whose value at 0 lies ``0.05 * |dy| + k * atol`` beyond the subgradient interval
    ``[min(0, dy), max(0, dy)]``: the kink margin is ``tol + 0.05 * jump``, and ``tol = atol +
    rtol_num * scale`` (scale ~ 2 here), so k = 0.5 is within it and k = 5 is not."""
    def backward(p, x, dy):
        beyond = dy + jnp.sign(dy) * (0.05 * jnp.abs(dy) + k * atol)
        return (), jnp.where(x > 0, dy, jnp.where(x == 0, beyond, 0.0))
    return Layer(no_params, lambda p, x: (jnp.where(x > 0, x, 0.0), x), backward)


_BEYOND = {k: _relu_beyond(k, 1e-3) for k in (0.5, 5.0)}


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_kink_margin_is_the_tolerance_plus_5_percent_of_the_jump(mode):
    report = gradcheck.check(_BEYOND[0.5], (), _ZEROS_X, mode=mode, atol=1e-3)
    assert report.ok and report.kinks == 3, str(report)
    assert not gradcheck.check(_BEYOND[5.0], (), _ZEROS_X, mode=mode, atol=1e-3).ok


# relu whose jax derivative at 0 is 5 (a custom_jvp): the hand value 0 is a subgradient, jax's is not
_RELU_JAX_5 = _shared_bug(lambda x: jnp.where(x > 0, x, 0.0), lambda x: jnp.where(x > 0, 1.0, jnp.where(x == 0, 5.0, 0.0)))
_RELU_JAX_5 = Layer(no_params, _RELU_JAX_5.forward, lambda p, x, dy: ((), jnp.where(x > 0, dy, 0.0)))


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_where_hand_and_jax_disagree_at_a_kink_both_must_be_subgradients(mode):
    report = gradcheck.check(_RELU_JAX_5, (), _ZEROS_X, mode=mode)
    assert not report.ok and report.leaves[0].worst in ("(0, 0)", "(0, 3)", "(1, 0)"), str(report)


# relu as jnp.maximum(x, 0), whose jax derivative at the tie x == 0 is 1/2, as is the hand one's
_MIDPOINT_RELU = Layer(no_params, lambda p, x: (jnp.maximum(x, 0.0), x), _SLOPES[0.5].backward)


def test_fast_mode_sends_a_direction_across_a_kink_to_the_entry_by_entry_check():
    # slope 1/2 at the one kink, for hand and jax: every direction's central difference equals
    # <hand, v> exactly, so nothing disagrees; the jump alone must send dx to the entry-by-entry
    # check, whose row shows an entry, not a direction (at the kink, 1/2 is also the central
    # difference, so the entry passes plainly and is not counted as a kink)
    report = gradcheck.check(_MIDPOINT_RELU, (), jnp.array([[0.0, 1.0, -2.0], [0.5, 3.0, -0.25]]), mode="fast")
    assert report.ok and report.leaves[0].worst.startswith("("), str(report)


# relu(x) - K x**2 at 0 (K h = 0.12): the one-sided differences at h are off by 12 % of the jump,
# more than the 5 % margin; the extrapolated one-sided derivatives are exact, so 0 and 1 pass
_K = 2e4
_CURVED_KINK = {s: Layer(no_params, lambda p, x: (jnp.where(x > 0, x, 0.0) - _K * x * x, x),
                         lambda p, x, dy, s=s: ((), jnp.where(x > 0, dy, jnp.where(x == 0, s * dy, 0.0)) - 2 * _K * x * dy))
                for s in (0.0, 1.0, 1.07)}


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_curved_kink_passes_its_exact_one_sided_derivatives(mode):
    x = jnp.array([[0.0, 1e-4, 0.0], [-2e-4, 0.0, 0.0]])
    for slope in (0.0, 1.0):
        report = gradcheck.check(_CURVED_KINK[slope], (), x, mode=mode)
        assert report.ok and report.kinks == 4, (slope, str(report))
    assert not gradcheck.check(_CURVED_KINK[1.07], (), x, mode=mode).ok


def test_relu_convention_dx_is_exactly_zero_at_zero():
    x = jnp.array([0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0])  # (XLA on CPU flushes subnormals to 0)
    y, residuals = relu.forward((), x)
    _, dx = relu.backward((), residuals, jnp.full(6, 3.0))
    assert np.array_equal(np.asarray(y), [0.0, 0.0, 1e-300, 0.0, 1.0, 0.0])
    assert np.array_equal(np.asarray(dx), [0.0, 0.0, 3.0, 0.0, 3.0, 0.0])
    assert np.array_equal(np.asarray(jax.grad(lambda v: jnp.sum(jax.nn.relu(v)))(x))[:2], [0.0, 0.0])  # jax agrees


_MANY_ZEROS_X = jnp.array([[0.0, 1.0, 0.0, -2.0, 0.0], [0.0, 0.0, 3.0, 0.0, -0.5], [0.0, 0.7, 0.0, 0.0, 0.0]])
_THREE_ZEROS_X = jnp.array([[0.0, 1.0, 0.0, -2.0], [0.5, 0.0, 3.0, -0.5]])


@pytest.mark.parametrize("directions", [1, 3])
@pytest.mark.parametrize("x", [_MANY_ZEROS_X, _THREE_ZEROS_X, jnp.zeros((3, 4))], ids=["10_of_15", "3_of_8", "all"])
def test_fast_mode_relu_with_many_exact_zeros_over_20_seeds(x, directions):
    # a direction crossing several kinks: the one-sided differences along it jump, and <hand, v>
    # need not lie between them (the old checker failed 3 to 9 of these 20 seeds)
    zeros = int(np.sum(np.asarray(x) == 0))
    for seed in range(20):
        report = gradcheck.check(relu, (), x, mode="fast", seed=seed, directions=directions)
        assert report.ok and report.kinks == zeros, (seed, str(report))


def test_fast_rows_show_the_directional_values_compared():
    params, x = _affine_params()
    report = gradcheck.check(AFFINE, params, x, mode="fast", directions=4)
    assert report.ok and "4 random unit directions vN" in str(report).splitlines()[1]
    for leaf in report.leaves:
        assert leaf.worst in ("v0", "v1", "v2", "v3"), str(report)
        assert np.isfinite(leaf.numerical) and abs(leaf.hand - leaf.numerical) <= 1e-6 * np.sqrt(leaf.shape[0] * (leaf.shape[1] if len(leaf.shape) > 1 else 1)) + 1e-9, str(report)
        assert abs(leaf.hand - leaf.jax) <= 1e-12 * max(1.0, abs(leaf.hand))
    full = gradcheck.check(AFFINE, params, x, mode="full")
    assert "worst entry (i, j)" in str(full).splitlines()[1]
