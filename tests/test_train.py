"""Training with the hand gradients: the same parameters as jax.grad, scan epochs, full evaluation,
and a layer written outside the package working through the whole protocol."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pure_backprop import Layer, loss_and_grads, serial
from pure_backprop.core import no_params
from pure_backprop.layers import affine, softmax_cross_entropy
from pure_backprop.network import mlp
from pure_backprop.train import OPTIMIZERS, fit, learning_rate, make_evaluate, make_train_epoch, make_train_step, updates

NET = mlp((8, 6), 3, "tanh")


def _data(n=40, d=5, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, d))
    return x, jnp.argmax(x[:, :3], axis=1)  # a rule the network can learn


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_hand_step_equals_jax_grad_step_after_20_steps(name):
    x, y = _data()
    params, _ = NET.init(jax.random.PRNGKey(1), (-1, 5))
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    optimizer = OPTIMIZERS[name](0.05)
    hand_step = make_train_step(NET, softmax_cross_entropy, optimizer)

    @jax.jit
    def jax_step(params, opt_state, batch):
        value, grads = jax.value_and_grad(lambda p: softmax_cross_entropy.forward(NET.forward(p, batch[0])[0], batch[1])[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    a, sa = params, optimizer.init(params)
    b, sb = params, optimizer.init(params)
    for i in range(20):
        batch = (x[i % 4 * 10:(i % 4 + 1) * 10], y[i % 4 * 10:(i % 4 + 1) * 10])
        a, sa, la = hand_step(a, sa, batch)
        b, sb, lb = jax_step(b, sb, batch)
        np.testing.assert_allclose(la, lb, rtol=1e-12)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
    assert not all(np.allclose(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(params)))


def test_epoch_is_one_compiled_scan_that_learns_and_shuffles_with_the_key():
    x, y = _data(n=60)
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    optimizer = optax.sgd(0.1)
    epoch = make_train_epoch(NET, softmax_cross_entropy, optimizer, 16)
    p1, _, losses = epoch(params, optimizer.init(params), jax.random.PRNGKey(3), x, y)
    assert losses.shape == (3,)  # 60 // 16 batches
    p2, _, _ = epoch(params, optimizer.init(params), jax.random.PRNGKey(4), x, y)
    assert not np.allclose(p1[0]["W"], p2[0]["W"])  # a different key, a different order
    p3, _, _ = epoch(params, optimizer.init(params), jax.random.PRNGKey(3), x, y)
    np.testing.assert_array_equal(p1[0]["W"], p3[0]["W"])  # the same key, the same result
    state, p = optimizer.init(params), params
    first = float(softmax_cross_entropy.forward(NET.forward(p, x)[0], y)[0])
    for k in range(40):
        p, state, losses = epoch(p, state, jax.random.PRNGKey(k), x, y)
    assert float(softmax_cross_entropy.forward(NET.forward(p, x)[0], y)[0]) < 0.6 * first


def test_the_compiled_step_epoch_and_evaluation_compose_inside_a_callers_jit():
    """They are the caller's parts: nested in the caller's own jit (and vmap), as any jitted
    function is. jax refuses compiler options on a nested jit, so none may be set on these."""
    x, y = _data(n=32)
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    optimizer = optax.sgd(0.1)
    step = make_train_step(NET, softmax_cross_entropy, optimizer)
    epoch = make_train_epoch(NET, softmax_cross_entropy, optimizer, 16)
    evaluate = make_evaluate(NET, softmax_cross_entropy, 16)

    @jax.jit
    def two_steps_an_epoch_and_an_evaluation(params, opt_state, key):
        params, opt_state, _ = step(params, opt_state, (x[:16], y[:16]))
        params, opt_state, _ = step(params, opt_state, (x[16:], y[16:]))
        params, opt_state, _ = epoch(params, opt_state, key, x, y)
        return params, evaluate(params, x, y)

    nested, metrics = two_steps_an_epoch_and_an_evaluation(params, optimizer.init(params), jax.random.PRNGKey(1))
    p, o = params, optimizer.init(params)
    p, o, _ = step(p, o, (x[:16], y[:16]))
    p, o, _ = step(p, o, (x[16:], y[16:]))
    p, o, _ = epoch(p, o, jax.random.PRNGKey(1), x, y)
    for a, b in zip(jax.tree_util.tree_leaves((nested, metrics)), jax.tree_util.tree_leaves((p, evaluate(p, x, y)))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    per_key = jax.jit(jax.vmap(lambda k: epoch(params, optimizer.init(params), k, x, y)[2]))(jax.random.split(jax.random.PRNGKey(2), 2))
    assert per_key.shape == (2, 2)


def test_evaluation_covers_every_sample_once():
    x, y = _data(n=23)
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    loss, acc = make_evaluate(NET, softmax_cross_entropy, 10)(params, x, y)
    scores = NET.forward(params, x)[0]
    np.testing.assert_allclose(acc, np.mean(np.argmax(scores, 1) == y), rtol=1e-6)
    np.testing.assert_allclose(loss, softmax_cross_entropy.forward(scores, y)[0], rtol=1e-5)


def test_a_layer_written_outside_the_package_works_everywhere():
    """Leaky ReLU written by a user, as the README shows: serial, loss_and_grads, jit, vmap, training."""

    def forward(params, x):
        return jnp.where(x > 0, x, 0.1 * x), x > 0

    def backward(params, positive, dy):
        return (), jnp.where(positive, dy, 0.1 * dy)

    leaky = Layer(no_params, forward, backward)
    net = serial(affine(4), leaky, affine(3))
    params, shape = net.init(jax.random.PRNGKey(0), (-1, 5))
    assert shape == (-1, 3)
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    x, y = _data()
    value, grads = jax.jit(lambda p: loss_and_grads(net, softmax_cross_entropy, p, x, y))(params)
    expected = jax.grad(lambda p: softmax_cross_entropy.forward(net.forward(p, x)[0], y)[0])(params)
    for u, v in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-14)
    per_sample = jax.vmap(lambda xi: net.forward(params, xi[None])[0][0])(x)
    np.testing.assert_allclose(per_sample, net.forward(params, x)[0], rtol=1e-12)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1150, 70_000, 2**20 + 3])
def test_shuffle_is_a_seeded_permutation(n):
    from pure_backprop.train import shuffle

    order = np.asarray(shuffle(jax.random.PRNGKey(0), n))
    assert order.dtype == np.int32 and sorted(order.tolist()) == list(range(n))
    np.testing.assert_array_equal(order, shuffle(jax.random.PRNGKey(0), n))
    if n > 2:
        assert not np.array_equal(order, shuffle(jax.random.PRNGKey(1), n))


@pytest.mark.parametrize("n, rounds", [(1, 0), (2, 1), (1000, 2), (8192, 3), (100_000, 4), (1_000_000, 5)])
def test_shuffle_sorts_in_as_many_rounds_as_jax_permutation(n, rounds):
    """``ceil(3 ln n / ((32 - b) ln 2))`` rounds with ``b = bit_length(n - 1)`` position bits
    (1000: b = 10, 22 random bits, 1.36 -> 2; 8192: 13 and 19, 2.05 -> 3; 100,000: 17 and 15,
    3.32 -> 4; 1,000,000: 20 and 12, 4.98 -> 5), each round one sort of one array; one element
    has one order and draws nothing, as in jax."""
    from pure_backprop.train import shuffle

    def sorts(jaxpr):  # sort equations, counted inside every call they are in
        inner = [v.jaxpr if hasattr(v, "jaxpr") else v for e in jaxpr.eqns for v in e.params.values()]
        return sum(e.primitive.name == "sort" for e in jaxpr.eqns) + sum(sorts(j) for j in inner if hasattr(j, "eqns"))

    assert sorts(jax.make_jaxpr(lambda k: shuffle(k, n))(jax.random.PRNGKey(0)).jaxpr) == rounds


def test_shuffle_is_jax_permutation_from_fewer_than_twelve_random_bits():
    """``n = 2**20``: 20 position bits and 12 random ones, still the packed sort; one more
    element leaves 11 random bits, and the shuffle is ``jax.random.permutation``."""
    from pure_backprop.train import shuffle

    key = jax.random.PRNGKey(0)
    assert not np.array_equal(shuffle(key, 2**20), jax.random.permutation(key, 2**20))
    np.testing.assert_array_equal(shuffle(key, 2**20 + 1), jax.random.permutation(key, 2**20 + 1))


def test_shuffle_draws_every_order_equally_often():
    """All 24 orders of 4 elements over 48,000 keys: a chi-square test at the 0.1 % level
    (23 degrees of freedom: 49.7); and each element's mean position in a larger shuffle."""
    from pure_backprop.train import shuffle

    keys = jax.random.split(jax.random.PRNGKey(3), 48_000)
    orders = np.asarray(jax.jit(jax.vmap(lambda k: shuffle(k, 4)))(keys))
    counts = np.unique(orders @ np.array([64, 16, 4, 1]), return_counts=True)[1]
    assert len(counts) == 24
    expected = len(keys) / 24
    assert np.sum((counts - expected) ** 2 / expected) < 49.7
    big = np.asarray(jax.jit(jax.vmap(lambda k: shuffle(k, 1150)))(keys[:2000]))
    mean_position = np.argsort(big, axis=1).mean(axis=0)  # where each element landed, on average
    assert np.abs(mean_position - 574.5).max() < 5 * 332 / np.sqrt(2000)  # 5 sigma of a uniform position


def test_learning_rate_schedules():
    assert learning_rate(0.1, "constant", 10) == 0.1
    cosine = learning_rate(0.2, "cosine", 10)  # lr (1 + cos(pi t / steps)) / 2: 0.2 at t=0, half way 0.1, 0 at the end
    np.testing.assert_allclose([cosine(0), cosine(5), cosine(10), cosine(25)], [0.2, 0.1, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(cosine(2), 0.1 * (1 + np.cos(np.pi * 0.2)), rtol=1e-6)
    # an optimizer takes it: the second sgd update is smaller than the first by the schedule's ratio
    opt = OPTIMIZERS["sgd"](cosine)
    params, state = jnp.zeros(()), opt.init(jnp.zeros(()))
    first, state = opt.update(jnp.ones(()), state, params)
    second, _ = opt.update(jnp.ones(()), state, params)
    np.testing.assert_allclose([first, second], [-cosine(0), -cosine(1)], rtol=1e-6)
    for schedule, steps, message in [("linear", 10, "schedule must be one of"), ("cosine", 0, "positive int"),
                                     ("cosine", True, "positive int"), ("cosine", 2.0, "positive int")]:
        with pytest.raises(ValueError, match=message):
            learning_rate(0.1, schedule, steps)


def test_a_schedule_spans_exactly_the_updates_fit_makes():
    net = serial(affine(3))
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 4))
    x, y = jax.random.normal(jax.random.PRNGKey(1), (23, 4)), jnp.arange(23) % 3
    steps = updates(23, 5, 3)
    assert steps == 12  # 4 batches of 5 per epoch, 3 left out
    optimizer = optax.chain(optax.scale_by_schedule(lambda t: 1.0), optax.sgd(0.1))  # counts its updates
    result = fit(net, softmax_cross_entropy, optimizer, params, x, y, epochs=3, batch_size=5,
                 key=jax.random.PRNGKey(2))
    assert int(result.opt_state[0].count) == steps  # so a cosine schedule of `steps` ends at 0 on the last update


class _InitOnly:
    """An optimizer with ``init`` but no ``update``."""

    def init(self, params):
        return ()


@pytest.mark.parametrize("call, kind, message", [
    (lambda p: make_train_step(NET, "mse", optax.sgd(0.1)), TypeError,
     "make_step: loss must be a Loss (forward, backward), e.g. pure_backprop.layers.softmax_cross_entropy, got str"),
    (lambda p: make_train_step(NET, softmax_cross_entropy, _InitOnly()), TypeError,
     "make_step: optimizer must be an optax.GradientTransformation, e.g. optax.sgd(0.1), got _InitOnly"),
    (lambda p: make_evaluate(NET, softmax_cross_entropy, 4)(p, jnp.float32(1.0), jnp.zeros(4, jnp.int32)), ValueError,
     "evaluate: x and targets need a leading sample axis, got shapes () and (4,)"),
    (lambda p: make_evaluate(NET, softmax_cross_entropy, 4)(p, jnp.zeros((4, 5)), jnp.int32(1)), ValueError,
     "evaluate: x and targets need a leading sample axis, got shapes (4, 5) and ()"),
])
def test_train_refuses_what_it_cannot_train_with_the_whole_message(call, kind, message):
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    with pytest.raises(kind) as e:
        call(params)
    assert str(e.value) == message


def test_an_epoch_takes_a_batch_of_every_sample():
    """``batch_size == len(x)``: one step over the whole (shuffled) set, not a refusal."""
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 5))
    epoch = make_train_epoch(NET, softmax_cross_entropy, optax.sgd(0.1), 6)
    _, _, losses = epoch(params, optax.sgd(0.1).init(params), jax.random.PRNGKey(2), x, jnp.arange(6) % 3)
    assert losses.shape == (1,)


def test_fit_checkpoints_at_every_multiple_when_resumed_between_two():
    """Resumed after epoch 1 with ``checkpoint_every=2``: the first call stops at epoch 2, not
    at the end of a full ``epochs_per_call`` chunk, and every checkpoint is a run going on."""
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    seen = []
    result = fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, jnp.arange(8) % 3, epochs=7, batch_size=4,
                 key=jax.random.PRNGKey(2), start_epoch=1, checkpoint_every=2, epochs_per_call=3,
                 on_checkpoint=lambda r: seen.append((r.history[-1]["epoch"], r.interrupted, r.diverged_epoch)))
    assert seen == [(2, False, None), (4, False, None), (6, False, None)]
    assert [h["epoch"] for h in result.history] == [2, 3, 4, 5, 6, 7]


def test_fit_ends_on_ctrl_c_with_interrupted_true():
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    polls = []

    def should_stop():
        polls.append(1)
        if len(polls) == 2:
            raise KeyboardInterrupt
        return False

    result = fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, jnp.arange(8) % 3, epochs=4, batch_size=4,
                 key=jax.random.PRNGKey(2), epochs_per_call=1, should_stop=should_stop)
    assert result.interrupted is True and [h["epoch"] for h in result.history] == [1]


def test_fit_takes_any_epoch_count_below_2_to_the_31():
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    result = fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, jnp.arange(8) % 3, epochs=2**31 - 1,
                 batch_size=4, key=jax.random.PRNGKey(2), should_stop=lambda: True)  # validated, then stopped
    assert result.interrupted and result.history == []


def test_as_numpy_tree_names_each_leaf_by_its_path():
    from pure_backprop.train import as_numpy_tree

    tree = {"params": [{"W": jnp.ones((2, 3))}, ()], "opt": optax.adam(0.1).init({"W": jnp.ones(2)})}
    arrays = as_numpy_tree(tree, "run")
    assert sorted(arrays) == ["run/opt/0/count", "run/opt/0/mu/W", "run/opt/0/nu/W", "run/params/0/W"]
    assert all(isinstance(a, np.ndarray) for a in arrays.values()) and arrays["run/params/0/W"].shape == (2, 3)


class _Pair:
    """A pytree whose path entries are plain strings (``register_pytree_with_keys`` takes any)."""

    def __init__(self, left, right):
        self.left, self.right = left, right


jax.tree_util.register_pytree_with_keys(_Pair, lambda p: ((("left", p.left), ("right", p.right)), None),
                                        lambda _, children: _Pair(*children))


def test_as_numpy_tree_names_a_leaf_by_any_path_entry():
    from pure_backprop.train import as_numpy_tree

    arrays = as_numpy_tree({"pair": _Pair(jnp.ones(2), jnp.zeros(3))}, "run")
    assert sorted(arrays) == ["run/pair/left", "run/pair/right"] and arrays["run/pair/right"].shape == (3,)


def test_a_cosine_schedule_may_span_a_single_update():
    schedule = learning_rate(0.1, "cosine", 1)
    assert float(schedule(0)) == pytest.approx(0.1) and float(schedule(1)) == 0.0


@pytest.mark.parametrize("limit, ahead", [("size", True), ("size - 1", False)])
def test_an_epoch_that_fits_the_limit_warps_every_batch_before_its_scan(monkeypatch, limit, ahead):
    """Up to ``_WARP_AHEAD_BYTES`` of warped batches (this one: 3 batches of 16 images of 64
    float32 pixels) are warped in one vectorized pass before the scan, not one batch per step:
    the scan's body then holds no warp (no ``cos``). The values are the same either way
    (``tests/test_augment.py``); only the program shows it."""
    import pure_backprop.train as train
    from pure_backprop.augment import affine_augmenter

    size = 4 * 3 * 16 * 64
    monkeypatch.setattr(train, "_WARP_AHEAD_BYTES", size if limit == "size" else size - 1)
    net, sgd = mlp((8,), 10), optax.sgd(0.1)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    x, y = jnp.zeros((48, 64), jnp.float32), jnp.arange(48) % 10
    epoch = make_train_epoch(net, softmax_cross_entropy, sgd, 16, augment=affine_augmenter((8, 8)))
    jaxpr = jax.make_jaxpr(epoch)(params, sgd.init(params), jax.random.PRNGKey(1), x, y)
    text = str(jaxpr)
    body = text[text.index("scan["):]  # the epoch's scan and what follows it
    assert ("cos" not in body) == ahead and "cos" in text


def test_evaluation_of_float32_data_stays_float32():
    """With float64 enabled (as here) a padding of the default dtype would promote the batch."""
    import re

    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5), jnp.float32)
    x = jnp.zeros((7, 5), jnp.float32)  # 7 samples, batches of 4: one row of padding
    jaxpr = str(jax.make_jaxpr(make_evaluate(NET, softmax_cross_entropy, 4))(params, x, jnp.zeros(7, jnp.int32)))
    assert not re.search(r"f64\[[0-9]", jaxpr)  # no float64 array (a weak-typed scalar literal is harmless)


@pytest.mark.parametrize("optimizer, on_mesh, per_call", [
    (optax.sgd(0.1), False, None), (optax.adam(1e-2), False, None), (optax.adam(1e-2), True, None),
    (optax.sgd(0.1), False, 2)], ids=["sgd", "adam", "adam-mesh", "sgd-2-per-call"])
def test_compile_fit_compiles_the_program_that_fit_then_runs(optimizer, on_mesh, per_call):
    """The program that ``fit`` runs next is compiled once, by ``compile_fit``, for an optimizer
    with state (Adam's moments have the parameters' shapes), on a mesh (one device here: the
    program with the mesh's layouts is another program than the one without) and for a number
    of epochs per call other than the default's."""
    from pure_backprop import parallel, train

    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5), jnp.float32)
    x, y = jax.random.normal(jax.random.PRNGKey(1), (8, 5), jnp.float32), jnp.arange(8) % 3
    mesh = parallel.data_mesh(1) if on_mesh else None
    args = (NET, softmax_cross_entropy, optimizer, params, x, y)
    kwargs = dict(epochs=3, batch_size=4, key=jax.random.PRNGKey(2), evaluate_on={"train": (x, y)}, mesh=mesh,
                  epochs_per_call=per_call)
    train.compile_fit(*args, **kwargs)
    run = train._fit_program(*args[:3], x, y, 3, 4, kwargs["evaluate_on"], None, 0.0, per_call, 500, mesh)[0]
    assert run._cache_size() == 1
    result = train.fit(*args, **kwargs)
    assert run._cache_size() == 1 and len(result.history) == 3


def _negate_batch(key, xb):
    """An augmentation that records each batch it is given (a host callback runs only when the
    epoch that holds it runs)."""
    jax.debug.callback(lambda: _AUGMENTED.append(1))
    return -xb


_AUGMENTED = []


def test_compile_fit_with_an_augmentation_compiles_fits_program_and_trains_nothing():
    from pure_backprop import train

    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5), jnp.float32)
    x, y = jax.random.normal(jax.random.PRNGKey(1), (8, 5), jnp.float32), jnp.arange(8) % 3
    args = (NET, softmax_cross_entropy, optax.sgd(0.1), params, x, y)
    kwargs = dict(epochs=2, batch_size=4, key=jax.random.PRNGKey(2), augment=_negate_batch)
    _AUGMENTED.clear()
    train.compile_fit(*args, **kwargs)
    jax.effects_barrier()
    assert _AUGMENTED == []  # every epoch slot skipped: not one batch augmented
    run = train._fit_program(*args[:3], x, y, 2, 4, None, _negate_batch, 0.0, None, 500)[0]
    assert run._cache_size() == 1
    train.fit(*args, **kwargs)
    jax.effects_barrier()
    assert run._cache_size() == 1 and _AUGMENTED  # the epochs that ran augmented their batches


@pytest.mark.parametrize("epochs, every, expected", [(6, 2, [2, 4]), (4, 1, [1, 2, 3])])
def test_fit_checkpoints_before_the_last_epoch_only(epochs, every, expected):
    """The last epoch ends the run (its caller saves the finished run), so a multiple of
    ``checkpoint_every`` that is the last epoch is no checkpoint; every epoch is a multiple of 1."""
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    seen = []
    fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, jnp.arange(8) % 3, epochs=epochs, batch_size=4,
        key=jax.random.PRNGKey(2), checkpoint_every=every, epochs_per_call=3,
        on_checkpoint=lambda r: seen.append(r.history[-1]["epoch"]))
    assert seen == expected


@pytest.mark.parametrize("epochs, chunks", [(40, [2] * 20), (20, [1] * 20), (21, [2] * 10 + [1])])
def test_fit_reports_progress_in_twenty_calls_by_default(epochs, chunks):
    """``ceil(epochs / 20)`` epochs per compiled call."""
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    calls = []
    fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, jnp.arange(4) % 3, epochs=epochs, batch_size=4,
        key=jax.random.PRNGKey(2), on_epochs=lambda records: calls.append(len(records)))
    assert calls == chunks


def test_the_step_hands_the_optimizer_the_parameters():
    """AdamW's weight decay needs them (``update(grads, state, params)``)."""
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    adamw = optax.adamw(0.1, weight_decay=0.5)
    new, _, _ = make_train_step(NET, softmax_cross_entropy, adamw)(params, adamw.init(params), (x, jnp.arange(4) % 3))
    _, grads = loss_and_grads(NET, softmax_cross_entropy, params, x, jnp.arange(4) % 3)
    updates, _ = adamw.update(grads, adamw.init(params), params)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(optax.apply_updates(params, updates))):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("changes, kind, message", [
    (dict(network="mlp"), TypeError, "fit: network must be a Layer or StatefulLayer, got str"),
    (dict(optimizer=_InitOnly()), TypeError,
     "fit: optimizer must be an optax.GradientTransformation, e.g. optax.sgd(0.1), got _InitOnly"),
    (dict(epochs=True), ValueError, "fit: epochs must be a positive int below 2**31 (counted in int32), got True"),
    (dict(epochs=2.0), ValueError, "fit: epochs must be a positive int below 2**31 (counted in int32), got 2.0"),
    (dict(batch_size=16), ValueError, "fit: batch_size 16 exceeds the 8 training samples"),
])
def test_fit_refuses_bad_arguments_with_the_whole_message(changes, kind, message):
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    args = {**dict(network=NET, optimizer=optax.sgd(0.1), epochs=2, batch_size=4), **changes}
    with pytest.raises(kind) as e:
        fit(args["network"], softmax_cross_entropy, args["optimizer"], params, jnp.zeros((8, 5)), jnp.arange(8) % 3,
            epochs=args["epochs"], batch_size=args["batch_size"], key=jax.random.PRNGKey(0))
    assert str(e.value) == message


def test_the_shuffle_of_two_takes_both_orders():
    from pure_backprop.train import shuffle

    orders = {tuple(np.asarray(shuffle(jax.random.PRNGKey(seed), 2)).tolist()) for seed in range(20)}
    assert orders == {(0, 1), (1, 0)}


@pytest.mark.parametrize("call, message", [
    (lambda: make_train_epoch("net", softmax_cross_entropy, optax.sgd(0.1), 4),
     "make_train_epoch: network must be a Layer or StatefulLayer, got str"),
    (lambda: make_evaluate("net", softmax_cross_entropy, 4), "make_evaluate: network must be a Layer or StatefulLayer, got str"),
    (lambda: make_evaluate(NET, "loss", 4), "make_evaluate: loss must be a Loss (forward, backward), e.g. "
                                            "pure_backprop.layers.softmax_cross_entropy, got str"),
])
def test_the_epoch_and_evaluation_name_themselves_in_their_refusals(call, message):
    with pytest.raises(TypeError) as e:
        call()
    assert str(e.value) == message


class _Unhashable:
    """An augmentation as a callable object that cannot be a cache key."""

    __hash__ = None

    def __call__(self, key, x):
        return x


def test_fit_takes_an_unhashable_augmentation():
    params, _ = NET.init(jax.random.PRNGKey(0), (-1, 5))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    result = fit(NET, softmax_cross_entropy, optax.sgd(0.1), params, x, jnp.arange(8) % 3, epochs=2, batch_size=4,
                 key=jax.random.PRNGKey(2), augment=_Unhashable())
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_make_step_without_weight_decay_takes_the_plain_gradient_step():
    """``make_step``'s default decays nothing: one SGD step is ``params - lr * grads`` of the loss alone."""
    from pure_backprop import train
    net = affine(3)
    params = net.init(jax.random.PRNGKey(0), (-1, 4))[0]
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (5, 4)), jnp.array([0, 1, 2, 0, 1])
    sgd = optax.sgd(0.5)
    new, state, _, loss = jax.jit(train.make_step(net, softmax_cross_entropy, sgd))(params, (), sgd.init(params), None,
                                                                                  (x, labels))
    want_loss, grads = loss_and_grads(net, softmax_cross_entropy, params, x, labels)
    assert state == () and np.allclose(loss, want_loss, rtol=1e-6)
    for name in ("W", "b"):
        np.testing.assert_allclose(new[name], params[name] - 0.5 * grads[name], rtol=1e-6)  # float32 parameters
