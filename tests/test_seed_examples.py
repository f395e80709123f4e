"""Chapter 5's worked examples, executed."""

import jax
import jax.numpy as jnp
import numpy as np

import reference as ref
from pure_backprop import graphs, nodes
from pure_backprop.layers import sigmoid, softmax_cross_entropy


def test_apple_shopping_graph():
    # 2 apples at 100 each, tax 1.1 (the book's figure 5-16)
    apple_price, r1 = nodes.multiply.forward((), (jnp.float64(100.0), jnp.float64(2.0)))
    price, r2 = nodes.multiply.forward((), (apple_price, jnp.float64(1.1)))
    assert np.isclose(price, 220.0)
    _, (d_apple_price, d_tax) = nodes.multiply.backward((), r2, jnp.float64(1.0))
    _, (d_apple, d_count) = nodes.multiply.backward((), r1, d_apple_price)
    assert np.isclose(d_apple, 2.2) and np.isclose(d_count, 110.0) and np.isclose(d_tax, 200.0)


def test_vector_product_of_the_note():
    # A study note of chapter 5 writes [1, 2, 3] . [4, 5, 8] = 32; the sum is 1*4 + 2*5 + 3*8 = 38 (32 is [4, 5, 6]).
    for w, expected in (([4.0, 5.0, 8.0], 38.0), ([4.0, 5.0, 6.0], 32.0)):
        x, W = jnp.array([[1.0, 2.0, 3.0]]), jnp.array(w)[:, None]
        y, residuals = nodes.matmul.forward((), (x, W))
        assert y.tolist() == [[expected]]
        _, (dx, dW) = nodes.matmul.backward((), residuals, jnp.ones((1, 1)))
        assert dx.ravel().tolist() == w and dW.ravel().tolist() == [1.0, 2.0, 3.0]  # dx = y, dy = x


def test_bias_gradient_sums_the_rows():
    _, (dx, db) = nodes.bias_add.backward((), None, jnp.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]]))
    assert db.tolist() == [2.0, 2.0, 2.0]


def test_sigmoid_from_four_nodes_equals_closed_form_and_jax():
    x = jnp.linspace(-6.0, 6.0, 13)
    dy = jnp.cos(x)
    y, residuals = graphs.sigmoid_graph.forward(((),) * 4, x)
    _, dx_graph = graphs.sigmoid_graph.backward(((),) * 4, residuals, dy)
    y_closed, r = sigmoid.forward((), x)
    _, dx_closed = sigmoid.backward((), r, dy)
    dx_jax = jax.vjp(lambda v: ref.sigmoid(None, v), x)[1](dy)[0]
    np.testing.assert_allclose(y, y_closed, rtol=1e-14)
    np.testing.assert_allclose(dx_graph, dy * y * (1 - y), rtol=1e-12)
    np.testing.assert_allclose(dx_graph, dx_closed, rtol=1e-12)
    np.testing.assert_allclose(dx_graph, dx_jax, rtol=1e-12)


def test_softmax_cross_entropy_from_seven_nodes_collapses_to_y_minus_t():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
    t = jax.nn.one_hot(jnp.array([0, 3, 1, 4]), 5, dtype=jnp.float64)
    loss, residuals = graphs.softmax_cross_entropy_graph.forward(x, t)
    dx_graph = graphs.softmax_cross_entropy_graph.backward(residuals, 1.0)
    p = jax.nn.softmax(x, axis=1)
    np.testing.assert_allclose(dx_graph, (p - t) / 4, rtol=1e-12, atol=1e-15)
    loss_closed, r = softmax_cross_entropy.forward(x, t)
    np.testing.assert_allclose(loss, loss_closed, rtol=1e-13)
    np.testing.assert_allclose(softmax_cross_entropy.backward(r, 1.0), dx_graph, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dx_graph, jax.grad(ref.softmax_cross_entropy)(x, t), rtol=1e-12, atol=1e-15)


def _no_bad_values(*arrays):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in arrays)


def test_sigmoid_is_stable_at_large_inputs_in_both_precisions():
    for dtype in (jnp.float32, jnp.float64):
        x = jnp.array([-1e4, -800.0, -30.0, 0.0, 30.0, 800.0, 1e4], dtype)
        y, r = sigmoid.forward((), x)
        _, dx = sigmoid.backward((), r, jnp.ones_like(x))
        assert y.dtype == dtype and _no_bad_values(y, dx)
        assert y[0] == 0 and y[-1] == 1
        expected = jax.grad(lambda v: jnp.sum(ref.sigmoid(None, v)))(x)
        np.testing.assert_allclose(dx, expected, rtol=1e-5 if dtype == jnp.float32 else 1e-12, atol=1e-7 if dtype == jnp.float32 else 1e-300)


def test_softmax_cross_entropy_is_stable_at_huge_logits_without_fudge():
    for dtype in (jnp.float32, jnp.float64):
        x = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype)
        labels = jnp.array([1, 2])
        loss, r = softmax_cross_entropy.forward(x, labels)
        dx = softmax_cross_entropy.backward(r, jnp.ones((), dtype))
        assert _no_bad_values(loss, dx)
        np.testing.assert_allclose(loss, (2e4 + np.log(2)) / 2, rtol=1e-6)
        np.testing.assert_allclose(dx, jax.grad(ref.softmax_cross_entropy)(x, labels), rtol=1e-5, atol=1e-7)
    # no log(p + 1e-7): a confident correct prediction has a loss near 0, not near 1e-7 off
    loss, _ = softmax_cross_entropy.forward(jnp.array([[50.0, 0.0]]), jnp.array([0]))
    assert float(loss) < 1e-20
