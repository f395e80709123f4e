"""Chapter 7 beyond the registry: max pooling's tie convention, the three conv formulations
against each other, ``method="auto"``'s rule, the remainder row, batch 1, He init for OIHW,
the pooling output size with padding, and the error messages."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import optax

import reference.conv as ref7
from pure_backprop import gradcheck, serial
from pure_backprop.layers import avg_pool2d, conv2d, flatten, max_pool2d, softmax_cross_entropy
from pure_backprop.layers.conv2d import auto_plan
from pure_backprop.core import StatefulLayer
from pure_backprop.network import deep_conv_net, simple_conv_net
from pure_backprop.registry import _he_jittered
from pure_backprop.train import make_train_step


def _params(layer, in_shape, seed=0):
    params, out_shape = layer.init(jax.random.PRNGKey(seed), in_shape, jnp.float64)
    return {"W": params["W"], "b": jnp.linspace(-1.0, 1.0, params["b"].shape[0])}, out_shape


def _hand(layer, params, x, dy):
    y, residuals = layer.forward(params, x)
    return (y,) + tuple(jax.tree_util.tree_leaves(layer.backward(params, residuals, dy)))


# --- max pooling ties ---------------------------------------------------------------------

def test_a_tie_sends_the_whole_gradient_to_the_first_maximum_like_reduce_window():
    x = jnp.array([[[[1.0, 5.0, 2.0, 0.0],
                     [5.0, 3.0, 7.0, 7.0],
                     [0.0, 4.0, 4.0, 1.0],
                     [4.0, 4.0, 1.0, 4.0]]]])
    dy = jnp.array([[[[10.0, 20.0], [30.0, 40.0]]]])
    y, residuals = max_pool2d(2).forward((), x)
    _, dx = max_pool2d(2).backward((), residuals, dy)
    expected = jnp.zeros((1, 1, 4, 4)).at[0, 0, 0, 1].set(10.0).at[0, 0, 1, 2].set(20.0)
    expected = expected.at[0, 0, 2, 1].set(30.0).at[0, 0, 2, 2].set(40.0)  # every window holds a tie
    np.testing.assert_array_equal(y, [[[[5.0, 7.0], [4.0, 4.0]]]])
    np.testing.assert_array_equal(dx, expected)
    _, vjp = jax.vjp(lambda v: ref7.max_pool2d(2)((), v), x)
    np.testing.assert_array_equal(dx, vjp(dy)[0])
    # jnp.max over reshaped windows splits a tie: the wrong oracle
    split = jax.grad(lambda v: jnp.sum(v.reshape(2, 2, 2, 2).max(axis=(1, 3)) * dy[0, 0]))(x[0, 0])
    assert split[0, 1] == 5.0 and split[1, 0] == 5.0


def test_ties_in_overlapping_padded_windows_match_reduce_window():
    x = jnp.round(jax.random.normal(jax.random.PRNGKey(3), (2, 2, 7, 6)))  # many ties
    dy = jax.random.normal(jax.random.PRNGKey(4), (2, 2, 4, 7))
    layer = max_pool2d((3, 2), stride=(2, 1), padding=1)
    _, residuals = layer.forward((), x)
    _, vjp = jax.vjp(lambda v: ref7.max_pool2d((3, 2), (2, 1), 1)((), v), x)
    np.testing.assert_allclose(layer.backward((), residuals, dy)[1], vjp(dy)[0], rtol=1e-14, atol=1e-14)


def test_the_checker_counts_a_tie_as_a_kink_not_a_failure():
    x = jnp.array([[[[1.0, 3.0], [3.0, 0.0]]]])
    report = gradcheck.check(max_pool2d(2), (), x, mode="full")
    assert report.ok, str(report)
    assert report.kinks >= 1, str(report)


def test_max_pool_sends_an_all_minus_inf_window_to_its_first_real_entry_not_to_the_padding():
    # windows that cover padding and hold only -inf entries of x: y is -inf, and the first -inf
    # of x (row-major) gets dy; reduce_window's gradient sends it to the padding, where it is lost
    x = jnp.array([[[[-jnp.inf, 1.0, -jnp.inf],
                     [-jnp.inf, -jnp.inf, -jnp.inf],
                     [-jnp.inf, -jnp.inf, -jnp.inf]]]])
    dy = jnp.array([[[[10.0, 20.0], [30.0, 40.0]]]])
    layer = max_pool2d(2, 2, 1)
    y, residuals = layer.forward((), x)
    np.testing.assert_array_equal(y, [[[[-jnp.inf, 1.0], [-jnp.inf, -jnp.inf]]]])
    _, dx = layer.backward((), residuals, dy)
    expected = jnp.zeros((1, 1, 3, 3)).at[0, 0, 0, 0].set(10.0).at[0, 0, 0, 1].set(20.0)
    expected = expected.at[0, 0, 1, 0].set(30.0).at[0, 0, 1, 1].set(40.0)
    np.testing.assert_array_equal(dx, expected)
    _, vjp = jax.vjp(lambda v: ref7.max_pool2d(2, 2, 1)((), v), x)
    assert float(jnp.sum(vjp(dy)[0])) < float(jnp.sum(dy))  # the oracle loses what fell on the padding
    # overlapping windows on both axes, padding (1, 2): every dy lands on x, on the first -inf of its window
    x = jnp.full((2, 1, 4, 5), -jnp.inf).at[1, 0, 2, 3].set(0.5)
    layer = max_pool2d((2, 3), stride=1, padding=(1, 2))
    y, residuals = layer.forward((), x)
    dy = jnp.arange(1.0, 1.0 + y.size).reshape(y.shape)
    _, dx = layer.backward((), residuals, dy)
    assert y.shape == (2, 1, 5, 7) and bool(jnp.all(y[0] == -jnp.inf))
    np.testing.assert_allclose(jnp.sum(dx, axis=(1, 2, 3)), jnp.sum(dy, axis=(1, 2, 3)), rtol=0)
    i, j = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    first = np.zeros((4, 5))
    np.add.at(first, (np.maximum(i - 1, 0), np.maximum(j - 2, 0)), np.asarray(dy[0, 0]))
    np.testing.assert_array_equal(dx[0, 0], first)


# --- the three formulations of conv2d -----------------------------------------------------

SHAPES = [  # (x shape, filters, kernel, stride, padding); the registry has stride 1, padding 1
    ((1, 2, 9, 8), 3, 3, 2, (2, 0)),
    ((2, 1, 15, 15), 2, 4, 3, 1),        # (15 + 2 - 4) % 3 = 1: a remainder row and column
    ((3, 4, 6, 7), 5, (1, 3), (2, 3), (2, 4)),   # padding >= kernel: negative padding in dx
]


@pytest.mark.parametrize("x_shape,filters,kernel,stride,padding", SHAPES)
def test_the_four_formulations_agree_with_each_other_and_with_jax_vjp(x_shape, filters, kernel, stride, padding):
    x = jax.random.normal(jax.random.PRNGKey(1), x_shape)
    params, out_shape = _params(conv2d(filters, kernel, stride, padding), x_shape)
    dy = jax.random.normal(jax.random.PRNGKey(2), out_shape)
    results = {m: _hand(conv2d(filters, kernel, stride, padding, method=m), params, x, dy)
               for m in ("im2col", "conv", "mixed", "offsets")}
    y, vjp = jax.vjp(ref7.conv2d(stride, padding), params, x)
    (expected_grads, expected_dx) = vjp(dy)
    expected = (y, expected_grads["W"], expected_grads["b"], expected_dx)
    for method, got in results.items():
        for a, b in zip(got, expected):
            assert a.shape == b.shape, method
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=method)


def test_the_remainder_rows_receive_their_gradient():
    # 15x15, kernel 4, stride 3, padding 1: windows start at rows -1, 2, ..., 11 and end at row
    # 14, the last real row: without the remainder r = 1 the conv form would drop it.
    x_shape = (1, 1, 15, 15)
    for method in ("conv", "im2col"):
        layer = conv2d(1, 4, stride=3, padding=1, method=method)
        params, out_shape = _params(layer, x_shape)
        assert out_shape == (1, 1, 5, 5)
        _, residuals = layer.forward(params, jnp.ones(x_shape))
        _, dx = layer.backward(params, residuals, jnp.ones(out_shape))
        assert dx.shape == x_shape
        assert jnp.all(dx[0, 0, 14, :14] != 0), method
        _, vjp = jax.vjp(lambda v: ref7.conv2d(3, 1)(params, v), jnp.ones(x_shape))
        np.testing.assert_allclose(dx, vjp(jnp.ones(out_shape))[0], rtol=1e-13)


def test_batch_of_one_equals_the_rows_of_a_larger_batch():
    layer = conv2d(3, 3, stride=2, padding=1)
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 2, 7, 6))
    params, out_shape = _params(layer, x.shape)
    dy = jax.random.normal(jax.random.PRNGKey(6), out_shape)
    y, dW, db, dx = _hand(layer, params, x, dy)
    singles = [_hand(layer, params, x[n:n + 1], dy[n:n + 1]) for n in range(4)]
    np.testing.assert_allclose(jnp.concatenate([s[0] for s in singles]), y, rtol=1e-13)
    np.testing.assert_allclose(jnp.concatenate([s[3] for s in singles]), dx, rtol=1e-13)
    np.testing.assert_allclose(sum(s[1] for s in singles), dW, rtol=1e-12)
    np.testing.assert_allclose(sum(s[2] for s in singles), db, rtol=1e-12)


# --- method="auto" -------------------------------------------------------------------------

@pytest.mark.parametrize("w_shape,padding,plan", [
    ((30, 1, 5, 5), (0, 0), "im2col"),      # SimpleConvNet: K = 25
    ((16, 1, 3, 3), (1, 1), "im2col"),      # DeepConvNet's first layer: K = 9
    ((16, 3, 3, 3), (1, 1), "im2col"),      # K = 27, an RGB input
    ((16, 16, 3, 3), (1, 1), "conv"),       # K = 144
    ((32, 16, 3, 3), (1, 1), "conv"),       # the stride does not enter the rule
    ((32, 32, 3, 3), (2, 2), "offsets"),    # DeepConvNet's pad-2 layer: over-padded
    ((16, 16, 5, 5), (2, 2), "conv"),       # 2 * 2 = 5 - 1: output as large as the input, not larger
    ((16, 16, 5, 5), (3, 2), "offsets"),
])
def test_auto_picks_what_the_docstring_says(w_shape, padding, plan):
    assert auto_plan(w_shape, padding) == plan
    layer = conv2d(w_shape[0], w_shape[2:], padding=padding)
    params, _ = layer.init(jax.random.PRNGKey(0), (2, w_shape[1], 9, 9))
    _, (_, col) = layer.forward(params, jnp.ones((2, w_shape[1], 9, 9)))
    assert (col is not None) == (plan in ("im2col", "mixed"))  # only the im2col paths build col


def test_auto_plan_takes_an_int_padding_as_conv2d_does():
    assert auto_plan((32, 32, 3, 3), 2) == auto_plan((32, 32, 3, 3), (2, 2)) == "offsets"
    assert auto_plan((16, 16, 3, 3), 1) == "conv" and auto_plan((16, 1, 3, 3), 0) == "im2col"
    assert auto_plan((16, 16, 5, 5), [3, 2]) == "offsets"
    for bad in (-1, (1, -1), (1, 1, 1), 1.0, True, "1", None):
        with pytest.raises(ValueError, match=r"^conv2d: padding must be a non-negative int or a pair of "
                                             r"non-negative ints, got " + re.escape(repr(bad)) + "$"):
            auto_plan((16, 16, 3, 3), bad)
        with pytest.raises(ValueError, match=r"^conv2d: padding must be"):
            conv2d(4, 3, padding=bad)


# --- init ----------------------------------------------------------------------------------

def test_he_init_uses_the_oihw_fan_in():
    params, out_shape = conv2d(64, 3, padding=1).init(jax.random.PRNGKey(0), (-1, 16, 28, 28))
    assert out_shape == (-1, 64, 28, 28)
    assert params["W"].shape == (64, 16, 3, 3) and params["W"].dtype == jnp.float32
    expected = np.sqrt(2.0 / (16 * 3 * 3))
    assert abs(float(jnp.std(params["W"])) / expected - 1) < 0.05
    assert abs(float(jnp.mean(params["W"]))) < 0.05 * expected
    np.testing.assert_array_equal(params["b"], jnp.zeros(64))
    # jax's he_normal() reads the kernel as HWIO: fan_in = 64 * 16 * 3, a std about 4.5x too small
    wrong = jax.nn.initializers.he_normal()(jax.random.PRNGKey(0), (64, 16, 3, 3))
    assert float(jnp.std(wrong)) < 0.3 * expected


# --- shapes of pooling and flatten ---------------------------------------------------------

def test_pooling_output_size_counts_the_padding():
    # the book's Pooling computes (H - 2) // 2 + 1 = 3 rows for pad=1 and then fails
    for layer in (max_pool2d(2, 2, 1), avg_pool2d(2, 2, 1)):
        _, out_shape = layer.init(None, (-1, 3, 7, 6))
        assert out_shape == (-1, 3, 4, 4)
        assert layer.forward((), jnp.ones((2, 3, 7, 6)))[0].shape == (2, 3, 4, 4)
    assert max_pool2d(3).init(None, (1, 1, 7, 6))[1] == (1, 1, 2, 2)  # stride defaults to the window


def test_avg_pool_divides_by_the_window_area_padding_included():
    x = jnp.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    y, _ = avg_pool2d(2, 2, 1).forward((), x)
    assert float(y[0, 0, 0, 0]) == 1.0 / 4          # one real entry and three zeros of padding
    assert float(y[0, 0, 1, 1]) == (6 + 7 + 10 + 11) / 4


def test_flatten_round_trip_and_shapes_through_a_small_network():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 5))
    y, residuals = flatten.forward((), x)
    assert y.shape == (2, 60) and flatten.init(None, (-1, 3, 4, 5))[1] == (-1, 60)
    np.testing.assert_array_equal(flatten.backward((), residuals, y)[1], x)
    net = serial(conv2d(4, 3, padding=1), max_pool2d(2), avg_pool2d(2, 1, 1), flatten)
    params, out_shape = net.init(jax.random.PRNGKey(1), (-1, 3, 4, 5))
    assert out_shape == (-1, 4 * 3 * 3)
    y, residuals = net.forward(params, x)
    grads, dx = net.backward(params, residuals, jnp.ones_like(y))
    assert y.shape == (2, 36) and dx.shape == x.shape and grads[0]["W"].shape == (4, 3, 3, 3)


# --- SimpleConvNet and the deep CNN: shapes, and training steps against jax.grad -------------

BOOK_PADDINGS = (1, 1, 1, 2, 1, 1)  # the book's DeepConvNet on MNIST: 28 -> 14 -> 16 -> 8 -> 4
NETWORKS = [  # (id, network, its reference's forward given the step's key, input shape, weight shapes)
    ("simple-28", simple_conv_net(), lambda key: ref7.simple_conv_net, (2, 1, 28, 28),
     [(30, 1, 5, 5), (30,), (30 * 12 * 12, 100), (100,), (100, 10), (10,)]),
    ("simple-8", simple_conv_net(), lambda key: ref7.simple_conv_net, (2, 1, 8, 8),
     [(30, 1, 5, 5), (30,), (30 * 2 * 2, 100), (100,), (100, 10), (10,)]),
    ("deep-8", deep_conv_net(), lambda key: ref7.deep_conv_net(((16, 16), (32, 32), (64, 64)), (1,) * 6, 0.5, key),
     (2, 1, 8, 8), [(16, 1, 3, 3), (16,), (16, 16, 3, 3), (16,), (32, 16, 3, 3), (32,), (32, 32, 3, 3), (32,),
                    (64, 32, 3, 3), (64,), (64, 64, 3, 3), (64,), (64 * 1 * 1, 50), (50,), (50, 10), (10,)]),
    ("deep-28-book", deep_conv_net(paddings=BOOK_PADDINGS),
     lambda key: ref7.deep_conv_net(((16, 16), (32, 32), (64, 64)), BOOK_PADDINGS, 0.5, key),
     (2, 1, 28, 28), [(16, 1, 3, 3), (16,), (16, 16, 3, 3), (16,), (32, 16, 3, 3), (32,), (32, 32, 3, 3), (32,),
                      (64, 32, 3, 3), (64,), (64, 64, 3, 3), (64,), (64 * 4 * 4, 50), (50,), (50, 10), (10,)]),
]


def _init(net, in_shape, key):
    """``(params, state, out_shape)`` for a ``Layer`` or a ``StatefulLayer`` (state ``()`` for a ``Layer``)."""
    out = net.init(key, in_shape)
    return (out[0], (), out[1]) if len(out) == 2 else out


@pytest.mark.parametrize("name,net,reference,in_shape,weights", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_conv_nets_init_to_the_documented_shapes(name, net, reference, in_shape, weights):
    out_shape = {}

    def shapes(key):  # abstract: no weights are drawn
        params, _, out_shape["y"] = _init(net, (-1,) + in_shape[1:], key)
        return params

    params = jax.eval_shape(shapes, jax.random.PRNGKey(0))
    assert out_shape["y"] == (-1, 10)
    assert [leaf.shape for leaf in jax.tree_util.tree_leaves(params)] == weights


@pytest.mark.parametrize("name,net,reference,in_shape,weights", NETWORKS[1:3], ids=[n[0] for n in NETWORKS[1:3]])
def test_conv_nets_init_in_the_dtype_asked_for_float32_by_default(name, net, reference, in_shape, weights):
    shape = (-1,) + in_shape[1:]
    for args, dtype in [((), jnp.float32), ((jnp.float64,), jnp.float64), ((jnp.float32,), jnp.float32)]:
        out = jax.eval_shape(lambda k: net.init(k, shape, *args)[:-1], jax.random.PRNGKey(0))  # abstract: no draws
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(out)} == {jnp.dtype(dtype)}
    params = jax.eval_shape(lambda k: net.init(k, shape, dtype=jnp.float64)[0], jax.random.PRNGKey(0))
    assert [leaf.shape for leaf in jax.tree_util.tree_leaves(params)] == weights


@pytest.mark.parametrize("name,net,reference,in_shape,weights", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_conv_net_training_steps_match_jax_grad_of_the_reference(name, net, reference, in_shape, weights):
    """Three SGD steps in float64: the hand step (``make_train_step``: hand backward) and the
    step with ``jax.grad`` of the independent reference forward, dropout masks from the same key."""
    # He weights and biases of std 0.1 from one normal draw (net.init draws each leaf apart, and
    # each draw of a new shape costs a compilation); both networks keep no state (dropout has none)
    structure, state = jax.eval_shape(lambda k: _init(net, in_shape, k)[:2], jax.random.PRNGKey(0))
    n = sum(leaf.size for leaf in jax.tree_util.tree_leaves(structure))
    params, _ = _he_jittered(jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.float64), structure)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(jax.random.PRNGKey(1), in_shape, jnp.float64)
    labels = jnp.arange(in_shape[0]) % 10
    optimizer = optax.sgd(0.1)
    hand_step = make_train_step(net, softmax_cross_entropy, optimizer)

    @jax.jit
    def oracle_step(p, key):
        loss, grads = jax.value_and_grad(lambda q: reference(key)(q, x, labels))(p)
        return jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, p, grads), loss

    hand, oracle, opt_state = params, params, optimizer.init(params)
    for i in range(3):
        key = jax.random.PRNGKey(10 + i)
        if not isinstance(net, StatefulLayer):
            hand, opt_state, hand_loss = hand_step(hand, opt_state, (x, labels))
        else:
            hand, state, opt_state, hand_loss = hand_step(hand, state, opt_state, key, (x, labels))
        oracle, oracle_loss = oracle_step(oracle, key)
        np.testing.assert_allclose(hand_loss, oracle_loss, rtol=1e-9)
        for a, b in zip(jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(oracle)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert not np.allclose(jax.tree_util.tree_leaves(hand)[0], jax.tree_util.tree_leaves(params)[0])  # it moved


# --- errors --------------------------------------------------------------------------------

def test_construction_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"conv2d: filters must be a positive int, got 0"):
        conv2d(0, 3)
    with pytest.raises(ValueError, match=r"conv2d: stride must be a positive int or a pair of positive ints, got 0"):
        conv2d(4, 3, stride=0)
    with pytest.raises(ValueError, match=r"conv2d: padding must be a non-negative int or a pair .* got \(1, -1\)"):
        conv2d(4, 3, padding=(1, -1))
    with pytest.raises(ValueError, match=r"conv2d: kernel_size must be a positive int .* got \(3, 3, 3\)"):
        conv2d(4, (3, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d: method must be one of .* got 'fft'"):
        conv2d(4, 3, method="fft")
    with pytest.raises(ValueError, match=r"max_pool2d: padding \(2, 2\) must be smaller than the window \(2, 2\)"):
        max_pool2d(2, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool2d: stride must be a positive int .* got \(2, 0\)"):
        avg_pool2d(2, stride=(2, 0))


def test_shape_errors_name_the_shapes_eagerly_and_under_jit():
    layer = conv2d(4, 3, padding=1)
    params, _ = layer.init(jax.random.PRNGKey(0), (-1, 3, 8, 8))
    for forward in (layer.forward, jax.jit(layer.forward)):
        with pytest.raises(ValueError, match=r"conv2d: input has 2 channels but W expects 3 "
                                             r"\(x.shape=\(1, 2, 8, 8\), W.shape=\(4, 3, 3, 3\)\)"):
            forward(params, jnp.ones((1, 2, 8, 8)))
        with pytest.raises(ValueError, match=r"conv2d: x must have 4 axes, got shape \(3, 8, 8\) \(N, C, H, W\)"):
            forward(params, jnp.ones((3, 8, 8)))
    with pytest.raises(ValueError, match=r"conv2d: kernel \(5, 5\) is larger than the padded input \(4, 6\) "
                                         r"\(in_shape \(-1, 1, 2, 4\), padding \(1, 1\)\)"):
        conv2d(2, 5, padding=1).init(jax.random.PRNGKey(0), (-1, 1, 2, 4))
    with pytest.raises(ValueError, match=r"conv2d: kernel \(3, 3\) is larger than the padded input \(2, 2\)"):
        conv2d(4, 3).forward({"W": jnp.ones((4, 3, 3, 3)), "b": jnp.ones(4)}, jnp.ones((1, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"conv2d: W has kernel \(3, 3\) but the layer was built with kernel_size \(5, 5\)"):
        conv2d(4, 5).forward(params, jnp.ones((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"conv2d: b shape \(3,\) does not match W shape \(4, 3, 3, 3\); expected \(4,\)"):
        layer.forward({"W": params["W"], "b": jnp.ones(3)}, jnp.ones((1, 3, 8, 8)))
    y, residuals = layer.forward(params, jnp.ones((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"conv2d: dy shape \(1, 4, 7, 8\) does not match output shape \(1, 4, 8, 8\)"):
        layer.backward(params, residuals, jnp.ones((1, 4, 7, 8)))
    with pytest.raises(ValueError, match=r"max_pool2d: window \(3, 3\) is larger than the padded input \(2, 2\)"):
        max_pool2d(3).forward((), jnp.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"avg_pool2d: x must have 4 axes, got shape \(4, 4\)"):
        jax.jit(avg_pool2d(2).forward)((), jnp.ones((4, 4)))
    _, residuals = max_pool2d(2).forward((), jnp.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"max_pool2d: dy shape \(1, 1, 3, 2\) does not match output shape \(1, 1, 2, 2\)"):
        max_pool2d(2).backward((), residuals, jnp.ones((1, 1, 3, 2)))
    with pytest.raises(ValueError, match=r"flatten: x must have at least 2 axes, got shape \(4,\)"):
        flatten.forward((), jnp.ones(4))


def test_reference_max_pool_is_reduce_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 6, 6))
    np.testing.assert_array_equal(ref7.max_pool2d(2)((), x), lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2),
                                                                               (1, 1, 2, 2), "VALID"))
