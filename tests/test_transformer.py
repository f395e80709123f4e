"""The transformer's layers beyond the registry's two oracles: the properties their derivations
state (layer norm's gradient is orthogonal to the constants and to ``xn``; a masked weight and its
gradient are exactly 0; the causal mask keeps the gradient from reaching earlier positions from
later ones; the lean backward equals the plain one), and a clear refusal of every bad argument,
naming the layer, the argument and the shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from messages import raises_exactly
from pure_backprop.gpt import gpt
from pure_backprop.layers import causal_self_attention, gelu, gelu_tanh, layer_norm, softmax, transformer_block
from pure_backprop.layers.self_attention import attention_weights, causal_mask

KEY = jax.random.PRNGKey(0)


def normal(shape, seed=0, dtype=jnp.float64):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


# --- layer norm -------------------------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def float64():
    with jax.enable_x64(True):
        yield


def test_layer_norm_gradient_sums_to_zero_and_is_orthogonal_to_xn_but_for_eps():
    layer = layer_norm()
    x = normal((3, 4, 6)) * 5 + 2
    params = {"gamma": normal((6,), 1), "beta": normal((6,), 2)}
    y, residuals = layer.forward(params, x)
    dy = normal(y.shape, 3)
    _, dx = layer.backward(params, residuals, dy)
    xn, inv_std = residuals
    np.testing.assert_allclose(jnp.sum(dx, -1), 0, atol=1e-12)
    dxn_xn = jnp.sum(params["gamma"][None, None] * dy * xn, -1)
    np.testing.assert_allclose(jnp.sum(dx * xn, -1), dxn_xn * (1 - jnp.mean(xn**2, -1)) * inv_std[..., 0], rtol=1e-6,
                               atol=1e-15)  # 0 but for eps's share
    np.testing.assert_allclose(jnp.mean(residuals.xn, -1), 0, atol=1e-12)
    np.testing.assert_allclose(jnp.mean(residuals.xn**2, -1), 1 - 1e-5 * residuals.inv_std[..., 0] ** 2, rtol=1e-12)


def test_layer_norm_of_rows_far_from_zero_keeps_their_digits():
    """Two passes: float32 rows centred at 1e4 with spread 1 normalize as well as rows at 0."""
    layer = layer_norm()
    x = normal((4, 8), dtype=jnp.float32)
    params = {"gamma": jnp.ones(8, jnp.float32), "beta": jnp.zeros(8, jnp.float32)}
    near, far = layer.forward(params, x)[0], layer.forward(params, x + 1e4)[0]
    np.testing.assert_allclose(far, near, atol=2e-3)


def test_a_constant_row_gives_beta_and_a_finite_gradient():
    layer = layer_norm()
    params = {"gamma": jnp.full(3, 2.0), "beta": jnp.array([1.0, -1.0, 0.5])}
    y, residuals = layer.forward(params, jnp.full((2, 3), 7.0))
    np.testing.assert_array_equal(y, jnp.broadcast_to(params["beta"], (2, 3)))
    dy = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    _, dx = layer.backward(params, residuals, dy)
    np.testing.assert_allclose(dx, 2.0 * (dy - dy.mean(-1, keepdims=True)) / jnp.sqrt(1e-5), rtol=1e-12)


def test_layer_norm_takes_any_rank_and_one_feature_and_builds_its_dtype():
    layer = layer_norm()
    for shape, dtype in (((4,), jnp.float32), ((2, 1), jnp.float64), ((2, 3, 5), jnp.float64)):
        params, out_shape = layer.init(KEY, shape, dtype)  # float32 while x64 is on: not the default
        assert out_shape == shape
        assert {k: (v.shape, v.dtype) for k, v in params.items()} == {"gamma": ((shape[-1],), dtype),
                                                                       "beta": ((shape[-1],), dtype)}
        np.testing.assert_array_equal(params["gamma"], 1.0)
        np.testing.assert_array_equal(params["beta"], 0.0)
    y, _ = layer.forward(params, normal((2, 3, 5)))
    assert y.shape == (2, 3, 5)
    y, _ = layer.forward({"gamma": jnp.ones(1), "beta": jnp.full(1, 0.5)}, normal((3, 1)))
    np.testing.assert_array_equal(y, 0.5)  # one feature: xn = 0


def test_layer_norm_refuses_bad_arguments():
    for eps in (0, True, float("inf")):
        with raises_exactly(ValueError, f"layer_norm: eps must be a positive finite float, got {eps!r}"):
            layer_norm(eps)
    layer = layer_norm()
    with raises_exactly(ValueError, "layer_norm: in_shape must end in the features (..., D) with D >= 1, got (3, 0)"):
        layer.init(KEY, (3, 0))
    with raises_exactly(ValueError, "layer_norm: in_shape must end in the features (..., D) with D >= 1, got ()"):
        layer.init(KEY, ())
    params, _ = layer.init(KEY, (2, 4))
    with raises_exactly(ValueError, "layer_norm: params must be a dict with keys ['beta', 'gamma'], got tuple"):
        layer.forward((params["gamma"], params["beta"]), normal((2, 4)))
    with raises_exactly(ValueError, "layer_norm: x must have at least 1 axes, got shape () (..., D): the features last"):
        layer.forward(params, jnp.float64(1.0))
    with raises_exactly(ValueError, "layer_norm: x has no features to normalize over (shape (2, 0)); give D >= 1"):
        layer.forward({"gamma": jnp.ones(0), "beta": jnp.zeros(0)}, normal((2, 0)))
    with raises_exactly(ValueError, "layer_norm: beta shape (3,) does not match x shape (2, 4); expected (D,) = (4,)"):
        layer.forward({"gamma": params["gamma"], "beta": jnp.zeros(3)}, normal((2, 4)))
    with raises_exactly(ValueError, "layer_norm: params must be a dict with keys ['beta', 'gamma'], got ['gamma']"):
        layer.forward({"gamma": params["gamma"]}, normal((2, 4)))
    with raises_exactly(ValueError, "layer_norm: gamma shape (4,) does not match x shape (2, 5); expected (D,) = (5,)"):
        layer.forward(params, normal((2, 5)))
    with raises_exactly(ValueError, "layer_norm: x must have a floating-point dtype, got int32; convert with "
                                    "x.astype(jnp.float32)"):
        layer.forward(params, jnp.zeros((2, 4), jnp.int32))
    _, residuals = layer.forward(params, normal((2, 4)))
    with raises_exactly(ValueError, "layer_norm: dy shape (2, 3) does not match output shape (2, 4)"):
        layer.backward(params, residuals, normal((2, 3)))


# --- GELU and softmax -------------------------------------------------------------------------

@pytest.mark.parametrize("layer, name", [(gelu, "gelu"), (gelu_tanh, "gelu_tanh")])
def test_gelu_refuses_integers_and_a_mismatched_dy(layer, name):
    with raises_exactly(ValueError, f"{name}: x must have a floating-point dtype, got int32; convert with "
                                    "x.astype(jnp.float32)"):
        layer.forward((), jnp.zeros(3, jnp.int32))
    _, x = layer.forward((), normal((3,)))
    with raises_exactly(ValueError, f"{name}: dy shape (4,) does not match x shape (3,)"):
        layer.backward((), x, normal((4,)))


@pytest.mark.parametrize("layer", [gelu, gelu_tanh], ids=["gelu", "gelu_tanh"])
def test_gelu_keeps_the_inputs_dtype_with_float64_on(layer):
    """float32 in, float32 out, however many scaled intermediates (x64 is on in this module)."""
    x = jnp.array([-1e4, -30.0, -5.0, -0.5, 0.0, 2.0, 1e4, jnp.inf, -jnp.inf], jnp.float32)
    y, residuals = layer.forward((), x)
    _, dx = layer.backward((), residuals, jnp.ones_like(x))
    assert y.dtype == dx.dtype == jnp.float32
    y64, residuals64 = layer.forward((), x.astype(jnp.float64))
    # float32 underflows at -30; the tanh form's error is a few ulps times 1 + 3|v| (v = -63 at -5)
    np.testing.assert_allclose(y, y64, rtol=2e-5, atol=1e-37)
    np.testing.assert_allclose(dx, layer.backward((), residuals64, jnp.ones(9))[1], rtol=2e-5, atol=1e-37)


def test_gelu_at_zero_and_one_is_the_closed_form():
    """``gelu(1) = Phi(1)``, ``gelu'(0) = 1/2`` for both forms; ``gelu'(1) = Phi(1) + phi(1)``."""
    y, r = gelu.forward((), jnp.array([0.0, 1.0]))
    _, dx = gelu.backward((), r, jnp.ones(2))
    phi_1, cdf_1 = np.exp(-0.5) / np.sqrt(2 * np.pi), 0.8413447460685429
    np.testing.assert_allclose(y, [0.0, cdf_1], rtol=1e-15)
    np.testing.assert_allclose(dx, [0.5, cdf_1 + phi_1], rtol=1e-15)
    y, r = gelu_tanh.forward((), jnp.array([0.0, 1.0]))
    _, dx = gelu_tanh.backward((), r, jnp.ones(2))
    u = np.sqrt(2 / np.pi) * (1 + 0.044715)
    np.testing.assert_allclose(y, [0.0, 0.5 * (1 + np.tanh(u))], rtol=1e-15)
    assert float(dx[0]) == 0.5


def test_masked_entries_and_fully_masked_rows_are_exactly_zero():
    mask = jnp.array([[0.0, -jnp.inf, 0.0], [-jnp.inf, -jnp.inf, -jnp.inf]])
    layer = softmax(-1, mask)
    y, residuals = layer.forward((), normal((2, 3)) * 100)
    _, dx = layer.backward((), residuals, normal((2, 3), 1))
    assert float(y[0, 1]) == 0.0 and float(dx[0, 1]) == 0.0
    np.testing.assert_array_equal(y[1], 0.0)
    np.testing.assert_array_equal(dx[1], 0.0)
    np.testing.assert_allclose(jnp.sum(y[0]), 1.0, rtol=1e-15)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_along_any_axis_of_three_with_a_finite_bias(axis):
    """A mask is added: finite entries shift the scores (a bias), they do not only select."""
    x = normal((2, 3, 4))
    bias = jnp.broadcast_to(jnp.linspace(-2.0, 1.0, x.shape[axis]).reshape([-1 if a == axis % 3 else 1 for a in range(3)]),
                            x.shape)
    for mask in (None, bias):
        layer = softmax(axis, mask)
        assert layer.init(KEY, x.shape) == ((), x.shape)
        y, residuals = layer.forward((), x)
        expected = jax.nn.softmax(x if mask is None else x + mask, axis=axis)
        np.testing.assert_allclose(y, expected, rtol=1e-14)
        dy = normal(x.shape, 1)
        _, dx = layer.backward((), residuals, dy)
        np.testing.assert_allclose(dx, expected * (dy - jnp.sum(expected * dy, axis=axis, keepdims=True)), rtol=1e-12,
                                   atol=1e-15)


def test_softmax_refuses_bad_arguments():
    with raises_exactly(ValueError, "softmax: x must have a floating-point dtype, got int32; convert with "
                                    "x.astype(jnp.float32)"):
        softmax().forward((), jnp.zeros(3, jnp.int32))
    with raises_exactly(ValueError, "softmax: axis must be an int, got 'last'"):
        softmax("last")
    with raises_exactly(ValueError, "softmax: mask must have a floating-point dtype, got bool; convert with "
                                    "mask.astype(jnp.float32)"):
        softmax(-1, jnp.ones((2, 2), bool))
    with raises_exactly(ValueError, "softmax: axis 2 is out of range for x shape (2, 3)"):
        softmax(2).forward((), normal((2, 3)))
    with raises_exactly(ValueError, "softmax: mask shape (3, 3) does not broadcast to x shape (2, 3)"):
        softmax(-1, jnp.zeros((3, 3))).forward((), normal((2, 3)))
    with raises_exactly(ValueError, "softmax: mask shape (2, 3) does not broadcast to x shape (3,)"):
        softmax(-1, jnp.zeros((2, 3))).forward((), normal((3,)))
    y, residuals = softmax().forward((), normal((2, 3)))
    with raises_exactly(ValueError, "softmax: dy shape (3, 2) does not match output shape (2, 3)"):
        softmax().backward((), residuals, normal((3, 2)))


# --- self-attention -----------------------------------------------------------------------------

def attention_params(layer, shape, seed=0):
    params, _ = layer.init(jax.random.PRNGKey(seed), shape, jnp.float64)
    return jax.tree_util.tree_map(lambda a: a + 0.3 * normal(a.shape, seed + 1), params)


def test_the_causal_mask_keeps_later_positions_out():
    """Position i reads positions 0..i: changing a later input leaves its output alone, and the
    gradient of output i reaches inputs 0..i only."""
    layer = causal_self_attention(2)
    params = attention_params(layer, (2, 5, 4))
    x = normal((2, 5, 4), 3)
    y, residuals = layer.forward(params, x)
    y2, _ = layer.forward(params, x.at[:, 3:].add(1.0))
    np.testing.assert_array_equal(y2[:, :3], y[:, :3])
    assert not np.allclose(y2[:, 3:], y[:, 3:])
    _, dx = layer.backward(params, residuals, jnp.zeros_like(y).at[:, 2].set(1.0))
    reached = jnp.abs(dx).sum(axis=(0, 2))
    assert bool(jnp.all(reached[:3] > 0)) and bool(jnp.all(reached[3:] == 0))
    weights = attention_weights(residuals)
    assert float(weights[0, 0, 0, 0]) == 1.0  # the first position attends to itself alone
    np.testing.assert_array_equal(jnp.triu(weights, 1), 0.0)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
def test_the_lean_backward_and_the_plain_one_by_blocks_equal_the_plain_one_in_one_block(block):
    """Seven positions in blocks of ``block`` queries (the last block shorter for 2 and 3): the
    blocks change which products run, not the result."""
    whole = causal_self_attention(2, block=7)
    plain, lean = causal_self_attention(2, block=block), causal_self_attention(2, "lean", block)
    params = attention_params(whole, (2, 7, 4))
    x, dy = normal((2, 7, 4), 3), normal((2, 7, 4), 4)
    y, r_whole = whole.forward(params, x)
    expected = jax.tree_util.tree_leaves(whole.backward(params, r_whole, dy))
    y_plain, r_plain = plain.forward(params, x)
    y_lean, r_lean = lean.forward(params, x)
    assert len(r_plain.weights) == -(-7 // block)
    np.testing.assert_allclose(y_plain, y, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(y_lean, y, rtol=1e-13, atol=1e-14)
    for grads in (plain.backward(params, r_plain, dy), lean.backward(params, r_lean, dy)):
        for a, b in zip(jax.tree_util.tree_leaves(grads), expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(attention_weights(r_plain), attention_weights(r_whole), rtol=1e-13, atol=1e-16)
    weights = jnp.exp(jnp.einsum("nhid,nhjd->nhij", r_lean.q, r_lean.k) / jnp.sqrt(2.0)
                      + causal_mask(7, jnp.float64)[None, None] - r_lean.logsumexp[..., None])
    np.testing.assert_allclose(weights, attention_weights(r_plain), rtol=1e-12, atol=1e-15)  # l is the row's log-sum-exp


def test_the_lean_forward_takes_each_querys_own_maximum():
    """A query whose scores are thousands above the others' (one position's input 100 times
    larger): with one maximum for all, every other row's exponentials would underflow to 0."""
    plain, lean = causal_self_attention(2), causal_self_attention(2, "lean", 2)
    params = attention_params(plain, (2, 5, 4))
    x = normal((2, 5, 4), 3).at[:, 3].multiply(100.0)
    y, r_plain = plain.forward(params, x)
    assert float(jnp.max(attention_weights(r_plain))) == 1.0  # row 3 is one-hot: its scores span thousands
    y_lean, r_lean = lean.forward(params, x)
    np.testing.assert_allclose(y_lean, y, rtol=1e-12, atol=1e-12)
    assert bool(jnp.all(jnp.isfinite(r_lean.logsumexp)))


def test_the_lean_forward_keeps_no_weights():
    lean = causal_self_attention(2, "lean")
    params = attention_params(lean, (1, 6, 4))
    _, residuals = lean.forward(params, normal((1, 6, 4)))
    assert max(a.size for a in jax.tree_util.tree_leaves(residuals)) < 1 * 2 * 6 * 6 * 3


def test_the_attention_runs_blocks_of_64_queries_by_default_in_the_layer_the_block_and_the_gpt():
    """The default block, which the docs' memory and time figures assume: 130 positions make
    blocks of 64, 64 and 2."""
    x = normal((1, 130, 4))  # shapes only: jax.eval_shape runs no computation
    layer = causal_self_attention(2)
    _, residuals = jax.eval_shape(layer.forward, layer.init(KEY, x.shape)[0], x)
    assert [p.shape[2] for p in residuals.weights] == [64, 64, 2]
    block = transformer_block(2)
    _, residuals = jax.eval_shape(block.forward, block.init(KEY, x.shape)[0], x)
    assert [p.shape[2] for p in residuals[1].weights] == [64, 64, 2]
    net = gpt(5, 130, layers=1, heads=2, width=4)
    _, residuals = jax.eval_shape(net.forward, net.init(KEY, (1, 130))[0], jnp.zeros((1, 130), jnp.int32))
    assert [p.shape[2] for p in residuals[1][0][1].weights] == [64, 64, 2]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("backward", ["plain", "lean"])
def test_self_attention_keeps_the_dtype_asked_with_float64_on(dtype, backward):
    """x64 is on in this module: every weight, the output and every gradient stay in the dtype
    asked (a float64 or float32 mask or initializer would promote them)."""
    layer = causal_self_attention(2, backward, block=2)
    params, _ = layer.init(KEY, (2, 3, 4), dtype)
    assert {a.dtype for a in jax.tree_util.tree_leaves(params)} == {jnp.dtype(dtype)}
    y, residuals = layer.forward(params, normal((2, 3, 4)).astype(dtype))
    grads, dx = layer.backward(params, residuals, y)
    assert {a.dtype for a in jax.tree_util.tree_leaves((y, grads, dx))} == {jnp.dtype(dtype)}


def test_self_attention_draws_its_weights_from_a_normal_of_std_0_02_by_default():
    params, _ = causal_self_attention(2).init(KEY, (1, 2, 64))
    for weights in (params["qkv"]["W"], params["out"]["W"]):
        assert 0.018 < float(jnp.std(weights)) < 0.022
    for bias in (params["qkv"]["b"], params["out"]["b"]):
        np.testing.assert_array_equal(bias, 0.0)


def test_self_attention_refuses_bad_arguments():
    for kwargs, message in (({"heads": 0}, "heads must be a positive int, got 0"),
                            ({"heads": True}, "heads must be a positive int, got True"),
                            ({"heads": 2.0}, "heads must be a positive int, got 2.0"),
                            ({"heads": 2, "block": True}, "block must be a positive int, got True"),
                            ({"heads": 2, "block": 2.0}, "block must be a positive int, got 2.0"),
                            ({"heads": 2, "backward": "flash"}, "backward must be one of ('plain', 'lean'), got 'flash'"),
                            ({"heads": 2, "block": 0}, "block must be a positive int, got 0")):
        with raises_exactly(ValueError, f"causal_self_attention: {message}"):
            causal_self_attention(**kwargs)
    layer = causal_self_attention(3)
    with raises_exactly(ValueError, "causal_self_attention: the width D = 4 must be a multiple of heads = 3 (each head "
                                    "takes D / heads features)"):
        layer.init(KEY, (2, 5, 4))
    with raises_exactly(ValueError, "causal_self_attention: in_shape must be (batch, time, features), got (2, 4)"):
        layer.init(KEY, (2, 4))
    layer = causal_self_attention(2)
    params = attention_params(layer, (2, 5, 4))
    with raises_exactly(ValueError, "causal_self_attention: params must be a dict with keys ['out', 'qkv'], got ['qkv']"):
        layer.forward({"qkv": params["qkv"]}, normal((2, 5, 4)))
    with raises_exactly(ValueError, "causal_self_attention: params must be a dict with keys ['out', 'qkv'], got tuple"):
        layer.forward((params["qkv"], params["out"]), normal((2, 5, 4)))
    with raises_exactly(ValueError, "causal_self_attention: x must have a floating-point dtype, got int32; convert with "
                                    "x.astype(jnp.float32)"):
        layer.forward(params, jnp.zeros((2, 5, 4), jnp.int32))
    with raises_exactly(ValueError, "causal_self_attention: x must have 3 axes, got shape (5, 4) (batch, time, features)"):
        layer.forward(params, normal((5, 4)))
    with raises_exactly(ValueError, "causal_self_attention: x has no sequence or no position (shape (2, 0, 4)); give "
                                    "N, T >= 1"):
        layer.forward(params, normal((2, 0, 4)))
    with raises_exactly(ValueError, "causal_self_attention: qkv W shape (4, 12) does not match x shape (2, 5, 6); "
                                    "expected (D, 3D) = (6, 18)"):
        layer.forward(params, normal((2, 5, 6)))
    with raises_exactly(ValueError, "causal_self_attention: out W shape (4, 3) does not match x shape (2, 5, 4); "
                                    "expected (D, D) = (4, 4)"):
        layer.forward({**params, "out": {"W": params["out"]["W"][:, :3], "b": params["out"]["b"]}}, normal((2, 5, 4)))
    for backward in ("plain", "lean"):
        layer = causal_self_attention(2, backward)
        _, residuals = layer.forward(params, normal((2, 5, 4)))
        with raises_exactly(ValueError, "causal_self_attention: dy shape (2, 4, 4) does not match output shape "
                                        "(2, 5, 4)"):
            layer.backward(params, residuals, normal((2, 4, 4)))


# --- the block and the GPT --------------------------------------------------------------------

def test_a_block_with_zero_projections_is_the_identity_and_passes_dy_through():
    """The residual's identity path: with the attention's ``out`` and the MLP's ``proj`` at 0
    the block returns ``x`` and its ``dx`` is ``dy`` exactly."""
    block = transformer_block(2, activation="gelu", out_init=jax.nn.initializers.zeros)
    params, _ = block.init(KEY, (2, 3, 4), jnp.float64)
    x, dy = normal((2, 3, 4)), normal((2, 3, 4), 1)

    @jax.jit  # one compilation, not one per operation
    def both(params, x, dy):
        y, residuals = block.forward(params, x)
        return y, block.backward(params, residuals, dy)

    y, (grads, dx) = both(params, x, dy)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, dy)
    assert float(jnp.abs(grads["proj"]["W"]).sum()) > 0  # proj itself still learns


def constant(value):
    return lambda key, shape, dtype: jnp.full(shape, value, dtype)


def test_a_block_draws_each_weight_from_its_initializer_in_the_dtype_asked():
    """In the dtype asked, whatever the defaults: the weights read from the residual stream
    (qkv, fc) from ``w_init``, those written into it (out, proj) from ``out_init``, biases 0,
    layer norms 1 and 0; the MLP ``mlp_ratio`` times as wide."""
    for ratio, dtype in ((1, jnp.float32), (3, jnp.float64)):  # float32: not JAX's default with x64 on;
        block = transformer_block(2, mlp_ratio=ratio, w_init=constant(0.5), out_init=constant(0.25))
        params, out_shape = block.init(KEY, (2, 3, 4), dtype)  # float64: not the layers' default
        assert out_shape == (2, 3, 4)
        assert {jax.tree_util.keystr(k): (a.shape, a.dtype) for k, a in jax.tree_util.tree_flatten_with_path(params)[0]} \
            == {"['attn']['out']['W']": ((4, 4), dtype), "['attn']['out']['b']": ((4,), dtype),
                "['attn']['qkv']['W']": ((4, 12), dtype), "['attn']['qkv']['b']": ((12,), dtype),
                "['fc']['W']": ((4, 4 * ratio), dtype), "['fc']['b']": ((4 * ratio,), dtype),
                "['ln_1']['beta']": ((4,), dtype), "['ln_1']['gamma']": ((4,), dtype),
                "['ln_2']['beta']": ((4,), dtype), "['ln_2']['gamma']": ((4,), dtype),
                "['proj']['W']": ((4 * ratio, 4), dtype), "['proj']['b']": ((4,), dtype)}
        for name in ("qkv", "out"):
            np.testing.assert_array_equal(params["attn"][name]["W"], 0.5 if name == "qkv" else 0.25)
            np.testing.assert_array_equal(params["attn"][name]["b"], 0.0)
        np.testing.assert_array_equal(params["fc"]["W"], 0.5)
        np.testing.assert_array_equal(params["proj"]["W"], 0.25)
        for name in ("fc", "proj"):
            np.testing.assert_array_equal(params[name]["b"], 0.0)
        for name in ("ln_1", "ln_2"):
            np.testing.assert_array_equal(params[name]["gamma"], 1.0)
            np.testing.assert_array_equal(params[name]["beta"], 0.0)


def test_a_block_by_default_has_a_4x_mlp_and_gpt2_weights():
    params, _ = transformer_block(2).init(KEY, (1, 2, 64))
    assert params["fc"]["W"].shape == (64, 256) and params["proj"]["W"].shape == (256, 64)
    for leaf in (params["fc"]["W"], params["proj"]["W"], params["attn"]["qkv"]["W"], params["attn"]["out"]["W"]):
        assert 0.018 < float(jnp.std(leaf)) < 0.022


def test_a_block_passes_its_activation_and_its_attentions_backward_and_block_on_and_so_does_the_gpt():
    x = normal((2, 3, 4))
    exact, tanh_form = transformer_block(2, activation="gelu"), transformer_block(2)
    params, _ = exact.init(KEY, x.shape, jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.5 * normal(a.shape, 5), params)
    y_exact, y_tanh = exact.forward(params, x)[0], tanh_form.forward(params, x)[0]
    assert 1e-6 < float(jnp.max(jnp.abs(y_exact - y_tanh))) < 1e-1  # close, not equal: two GELUs
    _, residuals = transformer_block(2, attention_backward="lean").forward(params, x)
    assert type(residuals[1]).__name__ == "LeanResiduals"
    for block, blocks in ((1, 3), (2, 2), (64, 1)):
        _, residuals = jax.eval_shape(transformer_block(2, attention_block=block).forward, params, x)
        assert len(residuals[1].weights) == blocks
    _, residuals = jax.eval_shape(gpt(5, 3, layers=1, heads=2, width=4, attention_block=1).forward,
                                  gpt(5, 3, layers=1, heads=2, width=4).init(KEY, (2, 3))[0], jnp.zeros((2, 3), jnp.int32))
    assert len(residuals[1][0][1].weights) == 3


def test_the_block_and_the_gpt_refuse_bad_arguments():
    with raises_exactly(ValueError, "transformer_block: mlp_ratio must be a positive int, got True"):
        transformer_block(2, mlp_ratio=True)
    with raises_exactly(ValueError, "transformer_block: params must be a dict with keys ['attn', 'fc', 'ln_1', 'ln_2', "
                                    "'proj'], got tuple"):
        transformer_block(2).forward((), normal((1, 2, 4)))
    with raises_exactly(ValueError, "transformer_block: mlp_ratio must be a positive int, got 0"):
        transformer_block(2, mlp_ratio=0)
    with raises_exactly(ValueError, "transformer_block: activation must be one of ['gelu', 'gelu_tanh'], got 'relu'"):
        transformer_block(2, activation="relu")
    block = transformer_block(2)
    with raises_exactly(ValueError, "transformer_block: in_shape must be (batch, time, features), got (3, 4)"):
        block.init(KEY, (3, 4))
    params, _ = block.init(KEY, (1, 2, 4))
    with raises_exactly(ValueError, "transformer_block: params must be a dict with keys ['attn', 'fc', 'ln_1', 'ln_2', "
                                    "'proj'], got ['attn']"):
        block.forward({"attn": params["attn"]}, normal((1, 2, 4), dtype=jnp.float32))
    with raises_exactly(ValueError, "gpt: layers must be a positive int, got 0"):
        gpt(5, 4, layers=0)
    with raises_exactly(ValueError, "gpt: width = 6 must be a multiple of heads = 4"):
        gpt(5, 4, width=6)
    net = gpt(5, 4, layers=1, heads=2, width=4)
    with raises_exactly(ValueError, "gpt: in_shape must be (batch, T) with 1 <= T <= context = 4, got (2, 5)"):
        net.init(KEY, (2, 5))
    params, _ = net.init(KEY, (2, 3))
    ids = jnp.zeros((2, 3), jnp.int32)
    with raises_exactly(ValueError, "gpt: params['blocks'] must hold 1 blocks, got 0"):
        net.forward({**params, "blocks": ()}, ids)
    with raises_exactly(ValueError, "gpt: params must be a dict with keys ['blocks', 'ln_f', 'pe', 'te'], got ['te']"):
        net.forward({"te": params["te"]}, ids)
    with raises_exactly(ValueError, "gpt: ids must have 2 axes, got shape (3,) (batch, T): a window of ids per sequence"):
        net.forward(params, ids[0])
    with raises_exactly(ValueError, "gpt: te W shape (5, 6) does not match pe W shape (4, 4): both need the width 4"):
        net.forward({**params, "te": {"W": jnp.zeros((5, 6))}}, ids)
    _, residuals = net.forward(params, ids)
    with raises_exactly(ValueError, "gpt: dscores shape (2, 3, 4) does not match the scores' shape (2, 3, 5)"):
        net.backward(params, residuals, jnp.zeros((2, 3, 4)))


def test_positions_past_the_window_get_exactly_zero_gradient():
    net = gpt(5, 6, layers=1, heads=2, width=4)
    params, _ = net.init(KEY, (2, 4), jnp.float64)
    ids = jnp.array([[0, 1, 2, 3], [4, 3, 2, 1]])
    grads = jax.jit(lambda p, d: net.backward(p, net.forward(p, ids)[1], d)[0])(params, normal((2, 4, 5)))
    np.testing.assert_array_equal(grads["pe"]["W"][4:], 0.0)
    assert bool(jnp.all(jnp.abs(grads["pe"]["W"][:4]).sum(-1) > 0))
