"""Tests that kill the mutants the rest of the suite let survive (docs/mutation.md).

Each test is named after the file whose mutants it kills (``test_relu_...``, ``test_core_...``)
so that ``[tool.mutmut.tests]`` in pyproject.toml can select it with ``-k``. Small shapes, no
jit of whole networks: ``python tools/mutation.py`` runs these once per mutant.
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from messages import raises_exactly as _raises_exactly, raises_exactly_under_jit as _raises_exactly_under_jit
from pure_backprop import Layer, loss_and_grads, nodes, predict, serial, with_targets
from pure_backprop.core import (
    StatefulLayer, check_train, freeze, is_traced, lift, loss_and_grads_with_state, no_params)
from pure_backprop.layers import affine, batch_norm, dropout, mse, relu, tanh

_KEY = jax.random.PRNGKey(0)


# --- pure_backprop/layers/relu.py -------------------------------------------------------------

def test_relu_backward_names_the_layer_and_both_shapes():
    with _raises_exactly(ValueError, "relu: dy shape (4,) does not match x shape (3,)"):
        relu.backward((), jnp.ones(3), jnp.ones(4))


# --- pure_backprop/layers/tanh.py -------------------------------------------------------------

def test_tanh_backward_names_the_layer_and_both_shapes():
    with _raises_exactly(ValueError, "tanh: dy shape (2, 3) does not match x shape (3, 2)"):
        tanh.backward((), jnp.ones((3, 2)), jnp.ones((2, 3)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_tanh_keeps_the_dtype_of_x(dtype):
    x = jnp.linspace(-2, 2, 5, dtype=dtype)
    y, residuals = tanh.forward((), x)
    _, dx = tanh.backward((), residuals, jnp.ones_like(y))
    assert y.dtype == dtype and dx.dtype == dtype


# --- pure_backprop/layers/affine.py -----------------------------------------------------------

def test_affine_accepts_one_output():
    layer = affine(1)
    params, out_shape = layer.init(_KEY, (-1, 3))
    assert out_shape == (-1, 1) and params["W"].shape == (3, 1) and params["b"].shape == (1,)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
def test_affine_init_uses_the_dtype_asked_for(dtype):
    params, _ = affine(2).init(_KEY, (-1, 3), dtype)
    assert params["W"].dtype == dtype and params["b"].dtype == dtype
    params, _ = affine(2).init(_KEY, (-1, 3))  # float32 by default, even with x64 on
    assert params["W"].dtype == jnp.float32 and params["b"].dtype == jnp.float32


def test_affine_without_bias_forward_and_backward():
    layer = affine(2, bias=False)
    params, _ = layer.init(_KEY, (-1, 3))
    assert set(params) == {"W"}
    W = jnp.arange(6.0).reshape(3, 2)
    x = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    y, residuals = layer.forward({"W": W}, x)
    np.testing.assert_array_equal(y, x @ W)
    dy = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    grads, dx = layer.backward({"W": W}, residuals, dy)
    assert set(grads) == {"W"}
    np.testing.assert_array_equal(grads["W"], x.T @ dy)
    np.testing.assert_array_equal(dx, dy @ W.T)
    with _raises_exactly(ValueError, "affine: params must be a dict with keys ['W'], got ['W', 'b']"):
        layer.forward({"W": W, "b": jnp.zeros(2)}, x)


def test_affine_params_errors_name_what_was_given():
    x = jnp.ones((2, 3))
    with _raises_exactly(ValueError, "affine: params must be a dict with keys ['W', 'b'], got list"):
        affine(2).forward([jnp.ones((3, 2)), jnp.ones(2)], x)
    with _raises_exactly(ValueError, "affine: params must be a dict with keys ['W', 'b'], got ['W']"):
        affine(2).forward({"W": jnp.ones((3, 2))}, x)


def test_affine_shape_errors_are_exact():
    layer = affine(2)
    x, W, b = jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.ones(2)
    with _raises_exactly(ValueError, "affine: x must have at least 2 axes, got shape (3,) (a batch axis first, then features)"):
        layer.forward({"W": W, "b": b}, jnp.ones(3))
    with _raises_exactly(ValueError, "affine: W must have 2 axes, got shape (3,)"):
        layer.forward({"W": jnp.ones(3), "b": b}, x)
    with _raises_exactly(ValueError, "affine: W must have 2 axes, got shape (3, 2, 1)"):
        layer.forward({"W": jnp.ones((3, 2, 1)), "b": b}, x)
    with _raises_exactly(ValueError, "affine: b shape (3,) does not match W shape (3, 2); expected (2,)"):
        layer.forward({"W": W, "b": jnp.ones(3)}, x)
    with _raises_exactly(ValueError, "affine: b shape (1, 2) does not match W shape (3, 2); expected (2,)"):
        layer.forward({"W": W, "b": jnp.ones((1, 2))}, x)



def test_affine_backward_checks_dy_and_a_custom_bias_init_gets_its_key():
    layer = affine(2)
    params = {"W": jnp.ones((3, 2)), "b": jnp.ones(2)}
    _, residuals = layer.forward(params, jnp.ones((4, 3)))
    with _raises_exactly(ValueError, "affine: dy shape (2, 4) does not match output shape (4, 2)"):
        layer.backward(params, residuals, jnp.ones((2, 4)))
    with _raises_exactly(ValueError, "affine: x is an empty batch (shape (0, 3)); give at least one sample"):
        layer.forward(params, jnp.ones((0, 3)))
    normal = jax.nn.initializers.normal(1.0)
    params, _ = affine(2, w_init=normal, b_init=normal).init(_KEY, (-1, 3))
    k_w, k_b = jax.random.split(_KEY)
    _close(params["W"], normal(k_w, (3, 2), jnp.float32))
    _close(params["b"], normal(k_b, (2,), jnp.float32))

# --- pure_backprop/nodes/arithmetic.py --------------------------------------------------------

def test_nodes_pair_errors_are_exact():
    for node, name in ((nodes.add, "add"), (nodes.multiply, "multiply")):
        with _raises_exactly(ValueError, f"{name}: x must be a pair (a, b) of arrays, got int"):
            node.forward((), 3)
    with _raises_exactly(ValueError, "add: a shape (2, 3) and b shape (2, 1) are incompatible (needs equal shapes)"):
        nodes.add.forward((), (jnp.ones((2, 3)), jnp.ones((2, 1))))  # add broadcasts nothing
    with _raises_exactly(ValueError, "multiply: a shape (2, 3) and b shape (2, 2) are incompatible "
                                     "(needs equal shapes, or b of size 1 where a is not)"):
        nodes.multiply.forward((), (jnp.ones((2, 3)), jnp.ones((2, 2))))
    with _raises_exactly(ValueError, "multiply: a shape (2, 3) and b shape (3,) are incompatible "
                                     "(needs equal shapes, or b of size 1 where a is not)"):
        nodes.multiply.forward((), (jnp.ones((2, 3)), jnp.ones(3)))  # same rank, not numpy broadcasting
    with _raises_exactly(ValueError, "multiply: a shape (2, 1) and b shape (2, 3) are incompatible "
                                     "(needs equal shapes, or b of size 1 where a is not)"):
        nodes.multiply.forward((), (jnp.ones((2, 1)), jnp.ones((2, 3))))  # only b may have the size-1 axis


def test_nodes_init_checks_the_pair_of_shapes():
    assert nodes.add.init(None, ((2, 3), (2, 3))) == ((), (2, 3))
    assert nodes.multiply.init(None, ((4, 3), (4, 1))) == ((), (4, 3))
    assert nodes.multiply.init(None, ([4, 3], [1, 3])) == ((), (4, 3))
    with _raises_exactly(ValueError, "add: a shape (4, 3) and b shape (4, 1) are incompatible (needs equal shapes)"):
        nodes.add.init(None, ((4, 3), (4, 1)))
    with _raises_exactly(ValueError, "multiply: a shape (4, 3) and b shape (2, 3) are incompatible "
                                     "(needs equal shapes, or b of size 1 where a is not)"):
        nodes.multiply.init(None, ((4, 3), (2, 3)))


def test_nodes_multiply_backward_checks_dy_and_sums_only_the_broadcast_axes():
    a, b = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), jnp.array([[2.0], [-1.0]])
    _, residuals = nodes.multiply.forward((), (a, b))
    dy = jnp.array([[1.0, 0.5, -1.0], [2.0, 1.0, 0.0]])
    _, (da, db) = nodes.multiply.backward((), residuals, dy)
    np.testing.assert_array_equal(da, dy * b)
    np.testing.assert_array_equal(db, [[-1.0], [13.0]])
    _, (da, db) = nodes.multiply.backward((), nodes.multiply.forward((), (a, 2 * a))[1], dy)
    np.testing.assert_array_equal(db, dy * a)
    assert db.shape == (2, 3)
    with _raises_exactly(ValueError, "multiply: dy shape (3, 2) does not match a shape (2, 3)"):
        nodes.multiply.backward((), residuals, jnp.ones((3, 2)))


def test_nodes_constants_check_c():
    assert nodes.add_constant(1.0).init(_KEY, (2, 3)) == ((), (2, 3))
    assert nodes.multiply_constant(2.0).init(_KEY, (4,)) == ((), (4,))
    with _raises_exactly(ValueError, "add_constant: c must be a scalar, got shape (2,)"):
        nodes.add_constant(jnp.ones(2))
    assert nodes.add_constant(jnp.float64(1.5)).forward((), jnp.ones(2))[0].tolist() == [2.5, 2.5]
    with _raises_exactly(ValueError, "multiply_constant: c shape (3,) does not match x shape (2, 3)"):
        nodes.multiply_constant(jnp.ones(3)).forward((), jnp.ones((2, 3)))
    with _raises_exactly(ValueError, "multiply_constant: c shape (2, 3) does not match x shape (3, 2)"):
        nodes.multiply_constant(jnp.ones((2, 3))).forward((), jnp.ones((3, 2)))
    c = jnp.array([[1.0, -2.0, 3.0]])
    y, r = nodes.multiply_constant(c).forward((), jnp.array([[2.0, 2.0, 2.0]]))
    np.testing.assert_array_equal(y, [[2.0, -4.0, 6.0]])
    np.testing.assert_array_equal(nodes.multiply_constant(c).backward((), r, jnp.ones((1, 3)))[1], c)


# --- pure_backprop/core.py --------------------------------------------------------------------

_X = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-2.0, 1.0, 0.75], [0.1, 0.2, 0.3]])
_T = jnp.array([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0], [-1.0, 1.0]])


def _net():
    net = serial(affine(4), relu, affine(2))
    params, out_shape = net.init(_KEY, (-1, 3))
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64) + 0.1 * jnp.arange(p.size).reshape(p.shape) / p.size,
                                    params)  # float64, and nonzero biases: no unit on ReLU's kink
    return net, params, out_shape


def _oracle(params, x, t):
    (p0, _, p2) = params
    h = jnp.maximum(x @ p0["W"] + p0["b"][None, :], 0)
    return 0.5 * jnp.sum((h @ p2["W"] + p2["b"][None, :] - t) ** 2) / x.shape[0]


def _close(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)


def test_core_serial_init_gives_each_layer_its_own_key_and_chains_shapes():
    net, _, out_shape = _net()
    params, out_shape = net.init(_KEY, (-1, 3))
    keys = jax.random.split(_KEY, 3)
    assert out_shape == (-1, 2) and isinstance(params, tuple) and params[1] == ()
    _close(params[0], affine(4).init(keys[0], (-1, 3))[0])
    _close(params[2], affine(2).init(keys[2], (-1, 4))[0])
    assert no_params(_KEY, (5, 7)) == ((), (5, 7))


def test_core_serial_forward_backward_and_loss_and_grads_equal_jax_grad():
    net, params, _ = _net()
    value, grads = loss_and_grads(net, mse, params, _X, _T)
    expected_value, expected = jax.value_and_grad(_oracle)(params, _X, _T)
    _close(value, expected_value)
    _close(grads, expected)
    assert grads[1] == ()
    y, residuals = net.forward(params, _X)
    assert isinstance(residuals, tuple) and len(residuals) == 3
    dy = jnp.ones_like(y)
    grads, dx = net.backward(params, residuals, dy)
    _, vjp = jax.vjp(lambda p, v: net.forward(p, v)[0], params, _X)
    _close((grads, dx), vjp(dy))


@pytest.mark.parametrize("weight_decay", [1.0, 1, 0.5])
def test_core_loss_and_grads_adds_the_penalty_for_every_positive_lambda(weight_decay):
    net, params, _ = _net()
    value, grads = loss_and_grads(net, mse, params, _X, _T, weight_decay=weight_decay)

    def decayed(p):
        return _oracle(p, _X, _T) + 0.5 * weight_decay * (jnp.sum(p[0]["W"] ** 2) + jnp.sum(p[2]["W"] ** 2))

    expected_value, expected = jax.value_and_grad(decayed)(params)
    _close(value, expected_value)
    _close(grads, expected)


@pytest.mark.parametrize("weight_decay", [0, 0.0])
def test_core_loss_and_grads_without_decay_keeps_value_grads_and_dtype(weight_decay):
    net, params, _ = _net()
    params32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)
    value, grads = loss_and_grads(net, mse, params32, _X.astype(jnp.float32), _T.astype(jnp.float32),
                                  weight_decay=weight_decay)
    default_value, default_grads = loss_and_grads(net, mse, params32, _X.astype(jnp.float32), _T.astype(jnp.float32))
    assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
    np.testing.assert_array_equal(value, default_value)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(default_grads)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(default_value, _oracle(params, _X, _T), rtol=1e-6)


def test_core_loss_and_grads_takes_a_pair_input_without_a_shape():
    net = serial(nodes.multiply)
    a, b = jnp.array([[1.0, 2.0]]), jnp.array([[3.0, -1.0]])
    value, grads = loss_and_grads(net, mse, ((),), (a, b), jnp.zeros((1, 2)))
    _close(value, 0.5 * (9.0 + 4.0))
    assert grads == ((),)


def test_core_empty_batches_and_wrong_kinds_are_refused_exactly():
    net, params, _ = _net()
    rank1 = serial(relu)
    with _raises_exactly(ValueError, "loss_and_grads: x is an empty batch (shape (0,)); give at least one sample"):
        loss_and_grads(rank1, mse, ((),), jnp.zeros((0,)), jnp.zeros((0,)))
    with _raises_exactly(ValueError, "loss_and_grads_with_state: x is an empty batch (shape (0, 3)); "
                                     "give at least one sample"):
        loss_and_grads_with_state(net, mse, params, (), _X[:0], _T[:0])
    # a batch with no features is not an empty batch
    assert loss_and_grads(rank1, mse, ((),), jnp.ones((2, 0)), jnp.ones((2, 0)))[1] == ((),)
    with _raises_exactly(TypeError, "loss_and_grads: network must be a Layer, got str"):
        loss_and_grads("net", mse, params, _X, _T)
    stateful = serial(affine(2), dropout(0.5))
    with _raises_exactly(TypeError, "loss_and_grads: network must be a Layer, got StatefulLayer; for a StatefulLayer "
                                    "use loss_and_grads_with_state(network, loss, params, state, x, targets, key)"):
        loss_and_grads(stateful, mse, params, _X, _T)
    with _raises_exactly(TypeError, "loss_and_grads_with_state: network must be a Layer or StatefulLayer, got int"):
        loss_and_grads_with_state(3, mse, params, (), _X, _T)
    for fn, args in ((loss_and_grads, (net, relu, params, _X, _T)), (loss_and_grads_with_state, (net, relu, params, (), _X, _T))):
        with _raises_exactly(TypeError, f"{fn.__name__}: loss must be a Loss (forward, backward), e.g. "
                                        "pure_backprop.layers.softmax_cross_entropy, got Layer"):
            fn(*args)


def _stateful_net():
    net = serial(affine(3), batch_norm(), relu, dropout(0.5), affine(2))
    params, state, out_shape = net.init(_KEY, (-1, 3))
    params, state = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), (params, state))
    return net, params, state, out_shape


def test_core_stateful_serial_init_forward_and_keys():
    net, params, state, out_shape = _stateful_net()
    assert isinstance(net, StatefulLayer) and out_shape == (-1, 2)
    assert len(params) == len(state) == 5 and state[0] == () and set(state[1]) == {"mean", "var"}
    keys = jax.random.split(_KEY, 5)
    _close(params[0], affine(3).init(keys[0], (-1, 3))[0])
    _close(params[4], affine(2).init(keys[4], (-1, 3))[0])
    key = jax.random.PRNGKey(3)
    y, new_state, residuals = net.forward(params, state, _X, key, True)
    # by hand, layer by layer, with layer i's key jax.random.split(key, 5)[i]
    k = jax.random.split(key, 5)
    h = affine(3).forward(params[0], _X)[0]
    h, bn_state, _ = batch_norm().forward(params[1], state[1], h, k[1], True)
    h = relu.forward((), h)[0]
    h = dropout(0.5).forward((), (), h, k[3], True)[0]
    _close(y, affine(2).forward(params[4], h)[0])
    assert isinstance(new_state, tuple) and len(new_state) == 5
    _close(new_state[1], bn_state)
    assert isinstance(residuals, tuple) and len(residuals) == 5
    # inference: no key needed, the state comes back unchanged, dropout is the identity
    y_eval, eval_state, _ = net.forward(params, state, _X, None, False)
    _close(eval_state, state)
    _close(y_eval, predict(net, params, _X, state))
    with _raises_exactly(ValueError, "serial layer 3: dropout: train=True needs a PRNG key to draw the mask, got "
                                     "key=None (pass key=jax.random.PRNGKey(...), or train=False for inference)"):
        net.forward(params, state, _X, None, True)


def test_core_stateful_serial_refuses_bad_arguments_exactly():
    net, params, state, _ = _stateful_net()
    with _raises_exactly(ValueError, "serial: params must be a tuple of 5 entries, one per layer, got 4"):
        net.forward(params[:4], state, _X, None, False)
    with _raises_exactly(ValueError, "serial: state must be a tuple of 5 entries, one per layer, got 4"):
        net.forward(params, state[:4], _X, None, False)
    with _raises_exactly(ValueError, "serial: state must be a tuple of 5 entries, one per layer, got dict"):
        net.forward(params, {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, _X, None, False)
    with _raises_exactly(TypeError, "serial: train must be a Python bool (True for batch statistics and dropout, "
                                    "False for inference), got int; under jax.jit mark it static"):
        net.forward(params, state, _X, None, 1)


def test_core_serial_refuses_bad_arguments_exactly():
    net, params, _ = _net()
    with _raises_exactly(ValueError, "serial: needs at least one layer, got none"):
        serial()
    with _raises_exactly(TypeError, "serial: argument 1 is a int, not a Layer or StatefulLayer"):
        serial(relu, 3)
    y, residuals = net.forward(params, _X)
    for bad, got in ((params[:2], "2"), (list(params) + [()], "4"), ({"0": 1, "1": 2, "2": 3}, "dict")):
        with _raises_exactly(ValueError, f"serial: params must be a tuple of 3 entries, one per layer, got {got}"):
            net.forward(bad, _X)
        with _raises_exactly(ValueError, f"serial: params must be a tuple of 3 entries, one per layer, got {got}"):
            net.backward(bad, residuals, jnp.ones_like(y))
    assert net.forward(list(params), _X)[0].shape == (4, 2)  # a list is a sequence too
    with _raises_exactly(ValueError, "serial layer 1: relu: dy shape (4, 4) does not match x shape (4, 3)"):
        net.backward(params, residuals[:1] + (jnp.ones((4, 3)),) + residuals[2:], jnp.ones_like(y))


def test_core_located_prefixes_value_errors_once_and_nothing_else():
    inner = serial(relu, affine(2))
    outer = serial(relu, inner)
    params = ((), ((), {"W": jnp.ones((5, 2)), "b": jnp.ones(2)}))
    with _raises_exactly(ValueError, "serial layer 1: affine: input has 3 features but W expects 5 "
                                     "(x.shape=(4, 3), W.shape=(5, 2))"):
        outer.forward(params, _X)

    def boom(p, x):
        raise KeyError("not a shape error")

    with pytest.raises(KeyError) as caught:
        serial(relu, Layer(no_params, boom, None)).forward(((), ()), _X)
    assert caught.value.args == ("not a shape error",)

    class Subclass(ValueError):
        pass

    def sub(p, x):
        raise Subclass("kept as it is")

    with _raises_exactly(Subclass, "kept as it is"):
        serial(Layer(no_params, sub, None)).forward(((),), _X)


def test_core_lift_and_freeze():
    lifted = lift(relu)
    assert isinstance(lifted, StatefulLayer) and lift(lifted) is lifted
    assert lifted.init(_KEY, (-1, 3)) == ((), (), (-1, 3))
    y, state, residuals = lifted.forward((), ("kept",), _X, None, False)
    _close(y, relu.forward((), _X)[0])
    assert state == ("kept",)
    _close(residuals, relu.forward((), _X)[1])
    assert lifted.backward is relu.backward
    with _raises_exactly(TypeError, "lift: expected a Layer or StatefulLayer, got int"):
        lift(3)
    assert freeze(relu) is relu
    layer = batch_norm()
    params = layer.init(_KEY, (-1, 3))[0]
    bn_state = {"mean": jnp.array([0.5, -0.5, 1.0]), "var": jnp.array([2.0, 0.5, 1.5])}
    frozen = freeze(layer, bn_state)  # train=True by default: batch statistics
    init_params, out_shape = frozen.init(_KEY, (-1, 3))
    _close(init_params, params)
    assert out_shape == (-1, 3)
    y, residuals = frozen.forward(params, _X)
    _close(y, layer.forward(params, bn_state, _X, None, True)[0])
    _close(freeze(layer, bn_state, None, False).forward(params, _X)[0], layer.forward(params, bn_state, _X, None, False)[0])
    assert not np.allclose(y, freeze(layer, bn_state, None, False).forward(params, _X)[0])
    _close(frozen.backward(params, residuals, jnp.ones_like(y)), layer.backward(params, residuals, jnp.ones_like(y)))
    key = jax.random.PRNGKey(5)
    _close(freeze(dropout(0.5), (), key).forward((), _X)[0], dropout(0.5).forward((), (), _X, key, True)[0])
    with _raises_exactly(TypeError, "freeze: train must be a Python bool (True for batch statistics and dropout, "
                                    "False for inference), got int; under jax.jit mark it static"):
        freeze(layer, bn_state, None, 1)
    with _raises_exactly(TypeError, "check: train must be a Python bool (True for batch statistics and dropout, "
                                    "False for inference), got NoneType; under jax.jit mark it static"):
        check_train(None, "check")


def test_core_loss_and_grads_with_state_trains_with_batch_statistics_by_default():
    net = serial(affine(3), batch_norm(), relu, affine(2))  # no dropout: no key needed
    params, state, _ = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), net.init(_KEY, (-1, 3))[:2]) + (None,)
    value, grads, new_state = loss_and_grads_with_state(net, mse, params, state, _X, _T)
    frozen = freeze(net, state, None, True)
    expected = jax.value_and_grad(lambda p: mse.forward(frozen.forward(p, _X)[0], _T)[0])(params)
    _close((value, grads), expected)
    _close(new_state, net.forward(params, state, _X, None, True)[1])
    value_eval, _, eval_state = loss_and_grads_with_state(net, mse, params, state, _X, _T, train=False)
    _close(eval_state, state)
    assert not np.isclose(value_eval, value)
    value_wd, grads_wd, _ = loss_and_grads_with_state(net, mse, params, state, _X, _T, weight_decay=1.0)
    _close(value_wd, value + 0.5 * (jnp.sum(params[0]["W"] ** 2) + jnp.sum(params[3]["W"] ** 2)))
    _close(grads_wd[3]["W"], grads[3]["W"] + params[3]["W"])
    _close(grads_wd[1], grads[1])
    # a plain Layer is lifted; its state is ()
    plain, plain_params, _ = _net()
    value, grads, new_state = loss_and_grads_with_state(plain, mse, plain_params, ((), (), ()), _X, _T)
    _close((value, grads), loss_and_grads(plain, mse, plain_params, _X, _T))
    assert new_state == ((), (), ())
    # a key reaches dropout
    drop = serial(affine(2), dropout(0.5))
    p, s = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), drop.init(_KEY, (-1, 3))[:2])
    key = jax.random.PRNGKey(9)
    value, _, _ = loss_and_grads_with_state(drop, mse, p, s, _X, _T, key)
    _close(value, mse.forward(drop.forward(p, s, _X, key, True)[0], _T)[0])


def test_core_predict_and_with_targets():
    net, params, _ = _net()
    _close(predict(net, params, _X), net.forward(params, _X)[0])
    stateful, sparams, sstate, _ = _stateful_net()
    _close(predict(stateful, sparams, _X, sstate), stateful.forward(sparams, sstate, _X, None, False)[0])
    with _raises_exactly(ValueError, "predict: a StatefulLayer needs its state (the running averages), got None"):
        predict(stateful, sparams, _X)
    layer = with_targets(mse, _T)
    assert layer.init(_KEY, (-1, 2)) == ((), ())
    scores = jnp.ones((4, 2))
    value, residuals = layer.forward((), scores)
    _close(value, mse.forward(scores, _T)[0])
    grads, dscores = layer.backward((), residuals, jnp.float64(2.0))
    assert grads == ()
    _close(dscores, mse.backward(mse.forward(scores, _T)[1], jnp.float64(2.0)))


def test_core_is_traced():
    assert not is_traced(_X)
    assert jax.jit(lambda v: jnp.float64(is_traced(v)))(_X) == 1.0


def test_core_init_errors_name_the_layer_position():
    with _raises_exactly(ValueError, "serial layer 1: affine: in_shape must be (batch, features...), got (5,)"):
        serial(relu, affine(2)).init(_KEY, (5,))
    with _raises_exactly(ValueError, "serial layer 2: affine: in_shape must be (batch, features...), got (5,)"):
        serial(relu, dropout(0.5), affine(2)).init(_KEY, (5,))


def test_core_freeze_init_passes_the_key_on():
    net = serial(affine(2), dropout(0.5))
    params, out_shape = freeze(net, ((), ()), jax.random.PRNGKey(1)).init(_KEY, (-1, 3))
    _close(params, net.init(_KEY, (-1, 3))[0])
    assert out_shape == (-1, 2)


def test_core_init_passes_the_dtype_and_each_key_down_and_refuses_it_only_where_it_would_be_ignored():
    keys = jax.random.split(_KEY, 3)
    for net, stateful in [(serial(affine(4), relu, affine(2)), False), (serial(affine(4), dropout(0.5), affine(2)), True)]:
        *trees, out_shape = net.init(_KEY, (-1, 3), jnp.float16)
        assert out_shape == (-1, 2) and trees[0][1] == ()
        assert {a.dtype for a in jax.tree_util.tree_leaves(trees)} == {jnp.dtype(jnp.float16)}
        for i, width, in_dim in [(0, 4, 3), (2, 2, 4)]:
            _close(trees[0][i], affine(width).init(keys[i], (-1, in_dim), jnp.float16)[0])
        assert trees[1:] == ([((), (), ())] if stateful else [])
    assert lift(affine(2)).init(_KEY, (-1, 3), jnp.float16)[0]["W"].dtype == jnp.float16
    _close(lift(affine(2)).init(_KEY, (-1, 3), jnp.float16), affine(2).init(_KEY, (-1, 3), jnp.float16)[:1] + ((), (-1, 2)))
    _close(freeze(batch_norm()).init(_KEY, (-1, 3), jnp.float16), batch_norm().init(_KEY, (-1, 3), jnp.float16)[::2])
    assert freeze(batch_norm()).init(_KEY, (-1, 3), jnp.float16)[0]["gamma"].dtype == jnp.float16
    assert with_targets(mse, _T).init(_KEY, (-1, 2), jnp.float16) == ((), ())
    assert no_params(_KEY, (5, 7), jnp.float16) == ((), (5, 7))
    # an init(key, in_shape) written before the dtype: called without it for float32, refused otherwise
    calls = []
    old = Layer(lambda key, in_shape: calls.append(key) or ((), in_shape), relu.forward, relu.backward)
    old_stateful = StatefulLayer(lambda key, in_shape: calls.append(key) or ((), (), in_shape), None, None)
    for layer, where, out_shape in [(serial(affine(2), old), "serial layer 1", (-1, 2)),
                                    (serial(old_stateful), "serial layer 0", (-1, 3)),
                                    (serial(dropout(0.5), old), "serial layer 1", (-1, 3)),
                                    (lift(old), "lift", (-1, 3)), (freeze(old_stateful), "freeze", (-1, 3))]:
        assert layer.init(_KEY, (-1, 3), jnp.float32)[-1] == layer.init(_KEY, (-1, 3))[-1] == out_shape
        for dtype in (jnp.float64, "float16"):
            message = (f"{where}: the layer's init(key, in_shape) takes no dtype, so it cannot build {jnp.dtype(dtype)} "
                       f"parameters; give it a dtype=jnp.float32 argument and pass it to its initializers")
            with _raises_exactly(TypeError, message):
                layer.init(_KEY, (-1, 3), dtype)
    calls.clear()
    lift(old).init(_KEY, (-1, 3))
    serial(relu, old).init(_KEY, (-1, 3))
    assert [k.tolist() for k in calls] == [_KEY.tolist(), jax.random.split(_KEY, 2)[1].tolist()]


# --- pure_backprop/layers/sigmoid.py ----------------------------------------------------------

def test_sigmoid_backward_names_the_layer_and_both_shapes():
    from pure_backprop.layers import sigmoid

    y, residuals = sigmoid.forward((), jnp.zeros((2, 3)))
    with _raises_exactly(ValueError, "sigmoid: dy shape (3, 2) does not match y shape (2, 3)"):
        sigmoid.backward((), residuals, jnp.ones((3, 2)))


# --- pure_backprop/layers/flatten.py ----------------------------------------------------------

def test_flatten_init_forward_backward_and_their_errors_are_exact():
    from pure_backprop.layers import flatten

    assert flatten.init(_KEY, (-1, 5)) == ((), (-1, 5))  # already (batch, features): accepted
    assert flatten.init(_KEY, (4, 2, 3, 5)) == ((), (4, 30))
    with _raises_exactly(ValueError, "flatten: in_shape must be (batch, features...), got (7,)"):
        flatten.init(_KEY, [7])
    x = jnp.arange(24.0).reshape(2, 3, 4)
    y, residual = flatten.forward((), x)
    assert y.shape == (2, 12)
    assert flatten.forward((), jnp.ones((3, 2)))[0].shape == (3, 2)  # two axes: the least accepted
    with _raises_exactly(ValueError, "flatten: x must have at least 2 axes, got shape (5,) "
                                     "(a batch axis first, then features)"):
        flatten.forward((), jnp.ones(5))
    np.testing.assert_array_equal(flatten.backward((), residual, y)[1], x)
    with _raises_exactly(ValueError, "flatten: dy shape (12, 2) does not match output shape (2, 12)"):
        flatten.backward((), residual, jnp.ones((12, 2)))


# --- pure_backprop/layers/mse.py --------------------------------------------------------------

def test_mse_rank_error_is_exact_and_integer_targets_are_not_truncated():
    with _raises_exactly(ValueError, "mse: predictions must have at least 1 axes, got shape () "
                                     "(a batch axis first)"):
        mse.forward(jnp.float32(1.0), jnp.float32(1.0))
    assert mse.forward(jnp.ones(3), jnp.ones(3))[0] == 0  # one axis: the least accepted
    loss, _ = mse.forward(jnp.array([0.5, 1.5], jnp.float32), jnp.array([1, 1], jnp.int32))
    assert loss.dtype == jnp.float32 and np.isclose(loss, 0.5 * (0.25 + 0.25) / 2)  # not y cast to int


# --- pure_backprop/nodes/reduction.py ---------------------------------------------------------

def test_nodes_sum_init_shapes_axis_range_and_backward_without_keepdims():
    assert nodes.sum().init(_KEY, [2, 3]) == ((), ())
    assert nodes.sum(keepdims=True).init(_KEY, (2, 3)) == ((), (1, 1))
    assert nodes.sum(axis=0).init(_KEY, (2, 3, 4)) == ((), (3, 4))
    assert nodes.sum(axis=-1, keepdims=True).init(_KEY, (2, 3, 4)) == ((), (2, 3, 1))
    assert nodes.sum(axis=1).init(_KEY, (2, 3, 4)) == ((), (2, 4))
    x = jnp.arange(24.0).reshape(2, 3, 4)
    for axis in (-3, -1, 0, 2):
        node = nodes.sum(axis=axis)  # keepdims=False: the backward puts the summed axis back
        y, residual = node.forward((), x)
        dy = jnp.arange(float(y.size)).reshape(y.shape) + 1
        _, vjp = jax.vjp(lambda v: jnp.sum(v, axis=axis), x)
        np.testing.assert_array_equal(node.backward((), residual, dy)[1], vjp(dy)[0])
    for axis in (3, -4):
        with _raises_exactly(ValueError, f"sum: axis {axis} is out of range for x shape (2, 3, 4)"):
            nodes.sum(axis=axis).forward((), x)


# --- pure_backprop/nodes/matrix.py ------------------------------------------------------------

def test_nodes_matrix_shapes_and_errors_are_exact():
    assert nodes.matmul.init(_KEY, ((2, 3), (3, 4))) == ((), (2, 4))
    assert nodes.bias_add.init(_KEY, ((2, 3), (3,))) == ((), (2, 3))
    with _raises_exactly(ValueError, "matmul: X shape (2, 3, 4) and W shape (3, 5) do not chain "
                                     "(needs X: (N, D) and W: (D, M))"):
        nodes.matmul.init(_KEY, ((2, 3, 4), (3, 5)))  # a wrong rank alone, the inner sizes matching
    for node, name in ((nodes.matmul, "matmul"), (nodes.bias_add, "bias_add")):
        with _raises_exactly(ValueError, f"{name}: x must be a pair (a, b) of arrays, got tuple"):
            node.forward((), (jnp.ones((2, 3)),) * 3)
    with _raises_exactly(ValueError, "bias_add: X must have 2 axes, got shape (3,)"):
        nodes.bias_add.forward((), (jnp.ones(3), jnp.ones(3)))


# --- pure_backprop/layers/weight_decay.py -----------------------------------------------------

def test_weight_decay_lambda_checks_empty_paths_scalars_and_init_are_exact():
    from pure_backprop.layers.weight_decay import is_weight, penalty, with_weight_decay

    assert not is_weight(())  # the root of a tree: no key at all
    params = {"W": jnp.ones((2, 2)), "b": jnp.ones(2)}
    assert penalty(params, 0.0) == 0 and penalty(params, 0) == 0  # lambda 0 is allowed
    for bad in (True, float("nan"), float("inf"), -0.1, "0.1", None):
        with _raises_exactly(ValueError, f"weight_decay: lambda must be a finite float >= 0, got {bad!r}"):
            penalty(params, bad)
    none = penalty({"b": jnp.ones(2)}, 0.5)  # no weights: still a 0-d array
    assert isinstance(none, jax.Array) and none.shape == () and none == 0
    layer = affine(3)
    wrapped = with_weight_decay(layer, 0.1)
    shapes = jax.eval_shape(lambda k: wrapped.init(k, (2, 4))[0], _KEY)
    assert jax.tree_util.tree_map(lambda a: a.shape, shapes) == {"W": (4, 3), "b": (3,)}
    with _raises_exactly(ValueError, "with_weight_decay: the layer must output a scalar loss, got shape (2, 3)"):
        wrapped.forward(layer.init(_KEY, (2, 4))[0], jnp.ones((2, 4)))


# --- pure_backprop/layers/dropout.py ----------------------------------------------------------

def test_dropout_rate_zero_is_the_identity_even_in_train_mode_without_a_key():
    for rate in (0, 0.0):
        layer = dropout(rate)
        x = jnp.arange(6.0).reshape(2, 3)
        y, state, scale = layer.forward((), (), x, None, True)  # nothing to draw: no key needed
        assert y is x and state == () and scale is None
        assert layer.backward((), scale, x)[1] is x


def test_dropout_messages_name_the_layer_and_the_argument():
    layer = dropout(0.5)
    x = jnp.ones((2, 3))
    with _raises_exactly(TypeError, "dropout: train must be a Python bool (True for batch statistics and dropout, "
                                    "False for inference), got int; under jax.jit mark it static"):
        layer.forward((), (), x, _KEY, 1)
    with _raises_exactly(ValueError, "dropout: train=True needs a PRNG key to draw the mask, got key=None "
                                     "(pass key=jax.random.PRNGKey(...), or train=False for inference)"):
        layer.forward((), (), x, None, True)
    _, _, scale = layer.forward((), (), x, _KEY, True)
    with _raises_exactly(ValueError, "dropout: dy shape (3, 2) does not match x shape (2, 3)"):
        layer.backward((), scale, jnp.ones((3, 2)))


def test_dropout_keeps_float32_in_float32():
    x = jnp.ones((4, 5), jnp.float32)
    y, _, scale = dropout(0.3).forward((), (), x, _KEY, True)
    assert y.dtype == scale.dtype == jnp.float32
    assert set(np.unique(np.asarray(scale)).tolist()) <= {0.0, np.float32(1 / np.float32(0.7))}
    assert dropout(0.3).backward((), scale, x)[1].dtype == jnp.float32


# --- pure_backprop/graphs.py ------------------------------------------------------------------

def test_graphs_softmax_cross_entropy_graph_names_itself_and_both_shapes():
    from pure_backprop.graphs import softmax_cross_entropy_graph

    with _raises_exactly(ValueError, "softmax_cross_entropy_graph: targets shape (3, 2) does not match scores "
                                     "shape (2, 3)"):
        softmax_cross_entropy_graph.forward(jnp.ones((2, 3)), jnp.ones((3, 2)))


# --- pure_backprop/layers/softmax_cross_entropy.py ----------------------------------------------

_SCE = "softmax_cross_entropy: "


@pytest.mark.parametrize("scores,targets,message", [
    (jnp.ones((2, 3)), [0, 1], "targets must be an array, got a Python list; wrap it in jnp.asarray(...)"),
    (jnp.ones((2, 3), jnp.int32), jnp.array([0, 1]),
     "scores must have a floating-point dtype, got int32; convert with scores.astype(jnp.float32)"),
    (jnp.ones((3,)), jnp.array([0, 1]), "scores must have 2 axes, got shape (3,) (batch, classes)"),
    (jnp.ones((2, 3)), jnp.array([0.0, 1.0]), "labels of shape (2,) must be integers, got dtype float64; cast with "
     "labels.astype(jnp.int32), or pass target rows of shape (2, 3)"),
    (jnp.ones((2, 3)), jnp.array([0, 1, 2]),
     "integer labels must have shape (2,) for scores of shape (2, 3), got labels shape (3,)"),
    (jnp.ones((2, 3)), jnp.array([1, 3]), "labels must lie in [0, 3) for scores of shape (2, 3), got labels from 1 to 3"),
    (jnp.ones((2, 3)), jnp.array([-1, 2]), "labels must lie in [0, 3) for scores of shape (2, 3), got labels from -1 to 2"),
    (jnp.ones((2, 3)), jnp.array([-2, -1]),
     "labels must lie in [0, 3) for scores of shape (2, 3), got labels from -2 to -1"),
    (jnp.ones((2, 3)), jnp.ones((2, 4)),
     "targets shape (2, 4) does not match scores shape (2, 3) (one-hot targets need one column per class)"),
    (jnp.ones((2, 3)), jnp.ones((2, 3, 1)),
     "targets shape (2, 3, 1) does not match scores shape (2, 3) (one-hot targets need one column per class)"),
    ([[1.0, 2.0]], jnp.array([0]), "scores must be an array, got a Python list; wrap it in jnp.asarray(...)"),
    (jnp.ones((2, 3)), jnp.array([[0.5, 0.5, 0.0], [0.2, -0.1, 0.9]]), "targets must be non-negative (probabilities, "
     "one-hot or counts), got -0.1 at row 1, column 1; -sum(t * log p) has no minimum for negative t"),
])
def test_softmax_cross_entropy_refuses_bad_input_naming_the_argument_and_shapes(scores, targets, message):
    from pure_backprop.layers import softmax_cross_entropy

    with _raises_exactly(ValueError, _SCE + message):
        softmax_cross_entropy.forward(scores, targets)


def test_softmax_cross_entropy_edges_labels_at_the_bounds_traced_labels_and_dtypes():
    from pure_backprop.layers import softmax_cross_entropy as sce

    scores = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    loss, _ = sce.forward(scores, jnp.array([0, 2]))  # both ends of [0, C) are labels
    log_p = jax.nn.log_softmax(scores)
    np.testing.assert_allclose(loss, -(log_p[0, 0] + log_p[1, 2]) / 2, rtol=1e-14)
    for classes in (1, 3):  # an empty batch has no label out of range, whatever the number of classes
        assert sce.forward(jnp.ones((0, classes)), jnp.zeros((0,), jnp.int32))[1][0].shape == (0, classes)
    # under jit the labels are unknown when traced: an out-of-range label makes its row NaN, not a silent 0
    loss_jit = jax.jit(lambda t: sce.forward(scores, t)[0])
    assert np.isfinite(loss_jit(jnp.array([0, 2]))) and np.isnan(loss_jit(jnp.array([0, 3])))
    assert np.isnan(loss_jit(jnp.array([-1, 0])))
    # float16 scores, float32 soft targets: the loss in float32, dx in the scores' dtype
    s16, t32 = scores.astype(jnp.float16), jnp.full((2, 3), 1 / 3, jnp.float32)
    loss16, residuals = sce.forward(s16, t32)
    assert loss16.dtype == jnp.float32 and sce.backward(residuals, jnp.float32(1))[...].dtype == jnp.float16
    # integer labels with float32 scores stay float32 throughout
    loss32, residuals = sce.forward(scores.astype(jnp.float32), jnp.array([0, 2]))
    assert loss32.dtype == jnp.float32 and sce.backward(residuals, jnp.float32(1)).dtype == jnp.float32


def test_softmax_cross_entropy_integer_rows_wide_targets_and_rows_far_apart():
    from pure_backprop.layers import softmax_cross_entropy as sce

    scores = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    rows = jnp.array([[0, 0, 1], [1, 0, 0]], jnp.int32)  # integer one-hot rows are targets, not labels
    np.testing.assert_allclose(sce.forward(scores, rows)[0], sce.forward(scores, jnp.array([2, 0]))[0], rtol=1e-15)
    # float64 scores with float32 targets compute in float64 (the common dtype), not in the targets' float32
    loss, residuals = sce.forward(scores, jnp.full((2, 3), 1 / 3, jnp.float32))
    assert loss.dtype == jnp.float64 and residuals[0].dtype == jnp.float64
    # the max is shifted out row by row: a global shift would underflow every exp of the second row
    far = jnp.array([[1e4, 1e4 - 1.0], [-1e4, -1e4 + 1.0]])
    loss, residuals = sce.forward(far, jnp.array([0, 1]))
    np.testing.assert_allclose(loss, np.log1p(np.exp(-1.0)), rtol=1e-14)
    assert np.all(np.isfinite(sce.backward(residuals, 1.0)))
    # one class: p = 1 and the target 1, so the loss and every gradient entry are exactly 0
    # (1 - p is the sum of no other entries, 0, not 1 - p's rounding or p itself)
    for targets in (jnp.zeros(3, jnp.int32), jnp.ones((3, 1)), jnp.full((3, 1), 0.25)):
        loss, residuals = sce.forward(jnp.array([[2.0], [-7.0], [0.0]]), targets)
        assert float(loss) == 0.0 and np.array_equal(sce.backward(residuals, 1.0), np.zeros((3, 1)))


# --- pure_backprop/layers/windows.py ----------------------------------------------------------

def test_windows_backward_keeps_float32_in_float32():
    """Training runs in float32: the scatter-add of the windows pads with a zero of the
    gradient's own dtype, so dx stays float32 (and equals the float64 result)."""
    from pure_backprop.layers.windows import add_windows, windows
    x64 = jax.random.normal(_KEY, (1, 2, 5, 5), jnp.float64)
    for dtype in (jnp.float32, jnp.float64):
        parts = windows(x64.astype(dtype), (2, 3), (2, 1), (1, 1))
        dx = add_windows(parts, x64.shape, (2, 3), (2, 1), (1, 1))
        assert dx.dtype == dtype and dx.shape == x64.shape
    # each input entry counted once per window that reads it
    ones = add_windows(windows(jnp.ones((1, 1, 3, 3), jnp.float32), (2, 2), (1, 1), (0, 0)),
                       (1, 1, 3, 3), (2, 2), (1, 1), (0, 0))
    np.testing.assert_array_equal(ones[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@pytest.mark.parametrize("arg, value, message", [
    ("stride", True, "stride must be a positive int or a pair of positive ints, got True"),
    ("stride", (1, True), "stride must be a positive int or a pair of positive ints, got (1, True)"),
    ("stride", (1, 0), "stride must be a positive int or a pair of positive ints, got (1, 0)"),
    ("stride", 2.0, "stride must be a positive int or a pair of positive ints, got 2.0"),
    ("padding", -1, "padding must be a non-negative int or a pair of non-negative ints, got -1"),
    ("padding", (0, 0, 0), "padding must be a non-negative int or a pair of non-negative ints, got (0, 0, 0)"),
    ("padding", (0,), "padding must be a non-negative int or a pair of non-negative ints, got (0,)"),
    ("window", "2", "window must be a positive int or a pair of positive ints, got '2'"),
])
def test_windows_pair_messages_are_exact(arg, value, message):
    from pure_backprop.layers import max_pool2d
    kwargs = {"window": 3, arg: value}
    with _raises_exactly(ValueError, f"max_pool2d: {message}"):
        max_pool2d(**kwargs)


def test_windows_pair_accepts_zero_padding_lists_and_ints():
    from pure_backprop.layers.windows import pair
    assert pair("l", "a", 0, 0) == (0, 0)
    assert pair("l", "a", [1, 2], 1) == (1, 2)
    assert pair("l", "a", (3, 4), 1) == (3, 4)


def test_windows_require_fits_message_is_exact():
    from pure_backprop.layers.windows import require_fits
    require_fits("l", (3, 1), (5, 3), (1, 1), "x")  # padded (5, 3) holds the window exactly
    with _raises_exactly(ValueError, "l: window (5, 3) is larger than the padded input (4, 3) (x, padding (1, 1)); "
                                     "use a smaller window or more padding"):
        require_fits("l", (2, 1), (5, 3), (1, 1), "x")
    with _raises_exactly(ValueError, "l: kernel (5, 4) is larger than the padded input (5, 3) (x, padding (1, 1)); "
                                     "use a smaller kernel or more padding"):
        require_fits("l", (3, 1), (5, 4), (1, 1), "x", noun="kernel")
    with _raises_exactly(ValueError, "l: window (4, 3) is larger than the padded input (3, 5) (x, padding (0, 2)); "
                                     "use a smaller window or more padding"):
        require_fits("l", (3, 1), (4, 3), (0, 2), "x")  # each axis padded by its own amount


# --- pure_backprop/layers/pooling.py ----------------------------------------------------------

_POOLS = ("max_pool2d", "avg_pool2d")


@pytest.mark.parametrize("name", _POOLS)
def test_pooling_messages_name_the_layer_and_the_argument_exactly(name):
    from pure_backprop import layers
    pool = getattr(layers, name)
    window = "window (3, 3) is larger than the padded input (2, 2)"
    with _raises_exactly(ValueError, f"{name}: in_shape must be (N, C, H, W), got (1, 4, 4)"):
        pool(2).init(None, (1, 4, 4))
    with _raises_exactly(ValueError, f"{name}: {window} (in_shape (1, 1, 2, 2), padding (0, 0)); "
                                     "use a smaller window or more padding"):
        pool(3).init(None, (1, 1, 2, 2))
    with _raises_exactly_under_jit(ValueError, f"{name}: x must have 4 axes, got shape (4, 4) (N, C, H, W)"):
        pool(2).forward((), jnp.ones((4, 4)))
    with _raises_exactly_under_jit(ValueError, f"{name}: {window} (x.shape=(1, 1, 2, 2), padding (0, 0)); "
                                     "use a smaller window or more padding"):
        pool(3).forward((), jnp.ones((1, 1, 2, 2)))
    with _raises_exactly(ValueError, f"{name}: window must be a positive int or a pair of positive ints, got 0"):
        pool(0)
    with _raises_exactly(ValueError, f"{name}: padding must be a non-negative int or a pair of non-negative ints, "
                                     "got -1"):
        pool(2, padding=-1)
    _, residuals = pool(2).forward((), jnp.ones((1, 1, 4, 4)))
    with _raises_exactly_under_jit(ValueError, f"{name}: dy shape (1, 1, 3, 2) does not match output shape (1, 1, 2, 2)"):
        pool(2).backward((), residuals, jnp.ones((1, 1, 3, 2)))


@pytest.mark.parametrize("window, padding", [((2, 3), (2, 0)), ((3, 2), (0, 2)), ((2, 2), (2, 1)), ((2, 2), (1, 2))])
def test_pooling_padding_must_be_smaller_than_the_window_on_each_axis(window, padding):
    from pure_backprop.layers import avg_pool2d, max_pool2d
    for name, pool in (("max_pool2d", max_pool2d), ("avg_pool2d", avg_pool2d)):
        with _raises_exactly(ValueError, f"{name}: padding {padding} must be smaller than the window {window}, "
                                         f"so that every window holds an entry of the input"):
            pool(window, padding=padding)
    # one less on the offending axis is accepted
    fits = tuple(min(p, k - 1) for p, k in zip(padding, window))
    assert max_pool2d(window, padding=fits).init(None, (1, 1, 6, 6))[0] == ()


def test_pooling_defaults_no_padding_and_a_window_of_one_is_the_identity():
    from pure_backprop.layers import avg_pool2d, max_pool2d
    x = jnp.arange(16.0).reshape(1, 1, 4, 4)
    y, _ = avg_pool2d(2).forward((), x)  # stride = window, padding 0
    np.testing.assert_array_equal(y[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    assert avg_pool2d(2).init(None, (1, 1, 4, 4))[1] == (1, 1, 2, 2)
    for pool in (max_pool2d, avg_pool2d):
        y, residuals = pool(1).forward((), x)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(pool(1).backward((), residuals, 2 * x)[1], 2 * x)


# --- pure_backprop/layers/batch_norm.py -------------------------------------------------------

def test_batch_norm_messages_name_the_layer_the_argument_and_the_shapes_exactly():
    bn = batch_norm()
    params, state, _ = bn.init(None, (-1, 3))
    with _raises_exactly(ValueError, "batch_norm: in_shape must be (N, D) or (N, C, H, W), got shape (3,)"):
        bn.init(None, (3,))
    with _raises_exactly(TypeError, "batch_norm: train must be a Python bool (True for batch statistics and dropout, "
                                    "False for inference), got int; under jax.jit mark it static"):
        bn.forward(params, state, jnp.ones((2, 3)), None, 1)
    with _raises_exactly(ValueError, "batch_norm: state['mean'] has shape (4,) but x of shape (2, 3) has 3 "
                                     "features/channels; expected (3,)"):
        bn.forward(params, {"mean": jnp.zeros(4), "var": jnp.ones(3)}, jnp.ones((2, 3)), None, True)
    with _raises_exactly(ValueError, "batch_norm: train mode needs at least 2 values per feature to normalize, got x "
                                     "of shape (1, 3) (a batch of one gives y = beta and dx = 0)"):
        bn.forward(params, state, jnp.ones((1, 3)), None, True)
    residuals = bn.forward(params, state, jnp.ones((2, 3)), None, True)[2]
    with _raises_exactly(ValueError, "batch_norm: dy shape (3, 2) does not match x shape (2, 3)"):
        bn.backward(params, residuals, jnp.ones((3, 2)))


def test_batch_norm_two_values_per_feature_are_enough_in_train_mode():
    bn = batch_norm()
    for shape in ((2, 3), (1, 3, 1, 2), (2, 3, 1, 1)):
        params, state, _ = bn.init(None, shape)
        x = jnp.arange(float(np.prod(shape))).reshape(shape)
        y, _, residuals = bn.forward(params, state, x, None, True)
        assert np.all(np.abs(np.asarray(y)) > 0.99)  # two values normalize to -1 and +1 (up to eps)
        assert bn.backward(params, residuals, jnp.ones(shape))[1].shape == shape


def test_batch_norm_momentum_zero_keeps_only_the_batch_statistics():
    bn = batch_norm(momentum=0.0)
    params, state, _ = bn.init(None, (-1, 2))
    x = jnp.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    _, new_state, _ = bn.forward(params, state, x, None, True)
    np.testing.assert_allclose(new_state["mean"], [3.0, 20.0], rtol=1e-7)  # float32 state
    np.testing.assert_allclose(new_state["var"], [8 / 3, 200 / 3], rtol=1e-7)


def test_batch_norm_init_and_running_averages_keep_the_dtype_asked_for():
    bn = batch_norm()
    for dtype in (jnp.float32, jnp.float16):
        params, state, _ = bn.init(None, (-1, 3, 2, 2), dtype)
        assert {k: v.dtype for k, v in {**params, **state}.items()} == dict.fromkeys(("gamma", "beta", "mean", "var"), dtype)
        # a float64 batch through float32/float16 state: the new averages stay in the state's dtype
        _, new_state, _ = bn.forward(params, state, jnp.ones((2, 3, 2, 2), jnp.float64), None, True)
        assert new_state["mean"].dtype == dtype and new_state["var"].dtype == dtype


# --- reference/regularization.py --------------------------------------------------------------

def test_reference_weight_decay_penalty_finds_W_at_any_depth_like_the_package():
    """Every leaf whose last key is ``"W"``, however deep, and no other leaf (a bare array in a
    tuple has an index, not a key): the reference must pick the same leaves as the package."""
    from pure_backprop.layers.weight_decay import penalty
    from reference.regularization import weight_decay_penalty
    w1, w2, b = jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 2)), jnp.full((3,), 10.0)
    params = ({"block": {"W": w1, "b": b}}, [b], {"W": w2}, ())
    expected = 0.5 * 0.1 * (float(jnp.sum(w1 ** 2)) + float(jnp.sum(w2 ** 2)))
    np.testing.assert_allclose(weight_decay_penalty(params, 0.1), expected, rtol=1e-14)
    np.testing.assert_allclose(penalty(params, 0.1), expected, rtol=1e-14)


# --- reference/conv.py ------------------------------------------------------------------------

def test_reference_conv_defaults_are_stride_one_and_no_padding():
    from reference import conv as ref
    x = jax.random.normal(_KEY, (2, 3, 5, 6))
    params = {"W": jax.random.normal(_KEY, (4, 3, 3, 3)), "b": jnp.arange(4.0)}
    assert ref.conv2d()(params, x).shape == (2, 4, 3, 4)
    np.testing.assert_array_equal(ref.conv2d()(params, x), ref.conv2d(1, 0)(params, x))
    assert ref.avg_pool2d(2)(None, x).shape == ref.max_pool2d(2)(None, x).shape == (2, 3, 2, 3)


@pytest.mark.parametrize("padding", [(1, 0), (0, 1), (2, 1)])
def test_reference_pooling_pads_each_axis_by_its_own_amount_like_the_package(padding):
    from pure_backprop.layers import avg_pool2d, max_pool2d
    from reference import conv as ref
    x = jax.random.normal(_KEY, (1, 2, 5, 4))
    for package, reference in ((max_pool2d, ref.max_pool2d), (avg_pool2d, ref.avg_pool2d)):
        want = package(3, 1, padding).forward((), x)[0]
        got = reference(3, 1, padding)(None, x)
        assert got.shape == want.shape == (1, 2, 3 + 2 * padding[0], 2 + 2 * padding[1])
        np.testing.assert_allclose(got, want, rtol=1e-14)


# --- pure_backprop/layers/conv2d.py -----------------------------------------------------------
# Every axis a different length (N 2, C 6, FN 4, H 7, W 8, a 3x2 or 2x3 kernel), so that a wrong
# transpose or reshape changes a shape or mixes values; each config leaves a remainder (rows or
# columns that no window reaches) and pads the axes differently; C FH FW = 36 > 32, so "auto"
# picks the convolution form for B and the offsets form for A (over-padded rows).

_CONV_CONFIGS = {  # name: (kernel, stride, padding)
    "A": ((3, 2), (3, 1), (2, 0)),   # rows: (7 + 4 - 3) % 3 = 2 left over; over-padded rows
    "B": ((2, 3), (1, 2), (0, 1)),   # columns: (8 + 2 - 3) % 2 = 1 left over
}


def _conv2d_case(config, dtype=jnp.float64):
    kernel, stride, padding = _CONV_CONFIGS[config]
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    x = jax.random.normal(keys[0], (2, 6, 7, 8), dtype)
    params = {"W": jax.random.normal(keys[1], (4, 6) + kernel, jnp.float64), "b": jax.random.normal(keys[2], (4,))}
    return kernel, stride, padding, x, params, keys[3]


@pytest.mark.parametrize("method", ["auto", "im2col", "conv", "mixed", "offsets"])
@pytest.mark.parametrize("config", ["A", "B"])
def test_conv2d_every_method_matches_jax_vjp_with_unequal_axes_and_a_remainder(config, method):
    import reference.conv as ref7
    from pure_backprop.layers import conv2d
    kernel, stride, padding, x, params, key = _conv2d_case(config)
    layer = conv2d(4, kernel, stride, padding, method=method)
    y, residuals = layer.forward(params, x)
    expected_y, vjp = jax.vjp(ref7.conv2d(stride, padding), params, x)
    assert y.shape == expected_y.shape
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-12)
    dy = jax.random.normal(key, y.shape)
    grads, dx = layer.backward(params, residuals, dy)
    expected_grads, expected_dx = vjp(dy)
    for got, want in ((grads["W"], expected_grads["W"]), (grads["b"], expected_grads["b"]), (dx, expected_dx)):
        assert got.shape == want.shape and got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["im2col", "conv", "mixed", "offsets"])
def test_conv2d_promotes_float32_x_with_float64_filters_like_a_matrix_product(method):
    import reference.conv as ref7
    from pure_backprop.layers import conv2d
    kernel, stride, padding, x, params, key = _conv2d_case("A", jnp.float32)
    layer = conv2d(4, kernel, stride, padding, method=method)
    y, residuals = layer.forward(params, x)
    dy = jax.random.normal(key, y.shape)
    grads, dx = layer.backward(params, residuals, dy)
    expected_y, vjp = jax.vjp(ref7.conv2d(stride, padding), params, x.astype(jnp.float64))
    expected_grads, expected_dx = vjp(dy)
    for got, want in ((y, expected_y), (grads["W"], expected_grads["W"]), (dx, expected_dx)):
        assert got.dtype == jnp.float64, method  # float32 x is exact in float64: the results are too
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("w_shape, padding, plan", [
    ((1, 32, 1, 1), (0, 0), "im2col"), ((1, 2, 4, 4), (0, 0), "im2col"),  # K = 32: still im2col
    ((1, 33, 1, 1), (0, 0), "conv"), ((1, 3, 3, 4), (0, 0), "conv"),      # K = 33 and 36
    ((1, 16, 3, 5), (1, 2), "conv"),      # 2 ph = FH - 1 and 2 pw = FW - 1: the output is the input's size
    ((1, 16, 3, 5), (2, 0), "offsets"),   # rows over-padded
    ((1, 16, 3, 5), (0, 3), "offsets"),   # columns over-padded
    ((1, 16, 5, 3), (0, 2), "offsets"),
])
def test_conv2d_auto_plan_at_its_boundaries(w_shape, padding, plan):
    from pure_backprop.layers.conv2d import auto_plan
    assert auto_plan(w_shape, padding) == plan


def test_conv2d_init_shapes_dtype_and_initializers():
    from pure_backprop.layers import conv2d
    params, out_shape = conv2d(4, (3, 2), stride=(2, 1), padding=(1, 0)).init(_KEY, (-1, 6, 7, 8), jnp.float64)
    assert out_shape == (-1, 4, 4, 7)
    assert params["W"].shape == (4, 6, 3, 2) and params["W"].dtype == jnp.float64
    assert params["b"].shape == (4,) and params["b"].dtype == jnp.float64
    np.testing.assert_array_equal(params["b"], jnp.zeros(4))
    assert conv2d(1, 1).init(_KEY, (2, 1, 3, 3))[1] == (2, 1, 3, 3)  # one filter of 1x1, no padding
    seen = []

    def w_init(key, shape, dtype):
        seen.append(("W", shape, dtype))
        return jax.random.normal(key, shape, dtype)

    def b_init(key, shape, dtype):
        seen.append(("b", shape, dtype))
        return jax.random.normal(key, shape, dtype)

    params, _ = conv2d(3, 2, w_init=w_init, b_init=b_init).init(_KEY, (1, 2, 4, 4), jnp.float32)
    assert seen == [("W", (3, 2, 2, 2), jnp.float32), ("b", (3,), jnp.float32)]
    k_w, k_b = jax.random.split(_KEY)  # W and b from the two halves of the key
    np.testing.assert_array_equal(params["W"], jax.random.normal(k_w, (3, 2, 2, 2), jnp.float32))
    np.testing.assert_array_equal(params["b"], jax.random.normal(k_b, (3,), jnp.float32))


def test_conv2d_accepts_the_smallest_arguments():
    from pure_backprop.layers import conv2d
    layer = conv2d(1, (1, 1), stride=(1, 1), padding=(0, 0))
    x = jnp.arange(12.0).reshape(1, 1, 3, 4)
    y, residuals = layer.forward({"W": jnp.full((1, 1, 1, 1), 2.0), "b": jnp.ones(1)}, x)
    np.testing.assert_array_equal(y, 2 * x + 1)
    assert conv2d(2, 3, method="conv").init(_KEY, (1, 1, 3, 3))[1] == (1, 2, 1, 1)  # the kernel just fits


@pytest.mark.parametrize("bad, message", [
    (dict(filters=0), "filters must be a positive int, got 0"),
    (dict(filters=True), "filters must be a positive int, got True"),
    (dict(filters=2.0), "filters must be a positive int, got 2.0"),
    (dict(kernel_size=0), "kernel_size must be a positive int or a pair of positive ints, got 0"),
    (dict(stride=(1, 0)), "stride must be a positive int or a pair of positive ints, got (1, 0)"),
    (dict(padding=-1), "padding must be a non-negative int or a pair of non-negative ints, got -1"),
    (dict(method="fft"), "method must be one of ('auto', 'im2col', 'conv', 'mixed', 'offsets'), got 'fft'"),
])
def test_conv2d_construction_messages_exactly(bad, message):
    from pure_backprop.layers import conv2d
    arguments = dict(filters=2, kernel_size=3) | bad
    with _raises_exactly(ValueError, "conv2d: " + message):
        conv2d(**arguments)


def test_conv2d_shape_messages_exactly():
    from pure_backprop.layers import conv2d
    layer = conv2d(4, (2, 3), padding=1)  # C = 3, FH = 2, FW = 3: a message that reads the wrong axis shows it
    params = {"W": jnp.ones((4, 3, 2, 3)), "b": jnp.ones(4)}
    with _raises_exactly(ValueError, "conv2d: in_shape must be (N, C, H, W), got (3, 8, 8)"):
        layer.init(_KEY, (3, 8, 8))
    tight = conv2d(4, (3, 2), padding=(0, 1))
    with _raises_exactly(ValueError, "conv2d: kernel (3, 2) is larger than the padded input (2, 4) "
                                     "(in_shape (-1, 3, 2, 2), padding (0, 1)); use a smaller kernel or more padding"):
        tight.init(_KEY, (-1, 3, 2, 2))
    with _raises_exactly_under_jit(ValueError, "conv2d: kernel (3, 2) is larger than the padded input (2, 4) "
                                   "(x.shape=(1, 3, 2, 2), padding (0, 1)); use a smaller kernel or more padding"):
        tight.forward({"W": jnp.ones((4, 3, 3, 2)), "b": jnp.ones(4)}, jnp.ones((1, 3, 2, 2)))
    shape_errors = [
        (params, jnp.ones((3, 8, 8)), "x must have 4 axes, got shape (3, 8, 8) (N, C, H, W)"),
        ({"W": jnp.ones((4, 3, 3)), "b": jnp.ones(4)}, jnp.ones((1, 3, 8, 8)),
         "W must have 4 axes, got shape (4, 3, 3) (FN, C, FH, FW)"),
        (params, jnp.ones((1, 2, 8, 8)),
         "input has 2 channels but W expects 3 (x.shape=(1, 2, 8, 8), W.shape=(4, 3, 2, 3))"),
        ({"W": jnp.ones((4, 3, 3, 2)), "b": jnp.ones(4)}, jnp.ones((1, 3, 8, 8)),
         "W has kernel (3, 2) but the layer was built with kernel_size (2, 3) (W.shape=(4, 3, 3, 2))"),
        ({"W": params["W"], "b": jnp.ones((1, 4))}, jnp.ones((1, 3, 8, 8)),
         "b shape (1, 4) does not match W shape (4, 3, 2, 3); expected (4,)"),
    ]
    for p, x, message in shape_errors:
        with _raises_exactly_under_jit(ValueError, "conv2d: " + message):
            layer.forward(p, x)
    _, residuals = layer.forward(params, jnp.ones((2, 3, 5, 6)))  # y: (2, 4, 6, 6)
    with _raises_exactly_under_jit(ValueError, "conv2d: dy shape (2, 4, 6, 5) does not match output shape (2, 4, 6, 6)"):
        layer.backward(params, residuals, jnp.ones((2, 4, 6, 5)))


@pytest.mark.parametrize("x_dtype, w_dtype", [
    (jnp.float32, jnp.float32), (jnp.float32, jnp.float16), (jnp.float16, jnp.float32), (jnp.bfloat16, jnp.float16)])
@pytest.mark.parametrize("method", ["conv", "offsets", "im2col"])
def test_conv2d_computes_in_the_promoted_dtype_of_x_and_w(method, x_dtype, w_dtype):
    # under x64 a default dtype would be float64: every part must be result_type(x, W) instead
    import reference.conv as ref7
    from pure_backprop.layers import conv2d
    kernel, stride, padding, x, params, key = _conv2d_case("A")
    layer = conv2d(4, kernel, stride, padding, method=method)
    low = {"W": params["W"].astype(w_dtype), "b": params["b"].astype(w_dtype)}
    y, residuals = layer.forward(low, x.astype(x_dtype))
    dtype = jnp.result_type(x_dtype, w_dtype)
    dy = jax.random.normal(key, y.shape).astype(dtype)
    grads, dx = layer.backward(low, residuals, dy)
    exact = {k: v.astype(jnp.float64) for k, v in low.items()}
    expected_y, vjp = jax.vjp(ref7.conv2d(stride, padding), exact, x.astype(x_dtype).astype(jnp.float64))
    expected_grads, expected_dx = vjp(dy.astype(jnp.float64))
    for got, want in ((y, expected_y), (grads["W"], expected_grads["W"]), (grads["b"], expected_grads["b"]),
                      (dx, expected_dx)):
        assert got.dtype == dtype, (got.dtype, dtype)
        np.testing.assert_allclose(np.float64(got), want, rtol=0.05, atol=0.05 * float(jnp.max(jnp.abs(want))))


# --- pure_backprop/perturb.py -----------------------------------------------------------------
# The module's promise is twofold: the values equal a recomputation (tests/test_perturb.py), and
# each rule keeps a value sparse while that is exact (a rule that fell back to the dense path
# would give the same values, only slower). These read the form of the output too.

_PA = np.random.default_rng(1).normal(size=(3, 4))
_PB = np.random.default_rng(2).normal(size=(4, 5))
_PV = np.random.default_rng(3).normal(size=4)
_P_IDX = np.array([0, 5, 11, 7])  # one moved entry per perturbation: (0, 0), (1, 1), (2, 3), (1, 3) of a (3, 4)


def _perturb_out(fun, args, j, idx=_P_IDX, new=None, tol=1e-13):
    """``fun``'s output as ``perturb._eval`` carries it, ``(base, rep)``, with entry ``idx[k]`` of
    ``args[j]`` set to ``new[k]`` (default: moved by a seeded normal) for perturbation ``k``; its
    values are checked against the same perturbations recomputed one at a time."""
    from pure_backprop import perturb
    args = [jnp.asarray(a) for a in args]
    if new is None:
        new = args[j].ravel()[idx] + jnp.asarray(np.random.default_rng(4).normal(size=len(idx)), args[j].dtype)
    closed = jax.make_jaxpr(fun)(*args)
    inputs = [(a, None) for a in args]
    inputs[j] = (args[j], perturb.Sparse(jnp.asarray(idx).reshape(-1, 1), new.reshape(-1, 1)))
    ((base, rep),) = perturb._eval(closed.jaxpr, closed.consts, inputs, len(idx))

    def one(i, v):
        moved = list(args)
        moved[j] = args[j].ravel().at[i].set(v).reshape(args[j].shape)
        return fun(*moved)

    want = jnp.stack([one(i, v) for i, v in zip(idx, new)])
    np.testing.assert_allclose(base, fun(*args), rtol=1e-14)
    np.testing.assert_allclose(perturb._dense(base, rep, len(idx)), want, rtol=tol, atol=tol)
    return base, rep


def _sparse_at(rep, positions):
    from pure_backprop import perturb
    assert isinstance(rep, perturb.Sparse), type(rep).__name__
    np.testing.assert_array_equal(rep.idx, np.asarray(positions).reshape(len(_P_IDX), -1))


_ROWS, _COLS = np.divmod(_P_IDX, 4)  # the moved entries' coordinates in the (3, 4) operand


@pytest.mark.parametrize("name, fun, args, j, positions", [
    ("elementwise", lambda a: jnp.tanh(a) * 2.0, (_PA,), 0, _P_IDX),
    ("elementwise, unaffected operand", lambda a, b: jnp.exp(a) * b, (_PA, _PA[::-1]), 0, _P_IDX),
    ("broadcast bias", lambda a, v: a + v[None, :], (_PA, _PV), 0, _P_IDX),
    ("scalar operand", lambda a: jnp.maximum(a, 0.1), (_PA,), 0, _P_IDX),
    ("reshape", lambda a: jnp.sin(a.reshape(2, 6)), (_PA,), 0, _P_IDX),
    ("axis of size one", lambda a: jnp.cos(a[:, None, :]), (_PA,), 0, _P_IDX),
    ("squeeze", lambda a: jnp.squeeze(a[:, None, :], 1), (_PA,), 0, _P_IDX),
    ("transpose", lambda a: a.T, (_PA,), 0, _COLS * 3 + _ROWS),
    ("matmul lhs", lambda a, b: a @ b, (_PA, _PB), 0, _ROWS[:, None] * 5 + np.arange(5)),
    ("matmul rhs", lambda b, a: a @ b, (_PA, _PB.T[:, :3]), 0, np.arange(5)[None, :] * 4 + _COLS[:, None]),
    ("matmul, contracting the first axes", lambda a, b: jnp.einsum("ij,ik->jk", a, b), (_PA, _PB.T[:3]), 0,
     _COLS[:, None] * 4 + np.arange(4)),
    ("batched matmul", lambda a, b: jnp.einsum("bj,bk->bjk", a, b), (_PA, _PB.T[:3]), 0,
     _ROWS[:, None] * 16 + _COLS[:, None] * 4 + np.arange(4)),
    ("outer product by dot_general", lambda a, w: jax.lax.dot_general(a, w, (((), ()), ((), ()))),
     (_PA, _PB[0]), 0, _P_IDX[:, None] * 5 + np.arange(5)),
    ("outer product, moved operand second", lambda a, w: jax.lax.dot_general(w, a, (((), ()), ((), ()))),
     (_PA, _PB[0]), 0, np.arange(5)[None, :] * 12 + _P_IDX[:, None]),
    ("inner jit", lambda a: jax.jit(jnp.tanh)(a), (_PA,), 0, _P_IDX),
    ("inner jit with a constant", lambda a: jax.jit(lambda v: v * _PA + 1.0)(a), (_PA,), 0, _P_IDX),
    ("checkpoint", lambda a: jax.checkpoint(jnp.tanh)(a), (_PA,), 0, _P_IDX),
    ("custom_jvp", lambda a: jax.nn.relu(a), (_PA,), 0, _P_IDX),
])
def test_perturb_rules_keep_one_moved_entry_sparse(name, fun, args, j, positions):
    _sparse_at(_perturb_out(fun, args, j)[1], positions)


@pytest.mark.parametrize("name, fun, args, j", [
    ("reduce_sum", lambda a: jnp.sum(a, 0), (_PA,), 0),
    ("reduce_sum, all axes", lambda a: jnp.sum(a), (_PA,), 0),
    ("bias moved: a real broadcast", lambda v, a: a + v[None, :], (_PV, _PA), 0),
    ("fallback", lambda a: jnp.cumsum(a, 1), (_PA,), 0),
    ("reshape that transposes", lambda a: jnp.sin(jax.lax.reshape(a, (4, 3), dimensions=(1, 0))), (_PA,), 0),
    ("two moved entries meet", lambda a: (a @ a.T) * a[:, :3], (_PA,), 0),
])
def test_perturb_dense_where_the_rules_say(name, fun, args, j):
    from pure_backprop import perturb
    idx = _P_IDX[:3] if name == "bias moved: a real broadcast" else _P_IDX
    _, rep = _perturb_out(fun, args, j, idx)
    assert isinstance(rep, perturb.Dense), type(rep).__name__


def test_perturb_change_is_taken_in_the_output_precision():
    # float32 operands, a float64 product: the moved entry's change must be the exact float64
    # difference, not a float32 one rounded before it is widened
    from jax import lax
    a = jnp.asarray(_PA * 1e3, jnp.float32)
    b = jnp.asarray(_PB, jnp.float32)

    def fun(u, w):
        return lax.dot_general(u, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float64)

    from pure_backprop import perturb
    idx = _P_IDX
    new = (a.ravel()[idx] * (1 + 1e-3 * np.arange(1, 5))).astype(jnp.float32)  # close to the old value
    base, rep = _perturb_out(fun, (a, b), 0, idx, new, tol=1e-12)
    assert perturb._dense(base, rep, 4).dtype == jnp.float64
    change = perturb._change(a, perturb.Sparse(jnp.asarray(idx)[:, None], new[:, None]), jnp.float64)
    np.testing.assert_array_equal(change[:, 0], np.float64(new) - np.float64(a.ravel()[idx]))


def test_perturb_messages_and_sizes_exactly():
    from pure_backprop import perturb
    with _raises_exactly(ValueError, "perturb: the function must return a scalar, got shape (3,)"):
        perturb.moved_values(lambda a: a * 2, [jnp.ones(3)], 0, jnp.zeros(2, int), jnp.ones(2))
    assert perturb.dense_bytes(lambda s: s, [jnp.float64(1.0)]) == 8  # no intermediate: the output's 8 bytes
    # a float32 (3, 4): 48 bytes for tanh, 4 for the sum; an inner jit counts its own intermediates too
    a = jnp.ones((3, 4), jnp.float32)
    assert perturb.dense_bytes(lambda u: jnp.sum(jnp.tanh(u)), [a]) == 48 + 4
    assert perturb.dense_bytes(lambda u: jnp.sum(jax.jit(jnp.tanh)(u)), [a]) == 48 + 48 + 4


# --- pure_backprop/gradcheck.py ---------------------------------------------------------------

def _gradcheck_affine():
    params, _ = affine(3).init(jax.random.PRNGKey(0), (-1, 4))
    return affine(3), params, jax.random.normal(jax.random.PRNGKey(1), (5, 4))


_STEP = "step must be a finite number > 0 (the finite-difference step, relative to the entries' magnitude), got "
_TOL = "must be a finite number >= 0 (a tolerance), got "
_MEMORY = "memory_mb must be a finite number > 0 (MiB for one compiled full-mode chunk), got "
_REAL = "; gradcheck differentiates real floating (or integer, promoted to float64) values only: close over the others in the layer"


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="slow"), "mode must be 'fast' or 'full', got 'slow'"),
    (dict(order=3), "order must be 2 or 4, got 3"),
    (dict(order=True), "order must be 2 or 4, got True"),
    (dict(order=4.0), "order must be 2 or 4, got 4.0"),
    (dict(directions=0), "directions must be an integer >= 1, got 0; pass e.g. directions=3"),
    (dict(directions=True), "directions must be an integer >= 1, got True; pass e.g. directions=3"),
    (dict(seed=-1), "seed must be an integer in [0, 2**63), got -1; pass e.g. seed=0"),
    (dict(seed=2**63), "seed must be an integer in [0, 2**63), got 9223372036854775808; pass e.g. seed=0"),
    (dict(seed=1.0), "seed must be an integer in [0, 2**63), got 1.0; pass e.g. seed=0"),
    (dict(seed=np.bool_(True)), "seed must be an integer in [0, 2**63), got np.True_; pass e.g. seed=0"),
    (dict(step=0.0), _STEP + "0.0; pass e.g. step=1e-5, or None for the default"),
    (dict(step="1e-5"), _STEP + "'1e-5'; pass e.g. step=1e-5, or None for the default"),
    (dict(step=True), _STEP + "True; pass e.g. step=1e-5, or None for the default"),
    (dict(step=b"1"), _STEP + "b'1'; pass e.g. step=1e-5, or None for the default"),
    (dict(step=[1e-5]), _STEP + "[1e-05]; pass e.g. step=1e-5, or None for the default"),
    (dict(rtol_jax=-1e-10), "rtol_jax " + _TOL + "-1e-10; pass e.g. rtol_jax=1e-10 (the default)"),
    (dict(rtol_jax=None), "rtol_jax " + _TOL + "None; pass e.g. rtol_jax=1e-10 (the default)"),
    (dict(rtol_num=float("nan")), "rtol_num " + _TOL + "nan; pass e.g. rtol_num=1e-6 (the default)"),
    (dict(rtol_num=np.bool_(False)), "rtol_num " + _TOL + "np.False_; pass e.g. rtol_num=1e-6 (the default)"),
    (dict(atol=-1.0), "atol " + _TOL + "-1.0; pass e.g. atol=1e-9, or None for the rounding noise"),
    (dict(atol=True), "atol " + _TOL + "True; pass e.g. atol=1e-9, or None for the rounding noise"),
    (dict(memory_mb=0), _MEMORY + "0; pass e.g. memory_mb=256 (the default)"),
    (dict(memory_mb=True), _MEMORY + "True; pass e.g. memory_mb=256 (the default)"),
    (dict(memory_mb=float("inf")), _MEMORY + "inf; pass e.g. memory_mb=256 (the default)"),
    (dict(state={"a": 1}), "state and key apply to a StatefulLayer; this layer is a plain Layer"),
    (dict(key=_KEY), "state and key apply to a StatefulLayer; this layer is a plain Layer"),
])
def test_gradcheck_settings_messages_exactly(kwargs, message):
    from pure_backprop import gradcheck
    layer, params, x = _gradcheck_affine()
    with _raises_exactly(ValueError, "gradcheck: " + message):
        gradcheck.check(layer, params, x, **kwargs)


def test_gradcheck_input_messages_exactly():
    from pure_backprop import gradcheck
    layer, params, x = _gradcheck_affine()
    tuple_in = Layer(None, lambda p, v: (v[0] * v[1], v), lambda p, r, dy: ((), (dy * r[1], dy * r[0])))
    cases = [
        (relu, (), jnp.zeros((0, 4)), "x is an empty batch (x has shape (0, 4)); give at least one example"),
        (tuple_in, (), (jnp.ones(2), jnp.zeros((0,))), "x is an empty batch (x[1] has shape (0,)); give at least one example"),
        (relu, (), (), "params and x hold no entries to check; give the layer at least one parameter or input entry"),
        (relu, (), jnp.array([True, False]), "x has dtype bool" + _REAL),
        (layer, {"W": params["W"].astype(jnp.complex64), "b": params["b"]}, x, "params['W'] has dtype complex64" + _REAL),
        (Layer(None, lambda p, v: ({"a": v, "n": jnp.round(v).astype(jnp.int32)}, None), lambda p, r, dy: ((), dy["a"])),
         (), jnp.ones((2, 3)), "the layer's output y['n'] has dtype int32; the output checked must be floating"),
        (Layer(None, lambda p, v: (v[:, :0], None), lambda p, r, dy: ((), jnp.zeros((2, 3)))), (), jnp.ones((2, 3)),
         "the layer's output y has no entries, so there is nothing to check; give an input for which the layer "
         "returns at least one value"),
    ]
    for lay, p, v, message in cases:
        with _raises_exactly(ValueError, "gradcheck: " + message):
            gradcheck.check(lay, p, v)


def test_gradcheck_report_text_exactly():
    from pure_backprop import gradcheck
    good = gradcheck.LeafReport("params['W']", (4, 3), 1e-17, 2.5e-16, 3e-9, 1.5e-9, "v2", 0.123456789, 0.123456789,
                                0.1234567, 0, True)
    bad = gradcheck.LeafReport("dx", (5, 4), float("nan"), float("nan"), float("inf"), float("inf"), "(1, 2)", 1.0,
                               2.0, float("nan"), 2, False, "non-finite numerical (1, 2) = nan")
    report = gradcheck.Report("affine", "fast", ("float32",), (good, bad), ("a problem",), 4)
    assert not report.ok and report.kinks == 2
    assert str(report) == "\n".join([
        "gradcheck affine: mode=fast, float64, promoted from float32: FAILED",
        "  rows: each leaf's worst of 4 random unit directions vN; hand, jax, numerical: d<y, dy>/d(vN); an entry "
        "(i, j) where the leaf needed the entry-by-entry check (a kink, a disagreement, a non-finite value)",
        "  problem: a problem",
        "case    leaf         shape   rel err jax  rel err numerical  worst   hand      jax       numerical  kinks  status",
        "affine  params['W']  (4, 3)  2.5e-16      1.5e-09            v2      0.123457  0.123457  0.123457   0      ok",
        "affine  dx           (5, 4)  nan          inf                (1, 2)  1         2         nan        2      "
        "FAIL non-finite numerical (1, 2) = nan",
    ])
    fine = gradcheck.Report("net", "full", ("float32", "int64"), (good,))
    assert fine.ok and str(fine).splitlines()[:2] == [
        "gradcheck net: mode=full, float64, promoted from float32/int64: ok",
        "  rows: each leaf's worst entry (i, j); hand, jax, numerical: d<y, dy>/d(entry)"]
    assert str(gradcheck.Report("x", "full", (), (good,))).splitlines()[0] == "gradcheck x: mode=full, float64: ok"
    assert not gradcheck.Report("x", "full", (), (good,), ("a problem",)).ok  # a problem fails it, leaves ok or not
    assert gradcheck.format_rows([("c", dataclasses.replace(bad, problem=""))]).splitlines()[1].endswith("2      FAIL")


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_gradcheck_a_zero_gradient_passes_with_relative_errors_of_zero(mode):
    # every hand, jax and numerical value of dx is 0: the leaf's scale is 0, and its relative
    # errors are the absolute ones (0), not 0 / 0
    from pure_backprop import gradcheck
    layer = Layer(None, lambda p, v: (v * 0.0 + p["c"], None), lambda p, r, dy: ({"c": dy}, dy * 0.0))
    report = gradcheck.check(layer, {"c": jnp.ones((2, 3))}, jnp.ones((2, 3)), mode=mode)
    dx = report.leaves[1]
    assert report.ok and dx.path == "dx" and (dx.rel_jax, dx.rel_num, dx.abs_jax, dx.abs_num) == (0, 0, 0, 0), str(report)
    # with atol = 0 the tolerance is 0 and the errors are exactly 0: within it (<=), so fast mode
    # keeps its directions (worst "v0") instead of falling back to every entry
    exact = gradcheck.check(layer, {"c": jnp.ones((2, 3))}, jnp.ones((2, 3)), mode=mode, atol=0.0)
    assert exact.ok and exact.leaves[1].worst == ("v0" if mode == "fast" else "(0, 0)"), str(exact)


def test_gradcheck_wrong_structure_or_shape_of_the_backward_fails_by_name():
    from pure_backprop import gradcheck
    x = jnp.ones((2, 3))
    tuple_grads = Layer(None, lambda p, v: (v * p["a"][None, :], v),
                        lambda p, r, dy: ((jnp.sum(dy * r, 0),), dy * p["a"][None, :]))
    report = gradcheck.check(tuple_grads, {"a": jnp.ones(3)}, x)
    assert not report.ok and report.leaves == ()
    assert report.problems == (f"backward returned (grads, dx) with structure "
                               f"{jax.tree_util.tree_structure(((1,), 1))}, expected "
                               f"{jax.tree_util.tree_structure(({'a': 1}, 1))}",)
    # the failed report still says what was asked: name, mode, promoted dtypes, directions
    named = gradcheck.check(tuple_grads, {"a": jnp.ones(3, jnp.float32)}, x, mode="full", directions=2, name="tuple")
    assert (named.name, named.mode, named.promoted, named.directions) == ("tuple", "full", ("float32",), 2)
    assert named.problems == report.problems and not named.ok
    summed = Layer(None, tuple_grads.forward, lambda p, r, dy: ({"a": jnp.sum(dy * r)}, dy * p["a"][None, :]))
    report = gradcheck.check(summed, {"a": jnp.ones(3)}, x)
    a, dx = report.leaves
    assert not report.ok and a.ok is False and dx.ok
    assert (a.path, a.shape, a.worst, a.rel_jax, a.rel_num, a.problem) == ("params['a']", (3,), "-", np.inf, np.inf,
                                                                          "hand gradient has shape ()")
    assert (a.abs_jax, a.abs_num) == (np.inf, np.inf) and np.isnan([a.hand, a.jax, a.numerical]).all()
    assert a.kinks == 0
    nan_dx = Layer(None, tuple_grads.forward, lambda p, r, dy: ({"a": jnp.sum(dy * r, 0)}, dy * jnp.nan))
    report = gradcheck.check(nan_dx, {"a": jnp.ones(3)}, x)
    _, dx = report.leaves
    assert (dx.shape, dx.worst, dx.kinks, dx.ok) == ((2, 3), "(0, 0)", 0, False), str(report)
    assert dx.problem == "non-finite hand (0, 0) = nan (6 non-finite entries)"


def test_gradcheck_a_non_finite_forward_fails_every_leaf_naming_the_first_entry_and_the_count():
    from pure_backprop import gradcheck
    log = Layer(None, lambda p, v: (jnp.log(v), v), lambda p, r, dy: ((), dy / r))
    for mode in ("fast", "full"):
        report = gradcheck.check(log, (), jnp.array([[1.0, -1.0, -2.0]]), mode=mode)
        message = "non-finite forward y (0, 1) = nan (2 non-finite entries)"
        assert report.problems == (message,) and report.leaves[0].problem == message and not report.ok
        one = gradcheck.check(log, (), jnp.array([[1.0, -1.0]]), mode=mode)
        assert one.problems == ("non-finite forward y (0, 1) = nan",)
        assert report.kinks == 0 and one.kinks == 0  # a failed leaf has no kinks to report
        assert report.leaves[0].shape == (1, 3) and report.leaves[0].kinks == 0


def test_gradcheck_a_stateful_layer_is_checked_with_its_key_and_state():
    from pure_backprop import gradcheck
    from pure_backprop.layers import batch_norm, dropout
    x = jnp.arange(1.0, 7.0).reshape(2, 3)
    layer = dropout(0.5)
    report = gradcheck.check(layer, (), x, key=jax.random.PRNGKey(3), mode="full")
    assert report.ok and report.name == "layer", str(report)
    with pytest.raises(ValueError, match="needs a PRNG key"):  # the key given is the key used
        gradcheck.check(layer, (), x, mode="full")
    assert gradcheck.check(layer, (), x, train=False).ok  # inference: no key needed
    norm = batch_norm()
    params, state, _ = norm.init(jax.random.PRNGKey(0), (2, 3))
    assert gradcheck.check(norm, params, x, state=state, train=False, mode="full").ok


@pytest.mark.parametrize("factor, ok", [(1 - 1 / 256, True), (1 + 1 / 256, False)])
def test_gradcheck_the_rounding_noise_term_is_64_eps_times_the_magnitude_over_the_step(factor, ok):
    # y = 1 does not depend on x: its numerical gradient is exactly 0 and jax.vjp's is 0; the hand
    # dx = c * sum|dy| is off by exactly that, which rtol_jax = 1 lets through to the numerical
    # comparison, where with rtol_num = 0 the tolerance is the noise term 64 eps sum|y||dy| / h
    from pure_backprop import gradcheck
    step = 2.0**-10
    c = factor * 64 * gradcheck.EPS / step
    layer = Layer(None, lambda p, v: (jnp.ones_like(v), None),
                  lambda p, r, dy: ((), jnp.full(dy.shape, c * jnp.sum(jnp.abs(dy)))))
    report = gradcheck.check(layer, (), jnp.zeros((2, 3)), mode="full", step=step, rtol_jax=1.0, rtol_num=0.0)
    assert report.ok == ok and report.leaves[0].numerical == 0.0 and report.leaves[0].jax == 0.0, str(report)
    if ok:  # fast mode allows sqrt(n) noise terms along a unit direction (|v . 1| <= sqrt(n)): no fallback
        fast = gradcheck.check(layer, (), jnp.zeros((2, 3)), mode="fast", step=step, rtol_jax=1.0, rtol_num=0.0)
        assert fast.ok and fast.leaves[0].worst.startswith("v"), str(fast)


def test_gradcheck_compare_with_jax_measures_the_relative_error_of_the_worst_leaf():
    from pure_backprop import gradcheck
    net = affine(2)
    params, _ = net.init(jax.random.PRNGKey(0), (4, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    off = Layer(None, net.forward, lambda p, r, dy: (lambda g, dx: ({**g, "W": 1.01 * g["W"]}, dx))(*net.backward(p, r, dy)))
    assert gradcheck.compare_with_jax(off, mse, params, x, _T) == pytest.approx(0.01, rel=1e-9)
    assert gradcheck.compare_with_jax(relu, mse, (), x[:, :2], _T) == 0.0  # no parameters: nothing off
    assert gradcheck.assert_close(relu, (), x, mode="full", name="relu").name == "relu"  # a pass returns its report


def test_gradcheck_check_loss_names_its_report_and_keeps_a_given_name():
    from pure_backprop import gradcheck
    from pure_backprop.layers import affine, mse
    net = affine(2)
    params, _ = net.init(jax.random.PRNGKey(0), (3, 4))
    x, t = jnp.ones((3, 4)), jnp.zeros((3, 2))
    assert gradcheck.check_loss(net, mse, params, x, t).name == "network+loss"
    assert gradcheck.check_loss(net, mse, params, x, t, name="mine").name == "mine"


def test_gradcheck_full_mode_evaluates_a_small_problem_densely_in_one_chunk_size(monkeypatch):
    # W (2x4) and x (4x2): 8 entries each, 16 moves per leaf at order 2 -> chunks of exactly 16
    # (the next power of two at or above), densely in one program, or leaf by leaf by perturb
    from pure_backprop import gradcheck
    dense_sizes, entry_sizes = [], []
    dense, moved_entries = gradcheck._moved_dense, gradcheck._moved_entries
    monkeypatch.setattr(gradcheck, "_moved_dense", lambda *a: dense_sizes.append(a[-1].shape) or dense(*a))
    monkeypatch.setattr(gradcheck, "_moved_entries", lambda *a: entry_sizes.append(a[-1].shape) or moved_entries(*a))
    layer = Layer(None, lambda p, v: (v @ p["W"], v), lambda p, r, dy: ({"W": r.T @ dy}, dy @ p["W"].T))
    params, x = {"W": jnp.ones((2, 4))}, jnp.ones((4, 2))
    assert gradcheck.check(layer, params, x, mode="full").ok
    assert dense_sizes == [(16,), (16,)] and entry_sizes == []
    dense_sizes.clear()
    monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 0)  # larger problems: perturb, leaf by leaf
    assert gradcheck.check(layer, params, x, mode="full").ok
    assert dense_sizes == [] and entry_sizes == [(16,), (16,)]
    entry_sizes.clear()
    monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 1)  # one entry, two moves: one chunk of 2
    assert gradcheck.check(relu, (), jnp.array([1.0]), mode="full").ok
    assert dense_sizes == [(2,)] and entry_sizes == []
    monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 0)  # the same leaf by perturb: one chunk of 2 too
    assert gradcheck.check(relu, (), jnp.array([1.0]), mode="full").ok
    assert dense_sizes == [(2,)] and entry_sizes == [(2,)]
    dense_sizes.clear()
    monkeypatch.setattr(gradcheck, "DENSE_ENTRIES", 16)  # 8 + 8 entries: at the bound, still dense
    assert gradcheck.check(layer, params, x, mode="full").ok
    assert dense_sizes == [(16,), (16,)]


def test_gradcheck_the_chunk_size_counts_the_output_paired_with_dy(monkeypatch):
    # the bytes of one move bound every intermediate of <forward(x), dy>: y = 2 x itself, and the
    # product with dy (raveled y and dy), not the forward alone
    from pure_backprop import gradcheck
    seen = []
    chunk_size = gradcheck.chunk_size
    monkeypatch.setattr(gradcheck, "chunk_size", lambda m, b: seen.append(b) or chunk_size(m, b))
    x = jnp.ones((4, 8))
    assert gradcheck.check(Layer(None, lambda p, v: (2.0 * v, None), lambda p, r, dy: ((), 2.0 * dy)), (), x, mode="full").ok
    assert seen and seen[0] >= 3 * x.nbytes, seen


def test_gradcheck_fast_mode_leaf_by_leaf_agrees_with_all_leaves_at_once(monkeypatch):
    # above ALONG_ENTRIES, fast mode moves each leaf along its directions in its own program
    from pure_backprop import gradcheck
    def backward(p, r, dy):
        v, z = r
        d = dy * (1 - jnp.tanh(z) ** 2)
        return {"W": v.T @ d}, d @ p["W"].T

    layer = Layer(None, lambda p, v: (jnp.tanh(v @ p["W"]), (v, v @ p["W"])), backward)
    params = {"W": jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)}
    together = gradcheck.check(layer, params, _x4)
    monkeypatch.setattr(gradcheck, "ALONG_ENTRIES", 0)
    alone = gradcheck.check(layer, params, _x4)
    assert together.ok and alone.ok, (str(together), str(alone))
    assert together.kinks == 0 and alone.kinks == 0  # a leaf passed along directions has no kinks
    for a, b in zip(together.leaves, alone.leaves):
        assert a.problem == "" and b.problem == ""
        assert a.worst == b.worst and a.hand == b.hand and a.numerical == pytest.approx(b.numerical, rel=1e-8)
        assert a.rel_num < 1e-8 and b.rel_num < 1e-8
    off = Layer(None, layer.forward, lambda p, r, dy: (lambda g, dx: (g, 1.01 * dx))(*layer.backward(p, r, dy)))
    report = gradcheck.check(off, params, _x4)
    assert not report.ok and [leaf.ok for leaf in report.leaves] == [True, False], str(report)


_x4 = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4)


@pytest.mark.parametrize("order", [2, 4])
def test_gradcheck_kinks_are_left_out_of_the_worst_entry_and_the_errors(order):
    # relu at its three zeros: kinks; the row's worst entry and errors come from the other entries
    from pure_backprop import gradcheck
    x = jnp.array([[0.0, 1.0, -2.0], [0.0, 0.0, 3.0]])
    report = gradcheck.check(relu, (), x, mode="full", order=order)
    (leaf,) = report.leaves
    assert report.ok and leaf.kinks == 3 and leaf.worst in ("(0, 1)", "(0, 2)", "(1, 2)"), str(report)
    assert leaf.abs_num < 1e-6 and leaf.abs_jax == 0.0


def test_gradcheck_all_leaves_are_moved_at_once_only_in_fast_mode_with_a_finite_forward(monkeypatch):
    from pure_backprop import gradcheck
    calls = []
    along = gradcheck._moved_along_every_leaf
    monkeypatch.setattr(gradcheck, "_moved_along_every_leaf", lambda *a: calls.append(1) or along(*a))
    x = jnp.array([[1.0, -1.0, 2.0]])
    assert gradcheck.check(relu, (), x, mode="fast").ok and len(calls) == 1
    assert gradcheck.check(relu, (), x, mode="full").ok and len(calls) == 1
    log = Layer(None, lambda p, v: (jnp.log(v), v), lambda p, r, dy: ((), dy / r))
    assert not gradcheck.check(log, (), x, mode="fast").ok and len(calls) == 1  # log(-1): nothing to move
    monkeypatch.setattr(gradcheck, "ALONG_ENTRIES", 3 * 3 * 1)  # entries x directions x leaves: at the bound
    assert gradcheck.check(relu, (), x, mode="fast").ok and len(calls) == 2
    monkeypatch.setattr(gradcheck, "ALONG_ENTRIES", 3 * 3 * 1 - 1)  # above it: leaf by leaf
    assert gradcheck.check(relu, (), x, mode="fast").ok and len(calls) == 2
    # two leaves of 3 entries: 6 x 3 directions x 2 leaves = 36 moves in the one program
    scaled = Layer(None, lambda p, v: (p["a"] * v, v), lambda p, r, dy: ({"a": dy * r}, dy * p["a"]))
    monkeypatch.setattr(gradcheck, "ALONG_ENTRIES", 36)
    assert gradcheck.check(scaled, {"a": jnp.ones((1, 3))}, x, mode="fast").ok and len(calls) == 3
    monkeypatch.setattr(gradcheck, "ALONG_ENTRIES", 35)
    assert gradcheck.check(scaled, {"a": jnp.ones((1, 3))}, x, mode="fast").ok and len(calls) == 3


def test_gradcheck_the_worst_entry_is_the_first_infinite_violation_nan_counting_as_infinite():
    # y = stop_gradient(sqrt(x)): hand and jax.vjp both 0, so with atol = 0 every tolerance is 0;
    # the numerical derivative is finite at x = 3 (infinitely many tolerances off) and NaN at 0
    # (sqrt(-h)): both are infinite violations, and the worst named is the first, (0, 0)
    from pure_backprop import gradcheck
    layer = Layer(None, lambda p, v: (jax.lax.stop_gradient(jnp.sqrt(v)), None), lambda p, r, dy: ((), dy * 0.0))
    report = gradcheck.check(layer, (), jnp.array([[3.0, 0.0]]), mode="full", atol=0.0)
    leaf = report.leaves[0]
    assert not report.ok and leaf.worst == "(0, 0)" and leaf.problem == "", str(report)
    assert np.isfinite(leaf.numerical) and leaf.numerical != 0.0 and leaf.hand == leaf.jax == 0.0
    # with only the NaN entry failing, it is the worst, and the report says why
    # an error of exactly 0 within a tolerance of 0 is no violation: (0, 0) of x**2 at 0 is exact
    square = Layer(None, lambda p, v: (jax.lax.stop_gradient(v**2), None), lambda p, r, dy: ((), dy * 0.0))
    leaf = gradcheck.check(square, (), jnp.array([[0.0, 3.0]]), mode="full", atol=0.0).leaves[0]
    assert leaf.worst == "(0, 1)" and leaf.numerical != 0.0, str(leaf)
    nan_only = gradcheck.check(layer, (), jnp.array([[0.0]]), mode="full", atol=0.0).leaves[0]
    assert nan_only.worst == "(0, 0)" and nan_only.problem == "non-finite numerical (0, 0) = nan", str(nan_only)
    # with the default (positive) tolerance: an infinite numerical derivative at (0, 0) (1 / (x - a)
    # is 1 / 0 at x + h) before a NaN one at (0, 1): the first is named, NaN ranking as infinite.
    # The pole's jump is infinite, so its margin would excuse any hand value: it is no kink
    step = 2.0**-10
    pole = Layer(None, lambda p, v: (jax.lax.stop_gradient(jnp.where(jnp.arange(2) == 0, 1 / (v - (1 + step)),
                                                                     jnp.sqrt(v))), None),
                 lambda p, r, dy: ((), dy * 0.0))
    leaf = gradcheck.check(pole, (), jnp.array([[1.0, 0.0]]), mode="full", step=step).leaves[0]
    assert leaf.worst == "(0, 0)" and leaf.problem == "non-finite numerical (0, 0) = -inf", str(leaf)
    assert leaf.kinks == 0 and not leaf.ok


def test_gradcheck_an_output_too_large_to_check_fails_with_its_reason():
    from pure_backprop import gradcheck
    layer = Layer(None, lambda p, v: (v * 1e308, None), lambda p, r, dy: ((), dy * 1e308))
    report = gradcheck.check(layer, (), jnp.full((2, 4), 1.5))
    (problem,) = report.problems
    assert not report.ok and problem.startswith("non-finite <y, dy> = ") and problem.endswith(
        ": the output is too large to check"), str(report)
    assert report.leaves[0].problem == problem
    # a finite <y, dy> with an infinite noise term (a step of 5e-324) would make every tolerance
    # infinite: refused the same way, not passed
    tiny = gradcheck.check(relu, (), jnp.ones((2, 3)), step=5e-324)
    (problem,) = tiny.problems
    assert not tiny.ok and problem.startswith("non-finite <y, dy> = ") and "rounding noise = inf" in problem, str(tiny)


def test_gradcheck_empty_leaves_last_do_not_hide_the_entries_before_them():
    from pure_backprop import gradcheck
    # the output's last leaf is empty, the first is not
    split = Layer(None, lambda p, v: ((2.0 * v, v[:, :0]), None), lambda p, r, dy: ((), 2.0 * dy[0]))
    assert gradcheck.check(split, (), jnp.ones((2, 3))).ok
    # no x at all, and the last parameter leaf empty
    params = {"a": jnp.ones(3), "b": jnp.zeros((0,))}
    bare = Layer(None, lambda p, v: (3.0 * p["a"] + jnp.sum(p["b"]), None),
                 lambda p, r, dy: ({"a": 3.0 * dy, "b": jnp.zeros((0,))}, ()))
    assert gradcheck.check(bare, params, ()).ok


def test_gradcheck_chunk_size_and_small_helpers():
    from pure_backprop import gradcheck
    assert [gradcheck.chunk_size(1, 2**20), gradcheck.chunk_size(1, 2**19), gradcheck.chunk_size(1e-4, 8),
            gradcheck.chunk_size(1e-9, 8), gradcheck.chunk_size(256, 3 * 2**20)] == [1, 2, 13, 1, 85]
    assert gradcheck._index(5, (2, 3)) == "(1, 2)" and gradcheck._index(0, ()) == "()"
    assert gradcheck.EPS == 2.0**-52
    assert gradcheck.rows_legend("fast").startswith("rows: each leaf's worst of 3 random unit directions vN;")


def test_gradcheck_order_4_does_not_excuse_a_value_outside_the_kinks_one_sided_derivatives():
    # relu at 0: the one-sided derivatives of <y, dy> are 0 and dy; a hand derivative of 1.8 dy
    # there is no subgradient (1.8 > 1 + 5 % of the jump + tol): it fails at either order
    from pure_backprop import gradcheck
    wrong = Layer(None, relu.forward, lambda p, r, dy: ((), jnp.where(r == 0, 1.8 * dy, relu.backward(p, r, dy)[1])))
    for order in (2, 4):
        leaf = gradcheck.check(wrong, (), jnp.array([[0.0, 1.0, -2.0]]), mode="full", order=order).leaves[0]
        assert not leaf.ok and leaf.kinks == 0 and leaf.worst == "(0, 0)", str(leaf)
        assert leaf.hand == pytest.approx(3.6 * leaf.numerical, rel=1e-6)  # 1.8 dy against (0 + 1) dy / 2


def test_gradcheck_a_kink_where_hand_and_jax_differ_is_left_out_of_the_jax_error():
    # relu's subgradient at 0: the hand says 1 where jax.vjp says 0, both one-sided derivatives;
    # the kink is excused and the errors come from the other entries (where both agree: 0)
    from pure_backprop import gradcheck
    one_at_zero = Layer(None, relu.forward, lambda p, r, dy: ((), jnp.where(r >= 0, dy, 0.0)))
    for order in (2, 4):
        leaf = gradcheck.check(one_at_zero, (), jnp.array([[0.0, 1.0, -2.0]]), mode="full", order=order).leaves[0]
        assert leaf.ok and leaf.kinks == 1 and leaf.abs_jax == 0.0 and leaf.rel_jax == 0.0, str(leaf)


def test_gradcheck_the_worst_entry_shown_is_the_one_whose_error_is_reported():
    # y = 3 x: the hand dx is jax.vjp's to the bit, so with rtol_jax = 0 only the numerical errors
    # (rounding) rank the entries; the worst entry or direction shown carries the largest of them
    from pure_backprop import gradcheck
    scaled = Layer(None, lambda p, v: (3.0 * v, None), lambda p, r, dy: ((), 3.0 * dy))
    x = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4)
    seen = set()
    for seed in range(4):
        for mode in ("fast", "full"):
            leaf = gradcheck.check(scaled, (), x, mode=mode, seed=seed, rtol_jax=0.0, directions=4).leaves[0]
            assert leaf.ok and abs(leaf.hand - leaf.numerical) == leaf.abs_num, str(leaf)
            seen.add(leaf.worst)
    assert len(seen) > 2  # not always the first entry and the first direction


def test_gradcheck_fast_mode_relative_error_is_over_the_larger_gradient_norm():
    # one entry: its direction is +-1, so the norms of the hand and jax gradients are |hand| and
    # |jax| of the row; y = 3 x**3 with a large step leaves a truncation error to divide
    from pure_backprop import gradcheck
    cubic = Layer(None, lambda p, v: (3.0 * v**3, v), lambda p, r, dy: ((), 9.0 * r**2 * dy))
    leaf = gradcheck.check(cubic, (), jnp.array([0.7]), mode="fast", step=1e-3, directions=1).leaves[0]
    assert leaf.ok and leaf.worst == "v0" and leaf.abs_num > 0 and abs(leaf.hand) != 1.0, str(leaf)
    assert leaf.rel_num == leaf.abs_num / max(abs(leaf.hand), abs(leaf.jax))


def test_gradcheck_fast_mode_steps_by_step_times_the_largest_magnitude_but_at_least_step():
    # one entry, relu: along v = +-1 the probes sit at x +- h and x +- 2h with h = step for |x| <= 1.
    # x = 2.5 h keeps all four right of the kink: passed along the direction (worst "v0"); x = 1.5 h
    # puts x - 2h left of it: a jump, so the entry is checked on its own (worst "(0,)")
    from pure_backprop import gradcheck
    step = 2.0**-12
    for at, worst in ((2.5, "v0"), (1.5, "(0,)")):
        leaf = gradcheck.check(relu, (), jnp.array([at * step]), mode="fast", step=step, directions=1).leaves[0]
        assert leaf.ok and leaf.worst == worst, (at, str(leaf))


def test_gradcheck_a_kink_is_a_jump_of_more_than_ten_tolerances():
    from pure_backprop import gradcheck
    # phi0 = 0, h = 1: one-sided quotients 0 (left) and 1 (right) at h and 2h: a jump of exactly 1
    for tol, kink in ((0.1, False), (1 / 10.5, True), (0.099, True)):
        assert gradcheck._Kink(1.0, 0.0, 2.0, 0.0, 0.0, 1.0, tol).contains(0.5) == kink, tol
    # the interval [0, 1] widened by tol + 5 % of the jump (0.05 + 0.05): both ends are inside
    kink = gradcheck._Kink(1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.05)
    assert kink.contains(-0.1) and kink.contains(1.1) and not kink.contains(-0.10001) and not kink.contains(1.10001)


def test_gradcheck_ratio_is_quiet_and_zero_over_a_zero_tolerance_is_zero():
    from pure_backprop import gradcheck
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="warn"):
            assert np.isinf(gradcheck._ratio(np.array([1e300]), 1e-300)).all()
    assert gradcheck._ratio(np.array([0.0, 1.0, np.nan]), 0.0).tolist() == [0.0, np.inf, np.inf]
    assert gradcheck._ratio(np.array([0.0, 1.0, np.nan]), 2.0).tolist() == [0.0, 0.5, np.inf]


def test_gradcheck_refuses_an_output_below_float64_naming_its_dtype():
    # every input is promoted to float64; a layer whose output stays float32 (a fixed astype)
    # cannot be compared in float64: refused by name (it crashed inside jax.vjp before)
    from pure_backprop import gradcheck
    for dtype in ("float32", "float16", "bfloat16"):
        cast = Layer(None, lambda p, v, d=dtype: ({"y": (3.0 * v).astype(d)}, None), lambda p, r, dy: ((), 3.0 * dy["y"]))
        with _raises_exactly(ValueError, f"gradcheck: the layer's output y['y'] has dtype {dtype} from float64 params "
                             "and x; gradcheck compares in float64, so the layer must compute in the dtype of its "
                             "inputs (look for a fixed astype or a float32 constant)"):
            gradcheck.check(cast, (), jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32))


def test_gradcheck_full_mode_steps_each_entry_by_step_times_its_magnitude():
    # y = x**3 at x = 100 with step 1e-3: h = 0.1, and the central difference of <y, dy> is off by
    # exactly h**2 dy = 0.01 dy (its third derivative is 6 dy), dy = hand / (3 x**2)
    from pure_backprop import gradcheck
    cubic = Layer(None, lambda p, v: (v**3, v), lambda p, r, dy: ((), 3.0 * r**2 * dy))
    leaf = gradcheck.check(cubic, (), jnp.array([100.0]), mode="full", step=1e-3).leaves[0]
    dy = leaf.hand / 3e4
    assert leaf.ok and leaf.numerical - leaf.hand == pytest.approx(0.01 * dy, rel=1e-3), str(leaf)


def test_gradcheck_the_worst_entry_is_the_most_tolerances_off_across_both_comparisons():
    # y = 2 x with a custom derivative that jax.vjp follows: 2 (1 + 1e-5) at entry 1, so the
    # numerical derivative (2) disagrees there with a hand value that jax.vjp confirms: ~10
    # numerical tolerances; at entry 0 the hand value is off jax.vjp's by 1e-7 relative: ~1000 of
    # its tolerances, and ~0.1 of the numerical ones. The worst entry is 0, by tolerances, not
    # by the absolute error or by the product of error and tolerance
    from pure_backprop import gradcheck
    e = jnp.array([0.0, 1e-5])

    @jax.custom_jvp
    def f(v):
        return 2.0 * v

    f.defjvp(lambda primals, tangents: (f(primals[0]), 2.0 * (1.0 + e) * tangents[0]))
    layer = Layer(None, lambda p, v: (f(v), None), lambda p, r, dy: ((), 2.0 * (1.0 + e + jnp.array([1e-7, 0.0])) * dy))
    report = gradcheck.check(layer, (), jnp.array([0.5, -0.25]), mode="full", seed=1)
    (leaf,) = report.leaves
    assert not leaf.ok and leaf.worst == "(0,)", str(report)


def test_gradcheck_failed_leaves_are_reported_each_with_nan_errors_and_both_gradients():
    from pure_backprop import gradcheck
    # a non-finite hand entry: its errors are NaN, and the row shows hand and jax.vjp's value
    nan_at = Layer(None, lambda p, v: (v * p["a"], v), lambda p, r, dy: ({"a": dy * r}, jnp.where(r > 1.5, jnp.nan, dy * p["a"])))
    leaf = gradcheck.check(nan_at, {"a": jnp.full(3, 2.0)}, jnp.array([1.0, 2.0, 3.0])).leaves[1]
    assert not leaf.ok and (leaf.path, leaf.worst, leaf.problem) == ("dx", "(1,)", "non-finite hand (1,) = nan (2 non-finite entries)")
    assert np.isnan([leaf.abs_jax, leaf.rel_jax, leaf.abs_num, leaf.rel_num, leaf.hand, leaf.numerical]).all(), str(leaf)
    assert np.isfinite(leaf.jax) and leaf.jax != 0.0
    first = Layer(None, nan_at.forward, lambda p, r, dy: ({"a": dy * jnp.nan}, dy * p["a"]))
    a, dx = gradcheck.check(first, {"a": jnp.full(3, 2.0)}, jnp.array([1.0, 2.0, 3.0])).leaves
    assert (a.ok, a.problem, dx.path, dx.ok) == (False, "non-finite hand (0,) = nan (3 non-finite entries)", "dx", True)
    # a non-finite forward: every leaf after it is reported too, with no entry to name
    log = Layer(None, lambda p, v: (jnp.log(v * p["a"]), v), lambda p, r, dy: ({"a": dy / p["a"]}, dy / r))
    report = gradcheck.check(log, {"a": jnp.ones(2)}, jnp.array([1.0, -1.0]))
    assert [(leaf.path, leaf.worst, leaf.ok) for leaf in report.leaves] == [("params['a']", "-", False), ("dx", "-", False)]


def test_gradcheck_check_pair_passes_its_settings_on_and_assert_close_raises_the_report():
    from pure_backprop import gradcheck
    report = gradcheck.check_pair(relu.forward, relu.backward, (), jnp.array([1.0, -2.0]), mode="full", name="pair")
    assert (report.name, report.mode, report.ok) == ("pair", "full", True)
    wrong = Layer(None, relu.forward, lambda p, r, dy: ((), 2.0 * relu.backward(p, r, dy)[1]))
    x = jnp.array([1.0, -2.0])
    with pytest.raises(AssertionError) as failure:
        gradcheck.assert_close(wrong, (), x, name="wrong")
    assert str(failure.value) == "\n" + str(gradcheck.check(wrong, (), x, name="wrong"))


@pytest.mark.parametrize("method, forward_convs, backward_convs, col", [
    ("im2col", 0, 0, True), ("mixed", 0, 1, True), ("conv", 1, 2, False), ("offsets", 1, 1, False)])
@pytest.mark.parametrize("config", ["A", "B"])
def test_conv2d_a_forced_method_runs_its_own_formulation(config, method, forward_convs, backward_convs, col):
    # every method computes the same values, so only the program shows which one ran: convolutions
    # in the forward (conv form) and backward (dW by conv form, dx by conv form), and im2col's col;
    # config A would be "offsets" under auto, B "conv"
    from pure_backprop.layers import conv2d
    kernel, stride, padding, x, params, _ = _conv2d_case(config)
    layer = conv2d(4, kernel, stride, padding, method=method)

    def convs(fun, *args):
        return str(jax.make_jaxpr(fun)(*args)).count("conv_general_dilated")

    y, residuals = layer.forward(params, x)
    assert (residuals[1] is not None) == col
    assert convs(layer.forward, params, x) == forward_convs
    assert convs(layer.backward, params, residuals, y) == backward_convs


def test_perturb_change_keeps_the_outputs_dtype_below_float64():
    # float16 operands, a float32 product: the moved values are float32 like the product (under
    # x64 a default dtype would be float64, so this pins the output's own dtype)
    from jax import lax
    from pure_backprop import perturb
    a = jnp.asarray(_PA, jnp.float16)
    b = jnp.asarray(_PB, jnp.float16)

    def fun(u, w):
        return lax.dot_general(u, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    new = (a.ravel()[_P_IDX] + 1).astype(jnp.float16)
    base, rep = _perturb_out(fun, (a, b), 0, _P_IDX, new, tol=1e-6)
    assert isinstance(rep, perturb.Sparse) and rep.new.dtype == jnp.float32 and base.dtype == jnp.float32
    base, rep = _perturb_out(lambda u: jnp.sum(u, 0, dtype=jnp.float32), (a,), 0, _P_IDX, new, tol=1e-6)
    assert perturb._dense(base, rep, 4).dtype == jnp.float32


def test_perturb_moved_values_are_cast_to_the_leafs_dtype():
    # float64 new values for a float32 leaf: each is rounded to float32 first, as setting the
    # entry would, and the function runs in float32 as it would at that point
    from pure_backprop import perturb
    a = jnp.asarray(_PA, jnp.float32)
    new = jnp.asarray(_PA.ravel()[_P_IDX] + 1 / 3, jnp.float64)

    def fun(u):
        return jnp.sum(jnp.tanh(u))

    got = perturb.moved_values(fun, [a], 0, jnp.asarray(_P_IDX), new)
    want = [fun(a.ravel().at[i].set(v.astype(jnp.float32)).reshape(a.shape)) for i, v in zip(_P_IDX, new)]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # 1 + 2**-30 is 1 in float32: the moved entry then adds nothing (and the float32 ops accept it)
    ones = jnp.ones(4, jnp.float32)
    got = perturb.moved_values(lambda u: jnp.sum((u - 1.0) * 2.0**30), [ones], 0, jnp.asarray([1]),
                               jnp.asarray([1 + 2.0**-30]))
    np.testing.assert_array_equal(got, [0.0])


def test_perturb_reduce_sum_adds_the_change_to_the_base_sum():
    # the rule scatter-adds each moved entry's change onto the base sum (a dense sum of every
    # perturbed input would give the same values: the program shows which one ran)
    from pure_backprop import perturb
    a = jnp.asarray(_PA)

    def fun(u):
        return jnp.sum(jnp.sum(jnp.tanh(u), 0) ** 2)

    program = str(jax.make_jaxpr(lambda i, n: perturb.moved_values(fun, [a], 0, i, n))(jnp.asarray(_P_IDX), a.ravel()[:4]))
    assert "scatter-add" in program or "scatter_add" in program
    assert perturb.dense_bytes(lambda u: jnp.sum(jax.checkpoint(jnp.tanh)(u)), [a]) == 96 + 96 + 8  # entered
