"""Attention (the sequel's chapter 8): a hand-computed example, the padding mask, the batched
time attention against one attention per decoder step, large scores, and the error messages.

The registry cases (``test_layers``) check every layer against ``jax.vjp`` of the reference
and finite differences at random inputs; these tests aim at what random inputs rarely reach.
"""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import reference.attention as ref
from pure_backprop.core import Layer
from pure_backprop.layers.attention import (
    attention,
    attention_backward,
    attention_forward,
    attention_weight,
    attention_weight_backward,
    attention_weight_forward,
    mask_from_lengths,
    time_attention,
    time_attention_backward,
    time_attention_forward,
    time_attention_weights,
    weight_sum,
    weight_sum_backward,
    weight_sum_forward,
)

LN3 = math.log(3.0)


def _draw(seed, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)  # NumPy: an eager jax.random draw compiles a program per shape
    return [jnp.asarray(scale * rng.standard_normal(s)) for s in shapes]


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a - b)))


@jax.jit
def _time_hand(hs_enc, hs_dec, mask, dc):
    y, residuals = time_attention_forward(hs_enc, hs_dec, mask)
    return y, residuals.weights, time_attention_backward(residuals, dc)


@jax.jit
def _time_reference(hs_enc, hs_dec, mask, dc):
    y, vjp = jax.vjp(lambda e, d: ref.time_attention(mask)((), (e, d)), hs_enc, hs_dec)
    return y, ref.time_attention_weights(hs_enc, hs_dec, mask), vjp(dc)


MASK = jnp.array([[True, True, True, True], [True, True, False, False], [False, False, False, False]])


# --- a tiny example by hand: S = 2, H = 1 --------------------------------------------------

# hs = (1, 2), h = ln 3: scores (ln 3, 2 ln 3), exp -> (3, 9), a = (1/4, 3/4), c = 1/4 + 2 * 3/4 = 7/4.
# Backward from dc = 2: weight_sum gives dhs = dc * a = (1/2, 3/2) and da = dc * hs = (2, 4);
# sum(a * da) = 1/2 + 3 = 7/2, ds = a * (da - 7/2) = (-3/8, 3/8); attention_weight gives
# dhs = ds * h = (-3/8, 3/8) ln 3 and dh = sum(ds * hs) = -3/8 + 6/8 = 3/8.
TINY_HS, TINY_H = jnp.array([[[1.0], [2.0]]]), jnp.array([[LN3]])
TINY_A, TINY_C = np.array([[0.25, 0.75]]), np.array([[1.75]])
TINY_DHS, TINY_DH = np.array([[[0.5 - 0.375 * LN3], [1.5 + 0.375 * LN3]]]), np.array([[0.375]])


def test_hand_example_attention():
    c, residuals = attention_forward(TINY_HS, TINY_H)
    np.testing.assert_allclose(residuals.weights, TINY_A, rtol=1e-14)
    np.testing.assert_allclose(c, TINY_C, rtol=1e-14)
    dhs, dh = attention_backward(residuals, jnp.array([[2.0]]))
    np.testing.assert_allclose(dhs, TINY_DHS, rtol=1e-14)
    np.testing.assert_allclose(dh, TINY_DH, rtol=1e-14)


def test_hand_example_time_attention_with_two_decoder_steps():
    # step 0 is the example above; step 1 has h = 0: equal weights (1/2, 1/2), c = 3/2, and from
    # dc = 1: da = (1, 2), ds = (1/2) * ((1, 2) - 3/2) = (-1/4, 1/4), dh = -1/4 + 2/4 = 1/4,
    # dhs = dc * a + ds * 0 = (1/2, 1/2)
    hs_dec = jnp.array([[[LN3], [0.0]]])
    c, weights, (dhs_enc, dhs_dec) = _time_hand(TINY_HS, hs_dec, None, jnp.array([[[2.0], [1.0]]]))
    np.testing.assert_allclose(weights, [[[0.25, 0.75], [0.5, 0.5]]], rtol=1e-14)
    np.testing.assert_allclose(c, [[[1.75], [1.5]]], rtol=1e-14)
    np.testing.assert_allclose(dhs_dec, [[[0.375], [0.25]]], rtol=1e-14)
    np.testing.assert_allclose(dhs_enc, TINY_DHS + np.array([[[0.5], [0.5]]]), rtol=1e-14)  # summed over t


def test_hand_example_pieces():
    a, residuals = attention_weight_forward(TINY_HS, TINY_H)
    np.testing.assert_allclose(a, TINY_A, rtol=1e-14)
    # da = (1, 0): sum(a * da) = 1/4, ds = (1/4 * 3/4, 3/4 * -1/4) = (3/16, -3/16), dh = 3/16 - 6/16
    dhs, dh = attention_weight_backward(residuals, jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(dhs, [[[0.1875 * LN3], [-0.1875 * LN3]]], rtol=1e-14)
    np.testing.assert_allclose(dh, [[-0.1875]], rtol=1e-14)
    c, residuals = weight_sum_forward(TINY_HS, jnp.array([[0.25, 0.75]]))
    np.testing.assert_allclose(c, TINY_C, rtol=1e-14)
    dhs, da = weight_sum_backward(residuals, jnp.array([[2.0]]))
    np.testing.assert_allclose(dhs, [[[0.5], [1.5]]], rtol=1e-14)
    np.testing.assert_allclose(da, [[2.0, 4.0]], rtol=1e-14)


def test_hand_example_masked():
    # position 1 masked: a = (1, 0), c = hs_0 = 1; dhs = dc * a = (2, 0); ds = 1 * (2 - 2) = 0, dh = 0
    mask = jnp.array([[True, False]])
    c, residuals = attention_forward(TINY_HS, TINY_H, mask)
    np.testing.assert_array_equal(residuals.weights, [[1.0, 0.0]])
    np.testing.assert_array_equal(c, [[1.0]])
    dhs, dh = attention_backward(residuals, jnp.array([[2.0]]))
    np.testing.assert_array_equal(dhs, [[[2.0], [0.0]]])
    np.testing.assert_array_equal(dh, [[0.0]])


# --- the mask ------------------------------------------------------------------------------

def test_weights_sum_to_one_over_real_positions_and_are_exactly_zero_at_padding():
    hs_enc, hs_dec = _draw(0, (3, 4, 3), (3, 2, 3), scale=2.0)
    weights = jax.jit(time_attention_weights)(hs_enc, hs_dec, MASK)
    assert weights.shape == (3, 2, 4)
    real = np.broadcast_to(np.asarray(MASK)[:, None, :], weights.shape)
    assert np.all(np.asarray(weights)[~real] == 0.0)
    assert np.all(np.asarray(weights)[real] > 0.0)
    np.testing.assert_allclose(jnp.sum(weights, axis=2)[:2], 1.0, rtol=1e-14)
    np.testing.assert_array_equal(jnp.sum(weights, axis=2)[2], 0.0)  # the fully masked sequence
    a, _ = jax.jit(attention_weight_forward)(hs_enc, hs_dec[:, 1], MASK)
    np.testing.assert_allclose(a, weights[:, 1], rtol=1e-14)
    assert np.all(np.asarray(a)[~np.asarray(MASK)] == 0.0)


def test_padding_values_change_nothing_and_get_exactly_zero_gradient():
    hs_enc, hs_dec, dc = _draw(1, (3, 4, 3), (3, 2, 3), (3, 2, 3))
    y, weights, (dhs_enc, dhs_dec) = _time_hand(hs_enc, hs_dec, MASK, dc)
    padding = ~np.asarray(MASK)
    for value in (1e3, -7.0, np.inf, np.nan):
        moved = jnp.where(MASK[:, :, None], hs_enc, value)
        y2, weights2, (dhs_enc2, dhs_dec2) = _time_hand(moved, hs_dec, MASK, dc)
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(weights2, weights)
        np.testing.assert_array_equal(dhs_dec2, dhs_dec)
        np.testing.assert_array_equal(dhs_enc2, dhs_enc)
    assert np.all(np.asarray(dhs_enc)[padding] == 0.0)
    assert np.any(np.asarray(dhs_enc)[~padding] != 0.0)


def test_padding_changes_nothing_in_one_step_attention():
    hs, h, dc = _draw(2, (3, 4, 3), (3, 3), (3, 3))
    c, residuals = attention_forward(hs, h, MASK)
    dhs, dh = attention_backward(residuals, dc)
    moved = jnp.where(MASK[:, :, None], hs, jnp.nan)
    c2, residuals2 = attention_forward(moved, h, MASK)
    dhs2, dh2 = attention_backward(residuals2, dc)
    for a, b in ((c, c2), (dhs, dhs2), (dh, dh2), (residuals.weights, residuals2.weights)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(dhs)[~np.asarray(MASK)] == 0.0)
    _, weight_residuals = attention_weight_forward(moved, h, MASK)
    dhs3, dh3 = attention_weight_backward(weight_residuals, dc[:, :1] + jnp.zeros((3, 4)))
    assert np.all(np.isfinite(dhs3)) and np.all(np.isfinite(dh3))
    assert np.all(np.asarray(dhs3)[~np.asarray(MASK)] == 0.0)


def test_masked_one_step_attention_equals_its_reference_and_keeps_zeroed_padding():
    """``attention_weight(mask)`` and ``attention(mask)`` (MASK: a full row, a half row, an empty
    row) against the references' forwards and ``jax.vjp``; the residuals hold the states with
    every padded one set to 0 (they enter the backward's products)."""
    hs, h = _draw(4, (3, 4, 3), (3, 3))
    hs = jnp.where(MASK[:, :, None], hs, jnp.nan)  # padding that must never be read
    for hand, reference in ((attention_weight(MASK), ref.attention_weight(MASK)), (attention(MASK), ref.attention(MASK))):
        y, residuals = hand.forward((), (hs, h))
        states = getattr(residuals, "attention_weight", residuals).hs  # attention's are attention_weight's
        np.testing.assert_array_equal(states, jnp.where(MASK[:, :, None], hs, 0.0))
        clean = jnp.where(MASK[:, :, None], hs, 0.0)
        expected, vjp = jax.vjp(lambda a, b: reference((), (a, b)), clean, h)
        np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-15)
        dy = _draw(5, y.shape)[0]
        (dhs, dh), (e_hs, e_h) = hand.backward((), residuals, dy)[1], vjp(dy)
        assert _rel(dhs, jnp.where(MASK[:, :, None], e_hs, 0.0)) <= 1e-12 and _rel(dh, e_h) <= 1e-12


def test_a_fully_masked_row_gives_zeros_and_leaves_the_others_alone():
    hs_enc, hs_dec, dc = _draw(3, (3, 4, 3), (3, 2, 3), (3, 2, 3))
    y, weights, (dhs_enc, dhs_dec) = _time_hand(hs_enc, hs_dec, MASK, dc)
    for array in (y, weights, dhs_enc, dhs_dec):
        assert np.all(np.isfinite(array))
        np.testing.assert_array_equal(array[2], 0.0)
    # the other rows are what they are alone: the first unmasked, the second cut to its 2 positions
    y0, _, (e0, d0) = _time_hand(hs_enc[:1], hs_dec[:1], None, dc[:1])
    y1, _, (e1, d1) = _time_hand(hs_enc[1:2, :2], hs_dec[1:2], None, dc[1:2])
    np.testing.assert_allclose(y[0], y0[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(y[1], y1[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dhs_enc[0], e0[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dhs_enc[1, :2], e1[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dhs_dec[1], d1[0], rtol=1e-14, atol=1e-15)
    # and the reference, which handles the empty row on its own, agrees with all of it
    expected_y, expected_weights, (expected_enc, expected_dec) = _time_reference(hs_enc, hs_dec, MASK, dc)
    np.testing.assert_allclose(y, expected_y, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-13, atol=1e-15)
    assert _rel(dhs_enc, expected_enc) <= 1e-12 and _rel(dhs_dec, expected_dec) <= 1e-12


def test_mask_from_lengths():
    np.testing.assert_array_equal(mask_from_lengths(jnp.array([4, 2, 0]), 4), MASK)
    assert mask_from_lengths(np.array([1]), 3).dtype == jnp.bool_


# --- the batched time attention is one attention per decoder step --------------------------

@jax.jit
def _per_step(hs_enc, hs_dec, mask, dc):
    contexts, dhs_enc, dhs_dec = [], jnp.zeros_like(hs_enc), []
    for t in range(hs_dec.shape[1]):
        c, residuals = attention_forward(hs_enc, hs_dec[:, t], mask)
        dhs, dh = attention_backward(residuals, dc[:, t])
        contexts.append(c)
        dhs_enc, dhs_dec = dhs_enc + dhs, dhs_dec + [dh]
    return jnp.stack(contexts, axis=1), (dhs_enc, jnp.stack(dhs_dec, axis=1))


@pytest.mark.parametrize("shape,masked", [((2, 4, 3, 3), True), ((1, 3, 2, 2), False), ((3, 1, 4, 2), True)])
def test_time_attention_is_attention_at_each_decoder_step(shape, masked):
    n, s, t, h = shape
    hs_enc, hs_dec, dc = _draw(sum(shape), (n, s, h), (n, t, h), (n, t, h), scale=1.5)
    mask = mask_from_lengths(jnp.arange(n) % (s + 1), s) if masked else None  # lengths 0, 1, 2, ...
    y, _, (dhs_enc, dhs_dec) = _time_hand(hs_enc, hs_dec, mask, dc)
    expected_y, (expected_enc, expected_dec) = _per_step(hs_enc, hs_dec, mask, dc)
    np.testing.assert_allclose(y, expected_y, rtol=1e-13, atol=1e-15)
    assert _rel(dhs_enc, expected_enc) <= 1e-13 and _rel(dhs_dec, expected_dec) <= 1e-13


# --- large scores: max subtraction, and the softmax backward near one-hot rows -------------

def test_scores_near_1e3_give_finite_gradients_equal_to_the_reference():
    # scores = 1e3 + O(1): exp(1e3) overflows, so a softmax without its max would be inf / inf;
    # the O(1) spread keeps the weights away from one-hot, where jax.vjp of the reference is exact
    hs_enc, hs_dec, dc = _draw(4, (2, 4, 3), (2, 3, 3), (2, 3, 3))
    hs_enc, hs_dec = hs_enc.at[:, :, 0].set(1e3 ** 0.5), hs_dec.at[:, :, 0].set(-(1e3 ** 0.5))
    assert 900 < float(jnp.min(jnp.abs(jnp.einsum("nth,nsh->nts", hs_dec, hs_enc))))
    mask = jnp.array([[True, True, True, False], [True, True, True, True]])
    for m in (None, mask):
        if m is not None:
            hs_enc = hs_enc.at[0, 3].set(-1e3)  # a padded position whose score would win by far
        y, weights, grads = _time_hand(hs_enc, hs_dec, m, dc)
        expected_y, expected_weights, expected = _time_reference(hs_enc, hs_dec, m, dc)
        for a, b in zip((y, weights) + tuple(grads), (expected_y, expected_weights) + tuple(expected)):
            assert np.all(np.isfinite(a)) and _rel(a, b) <= 1e-10, _rel(a, b)
    assert np.all(np.asarray(weights)[0, :, 3] == 0.0)


def _exact(hs_enc, hs_dec, mask, dc):
    """Weights, contexts, dhs_enc and dhs_dec of time attention in ``mpmath``, from the float64
    inputs taken exactly, one decoder step at a time (rounded to float64). 1200 bits, because the
    textbook formulas are evaluated as they stand: ``da_j - sum(a * da)`` at a weight of
    ``1 - 1e-300`` needs 1000 bits to keep the ``1e-300``."""
    E, D, C = (np.asarray(v, np.float64) for v in (hs_enc, hs_dec, dc))
    (n_seq, n_enc, n_feat), n_dec = E.shape, D.shape[1]
    real = np.ones((n_seq, n_enc), bool) if mask is None else np.asarray(mask)
    weights, contexts = np.zeros((n_seq, n_dec, n_enc)), np.zeros(D.shape)
    d_enc = [[[mpmath.mpf(0)] * n_feat for _ in range(n_enc)] for _ in range(n_seq)]
    d_dec = np.zeros(D.shape)
    with mpmath.workprec(1200):
        for n in range(n_seq):
            for t in range(n_dec):
                js = [j for j in range(n_enc) if real[n, j]]
                if not js:
                    continue
                s = {j: mpmath.fsum(mpmath.mpf(D[n, t, k]) * E[n, j, k] for k in range(n_feat)) for j in js}
                top = max(s.values())
                e = {j: mpmath.exp(s[j] - top) for j in js}
                a = {j: e[j] / mpmath.fsum(e.values()) for j in js}
                da = {j: mpmath.fsum(mpmath.mpf(C[n, t, k]) * E[n, j, k] for k in range(n_feat)) for j in js}
                mean = mpmath.fsum(a[j] * da[j] for j in js)
                ds = {j: a[j] * (da[j] - mean) for j in js}
                for k in range(n_feat):
                    contexts[n, t, k] = float(mpmath.fsum(a[j] * E[n, j, k] for j in js))
                    d_dec[n, t, k] = float(mpmath.fsum(ds[j] * E[n, j, k] for j in js))
                    for j in js:
                        d_enc[n][j][k] += a[j] * C[n, t, k] + ds[j] * D[n, t, k]
                for j in js:
                    weights[n, t, j] = float(a[j])
    return weights, contexts, np.array([[[float(v) for v in row] for row in seq] for seq in d_enc]), d_dec


def _entrywise(got, exact, tiny=1e-280):
    """The largest relative error entry by entry; an exact 0 must be 0, and where the true value
    is below ``tiny`` (its intermediates near float64's smallest normal number, which XLA on
    CPU flushes to 0) the result must be below ``tiny`` too."""
    got, exact = np.asarray(got), np.asarray(exact)
    assert np.all(got[exact == 0] == 0)
    assert np.all(np.abs(got[np.abs(exact) < tiny]) < tiny)
    nonzero = np.abs(exact) >= tiny
    return float(np.max(np.abs(got[nonzero] - exact[nonzero]) / np.abs(exact[nonzero])))


# scores of several hundred with gaps of tens to hundreds: most rows are one-hot to within
# 1e-16 but keep weights of 1e-20 .. 1e-260 that the gradients must not lose
NEAR_ONE_HOT = _draw(8, (2, 4, 3), (2, 3, 3), (2, 3, 3), scale=12.0)


def test_near_one_hot_rows_are_accurate_entry_by_entry_against_mpmath():
    hs_enc, hs_dec, dc = NEAR_ONE_HOT
    dc = dc / 12.0
    mask = jnp.array([[True, True, True, False], [True, True, True, True]])
    y, weights, (d_enc, d_dec) = _time_hand(hs_enc, hs_dec, mask, dc)
    exact = _exact(hs_enc, hs_dec, mask, dc)
    assert np.sum((exact[0] > 1e-150) & (exact[0] < 1e-17)) >= 3  # the regime aimed at
    for name, got, want in zip(("weights", "contexts", "dhs_enc", "dhs_dec"), (weights, y, d_enc, d_dec), exact):
        assert _entrywise(got, want) <= 1e-10, (name, _entrywise(got, want))
    # jax.vjp of the reference (the textbook a * (da - sum(a * da))) loses these rows' gradients
    _, _, (_, reference_dec) = _time_reference(hs_enc, hs_dec, mask, dc)
    assert _entrywise(reference_dec, exact[3]) > 1e-6


def test_near_one_hot_rows_in_one_step_attention_against_mpmath():
    hs_enc, hs_dec, dc = NEAR_ONE_HOT
    dc = dc / 12.0
    c, (dhs, dh) = jax.jit(lambda hs, h, dc: (lambda r: (r[0], attention_backward(r[1], dc)))(
        attention_forward(hs, h)))(hs_enc, hs_dec[:, 1], dc[:, 1])
    weights, contexts, d_enc, d_dec = _exact(hs_enc, hs_dec[:, 1:2], None, dc[:, 1:2])
    for got, want in ((c, contexts[:, 0]), (dhs, d_enc), (dh, d_dec[:, 0])):
        assert _entrywise(got, want) <= 1e-10, _entrywise(got, want)


# --- the layers, jit and vmap --------------------------------------------------------------

def test_layers_init_and_weights_in_the_residuals():
    key = jax.random.PRNGKey(0)
    assert attention_weight().init(key, ((2, 4, 3), (2, 3))) == ((), (2, 4))
    assert weight_sum.init(key, ((2, 4, 3), (2, 4))) == ((), (2, 3))
    assert attention(MASK).init(key, ((3, 4, 5), (3, 5))) == ((), (3, 5))
    assert time_attention().init(key, ((2, 4, 3), (2, 5, 3))) == ((), (2, 5, 3))
    assert all(isinstance(layer, Layer) for layer in (attention_weight(), weight_sum, attention(), time_attention()))
    hs_enc, hs_dec = _draw(6, (3, 4, 2), (3, 2, 2))
    y, residuals = time_attention(MASK).forward((), (hs_enc, hs_dec))
    np.testing.assert_array_equal(residuals.weights, time_attention_weights(hs_enc, hs_dec, MASK))
    grads, (dhs_enc, dhs_dec) = time_attention(MASK).backward((), residuals, jnp.ones_like(y))
    assert grads == () and dhs_enc.shape == hs_enc.shape and dhs_dec.shape == hs_dec.shape
    _, residuals = attention(MASK).forward((), (hs_enc, hs_dec[:, 0]))
    np.testing.assert_allclose(residuals.weights, time_attention_weights(hs_enc, hs_dec, MASK)[:, 0], rtol=1e-14)


def test_jit_equals_eager_and_vmap_takes_a_mask_per_batch():
    hs_enc, hs_dec, dc = _draw(7, (2, 3, 4, 3), (2, 3, 2, 3), (2, 3, 2, 3))
    masks = jnp.stack([MASK, MASK[::-1]])
    eager = _time_hand.__wrapped__(hs_enc[1], hs_dec[1], masks[1], dc[1])
    batched = jax.jit(jax.vmap(_time_hand.__wrapped__))(hs_enc, hs_dec, masks, dc)
    for i in range(2):
        jitted = _time_hand(hs_enc[i], hs_dec[i], masks[i], dc[i])
        for b, c in zip(jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(batched)):
            np.testing.assert_allclose(c[i], b, rtol=1e-13, atol=1e-15)
        if i == 1:
            for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
                np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-15)


# --- errors ----------------------------------------------------------------------------------

HS, H = jnp.ones((2, 4, 3)), jnp.ones((2, 3))


_MASK_KIND = ("mask must be a boolean array (True at real encoder positions, False at padding), got dtype {}; build it "
              "with a comparison, e.g. mask_from_lengths(lengths, S)")


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("call,message", [
    (lambda hs, h: attention_forward(hs, h[:, :2]),
     "attention: h shape (2, 2) does not match hs shape (2, 4, 3); expected (N, H) = (2, 3)"),
    (lambda hs, h: attention_weight_forward(hs, h[:1]),
     "attention_weight: h shape (1, 3) does not match hs shape (2, 4, 3); expected (N, H) = (2, 3)"),
    (lambda hs, h: attention_forward(hs[0], h),
     "attention: hs must have 3 axes, got shape (4, 3) (N, S, H): N sequences of S encoder states of H features"),
    (lambda hs, h: weight_sum_forward(hs, h),
     "weight_sum: a shape (2, 3) does not match hs shape (2, 4, 3); expected (N, S) = (2, 4)"),
    (lambda hs, h: time_attention_forward(hs, h[:, None, :2]),
     "time_attention: hs_dec shape (2, 1, 2) does not match hs_enc shape (2, 4, 3); expected (N, T, H) = (2, T, 3)"),
    (lambda hs, h: time_attention_forward(hs[:, :0], h[:, None]),
     "time_attention: hs_enc has no encoder position (shape (2, 0, 3)); give S >= 1"),
    (lambda hs, h: time_attention_forward(hs, h[:, None], MASK),
     "time_attention: mask shape (3, 4) does not match hs_enc shape (2, 4, 3); expected (N, S) = (2, 4)"),
    (lambda hs, h: time_attention_forward(hs, h[:, None], MASK[:2].astype(jnp.float64)),
     "time_attention: " + _MASK_KIND.format("float64")),
    (lambda hs, h: attention_forward(hs, h, MASK[:2, :3]),
     "attention: mask shape (2, 3) does not match hs shape (2, 4, 3); expected (N, S) = (2, 4)"),
    (lambda hs, h: attention_weight_forward(hs, h, MASK[:2].astype(jnp.int32)),
     "attention_weight: " + _MASK_KIND.format("int32")),
    (lambda hs, h: time_attention_forward(hs.astype(jnp.int32), h[:, None]),
     "time_attention: hs_enc must have a floating-point dtype, got int32; convert with hs_enc.astype(jnp.float32)"),
    (lambda hs, h: time_attention_backward(time_attention_forward(hs, h[:, None])[1], h),
     "time_attention: dc shape (2, 3) does not match the contexts shape (2, 1, 3)"),
    (lambda hs, h: attention_backward(attention_forward(hs, h)[1], h[:, :2]),
     "attention: dc shape (2, 2) does not match the context shape (2, 3)"),
    (lambda hs, h: weight_sum_backward(weight_sum_forward(hs, h[:, :1] + HS[:, :, 0])[1], h[:1]),
     "weight_sum: dc shape (1, 3) does not match the context shape (2, 3)"),
    (lambda hs, h: attention_weight_backward(attention_weight_forward(hs, h)[1], h),
     "attention_weight: da shape (2, 3) does not match the weights shape (2, 4)"),
    (lambda hs, h: attention_forward(hs, h[:, :, None]), "attention: h must have 2 axes, got shape (2, 3, 1) (N, H)"),
    (lambda hs, h: attention_forward(hs[:, :0], h),
     "attention: hs has no encoder position (shape (2, 0, 3)); give S >= 1"),
    (lambda hs, h: attention_weight_forward(hs, h, MASK[:2, :3]),
     "attention_weight: mask shape (2, 3) does not match hs shape (2, 4, 3); expected (N, S) = (2, 4)"),
    (lambda hs, h: weight_sum_forward(hs[0], h),
     "weight_sum: hs must have 3 axes, got shape (4, 3) (N, S, H): N sequences of S encoder states of H features"),
    (lambda hs, h: weight_sum_forward(hs, hs[0, :, 0]),
     "weight_sum: a must have 2 axes, got shape (4,) (N, S): one weight per encoder position"),
    (lambda hs, h: weight_sum_forward(hs.astype(jnp.int32), hs[:, :, 0]),
     "weight_sum: hs must have a floating-point dtype, got int32; convert with hs.astype(jnp.float32)"),
    (lambda hs, h: time_attention_forward(hs[0], h[:, None]),
     "time_attention: hs_enc must have 3 axes, got shape (4, 3) (N, S, H): N sequences of S encoder states"),
    (lambda hs, h: time_attention_forward(hs, h),
     "time_attention: hs_dec must have 3 axes, got shape (2, 3) (N, T, H): N sequences of T decoder states"),
], ids=lambda v: "" if callable(v) else v[:40])
def test_error_messages(call, message, jit):
    """Each refusal, its whole message."""
    with pytest.raises(ValueError) as e:
        (jax.jit(call) if jit else call)(HS, H)
    assert str(e.value) == message


def test_layer_errors():
    """The layer factories' and layers' refusals, each by its whole message."""
    wrong_mask = "time_attention: mask shape (3, 4) does not match hs_enc shape (2, 4, 3); expected (N, S) = (2, 4)"
    cases = [
        (lambda: time_attention([[True, False]]),
         "time_attention: mask must be a boolean array of shape (N, S), got a list; wrap it in jnp.asarray(...)"),
        (lambda: attention(jnp.ones(4, bool)), "attention: mask must have shape (N, S), got shape (4,)"),
        (lambda: attention_weight(jnp.ones((2, 4), jnp.int32)), "attention_weight: " + _MASK_KIND.format("int32")),
        (lambda: time_attention(MASK).forward((), (HS, HS[:, :2])), wrong_mask),
        (lambda: time_attention(MASK).init(jax.random.PRNGKey(0), ((2, 4, 3), (2, 2, 3))), wrong_mask),
        (lambda: attention().forward((), HS), "attention: x must be a pair (a, b) of arrays, got ArrayImpl"),
        (lambda: weight_sum.init(jax.random.PRNGKey(0), ((2, 4, 3), (2, 3))),
         "weight_sum: a shape (2, 3) does not match hs shape (2, 4, 3); expected (N, S) = (2, 4)"),
        (lambda: mask_from_lengths(jnp.ones((2, 2), jnp.int32), 3),
         "mask_from_lengths: lengths must have 1 axes, got shape (2, 2) (N,): one length per sequence"),
        (lambda: weight_sum.init(jax.random.PRNGKey(0), (2, 4, 3)),
         "weight_sum: x must be a pair (a, b) of arrays, got tuple"),
    ]
    for half_an_array in (SimpleNamespace(shape=(2, 4)), SimpleNamespace(dtype=jnp.bool_)):  # both are needed
        cases.append((lambda m=half_an_array: attention(m), "attention: mask must be a boolean array of shape (N, S), got "
                      "a SimpleNamespace; wrap it in jnp.asarray(...)"))
    for call, message in cases:
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == message
