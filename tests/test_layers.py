"""Every registry case against both oracles: the registry in ``pure_backprop.registry``
drives each test here, so a new layer is checked by adding it there (and its reference
forward to ``REFERENCES`` below, which a test insists on).

* forward == the independent reference forward (``reference/``);
* hand backward == ``jax.vjp`` of the reference forward, relative error <= 1e-10;
* hand backward == central differences of the layer's forward (gradcheck, full mode), <= 1e-6;
* jit equals eager; ``vmap`` over an extra leading axis works.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
import reference.conv as ref7
import reference.regularization as ref6
import reference.sequence_networks as ref_networks
import reference.recurrent as ref_recurrent
import reference.attention as ref_attention
import reference.sequence as ref_seq
import reference.transformer as ref_transformer
from pure_backprop import gradcheck
from pure_backprop.registry import CASES, DEEP_CONV_NET, DROP_RATE, DROPOUT_KEY, WEIGHT_DECAY, batch_norm_state, normal
from pure_backprop.registry import truncated_bptt_state
from pure_backprop.registry import TIME_ATTENTION_MASK
from pure_backprop.layers.self_attention import causal_mask


def _mlp_reference(activation):
    def forward(params, x, targets):
        dense = [p for p in params[0] if p]
        return ref.softmax_cross_entropy(ref.mlp(dense, x, activation), targets)

    return forward


def _plain(f):
    return lambda params, x, targets: f(params, x)


def _loss(f):
    return lambda params, x, targets: f(x, targets)


def _softmax_ce_graph(params, x, targets):
    return ref.softmax_cross_entropy(x, targets)


def _batch_norm_eval(params, x, targets):
    return ref6.batch_norm_eval(batch_norm_state(x.shape[1]))(params, x)


def _weight_decay(params, x, targets):
    return ref.mse(ref.affine(params[0], x), targets) + ref6.weight_decay_penalty(params, WEIGHT_DECAY)


def _mlp_extend(params, x, targets):
    return ref6.mlp_extend(params[0], x, targets, ref.relu, True, DROP_RATE, DROPOUT_KEY, WEIGHT_DECAY)


def _deep_conv_net(params, x, targets):
    forward = ref7.deep_conv_net(DEEP_CONV_NET["blocks"], DEEP_CONV_NET["paddings"], DEEP_CONV_NET["drop_rate"],
                                 DROPOUT_KEY)
    return forward(params[0], x, targets)


def _language_model(cell, tie=False, drop_rate=0.0):
    forward = ref_networks.language_model(cell, tie, drop_rate, DROPOUT_KEY)

    def reference(params, tables, bound):
        ids, targets, state = bound
        return forward({**params[0], **{k: {"W": v} for k, v in tables.items()}}, ids, targets, state)

    return reference


def _gpt(params, tables, bound):
    ids, targets = bound
    return ref_transformer.gpt_loss(2)({**params[0], "te": {"W": tables["te"]}}, ids, targets)


def _seq2seq(decoder):
    forward = ref_networks.seq2seq(decoder)

    def reference(params, tables, bound):
        questions, inputs, targets = bound
        return forward({**params[0], **{k: {"W": v} for k, v in tables.items()}}, questions, inputs, targets)

    return reference


REFERENCES = {
    "add": _plain(ref.add), "multiply": _plain(ref.multiply), "multiply_broadcast": _plain(ref.multiply),
    "matmul": _plain(ref.matmul), "bias_add": _plain(ref.bias_add), "negate": _plain(ref.negate),
    "exp": _plain(ref.exp), "add_constant": _plain(ref.add_constant(1.0)),
    "multiply_constant": _plain(ref.multiply_constant(-2.5)), "reciprocal": _plain(ref.reciprocal),
    "log": _plain(ref.log), "sum": _plain(ref.sum()), "sum_rows": _plain(ref.sum(axis=1, keepdims=True)),
    "sigmoid_graph": _plain(ref.sigmoid), "softmax_cross_entropy_graph": _softmax_ce_graph,
    "affine": _plain(ref.affine), "relu": _plain(ref.relu), "sigmoid": _plain(ref.sigmoid),
    "tanh": _plain(ref.tanh), "softmax_cross_entropy": _loss(ref.softmax_cross_entropy),
    "softmax_cross_entropy_soft": _loss(ref.softmax_cross_entropy), "mse": _loss(ref.mse),
    "mlp_relu": _mlp_reference(ref.relu), "mlp_sigmoid": _mlp_reference(ref.sigmoid),
    "mlp_tanh": _mlp_reference(ref.tanh), "two_layer_net": _mlp_reference(ref.relu),
    "batch_norm_train": _plain(ref6.batch_norm_train), "batch_norm_eval": _batch_norm_eval,
    "dropout": _plain(ref6.dropout(DROP_RATE, DROPOUT_KEY)), "dropout_eval": _plain(lambda params, x: x),
    "weight_decay": _weight_decay, "mlp_extend": _mlp_extend,
    # chapter 7: convolution and pooling
    "conv2d_im2col": _plain(ref7.conv2d(1, 1)), "conv2d_im2col_stride2": _plain(ref7.conv2d(2, (2, 0))),
    "conv2d_conv": _plain(ref7.conv2d(1, 1)), "conv2d_conv_stride2": _plain(ref7.conv2d(2, (2, 0))),
    "conv2d_auto": _plain(ref7.conv2d(1, 2)), "conv2d_offsets": _plain(ref7.conv2d(1, (2, 1))),
    "conv2d_offsets_stride2": _plain(ref7.conv2d(2, (2, 0))), "conv2d_unpadded": _plain(ref7.conv2d((2, 1), 0)),
    "max_pool2d": _plain(ref7.max_pool2d(2, 2, 1)), "max_pool2d_overlap": _plain(ref7.max_pool2d((3, 2), (2, 1), 1)),
    "avg_pool2d": _plain(ref7.avg_pool2d(2, 2, 1)), "avg_pool2d_overlap": _plain(ref7.avg_pool2d((3, 2), (2, 1), 1)),
    "flatten": _plain(ref7.flatten),
    # chapters 7-8: the two conv networks with their loss
    "simple_conv_net": lambda params, x, targets: ref7.simple_conv_net(params[0], x, targets),
    "deep_conv_net": _deep_conv_net,
    # the sequel's networks: x holds the embedding tables, the targets the bound ids
    "lstm_lm_tied": _language_model("lstm", True, DROP_RATE),
    "gru_lm": _language_model("gru"), "seq2seq": _seq2seq("plain"), "peeky_seq2seq": _seq2seq("peeky"),
    "attention_seq2seq": _seq2seq("attention"),
    # the sequel's recurrent layers, y = (hs, stateT); truncated BPTT's window from its fixed state
    "rnn": _plain(ref_recurrent.rnn), "lstm": _plain(ref_recurrent.lstm), "gru": _plain(ref_recurrent.gru),
    "lstm_truncated_bptt": _plain(lambda params, xs: ref_recurrent.lstm(params, (xs, truncated_bptt_state(xs.shape[0], 3)))[0]),
    # the sequel's chapter 8: attention
    "attention_weight": _plain(ref_attention.attention_weight()), "weight_sum": _plain(ref_attention.weight_sum),
    "attention": _plain(ref_attention.attention()), "time_attention": _plain(ref_attention.time_attention()),
    "time_attention_masked": _plain(ref_attention.time_attention(TIME_ATTENTION_MASK)),
    # the sequel's sequence layers (the embedding's x is its table, its ids the bound targets)
    "embedding": lambda params, x, ids: ref_seq.embedding({"W": x}, ids),
    "embedding_one_id": lambda params, x, ids: ref_seq.embedding({"W": x}, ids),
    "time_affine": _plain(ref_seq.time_affine),
    "time_softmax_cross_entropy": _loss(ref_seq.time_softmax_cross_entropy),
    # the transformer
    "layer_norm": _plain(ref_transformer.layer_norm), "gelu": _plain(ref_transformer.gelu),
    "gelu_tanh": _plain(ref_transformer.gelu_tanh), "softmax": _plain(ref_transformer.softmax()),
    "softmax_causal": _plain(ref_transformer.softmax(-1, causal_mask(4))),
    "softmax_axis0": _plain(ref_transformer.softmax(0)),
    "causal_self_attention": _plain(ref_transformer.causal_self_attention(2)),
    "causal_self_attention_one_head": _plain(ref_transformer.causal_self_attention(1)),
    "causal_self_attention_lean": _plain(ref_transformer.causal_self_attention(2)),
    "transformer_block": _plain(ref_transformer.transformer_block(2)), "gpt": _gpt, "gpt_lean": _gpt,
}

PARAMS = [pytest.param(case, shape, id=f"{case.name}-{'x'.join(map(str, shape))}") for case in CASES for shape in case.shapes]
_built = {}


def build(case, shape, seed=0):
    """One layer object per (case, shape, seed), so compiled functions are shared between tests."""
    key = (case.name, shape, seed)
    if key not in _built:
        layer, params, x, targets = case.build(jax.random.PRNGKey(seed), shape)
        to64 = lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
        _built[key] = (layer, jax.tree_util.tree_map(to64, params), jax.tree_util.tree_map(to64, x), targets)
    return _built[key]


def rel_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(a), initial=0), np.max(np.abs(b), initial=0))
    return float(np.max(np.abs(a - b), initial=0) / scale) if scale else float(np.max(np.abs(a - b), initial=0))


def test_every_case_has_a_reference():
    assert sorted(REFERENCES) == sorted(c.name for c in CASES)


# The comparisons with the reference run jit-compiled: one program per case instead of a
# compilation per eager operation (minutes over the registry); test_jit_equals_eager below
# holds the eager layer to the compiled one. Tests that can share a program do (compiling is
# most of this file's time), and the tests of one case run one after the other (``conftest``).


@functools.lru_cache(maxsize=None)
def hand_and_reference(case, shape):
    """``(params, x, dy) -> ((y, hand grads), (reference y, jax.vjp of the reference))``: the
    hand forward and backward beside the reference forward and its ``jax.vjp``, compiled once
    for the forward test and the backward test."""
    layer, _, _, targets = build(case, shape)

    @jax.jit
    def run(params, x, dy):
        y, residuals = layer.forward(params, x)
        expected_y, vjp = jax.vjp(lambda p, v: REFERENCES[case.name](p, v, targets), params, x)
        return (y, layer.backward(params, residuals, dy)), (expected_y, vjp(dy))

    return run


@functools.lru_cache(maxsize=None)
def cotangent(case, shape):
    layer, params, x, _ = build(case, shape)
    y = jax.eval_shape(lambda p, v: layer.forward(p, v)[0], params, x)
    leaves, treedef = jax.tree_util.tree_flatten(y)  # a pair (hs, state) for the recurrent layers
    keys = [jax.random.PRNGKey(7)] + [jax.random.PRNGKey(8 + i) for i in range(len(leaves) - 1)]
    # compiled at -O0: an eager draw compiles for up to ~1 s a shape
    dy = [normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    assert all(d.dtype == jnp.float64 for d in dy)
    return treedef.unflatten(dy)


@pytest.mark.parametrize("case,shape", PARAMS)
def test_forward_equals_reference(case, shape):
    _, params, x, _ = build(case, shape)
    (y, _), (expected, _) = hand_and_reference(case, shape)(params, x, cotangent(case, shape))
    assert jax.tree_util.tree_structure(y) == jax.tree_util.tree_structure(expected)
    for a, b in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(expected)):
        assert jnp.shape(a) == jnp.shape(b)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case,shape", PARAMS)
def test_hand_backward_matches_jax_vjp_of_reference(case, shape):
    _, params, x, _ = build(case, shape)
    (_, (grads, dx)), (_, (expected_grads, expected_dx)) = hand_and_reference(case, shape)(params, x, cotangent(case, shape))
    hand = jax.tree_util.tree_leaves((grads, dx))
    oracle = jax.tree_util.tree_leaves((expected_grads, expected_dx))
    assert jax.tree_util.tree_structure((grads, dx)) == jax.tree_util.tree_structure((expected_grads, expected_dx))
    assert hand, "a case with nothing to differentiate checks nothing"
    for a, b in zip(hand, oracle):
        assert a.shape == b.shape
        assert rel_error(a, b) <= 1e-10


@pytest.mark.parametrize("case,shape", PARAMS)
def test_hand_backward_matches_finite_differences(case, shape):
    layer, params, x, _ = build(case, shape)
    report = gradcheck.check(layer, params, x, mode="full", name=case.name)
    assert report.ok, str(report)
    assert report.kinks == 0, str(report)  # inputs are drawn away from kinks
    assert all(leaf.rel_num <= 1e-6 for leaf in report.leaves)


def forward_backward(layer):
    """``(params, x) -> (y, backward for dy = 1)``."""
    def run(params, x):
        y, residuals = layer.forward(params, x)
        return y, layer.backward(params, residuals, jax.tree_util.tree_map(jnp.ones_like, y))

    return run


@functools.lru_cache(maxsize=None)
def compiled_forward_backward(case, shape):
    """``forward_backward`` of the case, compiled once for the jit test and the vmap test."""
    return jax.jit(forward_backward(build(case, shape)[0]))


@pytest.mark.parametrize("case,shape", PARAMS)
def test_jit_equals_eager(case, shape):
    layer, params, x, _ = build(case, shape)
    y, grads = forward_backward(layer)(params, x)
    # the residuals can leave one compiled program and enter another (traced, not compiled)
    _, abstract_residuals = jax.eval_shape(layer.forward, params, x)
    jax.eval_shape(layer.backward, params, abstract_residuals, jax.tree_util.tree_map(jnp.ones_like, y))
    y_jit, grads_jit = compiled_forward_backward(case, shape)(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(y_jit), jax.tree_util.tree_leaves(y), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    eager, jitted = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_jit)
    assert len(eager) == len(jitted)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case,shape", PARAMS)
def test_vmap_over_a_leading_axis(case, shape):
    layer, params, x, _ = build(case, shape)
    xs = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), x)
    batched = jax.jit(jax.vmap(forward_backward(layer), in_axes=(None, 0)))(params, xs)
    single_fn = compiled_forward_backward(case, shape)
    for i in range(2):
        single = single_fn(params, jax.tree_util.tree_map(lambda a: a[i], xs))
        for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single)):
            np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-12)
