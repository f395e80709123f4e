"""The gradient checker: it catches the classic backward bugs, in fast and full mode, points
at the wrong leaf or entry, raises no false alarm on correct layers, and handles kinks."""

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
    def backward(params, residuals, dloss):
        p, t = residuals
        return (), dloss * (p - t)  # forgot / N

    from pure_backprop.layers import softmax_cross_entropy as sce
    from pure_backprop import with_targets
    layer = with_targets(sce, jnp.array([0, 2, 1, 1]))
    return Layer(layer.init, layer.forward, lambda params, r, d: ((), backward(None, r, d)[1])), (), jax.random.normal(jax.random.PRNGKey(2), (4, 3)), "dx"


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
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_deliberate_bugs_are_caught(bug, mode):
    layer, params, x, wrong_leaf = BUGS[bug]()
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


def test_relu_exact_zeros_are_kinks_not_failures():
    x = jnp.array([[0.0, 1.0, -2.0], [0.0, 0.0, 3.0]])
    for mode in ("fast", "full"):
        report = gradcheck.check(relu, (), x, mode=mode)
        assert report.ok, str(report)
        if mode == "full":
            assert report.kinks == 3
    # a wrong backward at the kink is still caught: 5 is no subgradient of relu at 0
    bad = Layer(no_params, relu.forward, lambda p, r, dy: ((), dy * r + 5.0 * dy * (~r)))
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
