"""Aimed tests of the sequence layers: the embedding's scatter-add over repeated ids, its integer
input, the time-distributed affine map against affine at each step, and the time softmax
cross-entropy's ignore label and mean over the counted positions. (test_layers checks each
registry case against jax.vjp of the reference and finite differences.)"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference.sequence as ref_seq
from pure_backprop.core import loss_and_grads, serial
from pure_backprop.initializers import ONE_OFF
from pure_backprop.layers import affine
from pure_backprop.layers.embedding import embedding
from pure_backprop.layers.time_affine import time_affine
from pure_backprop.layers.time_softmax_cross_entropy import IGNORE_LABEL, time_softmax_cross_entropy as tsce

EMB = embedding(4, 2)
jit = functools.partial(jax.jit, compiler_options=ONE_OFF)  # small programs that run once: compiled at -O0


def _table(v=4, d=2):
    return jnp.arange(v * d, dtype=jnp.float64).reshape(v, d) / 10 - 0.3


# --- embedding --------------------------------------------------------------------------------

def test_embedding_repeated_ids_accumulate_and_unused_rows_are_exactly_zero():
    W = _table()
    ids = jnp.array([[0, 2, 0]])
    y, residuals = EMB.forward({"W": W}, ids)
    np.testing.assert_array_equal(y, W[jnp.array([[0, 2, 0]])])
    dy = jnp.array([[[1.0, 2.0], [30.0, 40.0], [500.0, 600.0]]])
    grads, dids = EMB.backward({"W": W}, residuals, dy)
    expected = np.array([[501.0, 602.0], [0.0, 0.0], [30.0, 40.0], [0.0, 0.0]])  # dW[0] = dy[0,0] + dy[0,2]
    np.testing.assert_array_equal(grads["W"], expected)
    assert grads["W"].dtype == W.dtype
    assert dids.dtype == jax.dtypes.float0 and dids.shape == (1, 3)


@pytest.mark.parametrize("ids", [np.array([3, 1, 3, 3]), np.array([[0, 3, 0, 1], [3, 3, 2, 0]])], ids=["N", "NxT"])
def test_embedding_backward_equals_jax_vjp_and_ids_get_float0(ids):
    W = _table()
    dy = jnp.asarray(np.random.default_rng(0).standard_normal(ids.shape + (2,)))
    y, residuals = EMB.forward({"W": W}, ids)
    assert y.shape == ids.shape + (2,)
    grads, dids = EMB.backward({"W": W}, residuals, dy)
    _, vjp = jax.vjp(lambda W: EMB.forward({"W": W}, ids)[0], W)
    np.testing.assert_allclose(grads["W"], vjp(dy)[0], rtol=1e-15, atol=0)
    _, vjp_both = jax.vjp(lambda W, i: EMB.forward({"W": W}, i)[0], W, jnp.asarray(ids))
    jax_dids = vjp_both(dy)[1]
    assert dids.dtype == jax_dids.dtype == jax.dtypes.float0 and dids.shape == jax_dids.shape == ids.shape
    # the one-hot product it replaces
    np.testing.assert_allclose(y, jax.nn.one_hot(ids, 4, dtype=W.dtype) @ W, rtol=1e-15)


def test_embedding_backward_under_jit_keeps_float0_and_the_tables_dtype():
    W = _table().astype(jnp.float32)
    ids = np.array([[1, 1, 2]])
    dy = jnp.ones((1, 3, 2), jnp.float64)  # a float64 dy: dW is still in W's dtype, as jax.vjp gives it
    for backward in (EMB.backward, jit(EMB.backward)):
        grads, dids = backward({"W": W}, jnp.asarray(ids), dy)
        assert grads["W"].dtype == jnp.float32 and dids.dtype == jax.dtypes.float0 and dids.shape == (1, 3)
        np.testing.assert_array_equal(grads["W"], np.float32([[0, 0], [2, 2], [1, 1], [0, 0]]))


def test_embedding_rejects_out_of_range_and_non_integer_ids():
    W = {"W": _table()}
    for bad, value, index in ((np.array([[0, 4]]), 4, 1), (np.array([[-1, 2]]), -1, 0)):
        with pytest.raises(ValueError, match=rf"embedding: ids must lie in \[0, 4\), got {value} at index \(0, {index}\) "
                                             rf"of ids shape \(1, 2\)"):
            EMB.forward(W, bad)
        with pytest.raises(ValueError, match=r"embedding: ids must lie in \[0, 4\)"):
            jit(lambda W: EMB.forward(W, bad)[0])(W)  # a constant under jit is still concrete
    with pytest.raises(ValueError, match=r"embedding: ids must have an integer dtype, got dtype float64"):
        EMB.forward(W, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"embedding: ids must have an integer dtype, got dtype bool"):
        EMB.forward(W, jnp.array([True]))
    with pytest.raises(ValueError, match=r"embedding: ids must be an array, got a Python list"):
        EMB.forward(W, [0, 1])


def test_embedding_traced_ids_out_of_range_give_nan_rows_and_no_gradient():
    W = _table()
    ids = jnp.array([4, -1, 1, 7])

    @jit
    def run(ids, dy):
        y, residuals = EMB.forward({"W": W}, ids)
        return y, EMB.backward({"W": W}, residuals, dy)[0]["W"]

    y, dW = run(ids, jnp.ones((4, 2)))
    assert jnp.isnan(y[:2]).all() and jnp.isnan(y[3]).all()
    np.testing.assert_array_equal(y[2], W[1])
    np.testing.assert_array_equal(dW, np.array([[0, 0], [1, 1], [0, 0], [0, 0]]))


def test_embedding_shape_errors_eagerly_and_under_jit():
    ids = jnp.array([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"embedding: W must have 2 axes, got shape \(4,\) \(vocabulary, dim\)"):
        EMB.forward({"W": jnp.ones(4)}, ids)
    with pytest.raises(ValueError, match=r"embedding: W must have a floating-point dtype, got int"):
        EMB.forward({"W": jnp.ones((4, 2), jnp.int32)}, ids)
    with pytest.raises(ValueError, match=r"embedding: params must be a dict with the key \['W'\], got \['W', 'b'\]"):
        EMB.forward({"W": _table(), "b": jnp.ones(2)}, ids)
    for backward in (EMB.backward, jit(EMB.backward)):
        with pytest.raises(ValueError, match=r"embedding: dy shape \(1, 3, 3\) does not match output shape \(1, 3, 2\)"):
            backward({"W": _table()}, ids, jnp.ones((1, 3, 3)))
        with pytest.raises(ValueError, match=r"embedding: dy shape \(3, 2\) does not match output shape \(1, 3, 2\)"):
            backward({"W": _table()}, ids, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"embedding: W must have 2 axes, got shape \(2, 4, 2\)"):
        jit(EMB.forward)({"W": jnp.ones((2, 4, 2))}, ids)
    for arg, bad in (("vocab_size", 0), ("dim", 2.0), ("dim", True)):
        with pytest.raises(ValueError, match=rf"embedding: {arg} must be a positive int, got {bad!r}"):
            embedding(*((bad, 2) if arg == "vocab_size" else (4, bad)))


def test_embedding_init_is_the_books_normal_of_std_0_01():
    params, out_shape = embedding(200, 50).init(jax.random.PRNGKey(0), (8, 5), jnp.float64)
    assert out_shape == (8, 5, 50) and params["W"].shape == (200, 50) and params["W"].dtype == jnp.float64
    assert 0.0097 < float(jnp.std(params["W"])) < 0.0103 and abs(float(jnp.mean(params["W"]))) < 1e-3
    custom = embedding(3, 2, w_init=lambda key, shape, dtype: jnp.ones(shape, dtype))
    np.testing.assert_array_equal(custom.init(jax.random.PRNGKey(0), (1,))[0]["W"], np.ones((3, 2)))
    assert custom.init(jax.random.PRNGKey(0), (1,))[1] == (1, 2)


def test_embedding_under_vmap_over_traced_ids():
    W = _table()
    ids = jnp.array([[0, 3, 0], [2, 2, 1]])
    dy = jnp.arange(12.0).reshape(2, 3, 2)

    def run(ids, dy):
        y, residuals = EMB.forward({"W": W}, ids)
        return y, EMB.backward({"W": W}, residuals, dy)[0]["W"]

    ys, dWs = jit(jax.vmap(run))(ids, dy)
    for i in range(2):
        y, dW = run(ids[i], dy[i])
        np.testing.assert_array_equal(ys[i], y)
        np.testing.assert_array_equal(dWs[i], dW)
    np.testing.assert_array_equal(dWs[0], [[0 + 4, 1 + 5], [0, 0], [0, 0], [2, 3]])


def test_embedding_time_affine_and_loss_compose_into_the_gradient_of_the_whole():
    net = serial(embedding(5, 3), time_affine(5))
    params, out_shape = net.init(jax.random.PRNGKey(1), (2, 4), jnp.float64)
    assert out_shape == (2, 4, 5)
    params = jax.tree_util.tree_map(lambda p: p + 0.3, params)  # nonzero biases, larger scores
    ids = jnp.array([[0, 3, 0, 1], [3, 3, 2, 0]])
    targets = jnp.array([[3, 0, 1, IGNORE_LABEL], [3, 2, IGNORE_LABEL, IGNORE_LABEL]])
    loss, grads = jit(lambda p: loss_and_grads(net, tsce, p, ids, targets))(params)

    def whole(params):
        h = ref_seq.embedding(params[0], ids)
        return ref_seq.time_softmax_cross_entropy(ref_seq.time_affine(params[1], h), targets)

    expected_loss, expected = jit(jax.value_and_grad(whole))(params)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-14)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert not jnp.any(grads[0]["W"][4])  # id 4 never occurs


# --- time affine ------------------------------------------------------------------------------

def _time_affine_case(n=2, t=3, d=4, m=3):
    layer = time_affine(m)
    params, out_shape = layer.init(jax.random.PRNGKey(0), (n, t, d), jnp.float64)
    assert out_shape == (n, t, m) and params["W"].shape == (d, m) and params["b"].shape == (m,)
    rng = np.random.default_rng(1)
    params = {"W": params["W"], "b": jnp.asarray(rng.standard_normal(m))}
    return layer, params, jnp.asarray(rng.standard_normal((n, t, d))), jnp.asarray(rng.standard_normal((n, t, m)))


def test_time_affine_is_affine_at_every_step():
    layer, params, x, dy = _time_affine_case()
    y, residuals = layer.forward(params, x)
    grads, dx = layer.backward(params, residuals, dy)
    step = affine(3)
    dW, db = 0, 0
    for t in range(x.shape[1]):
        y_t, r_t = step.forward(params, x[:, t, :])
        np.testing.assert_allclose(y[:, t, :], y_t, rtol=1e-14)
        g_t, dx_t = step.backward(params, r_t, dy[:, t, :])
        np.testing.assert_allclose(dx[:, t, :], dx_t, rtol=1e-14)
        dW, db = dW + g_t["W"], db + g_t["b"]
    np.testing.assert_allclose(grads["W"], dW, rtol=1e-13)  # summed over the steps as well as the batch
    np.testing.assert_allclose(grads["b"], db, rtol=1e-13)
    assert dx.shape == x.shape


def test_time_affine_errors_eagerly_and_under_jit():
    layer, params, x, dy = _time_affine_case()
    for forward in (layer.forward, jit(layer.forward)):
        with pytest.raises(ValueError, match=r"time_affine: input has 5 features per step but W expects 4 "
                                             r"\(x.shape=\(2, 3, 5\), W.shape=\(4, 3\)\)"):
            forward(params, jnp.ones((2, 3, 5)))
        with pytest.raises(ValueError, match=r"time_affine: x must have 3 axes, got shape \(2, 4\) \(batch, time, features\)"):
            forward(params, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"time_affine: W must have 2 axes, got shape \(4,\)"):
        layer.forward({"W": jnp.ones(4), "b": jnp.ones(3)}, x)
    with pytest.raises(ValueError, match=r"time_affine: b shape \(4,\) does not match W shape \(4, 3\)"):
        layer.forward({"W": params["W"], "b": jnp.ones(4)}, x)
    with pytest.raises(ValueError, match=r"time_affine: params must be a dict with keys \['W', 'b'\], got \['W'\]"):
        layer.forward({"W": params["W"]}, x)
    with pytest.raises(ValueError, match=r"time_affine: x is an empty batch"):
        layer.forward(params, jnp.ones((0, 3, 4)))
    for backward in (layer.backward, jit(layer.backward)):
        with pytest.raises(ValueError, match=r"time_affine: dy shape \(2, 3, 4\) does not match output shape \(2, 3, 3\)"):
            backward(params, x, jnp.ones((2, 3, 4)))
        with pytest.raises(ValueError, match=r"time_affine: dy shape \(6, 3\) does not match output shape \(2, 3, 3\)"):
            backward(params, x, jnp.ones((6, 3)))
    with pytest.raises(ValueError, match=r"time_affine: in_shape must be \(batch, time, features\), got \(2, 4\)"):
        layer.init(jax.random.PRNGKey(0), (2, 4))
    with pytest.raises(ValueError, match=r"time_affine: out_dim must be a positive int, got 0"):
        time_affine(0)


def test_time_affine_under_vmap():
    layer, params, x, dy = _time_affine_case(n=1, t=2, d=4, m=3)

    def run(x, dy):
        y, residuals = layer.forward(params, x)
        return y, layer.backward(params, residuals, dy)

    xs, dys = jnp.stack([x, -2 * x]), jnp.stack([dy, 3 * dy])
    batched = jit(jax.vmap(run))(xs, dys)
    for i in range(2):
        for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(run(xs[i], dys[i]))):
            np.testing.assert_allclose(a[i], b, rtol=1e-14)


# --- time softmax cross-entropy ---------------------------------------------------------------

def _loss_and_grad(scores, targets, dloss=1.0):
    loss, residuals = tsce.forward(scores, targets)
    return loss, tsce.backward(residuals, jnp.asarray(dloss, scores.dtype))


_jitted = jit(_loss_and_grad)
_reference = jit(jax.value_and_grad(ref_seq.time_softmax_cross_entropy))


def test_mean_over_the_counted_positions_by_hand():
    # position 0: p = (1/2, 1/2), target 0; position 1: ignored; position 2: p = (3/4, 1/4), target 1
    scores = jnp.array([[[0.0, 0.0], [5.0, -7.0], [math.log(3.0), 0.0]]])
    loss, dscores = _loss_and_grad(scores, jnp.array([[0, IGNORE_LABEL, 1]]))
    np.testing.assert_allclose(loss, (math.log(2) + math.log(4)) / 2, rtol=1e-15)  # / 2 counted, not / 3
    np.testing.assert_allclose(dscores, [[[-0.25, 0.25], [0.0, 0.0], [0.375, -0.375]]], rtol=1e-15, atol=1e-17)
    loss2, dscores2 = _loss_and_grad(scores, jnp.array([[0, IGNORE_LABEL, 1]]), dloss=-2.5)
    np.testing.assert_allclose(loss2, loss, rtol=0)
    np.testing.assert_allclose(dscores2, -2.5 * dscores, rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_ignored_positions_are_the_same_as_removed_positions(seed):
    rng = np.random.default_rng(seed)
    n, t, v = 3, 4, 5
    scores = jnp.asarray(3 * rng.standard_normal((n, t, v)))
    targets = rng.integers(0, v, (n, t))
    ignored = rng.random((n, t)) < 0.4
    ignored[0, 0], ignored[0, 1] = True, False  # at least one of each
    targets = np.where(ignored, IGNORE_LABEL, targets)
    loss, dscores = _jitted(scores, jnp.asarray(targets))
    kept = np.argwhere(~ignored)
    removed_scores = scores[kept[:, 0], kept[:, 1]][None]  # (1, C, V): the counted positions alone
    removed_targets = jnp.asarray(targets[kept[:, 0], kept[:, 1]][None])
    removed_loss, removed_dscores = _jitted(removed_scores, removed_targets)
    np.testing.assert_allclose(loss, removed_loss, rtol=1e-14)
    np.testing.assert_allclose(dscores[kept[:, 0], kept[:, 1]], removed_dscores[0], rtol=1e-14, atol=1e-17)
    assert not np.any(np.asarray(dscores)[ignored])
    # and both equal the reference's jax.grad
    expected_loss, expected = _reference(scores, jnp.asarray(targets))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-14)
    np.testing.assert_allclose(dscores, expected, rtol=1e-13, atol=1e-16)


def test_scores_at_an_ignored_position_change_nothing():
    scores = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 4)))
    targets = jnp.array([[1, IGNORE_LABEL, 3], [IGNORE_LABEL, 0, 2]])
    loss, dscores = _jitted(scores, targets)
    for value in (100.0, -1e300, jnp.inf, jnp.nan):
        moved = scores.at[0, 1].set(value).at[1, 0, 2].set(value)
        loss_moved, dscores_moved = _jitted(moved, targets)
        np.testing.assert_array_equal(loss_moved, loss)
        np.testing.assert_array_equal(dscores_moved, dscores)
    assert not jnp.any(dscores[0, 1]) and not jnp.any(dscores[1, 0])


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient():
    scores = jnp.asarray(np.random.default_rng(3).standard_normal((1, 3, 2)))  # the shape of the eager test above
    targets = jnp.full((1, 3), IGNORE_LABEL)
    for run in (_loss_and_grad, _jitted):  # eagerly: the concrete targets are checked, -1 is allowed
        loss, dscores = run(scores, targets)
        assert float(loss) == 0.0 and not jnp.isnan(loss)
        np.testing.assert_array_equal(dscores, np.zeros((1, 3, 2)))
    np.testing.assert_array_equal(_reference(scores, targets)[1], np.zeros((1, 3, 2)))


def test_large_scores_give_finite_exact_gradients():
    scores = jnp.array([[[1e3, 0.0, -1e3], [1e3, 1e3, -1e3], [-1e3, 1e3, 0.0]]])
    targets = jnp.array([[1, 0, 1]])
    for dtype in (jnp.float32, jnp.float64):
        loss, dscores = _jitted(scores.astype(dtype), targets)
        assert loss.dtype == dscores.dtype == dtype
        np.testing.assert_allclose(loss, (1e3 + math.log(2) + 0) / 3, rtol=1e-6 if dtype == jnp.float32 else 1e-15)
        # position 0: p = (1, 0, 0); position 1: p = (1/2, 1/2, 0); position 2: p = (0, 1, e^-1000)
        expected = np.array([[[1, -1, 0], [-0.5, 0.5, 0], [0, 0, 0]]]) / 3
        np.testing.assert_allclose(dscores, expected, rtol=1e-6 if dtype == jnp.float32 else 1e-15, atol=0)


def test_gradient_at_the_target_keeps_its_relative_accuracy():
    # p_t = 1 / (1 + e^-40) rounds to 1; p_t - 1 = -e^-40 / (1 + e^-40) must not round to 0
    scores = jnp.array([[[0.0, -40.0], [-40.0, 0.0]]])
    loss, dscores = _jitted(scores, jnp.array([[0, 1]]))
    tiny = math.exp(-40) / (1 + math.exp(-40))
    np.testing.assert_allclose(dscores, [[[-tiny / 2, tiny / 2], [tiny / 2, -tiny / 2]]], rtol=1e-15, atol=0)
    np.testing.assert_allclose(loss, math.log1p(math.exp(-40)), rtol=0, atol=1e-16)


def test_loss_errors():
    scores = jnp.zeros((2, 3, 5))
    for forward in (tsce.forward, jit(tsce.forward)):
        with pytest.raises(ValueError, match=r"time_softmax_cross_entropy: targets must have shape \(2, 3\) for scores "
                                             r"of shape \(2, 3, 5\), got targets shape \(2, 3, 5\) \(word ids, not one-hot rows\)"):
            forward(scores, jnp.zeros((2, 3, 5), jnp.int32))
        with pytest.raises(ValueError, match=r"time_softmax_cross_entropy: scores must have 3 axes, got shape \(2, 5\)"):
            forward(jnp.zeros((2, 5)), jnp.zeros((2,), jnp.int32))
        with pytest.raises(ValueError, match=r"time_softmax_cross_entropy: targets must have an integer dtype, got dtype float"):
            forward(scores, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"time_softmax_cross_entropy: scores must have a floating-point dtype, got int32"):
        tsce.forward(jnp.zeros((2, 3, 5), jnp.int32), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"time_softmax_cross_entropy: targets must be an array, got a Python list"):
        tsce.forward(jnp.zeros((1, 2, 5)), [[0, 1]])
    for bad, value in ((5, 5), (-2, -2)):
        targets = jnp.array([[0, 1, 2], [IGNORE_LABEL, bad, 4]])
        with pytest.raises(ValueError, match=rf"time_softmax_cross_entropy: targets must lie in \[0, 5\) \(or be -1, "
                                             rf"ignored\), got {value} at index \(1, 1\) of targets shape \(2, 3\)"):
            tsce.forward(scores, targets)
        # traced targets cannot be checked: NaN, never a wrong number, at that position only
        loss, dscores = _jitted(scores, targets)
        assert jnp.isnan(loss) and jnp.isnan(dscores[1, 1]).all()
        assert not jnp.any(dscores[1, 0])
        # the bad position is counted (C = 5): the other positions' gradients are those of a valid target there
        np.testing.assert_allclose(dscores[0], _jitted(scores, targets.at[1, 1].set(0))[1][0], rtol=1e-15)


def test_loss_under_vmap_with_traced_targets():
    scores = jnp.asarray(np.random.default_rng(4).standard_normal((2, 1, 3, 4)))
    targets = jnp.array([[[0, IGNORE_LABEL, 3]], [[IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL]]])
    losses, dscores = jit(jax.vmap(_loss_and_grad))(scores, targets)
    for i in range(2):
        loss, d = _jitted(scores[i], targets[i])
        np.testing.assert_allclose(losses[i], loss, rtol=1e-15)
        np.testing.assert_allclose(dscores[i], d, rtol=1e-15, atol=0)
    assert float(losses[1]) == 0.0


# --- mutants the tests above let survive (docs/mutation.md) ------------------------------------


def test_embedding_of_one_row_of_one_entry_is_a_table():
    layer = embedding(1, 1)
    params, shape = layer.init(jax.random.PRNGKey(0), (2, 3))
    assert params["W"].shape == (1, 1) and shape == (2, 3, 1)
    y, _ = layer.forward(params, jnp.zeros((2, 3), jnp.int32))
    np.testing.assert_array_equal(y, jnp.broadcast_to(params["W"][0], (2, 3, 1)))


def test_embedding_init_gives_the_dtype_asked_for():
    params, _ = EMB.init(jax.random.PRNGKey(0), (2,), jnp.bfloat16)
    assert params["W"].dtype == jnp.bfloat16


def test_embedding_and_time_affine_name_the_type_of_params_that_are_not_a_dict():
    with pytest.raises(ValueError, match=r"^embedding: params must be a dict with the key \['W'\], got list$"):
        EMB.forward([_table()], jnp.array([0]))
    with pytest.raises(ValueError, match=r"^time_affine: params must be a dict with keys \['W', 'b'\], got tuple$"):
        time_affine(2).forward((jnp.ones((2, 2)), jnp.ones(2)), jnp.ones((1, 3, 2)))


def test_embedding_backward_error_gives_the_ids_and_table_shapes():
    with pytest.raises(ValueError, match=r"^embedding: dy shape \(3, 2\) does not match output shape \(1, 3, 2\) "
                                         r"\(ids shape \(1, 3\) \+ \(D,\), W.shape=\(4, 2\)\)$"):
        EMB.backward({"W": _table()}, jnp.array([[0, 1, 2]]), jnp.ones((3, 2)))


def test_embedding_require_ids_names_the_ignored_value_it_allows():
    from pure_backprop.layers.embedding import require_ids

    with pytest.raises(ValueError, match=r"^loss: t must lie in \[0, 3\) \(or be -1, ignored\), got 5 at index \(1,\) "
                                         r"of t shape \(2,\)$"):
        require_ids("loss", "t", jnp.array([0, 5]), 3, allowed=-1)
    require_ids("loss", "t", jnp.array([0, -1, 2]), 3, allowed=-1)  # the allowed value passes


def test_embedding_backward_adds_in_the_wider_of_the_tables_and_the_gradients_dtypes():
    """Two gradients into one row add the same in any order, so the sums tell the dtype they were
    added in: 1 + 2**-24 is a float64 but not a float32, and 1 + 2**-24 + 2**-50 rounds up to a
    float32 once, where rounding each term first loses it."""
    ids = jnp.array([0, 0])
    with jax.enable_x64(True):
        dy = jnp.array([[1.0, 1.0], [2**-24, 2**-24]], jnp.float32)
        dW = EMB.backward({"W": jnp.zeros((4, 2), jnp.float64)}, ids, dy)[0]["W"]
        assert dW.dtype == jnp.float64 and float(dW[0, 0]) == 1 + 2**-24
        dy = jnp.array([[1.0, 1.0], [2**-24 + 2**-50] * 2], jnp.float64)
        dW = EMB.backward({"W": jnp.zeros((4, 2), jnp.float32)}, ids, dy)[0]["W"]
        assert dW.dtype == jnp.float32 and float(dW[0, 0]) == 1 + 2**-23


def test_time_affine_init_of_one_output_in_the_dtype_asked_for_each_initializer_with_its_key():
    layer = time_affine(1, b_init=jax.nn.initializers.normal(1.0))
    params, shape = layer.init(jax.random.PRNGKey(0), (2, 3, 4), jnp.bfloat16)
    assert shape == (2, 3, 1) and params["W"].dtype == params["b"].dtype == jnp.bfloat16
    assert float(jnp.abs(params["b"][0])) > 0  # drawn from the bias's own key, not left at zero
    for bad in (2.0, 0, True):
        with pytest.raises(ValueError, match=rf"^time_affine: out_dim must be a positive int, got {bad!r}$"):
            time_affine(bad)


def test_loss_names_scores_of_the_wrong_rank_and_targets_that_are_not_an_array():
    with pytest.raises(ValueError, match=r"^time_softmax_cross_entropy: scores must have 3 axes, got shape \(2, 5\) "
                                         r"\(batch, time, vocabulary\)$"):
        tsce.forward(jnp.ones((2, 5)), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match=r"^time_softmax_cross_entropy: targets must be an array, got a Python list"):
        tsce.forward(jnp.ones((1, 2, 5)), [[0, 1]])
