"""Property tests (hypothesis) over the registry: for random inputs, every node, graph, layer and
loss has a forward equal to its reference and a hand backward equal to ``jax.vjp`` of the
reference (within 1e-12 and, per leaf, 1e-10 relative, float64, as in ``test_layers``).

What hypothesis draws, per example:

* a shape, among the case's registered shapes of rank <= 2 (see below);
* a seed: params and ``x`` are those of ``case.build(PRNGKey(seed), shape)``, so every
  domain rule of the case holds (ReLU inputs away from the kink, positive inputs for ``log``
  and ``1/x``, distinct values for max pooling);
* a scale in [1/4, 4] applied to ``x`` (it keeps signs, so it keeps those rules too);
* a seed for the cotangent ``dy``.

To stay cheap, the check is compiled once per case and shape: the layer, and the targets or
state it binds (the targets of a loss, batch norm's running averages), are those of the seed-0
build at that shape (``test_layers.build``, shared with that module); only params, ``x`` and
``dy`` change between examples.

A second property checks softmax cross-entropy, closed form and seven-node graph, with target
rows of any non-negative mass (all-zero rows, multi-hot rows, counts) against ``jax.grad``.

Which cases: every case of kind node, graph, layer or loss (networks are compositions of these),
generic over ``CASES``, with one rule: only the registered shapes of rank <= 2 are drawn, and a
case with none is left out. Image layers (rank-4 inputs: convolution, pooling, flatten) cost
seconds of compilation per shape on CPU; their hand backward is checked against ``jax.vjp`` at
their registered shapes by ``test_layers`` and at inputs of +-1e4 by ``test_precision``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from pure_backprop.graphs import softmax_cross_entropy_graph
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.registry import CASES
from test_layers import REFERENCES, build, rel_error

KINDS = ("node", "graph", "layer", "loss")
MAX_RANK = 2


def _shapes(case):
    return [shape for shape in case.shapes if len(shape) <= MAX_RANK]


PROPERTY_CASES = [pytest.param(case, id=case.name) for case in CASES if case.kind in KINDS and _shapes(case)]
_checks = {}


def _to64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def compiled_check(case, shape):
    """``check(params, x, dy) -> ((y, (grads, dx)), (reference y, reference vjp))``, jit-compiled
    once per case and shape, and the shape of ``y``."""
    if (case.name, shape) not in _checks:
        layer, params, x, targets = build(case, shape)
        reference = REFERENCES[case.name]

        @jax.jit
        def check(params, x, dy):
            y, residuals = layer.forward(params, x)
            expected_y, vjp = jax.vjp(lambda p, v: reference(p, v, targets), params, x)
            return (y, layer.backward(params, residuals, dy)), (expected_y, vjp(dy))

        y_shape = jax.eval_shape(lambda p, v: layer.forward(p, v)[0], params, x).shape
        _checks[case.name, shape] = check, y_shape
    return _checks[case.name, shape]


@pytest.mark.parametrize("case", PROPERTY_CASES)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_hand_backward_equals_jax_vjp_of_the_reference_for_random_inputs(case, data):
    if case.name not in REFERENCES:
        pytest.skip(f"{case.name} has no reference (test_layers.test_every_case_has_a_reference says so)")
    shape = data.draw(st.sampled_from(_shapes(case)), label="shape")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    scale = data.draw(st.floats(0.25, 4.0), label="scale of x")
    dy_seed = data.draw(st.integers(0, 2**31 - 1), label="dy seed")

    check, y_shape = compiled_check(case, shape)
    _, params, x, _ = case.build(jax.random.PRNGKey(seed), shape)
    params = _to64(params)
    x = jax.tree_util.tree_map(lambda a: scale * a if jnp.issubdtype(a.dtype, jnp.floating) else a, _to64(x))
    dy = np.random.default_rng(dy_seed).standard_normal(y_shape)
    (y, hand), (expected_y, oracle) = check(params, x, dy)

    assert jnp.shape(y) == jnp.shape(expected_y)
    # as in test_layers: a small loss such as -log(1 - 1e-4) is a log of 1 + eps in both
    # formulas, relative error ~1e-12, so the forward has an absolute floor too
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-12)
    assert jax.tree_util.tree_structure(hand) == jax.tree_util.tree_structure(oracle)
    for path, a, b in zip(_paths(hand), jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(oracle)):
        assert a.shape == b.shape, path
        assert bool(jnp.all(jnp.isfinite(a))), (path, a)
        assert rel_error(a, b) <= 1e-10, (path, rel_error(a, b))


def _paths(tree):
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


# --- softmax cross-entropy with target rows of any mass ----------------------------------------

SOFT_SHAPE = (3, 4)
_soft_checks = {}


def _soft_check(loss):
    """Hand loss and dx against the reference and its jax.grad, for scores and targets as arguments."""
    if loss not in _soft_checks:
        def check(scores, targets):
            value, residuals = loss.forward(scores, targets)
            expected, grad = jax.value_and_grad(ref.softmax_cross_entropy)(scores, targets)
            return (value, loss.backward(residuals, jnp.ones_like(value))), (expected, grad)

        _soft_checks[loss] = jax.jit(check)
    return _soft_checks[loss]


_rows = hnp.arrays(np.float64, SOFT_SHAPE, elements=st.sampled_from([0.0, 0.25, 1.0]) | st.floats(0, 3))


@pytest.mark.parametrize("loss", [softmax_cross_entropy, softmax_cross_entropy_graph], ids=["closed_form", "graph"])
@settings(max_examples=15, deadline=None)
@given(scores=hnp.arrays(np.float64, SOFT_SHAPE, elements=st.floats(-5, 5)), targets=_rows)
@example(scores=np.linspace(-1, 2, 12).reshape(SOFT_SHAPE),  # an all-zero row, a multi-hot row, a probability row
         targets=np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]]))
def test_softmax_cross_entropy_gradient_holds_for_rows_that_do_not_sum_to_one(loss, scores, targets):
    """Regression: ``(p - t) / N`` holds only for rows of mass 1; the general gradient is
    ``(p * sum(t, axis=1) - t) / N`` (all-zero rows get 0, multi-hot rows more than ``p - t``)."""
    (value, dx), (expected, grad) = _soft_check(loss)(jnp.asarray(scores), jnp.asarray(targets))
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
    # dx = (p * s - t) / N is a difference of terms up to (row mass) / N: rounding is relative to that
    scale = max(float(np.max(np.abs(grad))), float(np.max(targets.sum(axis=1))) / SOFT_SHAPE[0])
    assert float(np.max(np.abs(dx - grad))) <= 1e-10 * scale, (dx, grad)
    assert np.all(np.asarray(dx)[np.asarray(targets).sum(axis=1) == 0] == 0)
