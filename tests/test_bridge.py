"""pure_backprop.bridge: a layer as a jax.custom_vjp function, its VJP the hand-written backward.

Every gradient through the bridge is compared with the layer's own hand gradients
(``loss_and_grads``: bit for bit) and with ``jax.grad`` of the unbridged forward (1e-10); a
backward that is deliberately wrong shows that the hand backward is what JAX ran.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pure_backprop import Layer, loss_and_grads
from pure_backprop.bridge import as_jax_function
from pure_backprop.core import Loss, loss_and_grads_with_state, no_params, predict, serial
from pure_backprop.layers import affine, mse, relu, softmax_cross_entropy, tanh
from pure_backprop.network import mlp, simple_conv_net
from pure_backprop.train import make_train_step

SCE = softmax_cross_entropy
leaves = jax.tree_util.tree_leaves
FORWARD_MODE = r"^can't apply forward-mode autodiff \(jvp\) to a custom_vjp function\."  # JAX's own


def _scale_layer(factor_in_backward=1.0, calls=None):
    """A user's own layer ``y = x * s`` with one parameter vector ``s``; its residuals are a
    nested pytree with a ``None`` (carried as they are). ``factor_in_backward != 1`` makes the
    backward deliberately wrong; ``calls`` counts the backward's calls and records its residuals."""

    def init(key, in_shape, dtype=jnp.float32):
        return {"s": 1.0 + 0.5 * jax.random.normal(key, in_shape[1:], dtype)}, in_shape

    def forward(params, x):
        return x * params["s"][None, :], {"x": x, "unused": None, "s": (params["s"],)}

    def backward(params, residuals, dy):
        if calls is not None:
            calls.append(jax.tree_util.tree_structure(residuals))
        x, (s,) = residuals["x"], residuals["s"]
        return {"s": factor_in_backward * jnp.sum(dy * x, axis=0)}, dy * s[None, :]

    return Layer(init, forward, backward)


def _own_network(**kwargs):
    return serial(affine(5), _scale_layer(**kwargs), tanh, affine(3))


# name: (network, x shape); each is a Layer, its loss softmax cross-entropy over 3 classes
NETWORKS = {
    "mlp": (mlp((6, 5), 3), (4, 7)),
    "simple_conv_net": (simple_conv_net(out_dim=3, filters=2, kernel_size=3, hidden=4), (2, 1, 8, 8)),
    "affine": (affine(3), (4, 5)),
    "own_layer": (_own_network(), (4, 5)),
}


def _setup(name, seed=0):
    network, shape = NETWORKS[name]
    params, _ = network.init(jax.random.PRNGKey(seed), shape, jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), shape)
    labels = jnp.arange(shape[0]) % 3
    return network, params, x, labels


def _bridged_loss(network):
    f, loss = as_jax_function(network), as_jax_function(SCE)
    return lambda params, x, labels: loss(f(params, x), labels)


def _assert_trees_equal(got, want):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(leaves(got), leaves(want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def _assert_trees_close(got, want, rtol, atol=0.0):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(leaves(got), leaves(want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# --- the rule: jax.grad through the bridge is the hand backward -------------------------------


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_jax_grad_through_the_bridge_equals_the_hand_gradients_and_autodiff(name):
    network, params, x, labels = _setup(name)
    value, grads = jax.value_and_grad(_bridged_loss(network))(params, x, labels)
    hand_value, hand = loss_and_grads(network, SCE, params, x, labels)
    np.testing.assert_array_equal(value, hand_value)
    _assert_trees_equal(grads, hand)  # the same operations: bit for bit

    def unbridged(params):
        return SCE.forward(network.forward(params, x)[0], labels)[0]

    _assert_trees_close(grads, jax.grad(unbridged)(params), rtol=1e-10, atol=1e-13)
    dx = jax.grad(_bridged_loss(network), argnums=1)(params, x, labels)
    np.testing.assert_allclose(dx, jax.grad(lambda x: SCE.forward(network.forward(params, x)[0], labels)[0])(x),
                               rtol=1e-10, atol=1e-13)


def test_the_hand_backward_is_what_runs_with_its_residuals_as_they_are():
    calls = []
    wrong = _own_network(factor_in_backward=2.0, calls=calls)  # ds doubled: a wrong backward
    network, params, x, labels = _setup("own_layer")
    grads = jax.grad(_bridged_loss(wrong))(params, x, labels)
    assert len(calls) == 1  # one backward pass for one jax.grad
    assert calls[0] == jax.tree_util.tree_structure({"x": x, "unused": None, "s": (x,)})
    _, hand = loss_and_grads(network, SCE, params, x, labels)
    _, hand_wrong = loss_and_grads(wrong, SCE, params, x, labels)
    _assert_trees_equal(grads, hand_wrong)
    np.testing.assert_array_equal(grads[1]["s"], 2.0 * hand[1]["s"])  # the wrong gradient came through
    _assert_trees_equal(grads[0], hand[0])  # the layers before it get the right dx: dx was not doubled
    np.testing.assert_array_equal(as_jax_function(wrong)(params, x), network.forward(params, x)[0])


def test_a_loss_is_bridged_with_no_gradient_to_its_targets():
    scores = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    soft = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (4, 3)))
    f = as_jax_function(SCE)
    value, residuals = SCE.forward(scores, soft)
    np.testing.assert_array_equal(f(scores, soft), value)
    dscores, dtargets = jax.grad(f, argnums=(0, 1))(scores, soft)
    np.testing.assert_array_equal(dscores, SCE.backward(residuals, jnp.ones_like(value)))
    np.testing.assert_array_equal(dtargets, jnp.zeros_like(soft))
    target = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    np.testing.assert_allclose(jax.grad(as_jax_function(mse))(scores, target),
                               jax.grad(lambda s: mse.forward(s, target)[0])(scores), rtol=1e-12)


# --- state and randomness ----------------------------------------------------------------------

STATEFUL = mlp((6,), 3, batchnorm=True, drop_rate=0.5)


def _stateful_setup(network=STATEFUL):
    params, state, _ = network.init(jax.random.PRNGKey(1), (5, 4), jnp.float64)
    state = jax.tree_util.tree_map(lambda a: a + 0.25, state)  # running averages that differ from the batch's
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 4))
    return params, state, x, jnp.array([0, 1, 2, 0, 1])


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey], ids=["typed_key", "raw_uint32_key"])
def test_a_stateful_network_gives_the_hand_gradients_and_its_new_state(make_key):
    params, state, x, labels = _stateful_setup()
    key = make_key(3)
    f, loss = as_jax_function(STATEFUL), as_jax_function(SCE)

    def objective(params, state):
        y, new_state = f(params, state, x, key)
        return loss(y, labels), new_state

    y, new_state = f(params, state, x, key)  # not differentiated: the primal function alone
    want_y, want_state, _ = STATEFUL.forward(params, state, x, key, True)
    _assert_trees_equal((y, new_state), (want_y, want_state))
    (value, new_state), grads = jax.value_and_grad(objective, has_aux=True)(params, state)
    hand_value, hand, hand_state = loss_and_grads_with_state(STATEFUL, SCE, params, state, x, labels, key)
    np.testing.assert_array_equal(value, hand_value)
    _assert_trees_equal(grads, hand)
    _assert_trees_equal(new_state, hand_state)
    assert not np.allclose(new_state[1]["mean"], state[1]["mean"])  # the running averages moved

    # no gradient to state (zeros) or key (float0), none from new_state
    out, vjp = jax.vjp(f, params, state, x, key)
    ones = jax.tree_util.tree_map(jnp.ones_like, out)
    dparams, dstate, dx, dkey = vjp(ones)
    _assert_trees_equal(dstate, jax.tree_util.tree_map(jnp.zeros_like, state))
    assert dkey.dtype == jax.dtypes.float0 and dkey.shape == key.shape
    _assert_trees_equal(jax.grad(lambda s: objective(params, s)[0])(state), dstate)
    only_state = vjp((jnp.zeros_like(out[0]), ones[1]))
    for leaf in leaves(only_state[:3]):
        np.testing.assert_array_equal(leaf, jnp.zeros_like(leaf))
    hand_grads, hand_dx = STATEFUL.backward(params, STATEFUL.forward(params, state, x, key, True)[2], ones[0])
    _assert_trees_equal((dparams, dx), (hand_grads, hand_dx))


def test_train_false_is_inference_and_a_network_without_dropout_needs_no_key():
    params, state, x, labels = _stateful_setup()
    y, new_state = as_jax_function(STATEFUL, train=False)(params, state, x, None)
    np.testing.assert_array_equal(y, predict(STATEFUL, params, x, state))
    _assert_trees_equal(new_state, state)

    batch_norm_only = mlp((6,), 3, batchnorm=True)
    params, state, x, labels = _stateful_setup(batch_norm_only)
    f = as_jax_function(batch_norm_only)  # train=True by default: batch statistics
    grads = jax.grad(lambda p: SCE.forward(f(p, state, x)[0], labels)[0])(params)  # key left out: None
    _assert_trees_close(grads, loss_and_grads_with_state(batch_norm_only, SCE, params, state, x, labels)[1],
                        rtol=1e-12, atol=1e-15)
    out, vjp = jax.vjp(f, params, state, x, None)
    assert vjp(jax.tree_util.tree_map(jnp.ones_like, out))[3] is None


# --- composition with JAX's transformations ----------------------------------------------------


def test_jit_vmap_jacrev_and_checkpoint_compose():
    network, params, x, labels = _setup("mlp")
    loss = _bridged_loss(network)
    eager_value, eager = jax.value_and_grad(loss)(params, x, labels)
    jit_value, jitted = jax.jit(jax.value_and_grad(loss))(params, x, labels)
    np.testing.assert_allclose(jit_value, eager_value, rtol=1e-12)
    _assert_trees_close(jitted, eager, rtol=1e-12, atol=1e-15)
    _assert_trees_close(jax.grad(jax.checkpoint(loss))(params, x, labels), eager, rtol=1e-12, atol=1e-15)

    f = as_jax_function(network)
    batches = x.reshape(2, 2, 7)
    np.testing.assert_allclose(jax.vmap(f, in_axes=(None, 0))(params, batches),
                               jnp.stack([network.forward(params, b)[0] for b in batches]), rtol=1e-12)
    jac = jax.jacrev(f, argnums=1)(params, x)
    np.testing.assert_allclose(jac, jax.jacrev(lambda x: network.forward(params, x)[0])(x), rtol=1e-10, atol=1e-13)


def test_per_example_gradients_are_each_examples_hand_gradients():
    network, params, x, labels = _setup("own_layer")
    per_example = jax.vmap(jax.grad(_bridged_loss(network)), in_axes=(None, 0, 0))(params, x[:, None], labels[:, None])
    for i in range(x.shape[0]):
        _, alone = loss_and_grads(network, SCE, params, x[i:i + 1], labels[i:i + 1])
        _assert_trees_close(jax.tree_util.tree_map(lambda g: g[i], per_example), alone, rtol=1e-12, atol=1e-15)


def test_an_optax_loop_in_plain_jax_takes_the_steps_of_make_train_step():
    network, params, x, labels = _setup("mlp")
    optimizer = optax.adam(0.05)
    loss = _bridged_loss(network)

    @jax.jit
    def plain_jax_step(params, opt_state):
        value, grads = jax.value_and_grad(loss)(params, x, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    hand_step = make_train_step(network, SCE, optimizer)
    ours, theirs = (params, optimizer.init(params)), (params, optimizer.init(params))
    values = []
    for _ in range(3):
        *ours, value = plain_jax_step(*ours)
        *theirs, hand_value = hand_step(*theirs, (x, labels))
        np.testing.assert_allclose(value, hand_value, rtol=1e-12)
        _assert_trees_close(ours[0], theirs[0], rtol=1e-12, atol=1e-15)
        values.append(float(value))
    assert values[2] < values[0]


# --- what is not supported: forward mode; second order where the backward is differentiable ----


def test_second_derivatives_of_a_smooth_layer_are_autodiff_of_its_backward():
    f = as_jax_function(tanh)
    a = jnp.array([[0.3, -1.2, 0.7]])
    bridged, reference = (lambda s: jnp.sum(f((), s * a))), (lambda s: jnp.sum(jnp.tanh(s * a)))
    np.testing.assert_allclose(jax.grad(jax.grad(bridged))(0.8), jax.grad(jax.grad(reference))(0.8), rtol=1e-12)
    np.testing.assert_allclose(jax.hessian(lambda z: jnp.sum(f((), z)))(a),
                               jax.hessian(lambda z: jnp.sum(jnp.tanh(z)))(a), rtol=1e-12, atol=1e-15)
    # ReLU's backward selects with where(x > 0): its derivative is 0, as JAX's own ReLU's
    g = as_jax_function(relu)
    assert jax.grad(jax.grad(lambda s: jnp.sum(g((), s * a))))(0.8) == 0.0


@pytest.mark.parametrize("mode", ["jvp", "jacfwd_under_jit", "linearize"])
def test_forward_mode_raises_jax_clear_error(mode):
    f = as_jax_function(tanh)
    a = jnp.array([[0.3, -1.2, 0.7]])
    calls = {
        "jvp": lambda: jax.jvp(lambda z: f((), z), (a,), (a,)),
        "jacfwd_under_jit": lambda: jax.jit(jax.jacfwd(lambda z: f((), z)))(a),
        "linearize": lambda: jax.linearize(lambda z: f((), z), a)[1](a),
    }
    with pytest.raises(TypeError, match=FORWARD_MODE):
        calls[mode]()


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [jnp.tanh, (no_params, None), None], ids=["function", "tuple", "none"])
def test_a_non_layer_is_refused_naming_the_argument(layer):
    with pytest.raises(TypeError, match=(r"^as_jax_function: layer must be a Layer, StatefulLayer or Loss "
                                         r"\(e\.g\. pure_backprop\.network\.mlp\(\(50,\), 10\)\), got "
                                         f"{type(layer).__name__}$")):
        as_jax_function(layer)


@pytest.mark.parametrize("layer", [STATEFUL, tanh, SCE], ids=["stateful", "layer", "loss"])
@pytest.mark.parametrize("train", [1, jnp.array(True), "yes", None], ids=["int", "array", "str", "none"])
def test_train_must_be_a_python_bool(layer, train):
    with pytest.raises(TypeError, match=(r"^as_jax_function: train must be a Python bool \(True for batch "
                                         rf"statistics and dropout, False for inference\), got {type(train).__name__};")):
        as_jax_function(layer, train=train)

