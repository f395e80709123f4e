"""Chapter 6: state (batch norm's running averages) and randomness (dropout's keys) through
pure layers, weight decay, initialization and the training loop that threads them.

The two-oracle gradient tests of batch norm, dropout, weight decay and MultiLayerNetExtend
are registry cases (``tests/test_layers.py``); this module tests the protocol around them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pure_backprop import Layer, gradcheck
from pure_backprop.core import StatefulLayer, freeze, lift, loss_and_grads_with_state, predict, serial
from pure_backprop.initializers import weight_init
from pure_backprop.layers import affine, batch_norm, dropout, mse, relu, softmax_cross_entropy, with_weight_decay
from pure_backprop.layers.weight_decay import penalty, penalty_grads
from pure_backprop.network import mlp
from pure_backprop.train import epoch_batches, fit, make_evaluate, make_train_epoch, make_train_step

NET = mlp((8, 6), 3, "relu", batchnorm=True, drop_rate=0.2)
KEY = jax.random.PRNGKey(0)


def _data(n=40, d=5, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, d))
    return x, jnp.argmax(x[:, :3], axis=1)


def _init(net=NET, d=5, dtype=jnp.float64):
    params, state, _ = net.init(KEY, (-1, d))
    cast = lambda t: jax.tree_util.tree_map(lambda a: a.astype(dtype), t)  # noqa: E731
    return cast(params), cast(state)


# --- the protocol -------------------------------------------------------------------------


def test_stateless_networks_stay_plain_layers_and_stateful_ones_lift_the_rest():
    assert isinstance(serial(affine(3), relu), Layer)
    assert isinstance(mlp((4,), 2), Layer)
    assert isinstance(NET, StatefulLayer)
    params, state = _init()
    assert len(params) == len(state) == 9  # affine, bn, relu, dropout per hidden layer, last affine
    assert state[0] == () and set(state[1]) == {"mean", "var"} and state[3] == ()
    assert "b" not in params[0] and set(params[-1]) == {"W", "b"}  # batch norm's beta replaces the bias before it
    assert lift(NET) is NET


def test_train_must_be_a_python_bool_and_dropout_needs_a_key():
    params, state = _init()
    x, _ = _data()
    with pytest.raises(TypeError, match="train must be a Python bool"):
        NET.forward(params, state, x, KEY, jnp.array(True))
    with pytest.raises(ValueError, match="dropout: train=True needs a PRNG key"):
        NET.forward(params, state, x, None, True)
    y, new_state, _ = NET.forward(params, state, x, None, False)  # inference needs no key
    assert y.shape == (40, 3)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), new_state, state))


def _dtypes(tree):
    return {a.dtype for a in jax.tree_util.tree_leaves(tree)}


def test_stateless_and_stateful_networks_init_in_the_dtype_asked_for():
    """``init(key, in_shape, dtype=float32)`` through every combinator: float64 networks for
    the gradient checker and for comparisons with ``jax.grad``, float32 by default."""
    cases = [
        (mlp((5,), 3, batchnorm=True, drop_rate=0.1), (-1, 4)),    # serial of stateful layers
        (mlp((5,), 3), (-1, 4)),                                   # a stateless serial
        (serial(affine(3), relu), (-1, 4)),
        (serial(batch_norm(), serial(affine(3), dropout(0.5))), (-1, 4)),  # nested
        (lift(affine(3)), (-1, 4)),
        (freeze(batch_norm(), key=None, train=True), (-1, 4)),
        (freeze(serial(affine(3), batch_norm())), (-1, 4)),
    ]
    for layer, in_shape in cases:
        for dtype in (jnp.float64, jnp.float32):
            *trees, out_shape = layer.init(KEY, in_shape, dtype=dtype)
            assert _dtypes(trees) == {jnp.dtype(dtype)}, (layer, dtype)
            assert out_shape == layer.init(KEY, in_shape)[-1]
        *trees, _ = layer.init(KEY, in_shape)
        assert _dtypes(trees) == {jnp.dtype(jnp.float32)}
    params, state, _ = NET.init(KEY, (-1, 5), jnp.float64)  # positional too
    assert state[1]["mean"].dtype == state[1]["var"].dtype == params[1]["gamma"].dtype == jnp.float64


def test_parameter_free_layers_accept_a_dtype_and_ignore_it():
    from pure_backprop import nodes
    from pure_backprop.core import no_params, with_targets
    from pure_backprop.layers import avg_pool2d, flatten, max_pool2d, sigmoid, tanh
    for layer, in_shape, out_shape in [
        (relu, (-1, 4), (-1, 4)), (sigmoid, (-1, 4), (-1, 4)), (tanh, (-1, 4), (-1, 4)),
        (flatten, (-1, 2, 3), (-1, 6)), (max_pool2d(2), (-1, 1, 4, 4), (-1, 1, 2, 2)),
        (avg_pool2d(2), (-1, 1, 4, 4), (-1, 1, 2, 2)), (nodes.exp, (3,), (3,)), (nodes.negate, (3,), (3,)),
        (nodes.add, ((3,), (3,)), (3,)), (nodes.multiply, ((3, 2), (3, 1)), (3, 2)),
        (nodes.sum(axis=1), (3, 2), (3,)), (nodes.matmul, ((3, 2), (2, 4)), (3, 4)),
        (nodes.bias_add, ((3, 2), (2,)), (3, 2)), (with_targets(mse, jnp.zeros((3, 2))), (3, 2), ()),
    ]:
        assert layer.init(KEY, in_shape, jnp.float64) == layer.init(KEY, in_shape, dtype=jnp.float16) == ((), out_shape)
    assert dropout(0.5).init(KEY, (-1, 4), dtype=jnp.float64) == ((), (), (-1, 4))
    assert no_params(KEY, (2, 3), jnp.float64) == ((), (2, 3))


def test_a_layer_whose_init_takes_no_dtype_still_builds_float32_networks_and_says_why_not_float64():
    old = _counting_scale()  # init(key, in_shape), as written before the dtype argument
    legacy = Layer(lambda key, in_shape: ((), in_shape), relu.forward, relu.backward)
    for layer, where in [(serial(affine(2), old), "serial layer 1"), (serial(legacy, affine(2)), "serial layer 0"),
                         (lift(legacy), "lift"), (freeze(old), "freeze")]:
        assert layer.init(KEY, (-1, 3))[-1] == layer.init(KEY, (-1, 3), jnp.float32)[-1]  # called without it
        with pytest.raises(TypeError, match=rf"^{where}: the layer's init\(key, in_shape\) takes no dtype, so it "
                                            r"cannot build float64 parameters; give it a dtype=jnp.float32 argument"):
            layer.init(KEY, (-1, 3), jnp.float64)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.5", float("nan")])
def test_dropout_rate_is_validated(rate):
    with pytest.raises(ValueError, match=r"dropout: drop_rate must be a float in \[0, 1\)"):
        dropout(rate)


def test_batch_norm_settings_are_validated():
    with pytest.raises(ValueError, match="momentum"):
        batch_norm(momentum=1.0)
    with pytest.raises(ValueError, match="eps"):
        batch_norm(eps=0.0)
    layer = batch_norm()
    params, state, _ = layer.init(KEY, (-1, 4))
    with pytest.raises(ValueError, match=r"batch_norm: x must be \(N, D\) or \(N, C, H, W\)"):
        layer.forward(params, state, jnp.ones((2, 4, 3)), None, True)
    with pytest.raises(ValueError, match=r"batch_norm: params\['gamma'\] has shape \(4,\) but x of shape \(2, 5\)"):
        layer.forward(params, state, jnp.ones((2, 5)), None, True)
    with pytest.raises(ValueError, match="at least 2 values per feature"):  # the book's batch-of-one check
        layer.forward(params, state, jnp.ones((1, 4)), None, True)
    layer.forward(params, state, jnp.ones((1, 4)), None, False)  # eval mode is fine with one sample


def test_the_same_key_gives_the_same_masks_and_each_layer_its_own():
    params, state = _init()
    x, _ = _data()
    y1, _, r1 = NET.forward(params, state, x, jax.random.PRNGKey(5), True)
    y2, _, r2 = NET.forward(params, state, x, jax.random.PRNGKey(5), True)
    y3, _, _ = NET.forward(params, state, x, jax.random.PRNGKey(6), True)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, y3)
    mask_a, mask_b = r1[3], r1[7]  # the two dropout layers' scaled masks
    assert mask_a.shape == (40, 8) and mask_b.shape == (40, 6)
    assert not np.array_equal(mask_a[:, :6], mask_b)


def test_inverted_dropout_keeps_the_expectation_and_drops_the_rate():
    layer = dropout(0.3)
    x = jnp.ones((200, 500))
    y, _, scale = layer.forward((), (), x, jax.random.PRNGKey(1), True)
    kept = np.asarray(scale) > 0
    assert abs(1 - kept.mean() - 0.3) < 0.005
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)
    assert abs(float(jnp.mean(y)) - 1.0) < 0.01
    np.testing.assert_array_equal(layer.forward((), (), x, None, False)[0], x)  # eval: identity
    _, dx = layer.backward((), scale, jnp.ones_like(x))
    np.testing.assert_array_equal(dx, y)  # dx = dy * mask / keep


def test_batch_norm_normalizes_per_channel_for_images_and_starts_with_unit_variance():
    layer = batch_norm()
    x = 3.0 + 2.0 * jax.random.normal(KEY, (6, 3, 4, 5), jnp.float64)
    params, state, _ = layer.init(KEY, x.shape, jnp.float64)
    np.testing.assert_array_equal(state["var"], np.ones(3))  # not the book's zeros
    y, new_state, _ = layer.forward(params, state, x, None, True)
    xs = np.asarray(x)
    mean, var = xs.mean(axis=(0, 2, 3)), xs.var(axis=(0, 2, 3))
    np.testing.assert_allclose(np.asarray(y).mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(y).var(axis=(0, 2, 3)), var / (var + 1e-5), rtol=1e-10)
    np.testing.assert_allclose(new_state["mean"], 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(new_state["var"], 0.9 + 0.1 * var, rtol=1e-12)
    # eval mode right after init: the identity up to eps (the book's zero variance divided by ~1e-3)
    y_eval, _, _ = layer.forward(params, state, x, None, False)
    np.testing.assert_allclose(y_eval, x / np.sqrt(1 + 1e-5), rtol=1e-12)


def test_running_averages_after_one_epoch_equal_a_numpy_recomputation():
    """Batch norm first, so its input is the raw batch: the averages depend only on the batches."""
    net = serial(batch_norm(momentum=0.8), affine(3))
    x, y = _data(n=50)
    params, state = _init(net)
    optimizer = optax.sgd(0.1)
    epoch = make_train_epoch(net, softmax_cross_entropy, optimizer, 8)
    key = jax.random.PRNGKey(9)
    _, new_state, _, losses = epoch(params, state, optimizer.init(params), key, x, y)
    assert losses.shape == (6,)
    order = np.asarray(epoch_batches(jax.random.split(key, 3)[0], 50, 8))  # the epoch's own shuffle
    mean, var = np.zeros(5), np.ones(5)
    for index in order:
        batch = np.asarray(x)[index]
        mean = 0.8 * mean + 0.2 * batch.mean(axis=0)
        var = 0.8 * var + 0.2 * batch.var(axis=0)
    np.testing.assert_allclose(new_state[0]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(new_state[0]["var"], var, rtol=1e-12)


# --- gradients: the hand step against jax.grad, with state, keys and weight decay -----------


def test_stateful_hand_step_equals_jax_grad_step_with_weight_decay():
    x, y = _data()
    params, state = _init()
    optimizer = optax.adam(0.01)
    hand_step = make_train_step(NET, softmax_cross_entropy, optimizer, weight_decay=0.01)

    @jax.jit
    def jax_step(params, state, opt_state, key, batch):
        def value(p):
            scores, new_state, _ = NET.forward(p, state, batch[0], key, True)
            return softmax_cross_entropy.forward(scores, batch[1])[0] + penalty(p, 0.01), new_state

        (loss, new_state), grads = jax.value_and_grad(value, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    a = (params, state, optimizer.init(params))
    b = (params, state, optimizer.init(params))
    for i in range(10):
        key = jax.random.PRNGKey(100 + i)
        batch = (x[i % 4 * 10:(i % 4 + 1) * 10], y[i % 4 * 10:(i % 4 + 1) * 10])
        *a, la = hand_step(*a, key, batch)
        *b, lb = jax_step(*b, key, batch)
        np.testing.assert_allclose(la, lb, rtol=1e-12)
    for u, v in zip(jax.tree_util.tree_leaves(a[:2]), jax.tree_util.tree_leaves(b[:2])):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)


def test_weight_decay_touches_only_weight_matrices():
    params, _ = _init()
    grads = penalty_grads(params, 0.5)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        leaf = path[-1].key
        expected = 0.5 * _at(params, path) if leaf == "W" else 0.0
        np.testing.assert_array_equal(g, expected)
    total = sum(float(jnp.sum(p["W"] ** 2)) for p in params if isinstance(p, dict) and "W" in p)
    np.testing.assert_allclose(penalty(params, 0.5), 0.25 * total, rtol=1e-12)
    with pytest.raises(ValueError, match="weight_decay: lambda must be a finite float >= 0"):
        penalty(params, -1.0)
    with pytest.raises(ValueError, match="with_weight_decay: the layer must output a scalar loss"):
        with_weight_decay(affine(2), 0.1).forward({"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}, jnp.ones((4, 3)))


def _at(tree, path):
    for k in path:
        tree = tree[getattr(k, "key", getattr(k, "idx", None))]
    return tree


# --- a stateful layer written outside the package ----------------------------------------


def _counting_scale():
    """A user's layer: ``y = a * x`` that counts the training calls it has seen (state)."""

    def init(key, in_shape):
        return {"a": jnp.ones(())}, {"calls": jnp.zeros((), jnp.int32)}, in_shape

    def forward(params, state, x, key, train):
        calls = state["calls"] + 1 if train else state["calls"]
        return params["a"] * x, {"calls": calls}, x

    def backward(params, x, dy):
        return {"a": jnp.sum(dy * x)}, params["a"] * dy

    return StatefulLayer(init, forward, backward)


def test_a_stateful_layer_written_outside_the_package_works_with_serial_trainer_and_gradcheck():
    net = serial(affine(4), _counting_scale(), relu, affine(3))
    assert isinstance(net, StatefulLayer)
    x, y = _data()
    params, state = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if a.dtype.kind == "f" else a,
                                           net.init(KEY, (-1, 5))[:2])
    optimizer = optax.sgd(0.05)
    epoch = make_train_epoch(net, softmax_cross_entropy, optimizer, 10)
    p, s, _, losses = epoch(params, state, optimizer.init(params), KEY, x, y)
    assert int(s[1]["calls"]) == 4 and losses.shape == (4,)
    assert not np.allclose(p[1]["a"], 1.0)
    value, grads, new_state = loss_and_grads_with_state(net, softmax_cross_entropy, params, state, x, y)
    oracle = jax.grad(lambda q: softmax_cross_entropy.forward(net.forward(q, state, x, None, True)[0], y)[0])(params)
    for u, v in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(oracle)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-14)
    assert int(new_state[1]["calls"]) == 1
    report = gradcheck.check(freeze(net, state, None, True), params, x, mode="full")
    assert report.ok, str(report)
    direct = gradcheck.check(net, params, x, mode="full", state=state)  # the same, frozen by the checker
    assert direct.ok and [leaf.abs_num for leaf in direct.leaves] == [leaf.abs_num for leaf in report.leaves]
    with pytest.raises(ValueError, match="state and key apply to a StatefulLayer"):
        gradcheck.check(affine(2), {"W": jnp.ones((5, 2)), "b": jnp.zeros(2)}, x, state=state)
    loss, acc = make_evaluate(net, softmax_cross_entropy, 16)(p, s, x, y)
    assert 0 <= float(acc) <= 1 and np.isfinite(float(loss))


def test_stateful_network_under_jit_and_vmap():
    params, state = _init()
    x, _ = _data()
    forward = jax.jit(NET.forward, static_argnums=4)
    y, s, _ = forward(params, state, x, KEY, True)
    y_eager, s_eager, _ = NET.forward(params, state, x, KEY, True)
    np.testing.assert_allclose(y, y_eager, rtol=1e-12)
    # vmap over independent groups of samples: each group gets its own batch statistics
    groups = x.reshape(4, 10, 5)
    ys = jax.vmap(lambda g: NET.forward(params, state, g, KEY, True)[0])(groups)
    np.testing.assert_allclose(ys[2], NET.forward(params, state, groups[2], KEY, True)[0], rtol=1e-12)
    np.testing.assert_allclose(predict(NET, params, x, state), NET.forward(params, state, x, None, False)[0])
    with pytest.raises(ValueError, match="predict: a StatefulLayer needs its state"):
        predict(NET, params, x)


# --- initialization ----------------------------------------------------------------------


@pytest.mark.parametrize("name,std", [("he", np.sqrt(2 / 400)), ("xavier", np.sqrt(2 / (400 + 300))), ("book", 0.01)])
def test_initializers_have_their_documented_scale(name, std):
    w = weight_init(name)(KEY, (400, 300), jnp.float32)
    assert abs(float(jnp.std(w)) / std - 1) < 0.02
    conv = weight_init(name, in_axis=1, out_axis=0)(KEY, (64, 16, 5, 5), jnp.float32)  # OIHW: fan_in 16*25
    conv_std = {"he": np.sqrt(2 / 400), "xavier": np.sqrt(2 / (400 + 64 * 25)), "book": 0.01}[name]
    assert abs(float(jnp.std(conv)) / conv_std - 1) < 0.03
    with pytest.raises(ValueError, match="weight_init: name must be one of"):
        weight_init("lecun")


def test_one_off_draws_what_the_initializer_draws_eagerly_under_jit_and_vmap():
    """``one_off`` changes how an eager draw is compiled, not what it draws: the values of the
    initializer itself up to the last bit (the compiled instructions may differ), the shape and
    dtype asked for, the same inside ``jit`` (where compiler options are the outer program's) and
    ``vmap``; the same function for the same ``weight_init`` arguments, so draws compile once."""
    from pure_backprop.initializers import HE_NORMAL, one_off
    plain = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    fast = one_off(plain)
    for dtype in (jnp.float32, jnp.float64):
        got, want = fast(KEY, [7, 5], dtype), plain(KEY, (7, 5), dtype)
        assert got.shape == (7, 5) and got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=4 * float(jnp.finfo(dtype).eps), atol=0)
        np.testing.assert_allclose(jax.jit(lambda k: fast(k, (7, 5), dtype))(KEY), want,
                                   rtol=4 * float(jnp.finfo(dtype).eps))
    keys = jax.random.split(KEY, 3)
    np.testing.assert_allclose(jax.vmap(lambda k: fast(k, (4, 2), jnp.float32))(keys),
                               jax.vmap(lambda k: plain(k, (4, 2), jnp.float32))(keys), rtol=1e-6)
    assert fast(KEY, (3, 2)).dtype == plain(KEY, (3, 2)).dtype  # no dtype: the initializer's default
    assert weight_init("he") is weight_init("he") and weight_init("he", 1, 0) is not weight_init("he")
    assert HE_NORMAL(KEY, (400, 300), jnp.float32).std() < 2 * np.sqrt(2 / 400)  # truncated He normal


# --- the training loop ---------------------------------------------------------------------


def test_fit_runs_epochs_in_chunks_evaluates_and_stops_when_asked():
    x, y = _data(n=60)
    params, state = _init()
    calls = []
    result = fit(NET, softmax_cross_entropy, optax.adam(0.01), params, x, y, epochs=5, batch_size=16, key=KEY,
                 state=state, evaluate_on={"train": (x, y)}, epochs_per_call=2, on_epochs=calls.append)
    assert [len(c) for c in calls] == [2, 2, 1]  # one compiled program; the last call runs one active slot
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert set(result.history[0]) == {"epoch", "batch_loss", "train_loss", "train_accuracy"}
    assert not result.interrupted and result.diverged_epoch is None
    stopped = fit(NET, softmax_cross_entropy, optax.adam(0.01), params, x, y, epochs=6, batch_size=16, key=KEY,
                  state=state, epochs_per_call=2, should_stop=lambda: len(calls) >= 4, on_epochs=calls.append)
    assert stopped.interrupted and len(stopped.history) == 2


def test_fit_stops_at_the_first_non_finite_epoch_and_keeps_the_last_finite_parameters():
    net = affine(1)
    x = jnp.linspace(-3, 3, 32)[:, None]
    t = 5 * x
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), net.init(KEY, (-1, 1))[0])
    result = fit(net, mse, optax.sgd(1e3), params, x, t, epochs=40, batch_size=8, key=KEY, epochs_per_call=8)
    assert result.diverged_epoch is not None and len(result.history) == result.diverged_epoch - 1
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(result.params))
    assert all(np.isfinite(h["batch_loss"]) for h in result.history)


def test_fit_stops_when_the_parameters_overflow_though_the_epochs_loss_is_finite():
    """The loss of a step is computed before its update: an update that overflows the float32
    parameters leaves the epoch's loss finite, and only the parameters show it."""
    net = affine(1)
    x, t = jnp.full((1, 1), 1e15, jnp.float32), jnp.zeros((1, 1), jnp.float32)
    params = {"W": jnp.ones((1, 1), jnp.float32), "b": jnp.zeros(1, jnp.float32)}
    result = fit(net, mse, optax.sgd(1e10), params, x, t, epochs=3, batch_size=1, key=KEY)
    assert (result.diverged_epoch, result.history) == (1, [])
    assert float(result.params["W"][0, 0]) == 1.0  # the parameters before the overflow


def test_fit_trains_a_network_without_parameters_to_the_end():
    """Nothing to go non-finite: every epoch runs, none counts as diverged."""
    x, y = _data(n=8)
    result = fit(relu, softmax_cross_entropy, optax.sgd(0.1), (), x, y, epochs=3, batch_size=4, key=KEY)
    assert result.diverged_epoch is None and [h["epoch"] for h in result.history] == [1, 2, 3]


def test_fit_history_holds_each_split_evaluated_as_make_evaluate_does():
    """The splits are evaluated together inside the compiled call; each record must still be
    what ``make_evaluate`` gives on that split alone, for splits of sizes that are not
    multiples of the evaluation batch, in inference mode (running averages, no dropout)."""
    x, y = _data(n=60)
    xv, yv = _data(n=13, seed=1)
    xt, yt = _data(n=7, seed=2)
    params, state = _init()
    splits = {"val": (xv, yv), "train": (x, y), "test": (xt, yt)}
    result = fit(NET, softmax_cross_entropy, optax.adam(0.01), params, x, y, epochs=2, batch_size=16, key=KEY,
                 state=state, evaluate_on=splits, eval_batch_size=8)
    evaluate = make_evaluate(NET, softmax_cross_entropy, 8)
    last = result.history[-1]
    assert set(last) == {"epoch", "batch_loss", "val_loss", "val_accuracy", "train_loss", "train_accuracy",
                         "test_loss", "test_accuracy"}
    for name, (ex, ey) in splits.items():
        loss, accuracy = evaluate(result.params, result.state, ex, ey)
        np.testing.assert_allclose(last[f"{name}_loss"], float(loss), rtol=1e-6)
        assert last[f"{name}_accuracy"] == float(accuracy)
        assert abs(last[f"{name}_accuracy"] * len(ex) - round(last[f"{name}_accuracy"] * len(ex))) < 1e-4


def test_fit_refuses_an_evaluation_split_of_another_sample_shape():
    x, y = _data()
    params, state = _init()
    with pytest.raises(ValueError, match=r"^fit \(evaluate_on\['val'\]\): samples of shape \(4,\), but the training "
                                         r"samples have shape \(5,\)$"):
        fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, y, epochs=1, batch_size=10, key=KEY, state=state,
            evaluate_on={"train": (x, y), "val": (x[:, :4], y)})


@pytest.mark.parametrize("kwargs,message", [
    (dict(epochs=0), "fit: epochs must be a positive int"),
    (dict(batch_size=0), "fit: batch_size must be a positive int"),
    (dict(batch_size=100), "batch_size 100 exceeds the 40 training samples"),
    (dict(epochs_per_call=0), "epochs_per_call must be a positive int"),
    (dict(epochs_per_call=True), r"fit: epochs_per_call must be a positive int or None, got True$"),
    (dict(epochs_per_call=2.0), r"fit: epochs_per_call must be a positive int or None, got 2\.0$"),
    (dict(labels=jnp.zeros(39, jnp.int32)), "x holds 40 samples but targets hold 39"),
])
def test_fit_refuses_bad_settings(kwargs, message):
    x, y = _data()
    params, state = _init()
    settings = dict(epochs=1, batch_size=10, key=KEY, state=state)
    labels = kwargs.pop("labels", y)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, labels, **settings)
