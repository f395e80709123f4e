"""Aimed tests of the recurrent layers (``rnn``, ``lstm``, ``gru``) and of ``truncated_bptt``.

The registry (``test_layers``) checks each layer at two small shapes against ``jax.vjp`` of
``reference/recurrent.py`` and finite differences. Here:

* gradients through time: at ``T = 5`` every gradient (``Wx``, ``Wh``, ``b``, ``xs``, the
  initial state) equals ``jax.vjp`` of the reference, with the loss on the last step only (so
  ``dxs[:, 0]`` is nonzero only through the carried gradient) and on the first step only (so
  nothing may flow to later steps: causality, and a backward run in the wrong direction fails);
* the gate order of each cell, from closed forms at one step with ``Wx = 0``;
* precision at large pre-activations (``|A| ~ 30``, where ``1 - y**2`` and ``y * (1 - y)``
  lose every digit or most): the hand backward against central differences of the same
  forward evaluated with ``mpmath`` at 120 digits (an oracle independent of ``jax.vjp``),
  entry by entry where an entry is a single product;
* truncated BPTT: windows run one after the other equal one long run, and no gradient
  crosses a window's edge;
* the error messages, ``jit`` and ``vmap``, a batch of one and a sequence of one step.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from messages import raises_exactly
import reference.recurrent as ref
from pure_backprop.core import StatefulLayer, predict
from pure_backprop.initializers import ONE_OFF
from pure_backprop.layers.bptt import truncated_bptt
from pure_backprop.layers.gru import gru
from pure_backprop.layers.lstm import lstm
from pure_backprop.layers.rnn import rnn

LAYERS = {"rnn": (rnn, ref.rnn, 1), "lstm": (lstm, ref.lstm, 4), "gru": (gru, ref.gru, 3)}
NAMES = list(LAYERS)
tree_map, leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves


@functools.lru_cache(maxsize=None)
def layer_of(name, hidden):
    return LAYERS[name][0](hidden)


@functools.lru_cache(maxsize=None)
def hand_and_reference(name, hidden):
    """``(params, x, dy) -> ((y, hand grads), (reference y, jax.vjp of the reference))``, jitted
    (one compilation per shape)."""
    layer, reference = layer_of(name, hidden), LAYERS[name][1]

    @one_off
    def run(params, x, dy):
        y, residuals = layer.forward(params, x)
        expected, vjp = jax.vjp(reference, params, x)
        return (y, layer.backward(params, residuals, dy)), (expected, vjp(dy))

    return run


def one_off(f):
    """``jax.jit`` at LLVM -O0 (``ONE_OFF``): these programs run a few times, and compiling
    them is most of this file's time."""
    return jax.jit(f, compiler_options=ONE_OFF)


def state_like(name, make):
    return (make(), make()) if name == "lstm" else make()


def draw(name, N, T, D, H, seed=0):
    """Params (the book's scale, a small random bias), ``xs`` and a nonzero initial state."""
    rng = np.random.default_rng(seed)
    k = LAYERS[name][2]
    params = {"Wx": rng.normal(size=(D, k * H)) / np.sqrt(D), "Wh": rng.normal(size=(H, k * H)) / np.sqrt(H),
              "b": 0.3 * rng.normal(size=(k * H,))}
    x = (rng.normal(size=(N, T, D)), state_like(name, lambda: rng.normal(size=(N, H))))
    return tree_map(jnp.asarray, params), tree_map(jnp.asarray, x)


def cotangent(name, N, T, H, seed=1):
    rng = np.random.default_rng(seed)
    return tree_map(jnp.asarray, (rng.normal(size=(N, T, H)), state_like(name, lambda: rng.normal(size=(N, H)))))


def rel_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a - b)))


def assert_trees_close(got, want, rtol):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for path_and_a, b in zip(jax.tree_util.tree_flatten_with_path(got)[0], leaves(want)):
        path, a = path_and_a
        assert a.shape == b.shape, jax.tree_util.keystr(path)
        assert rel_error(a, b) <= rtol, (jax.tree_util.keystr(path), rel_error(a, b))


# --- gradients through time ---------------------------------------------------------------------

N, T, D, H = 2, 5, 3, 4  # H != D: a transposed or swapped weight cannot pass


@pytest.mark.parametrize("name", NAMES)
def test_gradients_through_five_steps_equal_jax_vjp_of_the_reference(name):
    params, x = draw(name, N, T, D, H)
    run = hand_and_reference(name, H)
    dhs, dstateT = cotangent(name, N, T, H)

    # 1. a random cotangent on every output: forward and every gradient (params, xs, state0)
    (y, hand), (expected_y, oracle) = run(params, x, (dhs, dstateT))
    assert_trees_close(y, expected_y, 1e-12)
    assert_trees_close(hand, oracle, 1e-10)
    hs, stateT = y
    np.testing.assert_array_equal(hs[:, -1], leaves(stateT)[0])  # hT is the last step's h

    # 2. the loss on the last step only: the first step's input reaches it only through time
    last = (dhs.at[:, :-1].set(0.0), tree_map(jnp.zeros_like, dstateT))
    _, (dxs, dstate0) = run(params, x, last)[0][1]
    assert_trees_close(run(params, x, last)[0][1], run(params, x, last)[1][1], 1e-10)
    assert float(jnp.min(jnp.abs(dxs[:, 0]))) > 1e-6
    assert all(float(jnp.min(jnp.abs(s))) > 1e-6 for s in leaves(dstate0))

    # 3. the loss on the first step only: no gradient may reach a later input (causality)
    first = (dhs.at[:, 1:].set(0.0), tree_map(jnp.zeros_like, dstateT))
    (_, (grads, (dxs, _))), (_, (expected_grads, _)) = run(params, x, first)
    np.testing.assert_array_equal(dxs[:, 1:], 0.0)
    assert float(jnp.min(jnp.abs(dxs[:, 0]))) > 0
    assert_trees_close(grads, expected_grads, 1e-10)

    # 4. the final state's gradient alone (a seq2seq encoder's): it flows back to every step
    only_state = (jnp.zeros_like(dhs), dstateT)
    (_, (_, (dxs, _))), (_, (_, (expected_dxs, _))) = run(params, x, only_state)
    assert rel_error(dxs, expected_dxs) <= 1e-10 and float(jnp.min(jnp.abs(dxs[:, 0]))) > 0


def test_an_encoder_state_gradient_passes_into_the_encoder():
    """seq2seq: the decoder starts from the encoder's last state; the decoder's ``dstate0`` is
    the encoder's ``dstateT``, and the chained hand backward equals ``jax.vjp`` of the chain."""
    encoder, decoder = layer_of("lstm", H), layer_of("lstm", H)
    params_e, (xs_e, state0) = draw("lstm", N, 3, D, H, seed=3)
    params_d, (xs_d, _) = draw("lstm", N, 2, D, H, seed=4)
    dhs_d = cotangent("lstm", N, 2, H)[0]

    @one_off
    def hand(pe, pd, xe, xd):
        (_, state_e), re = encoder.forward(pe, (xe, state0))
        (hs_d, state_d), rd = decoder.forward(pd, (xd, state_e))
        grads_d, (dxd, dstate) = decoder.backward(pd, rd, (dhs_d, tree_map(jnp.zeros_like, state_d)))
        grads_e, (dxe, _) = encoder.backward(pe, re, (jnp.zeros((N, 3, H)), dstate))
        return grads_e, grads_d, dxe, dxd

    def chained(pe, pd, xe, xd):
        return jnp.vdot(ref.lstm(pd, (xd, ref.lstm(pe, (xe, state0))[1]))[0], dhs_d)

    expected = one_off(jax.grad(chained, argnums=(0, 1, 2, 3)))(params_e, params_d, xs_e, xs_d)
    assert_trees_close(hand(params_e, params_d, xs_e, xs_d), expected, 1e-10)


# --- the gate order, from closed forms ------------------------------------------------------------

def _one_step(name, params, x):
    return layer_of(name, 2).forward(params, x)[0]


def test_lstm_gate_order_is_f_g_i_o():
    bf, bg, bi, bo = np.array([0.3, -1.2]), np.array([0.7, -0.4]), np.array([-0.5, 1.1]), np.array([1.3, 0.2])
    params = {"Wx": jnp.zeros((1, 8)), "Wh": jnp.zeros((2, 8)), "b": jnp.asarray(np.concatenate([bf, bg, bi, bo]))}
    h0, c0 = jnp.array([[0.5, -0.25]]), jnp.array([[2.0, -3.0]])
    hs, (hT, cT) = _one_step("lstm", params, (jnp.ones((1, 1, 1)), (h0, c0)))
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    c = sig(bf) * np.asarray(c0) + np.tanh(bg) * sig(bi)
    np.testing.assert_allclose(cT, c, rtol=1e-14)
    np.testing.assert_allclose(hT, sig(bo) * np.tanh(c), rtol=1e-14)
    np.testing.assert_array_equal(hs[:, 0], hT)


def test_gru_gate_order_is_z_r_h_with_a_bias_and_reset_before_the_product():
    bz, br, bh = np.array([0.3, -1.2]), np.array([0.7, -0.4]), np.array([-0.5, 1.1])
    Wh = np.zeros((2, 6))
    Wh[:, 4:] = [[1.5, -0.5], [0.25, 2.0]]  # only the candidate's block: r acts through (r * h) @ Wh.h
    params = {"Wx": jnp.zeros((1, 6)), "Wh": jnp.asarray(Wh), "b": jnp.asarray(np.concatenate([bz, br, bh]))}
    h0 = np.array([[0.5, -0.25]])
    _, hT = _one_step("gru", params, (jnp.ones((1, 1, 1)), jnp.asarray(h0)))
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    z, r = sig(bz), sig(br)
    h_hat = np.tanh((r * h0) @ Wh[:, 4:] + bh)
    np.testing.assert_allclose(hT, (1 - z) * h0 + z * h_hat, rtol=1e-14)


def test_rnn_is_tanh_of_the_affine_sum():
    params = {"Wx": jnp.array([[0.5, -1.0]]), "Wh": jnp.array([[0.2, 0.3], [-0.4, 0.1]]), "b": jnp.array([0.1, -0.2])}
    h0 = np.array([[0.5, -0.25]])
    _, hT = _one_step("rnn", params, (jnp.full((1, 1, 1), 2.0), jnp.asarray(h0)))
    want = np.tanh(2.0 * np.array([0.5, -1.0]) + h0 @ np.asarray(params["Wh"]) + np.array([0.1, -0.2]))
    np.testing.assert_allclose(hT, want, rtol=1e-14)


# --- precision at large pre-activations, against 120-digit arithmetic -----------------------------

mpmath.mp.dps = 120
STEP = mpmath.mpf("1e-50")  # central differences: truncation ~1e-100, rounding ~1e-70 absolute
_exp, _tanh = np.frompyfunc(mpmath.exp, 1, 1), np.frompyfunc(mpmath.tanh, 1, 1)


def _sigmoid(a):
    return 1 / (1 + _exp(-a))


def mp_forward(name, params, x):
    """The cell's forward on object arrays of ``mpmath.mpf`` (the book's formulas, with ``1 - z``)."""
    Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
    xs, state = x
    H = Wh.shape[0]
    h, c = state if name == "lstm" else (state, None)
    hs = []
    for t in range(xs.shape[1]):
        x_t = xs[:, t]
        if name == "rnn":
            h = _tanh(x_t @ Wx + h @ Wh + b)
        elif name == "lstm":
            A = x_t @ Wx + h @ Wh + b
            c = _sigmoid(A[:, :H]) * c + _tanh(A[:, H:2 * H]) * _sigmoid(A[:, 2 * H:3 * H])
            h = _sigmoid(A[:, 3 * H:]) * _tanh(c)
        else:
            z = _sigmoid(x_t @ Wx[:, :H] + h @ Wh[:, :H] + b[:H])
            r = _sigmoid(x_t @ Wx[:, H:2 * H] + h @ Wh[:, H:2 * H] + b[H:2 * H])
            h = (1 - z) * h + z * _tanh(x_t @ Wx[:, 2 * H:] + (r * h) @ Wh[:, 2 * H:] + b[2 * H:])
        hs.append(h)
    return np.stack(hs, axis=1), ((h, c) if name == "lstm" else h)


def mp_gradient(name, params, x, dy):
    """``d <forward(params, x), dy> / d(each entry)`` by central differences at 120 digits."""
    to_mp = lambda a: np.vectorize(mpmath.mpf, otypes=[object])(np.asarray(a, np.float64))  # noqa: E731  exact
    flat, treedef = jax.tree_util.tree_flatten((params, x))
    flat = [to_mp(a) for a in flat]
    dy_flat = [to_mp(a) for a in leaves(dy)]

    def phi(moved):
        p, v = jax.tree_util.tree_unflatten(treedef, moved)
        return sum(np.sum(a * d) for a, d in zip(leaves(mp_forward(name, p, v)), dy_flat))

    grads = []
    for j, leaf in enumerate(flat):
        g = np.empty(leaf.shape, object)
        for i in np.ndindex(leaf.shape):
            plus, minus = leaf.copy(), leaf.copy()
            plus[i] += STEP
            minus[i] -= STEP
            g[i] = (phi(flat[:j] + [plus] + flat[j + 1:]) - phi(flat[:j] + [minus] + flat[j + 1:])) / (2 * STEP)
        grads.append(g.astype(np.float64))
    return jax.tree_util.tree_unflatten(treedef, grads)


def saturated(name, T, seed=5, n_hidden=2, n_in=2):
    """Pre-activations of magnitude ~20-40: small weights, biases of +-(20..40), and for the LSTM
    a cell state of +-(20..30) (so tanh(c) saturates where the forget gate keeps it)."""
    rng = np.random.default_rng(seed)
    k = LAYERS[name][2]
    signs = lambda n: rng.choice([-1.0, 1.0], size=n)  # noqa: E731
    params = {"Wx": 0.5 * rng.normal(size=(n_in, k * n_hidden)), "Wh": 0.5 * rng.normal(size=(n_hidden, k * n_hidden)),
              "b": signs(k * n_hidden) * rng.uniform(20, 40, size=k * n_hidden)}
    h0 = rng.uniform(-0.9, 0.9, size=(1, n_hidden))
    state = (h0, signs(n_hidden)[None] * rng.uniform(20, 30, size=(1, n_hidden))) if name == "lstm" else h0
    x = (rng.normal(size=(1, T, n_in)), state)
    dy = (rng.normal(size=(1, T, n_hidden)), state_like(name, lambda: rng.normal(size=(1, n_hidden))))
    return tree_map(jnp.asarray, params), tree_map(jnp.asarray, x), tree_map(jnp.asarray, dy)


@pytest.mark.parametrize("name", NAMES)
def test_one_step_at_large_pre_activations_is_accurate_entry_by_entry(name):
    """``T = 1``, ``N = 1``: every entry of ``db``, ``dWx`` and ``dWh`` is one product of derivative
    factors, so it must be accurate relative to itself, however small (``sigmoid'(30) = 9e-14``,
    ``sech(30)**2 = 4e-26``): a ``1 - y**2`` would give 0 and a ``y * (1 - y)`` 3 digits. The
    reference's ``jax.vjp`` (its nonlinearities are written for that) must be accurate too."""
    params, x, dy = saturated(name, T=1)
    (_, (grads, dx)), (_, (ref_grads, ref_dx)) = hand_and_reference(name, 2)(params, x, dy)
    exact_grads, exact_dx = mp_gradient(name, params, x, dy)
    assert float(np.min(np.abs(np.asarray(exact_grads["b"])))) < 1e-12  # the case does reach saturation
    for got in (grads, ref_grads):
        for key in ("Wx", "Wh", "b"):
            a, e = np.asarray(got[key]), np.asarray(exact_grads[key])
            assert np.all(np.abs(a - e) <= 1e-13 * np.abs(e)), (key, a, e)
    for got in (dx, ref_dx):
        assert_trees_close(got, exact_dx, 1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_three_steps_at_large_pre_activations_are_accurate(name):
    """The carried gradients (``dh``, and ``dc = ds * f`` for the LSTM) at the same saturation,
    per leaf relative to its largest entry."""
    params, x, dy = saturated(name, T=3, seed=6)
    _, (grads, dx) = hand_and_reference(name, 2)(params, x, dy)[0]
    exact = mp_gradient(name, params, x, dy)
    assert_trees_close((grads, dx), exact, 1e-13)


# --- truncated backprop through time --------------------------------------------------------------

@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_truncated_bptt_windows_one_after_the_other_equal_one_long_run(name):
    layer = layer_of(name, H)
    windowed = truncated_bptt(layer)
    assert isinstance(windowed, StatefulLayer)
    _, state, out_shape = windowed.init(jax.random.PRNGKey(0), (N, 3, D), jnp.float64)
    assert out_shape == (N, 3, H)
    assert [s.shape for s in leaves(state)] == [(N, H)] * (2 if name == "lstm" else 1)
    assert all(s.dtype == jnp.float64 and not jnp.any(s) for s in leaves(state))
    params, (xs, _) = draw(name, N, 6, D, H, seed=7)

    run = one_off(lambda p, s, v: windowed.forward(p, s, v, None, True)[:2])
    hs1, state1 = run(params, state, xs[:, :3])
    hs2, state2 = run(params, state1, xs[:, 3:])
    (hs, stateT), _ = one_off(layer.forward)(params, (xs, state))
    np.testing.assert_allclose(jnp.concatenate([hs1, hs2], axis=1), hs, rtol=1e-13, atol=1e-15)
    for a, b in zip(leaves(state2), leaves(stateT)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # inference (train=False) is the same computation
    np.testing.assert_allclose(predict(windowed, params, xs[:, 3:], state1), hs2, rtol=1e-13, atol=1e-15)


def test_truncated_bptt_stops_the_gradient_at_the_window_edge():
    layer = layer_of("lstm", H)
    windowed = truncated_bptt(layer)
    params, (xs, state0) = draw("lstm", N, 6, D, H, seed=8)
    xs1, xs2 = xs[:, :3], xs[:, 3:]
    dhs2 = cotangent("lstm", N, 3, H)[0]

    def window_two(xs1, state0):
        _, state1, _ = windowed.forward(params, state0, xs1, None, True)
        return jnp.vdot(windowed.forward(params, state1, xs2, None, True)[0], dhs2)

    def full(xs1):  # the same loss with backprop through both windows
        return jnp.vdot(layer.forward(params, (jnp.concatenate([xs1, xs2], axis=1), state0))[0][0][:, 3:], dhs2)

    through_edge = one_off(jax.grad(window_two, argnums=(0, 1)))(xs1, state0)
    assert not any(jnp.any(g) for g in leaves(through_edge))  # the state carried no gradient
    assert float(jnp.max(jnp.abs(one_off(jax.grad(full))(xs1)))) > 1e-3  # though full BPTT has one

    # the hand backward of window 2: jax.vjp of the reference from window 1's state held fixed
    state1 = windowed.forward(params, state0, xs1, None, True)[1]

    @one_off
    def hand_and_oracle(p, v):
        _, _, residuals = windowed.forward(p, state1, v, None, True)
        _, vjp = jax.vjp(lambda p, v: ref.lstm(p, (v, state1))[0], p, v)
        return windowed.backward(p, residuals, dhs2), vjp(dhs2)

    hand, oracle = hand_and_oracle(params, xs2)
    assert_trees_close(hand, oracle, 1e-10)


def test_truncated_bptt_refuses_what_is_not_a_recurrent_layer():
    with pytest.raises(TypeError, match="truncated_bptt: expected a recurrent Layer"):
        truncated_bptt(truncated_bptt(rnn(3)))
    with pytest.raises(TypeError, match="truncated_bptt: train must be a Python bool"):
        truncated_bptt(rnn(3)).forward(*draw("rnn", 1, 1, 2, 3)[:1], jnp.zeros((1, 3)), jnp.ones((1, 1, 2)), None,
                                       jnp.array(True))


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_naming_the_layer_the_argument_and_the_shapes(name):
    layer = layer_of(name, H)
    params, (xs, state) = draw(name, N, 2, D, H)
    forward = layer.forward
    k = LAYERS[name][2]
    kH = k * H
    pair = "(xs, (h0, c0))" if name == "lstm" else "(xs, h0)"
    cases = [
        ((xs[0], state), f"{name}: xs must have 3 axes, got shape (2, 3) (N, T, D): batch, time, features"),
        ((jnp.ones((N, 2, D + 1)), state),
         f"{name}: xs has 4 features but Wx expects 3 (xs.shape=(2, 2, 4), Wx.shape=(3, {kH}))"),
        ((jnp.ones((N, 0, D)), state),
         f"{name}: xs has no time steps (T = 0, xs.shape=(2, 0, 3)); give a sequence of at least one step"),
        ((jnp.ones((0, 2, D)), state), f"{name}: xs is an empty batch (xs.shape=(0, 2, 3)); give at least one sequence"),
        ((xs, state, state), f"{name}: x must be a pair {pair}, got a 3-tuple"),
        ((xs, tree_map(lambda s: s[:1], state)), f"{name}: h0 shape (1, 4) does not match (N, H) = (2, 4)"),
    ]
    if name == "lstm":
        cases.append(((xs, state[0]), "lstm: state0 must be a pair (h0, c0), got ArrayImpl"))
        cases.append(((xs, (state[0], state[1][:, :3])), "lstm: c0 shape (2, 3) does not match (N, H) = (2, 4)"))
    for x, message in cases:
        with raises_exactly(ValueError, message):
            forward(params, x)
    with pytest.raises(ValueError, match=rf"{name}: xs has no time steps"):
        jax.jit(forward)(params, (jnp.ones((N, 0, D)), state))  # under jit: at trace time

    times = f"{k}H" if k > 1 else "H"
    bad_params = [
        ({"Wx": params["Wx"], "Wh": params["Wh"]}, f"{name}: params must be a dict with keys ['Wh', 'Wx', 'b'], got "
                                                   "['Wh', 'Wx']"),
        ([params["Wx"]], f"{name}: params must be a dict with keys ['Wh', 'Wx', 'b'], got list"),
        ({**params, "Wh": params["Wh"][:, :-1]}, f"{name}: Wh must have shape (H, {times}), got (4, {kH - 1})"),
        ({**params, "Wx": params["Wx"][:, 1:]},
         f"{name}: Wx shape (3, {kH - 1}) does not match Wh shape (4, {kH}); expected (D, {kH})"),
        ({**params, "b": params["b"][:-1]}, f"{name}: b shape ({kH - 1},) does not match Wh shape (4, {kH}); "
                                            f"expected ({kH},)"),
        ({**params, "Wx": params["Wx"][0]}, f"{name}: Wx must have 2 axes, got shape ({kH},)"),
        ({**params, "Wh": params["Wh"][None]}, f"{name}: Wh must have 2 axes, got shape (1, 4, {kH})"),
    ]
    for p, message in bad_params:
        with raises_exactly(ValueError, message):
            forward(p, (xs, state))

    y, residuals = jax.eval_shape(forward, params, (xs, state))
    dhs, dstate = tree_map(jnp.zeros_like, y)
    with raises_exactly(ValueError, f"{name}: dhs shape (2, 1, 4) does not match hs shape (2, 2, 4)"):
        layer.backward(params, residuals, (dhs[:, :1], dstate))
    dy_pair = "(dhs, (dhT, dcT))" if name == "lstm" else "(dhs, dhT)"
    with raises_exactly(ValueError, f"{name}: dy must be a pair {dy_pair}, got ArrayImpl"):
        layer.backward(params, residuals, dhs)
    arg = "dhT" if name != "lstm" else "dcT"
    bad_state = dstate[:, :3] if name != "lstm" else (dstate[0], dstate[1][:, :3])
    with raises_exactly(ValueError, f"{name}: {arg} shape (2, 3) does not match (N, H) = (2, 4)"):
        layer.backward(params, residuals, (dhs, bad_state))


@pytest.mark.parametrize("factory", [rnn, lstm, gru])
def test_hidden_and_in_shape_are_checked(factory):
    name = factory.__name__
    for hidden in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match=rf"{name}: hidden must be a positive int"):
            factory(hidden)
    assert factory(1).init(jax.random.PRNGKey(0), (2, 5, 4))[0]["Wh"].shape[0] == 1  # one unit is a layer
    layer = factory(3)
    for in_shape in ("abc", ((2, 5, 4),), ((2, 5, 4), (2, 3), (2, 3))):
        with raises_exactly(ValueError, f"{name}: in_shape must be (N, T, D) or ((N, T, D), state shape), "
                                        f"got {in_shape!r}"):
            layer.init(jax.random.PRNGKey(0), in_shape)
    with pytest.raises(ValueError, match=rf"{name}: in_shape must be \(N, T, D\) with N, T, D >= 1, got \(2, 0, 4\)"):
        layer.init(jax.random.PRNGKey(0), (2, 0, 4))
    with pytest.raises(ValueError, match=rf"{name}: in_shape must be \(N, T, D\) with"):
        layer.init(jax.random.PRNGKey(0), (2, 4))
    state = ((2, 3), (2, 3)) if name == "lstm" else (2, 3)
    wrong = ((2, 3), (2, 4)) if name == "lstm" else (2, 4)
    assert layer.init(jax.random.PRNGKey(0), ((2, 5, 4), state))[1] == ((2, 5, 3), state)  # mirroring x
    with pytest.raises(ValueError, match=rf"{name}: in_shape's state shape"):
        layer.init(jax.random.PRNGKey(0), ((2, 5, 4), wrong))


@pytest.mark.parametrize("name", NAMES)
def test_default_init_is_the_books_scale_with_zero_bias(name):
    k = LAYERS[name][2]
    params, out_shape = layer_of(name, 16).init(jax.random.PRNGKey(0), (3, 5, 64), jnp.float64)
    state = ((3, 16), (3, 16)) if name == "lstm" else (3, 16)
    assert out_shape == ((3, 5, 16), state)
    assert params["Wx"].shape == (64, k * 16) and params["Wh"].shape == (16, k * 16) and params["b"].shape == (k * 16,)
    assert all(p.dtype == jnp.float64 for p in params.values())
    assert not jnp.any(params["b"])
    # randn / sqrt(fan_in): fan_in = D for Wx, H for Wh (std within 15 % on 1000+ entries)
    assert abs(float(jnp.std(params["Wx"])) * 8 - 1) < 0.15 and abs(float(jnp.std(params["Wh"])) * 4 - 1) < 0.15


# --- jit, vmap, a batch of one, one step --------------------------------------------------------

def test_jit_and_vmap_equal_the_eager_layer():
    layer = layer_of("lstm", H)
    params, x = draw("lstm", N, T, D, H, seed=9)
    dy = cotangent("lstm", N, T, H)

    def both(p, v, d):
        y, residuals = layer.forward(p, v)
        return y, layer.backward(p, residuals, d)

    single = one_off(both)  # (jit against the eager layer: test_layers' test_jit_equals_eager)
    assert_trees_close(single(params, x, dy), hand_and_reference("lstm", H)(params, x, dy)[1], 1e-10)
    stacked = tree_map(lambda a: jnp.stack([a, -0.5 * a]), (x, dy))
    batched = one_off(jax.vmap(both, in_axes=(None, 0, 0)))(params, *stacked)
    for i in range(2):
        one = tree_map(lambda a: a[i], stacked)
        assert_trees_close(tree_map(lambda a: a[i], batched), single(params, *one), 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_one_and_a_single_step(name):
    params, x = draw(name, 1, 1, 2, 3, seed=10)
    dy = cotangent(name, 1, 1, 3)
    (y, hand), (expected_y, oracle) = hand_and_reference(name, 3)(params, x, dy)
    assert_trees_close(y, expected_y, 1e-13)
    assert_trees_close(hand, oracle, 1e-10)
    np.testing.assert_array_equal(y[0][:, 0], leaves(y[1])[0])


# --- truncated_bptt's own checks ---------------------------------------------------------------


def test_truncated_bptt_init_state_in_the_dtype_asked_for_and_its_errors():
    from pure_backprop.core import Layer
    from pure_backprop.layers.bptt import truncated_bptt
    from pure_backprop.layers.lstm import lstm

    params, state, hs_shape = truncated_bptt(lstm(3)).init(jax.random.PRNGKey(0), (2, 4, 5), jnp.bfloat16)
    assert hs_shape == (2, 4, 3)
    assert {a.dtype for a in jax.tree_util.tree_leaves((params, state))} == {jnp.dtype(jnp.bfloat16)}
    with pytest.raises(TypeError, match=r"^truncated_bptt: expected a recurrent Layer \(rnn, lstm or gru\), got "
                                        r"function$"):
        truncated_bptt(lambda x: x)
    three = Layer(lambda key, in_shape, dtype=jnp.float32: ({}, ((2, 4, 3), (2, 3), (2, 3))), None, None)
    with pytest.raises(ValueError, match=r"^truncated_bptt: the layer's out_shape must be \(hs shape, state shape\), "
                                         r"got \(\(2, 4, 3\), \(2, 3\), \(2, 3\)\)$"):
        truncated_bptt(three).init(jax.random.PRNGKey(0), (2, 4, 5))


# --- each cell's init, dtypes and backward checks (gaps the mutation run showed) ----------------


def _zero_state(name, n, hidden, dtype):
    h = jnp.zeros((n, hidden), dtype)
    return (h, h) if name == "lstm" else h


@pytest.mark.parametrize("name", NAMES)
def test_each_cell_rnn_lstm_gru_inits_with_its_initializers_in_the_dtype_asked_for(name):
    make, _, gates = LAYERS[name]
    layer = make(3, w_init=jax.nn.initializers.constant(0.5), b_init=jax.nn.initializers.constant(0.25))
    params, _ = layer.init(jax.random.PRNGKey(0), (2, 4, 5), jnp.bfloat16)
    assert {k: (v.dtype, float(v.ravel()[0])) for k, v in params.items()} == {
        "Wx": (jnp.bfloat16, 0.5), "Wh": (jnp.bfloat16, 0.5), "b": (jnp.bfloat16, 0.25)}


@pytest.mark.parametrize("name", NAMES)
def test_each_reference_cell_keeps_float32_in_float32_with_x64_on(name):
    params, (xs, state) = draw(name, N, 2, D, H)
    params, xs, state = tree_map(lambda a: a.astype(jnp.float32), (params, xs, state))
    assert {a.dtype for a in jax.tree_util.tree_leaves(LAYERS[name][1](params, (xs, state)))} == {jnp.dtype("float32")}


@pytest.mark.parametrize("name", NAMES)
def test_each_cell_rnn_lstm_gru_hands_each_initializer_its_own_key(name):
    """A random bias initializer gets a key (neither the weights' nor none), and the same key
    gives the same parameters."""
    make = LAYERS[name][0]
    layer = make(3, w_init=jax.nn.initializers.normal(1.0), b_init=jax.nn.initializers.normal(1.0))
    params, _ = layer.init(jax.random.PRNGKey(0), (2, 4, 5))
    b = params["b"]
    assert b.shape == (LAYERS[name][2] * 3,) and len(set(np.asarray(b).tolist())) == b.size
    assert not np.array_equal(b, params["Wx"][0]) and not np.array_equal(b, params["Wh"][0])
    assert all(np.array_equal(u, v) for u, v in zip(params.values(), layer.init(jax.random.PRNGKey(0), (2, 4, 5))[0].values()))


@pytest.mark.parametrize("name", NAMES)
def test_each_cell_rnn_lstm_gru_takes_in_shape_as_lists(name):
    """``in_shape`` written with lists (as read from JSON) is the same shape as with tuples."""
    state = [[2, 3], [2, 3]] if name == "lstm" else [2, 3]
    expected = ((2, 5, 3), ((2, 3), (2, 3)) if name == "lstm" else (2, 3))
    assert LAYERS[name][0](3).init(jax.random.PRNGKey(0), [[2, 5, 4], state])[1] == expected


@pytest.mark.parametrize("name", NAMES)
def test_each_cell_rnn_lstm_gru_keeps_float32_in_float32_with_x64_on(name):
    """The carried state takes the dtype of the state, the inputs and the weights: all float32 here,
    so nothing may widen to the float64 that x64 makes the default."""
    layer = layer_of(name, 3)
    params, _ = layer.init(jax.random.PRNGKey(0), (2, 4, 5))
    state = _zero_state(name, 2, 3, jnp.float32)
    with jax.enable_x64(True):
        (hs, stateT), residuals = layer.forward(params, (jnp.ones((2, 4, 5), jnp.float32), state))
        grads, (dxs, dstate0) = layer.backward(params, residuals, (jnp.ones_like(hs), tree_map(jnp.zeros_like, stateT)))
    assert {a.dtype for a in leaves((hs, stateT, grads, dxs, dstate0))} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name", NAMES)
def test_each_cell_rnn_lstm_gru_backward_names_itself_and_the_pair_it_expects(name):
    layer = layer_of(name, 3)
    params, _ = layer.init(jax.random.PRNGKey(0), (2, 4, 5))
    state = _zero_state(name, 2, 3, jnp.float32)
    (hs, stateT), residuals = layer.forward(params, (jnp.ones((2, 4, 5)), state))
    pair = "(dhs, (dhT, dcT))" if name == "lstm" else "(dhs, dhT)"
    with pytest.raises(ValueError, match=rf"^{name}: dy must be a pair {re.escape(pair)}, got ArrayImpl$"):
        layer.backward(params, residuals, jnp.ones_like(hs))
    with pytest.raises(ValueError, match=rf"^{name}: params must be a dict with keys \['Wh', 'Wx', 'b'\], got list$"):
        layer.backward([params], residuals, (hs, stateT))
    if name == "lstm":
        with pytest.raises(ValueError, match=r"^lstm: dstateT must be a pair \(dhT, dcT\), got a 3-tuple$"):
            layer.backward(params, residuals, (hs, (stateT[0],) * 3))


@pytest.mark.parametrize("name", NAMES)
def test_each_cell_rnn_lstm_gru_carries_the_widest_dtype_of_its_state_inputs_and_weights(name):
    """One float64 among float32s, wherever it is (the inputs, Wh alone, the state, the incoming
    gradient), makes the scans carry float64: a carry of the narrower dtype would not match what
    the step computes."""
    layer = layer_of(name, 3)
    params, _ = layer.init(jax.random.PRNGKey(0), (2, 4, 5))
    xs = jnp.ones((2, 4, 5), jnp.float32)
    wide = lambda tree: tree_map(lambda a: a.astype(jnp.float64), tree)  # noqa: E731
    with jax.enable_x64(True):
        state = _zero_state(name, 2, 3, jnp.float32)
        for p, x, s in ((params, wide(xs), state), ({**params, "Wh": wide(params["Wh"])}, xs, state),
                        (params, xs, wide(state))):
            (hs, stateT), residuals = layer.forward(p, (x, s))
            assert {a.dtype for a in leaves((hs, stateT))} == {jnp.dtype(jnp.float64)}
            grads, (dxs, dstate0) = layer.backward(p, residuals, (hs.astype(jnp.float32),
                                                                  tree_map(lambda a: a.astype(jnp.float32), stateT)))
            assert {a.dtype for a in leaves(dstate0)} == {jnp.dtype(jnp.float64)}
        (hs, stateT), residuals = layer.forward(params, (xs, state))  # all float32, then a float64 gradient
        _, (_, dstate0) = layer.backward(params, residuals, (wide(hs), tree_map(jnp.zeros_like, stateT)))
        assert {a.dtype for a in leaves(dstate0)} == {jnp.dtype(jnp.float64)}
    bad = jnp.zeros((2, 4))
    dstate = (bad, stateT[1]) if name == "lstm" else bad
    with pytest.raises(ValueError, match=rf"^{name}: dhT shape \(2, 4\) does not match \(N, H\) = \(2, 3\)$"):
        layer.backward(params, residuals, (jnp.ones_like(hs), dstate))
    if name == "lstm":
        with pytest.raises(ValueError, match=r"^lstm: dcT shape \(2, 4\) does not match \(N, H\) = \(2, 3\)$"):
            layer.backward(params, residuals, (jnp.ones_like(hs), (stateT[0], bad)))
