"""Bad input raises ValueError naming the layer and the shapes, eagerly and under jit."""

import jax
import jax.numpy as jnp
import pytest

from pure_backprop import nodes, serial
from pure_backprop.layers import affine, mse, relu, softmax_cross_entropy
from pure_backprop.network import mlp


def test_mismatched_shapes_between_layers_name_the_layer_and_both_shapes():
    net = serial(affine(5), relu, affine(3))
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 4))
    x = jnp.ones((2, 6))
    for forward in (net.forward, jax.jit(net.forward)):
        with pytest.raises(ValueError, match=r"serial layer 0: affine: input has 6 features but W expects 4 \(x.shape=\(2, 6\), W.shape=\(4, 5\)\)"):
            forward(params, x)
    bad = (params[0], (), {"W": jnp.ones((7, 3)), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"serial layer 2: affine: input has 5 features but W expects 7"):
        net.forward(bad, jnp.ones((2, 4)))


def test_wrong_rank():
    params, _ = affine(3).init(jax.random.PRNGKey(0), (-1, 4))
    with pytest.raises(ValueError, match=r"affine: x must have at least 2 axes, got shape \(4,\)"):
        affine(3).forward(params, jnp.ones(4))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: scores must have 2 axes, got shape \(3,\)"):
        softmax_cross_entropy.forward(jnp.ones(3), jnp.array([0]))


def test_wrong_label_width_and_shape():
    scores = jnp.zeros((4, 10))
    with pytest.raises(ValueError, match=r"targets shape \(4, 9\) does not match scores shape \(4, 10\)"):
        softmax_cross_entropy.forward(scores, jnp.zeros((4, 9)))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(4,\) for scores of shape \(4, 10\), got labels shape \(3,\)"):
        jax.jit(softmax_cross_entropy.forward)(scores, jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"mse: targets shape \(4, 2\) does not match predictions shape \(4, 3\)"):
        mse.forward(jnp.zeros((4, 3)), jnp.zeros((4, 2)))


def test_out_of_range_labels():
    scores = jnp.zeros((3, 10))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: labels must lie in \[0, 10\) for scores of shape \(3, 10\), got labels from 0 to 10"):
        softmax_cross_entropy.forward(scores, jnp.array([0, 10, 2]))
    with pytest.raises(ValueError, match=r"labels from -1 to 2"):
        softmax_cross_entropy.forward(scores, jnp.array([0, -1, 2]))
    # under jit the values are unknown at trace time: the loss and gradient turn NaN, never silently wrong
    loss, residuals = jax.jit(softmax_cross_entropy.forward)(scores, jnp.array([0, 10, 2]))
    assert jnp.isnan(loss) and jnp.isnan(softmax_cross_entropy.backward(residuals, 1.0)).any()


def test_node_shape_errors():
    with pytest.raises(ValueError, match=r"matmul: X shape \(2, 3\) and W shape \(4, 5\) do not chain"):
        nodes.matmul.forward((), (jnp.ones((2, 3)), jnp.ones((4, 5))))
    with pytest.raises(ValueError, match=r"bias_add: X shape \(2, 3\) and b shape \(4,\) do not match"):
        nodes.bias_add.forward((), (jnp.ones((2, 3)), jnp.ones(4)))
    with pytest.raises(ValueError, match=r"add: a shape \(2, 3\) and b shape \(3,\) are incompatible"):
        nodes.add.forward((), (jnp.ones((2, 3)), jnp.ones(3)))
    with pytest.raises(ValueError, match=r"multiply: a shape \(2, 3\) and b shape \(2, 2\) are incompatible"):
        nodes.multiply.forward((), (jnp.ones((2, 3)), jnp.ones((2, 2))))


def test_bad_configuration():
    with pytest.raises(ValueError, match="affine: out_dim must be a positive int, got 0"):
        affine(0)
    with pytest.raises(ValueError, match="mlp: activation must be one of"):
        mlp((5,), 3, "gelu")
    with pytest.raises(TypeError, match="serial: argument 1 is a int, not a Layer"):
        serial(relu, 3)


def test_losses_refuse_integer_scores_and_predictions():
    for forward in (mse.forward, jax.jit(mse.forward)):
        with pytest.raises(ValueError, match=r"mse: predictions must have a floating-point dtype, got int\d+; convert with predictions.astype"):
            forward(jnp.array([[1], [3]]), jnp.array([[1.4], [2.6]]))
    for forward in (softmax_cross_entropy.forward, jax.jit(softmax_cross_entropy.forward)):
        with pytest.raises(ValueError, match=r"softmax_cross_entropy: scores must have a floating-point dtype, got int\d+"):
            forward(jnp.zeros((2, 3), jnp.int32), jnp.array([0, 1]))
        with pytest.raises(ValueError, match=r"softmax_cross_entropy: scores must have a floating-point dtype, got bool"):
            forward(jnp.zeros((2, 3), bool), jnp.array([0, 1]))


def test_labels_must_be_an_integer_array():
    scores = jnp.zeros((3, 4))
    for forward in (softmax_cross_entropy.forward, jax.jit(softmax_cross_entropy.forward)):
        with pytest.raises(ValueError, match=r"softmax_cross_entropy: targets must be an array, got a Python list; wrap it in jnp.asarray"):
            forward(scores, [0, 1, 2])
        with pytest.raises(ValueError, match=r"softmax_cross_entropy: labels of shape \(3,\) must be integers, got dtype float\d+; cast with labels.astype\(jnp.int32\), or pass target rows of shape \(3, 4\)"):
            forward(scores, jnp.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"must be integers, got dtype bool"):
        softmax_cross_entropy.forward(scores, jnp.array([True, False, True]))
    with pytest.raises(ValueError, match=r"mse: targets must be an array, got a Python tuple"):
        mse.forward(jnp.zeros((2, 1)), ((1.0,), (2.0,)))


def test_negative_soft_targets_are_refused():
    scores = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: targets must be non-negative \(probabilities, one-hot or counts\), got -0.5 at row 1, column 2"):
        softmax_cross_entropy.forward(scores, jnp.array([[0.2, 0.3, 0.5], [0.7, 0.8, -0.5]]))
