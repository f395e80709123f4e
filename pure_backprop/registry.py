"""The one registry of every built-in node, layer, loss and network.

Each ``Case`` can build, from a PRNG key and an input shape, a ``Layer`` with its params,
an input ``x`` and the targets bound into it (``None`` but for losses and networks),
with ``x`` drawn away from kinks (ReLU's 0) and poles (log's and 1/x's 0).
The test suite is parametrized over ``CASES`` (hand backward vs ``jax.vjp`` of the
independent reference forward, vs finite differences, jit, vmap) and ``pure-backprop
check`` walks it, so adding a case here is all it takes to have a new layer checked.
Losses enter as ``with_targets(loss, targets)`` so they are layers like the rest.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import graphs, nodes
from .core import Layer, StatefulLayer, freeze, serial, with_targets
from .gradcheck import ONE_OFF
from .layers import affine, batch_norm, dropout, mse, relu, sigmoid, softmax_cross_entropy, tanh, with_weight_decay
from .layers import avg_pool2d, conv2d, flatten, max_pool2d
from .layers.windows import windows
from .layers.attention import attention, attention_weight, time_attention, weight_sum
from .layers.embedding import embedding
from .layers.time_affine import time_affine
from .layers.time_softmax_cross_entropy import IGNORE_LABEL, time_softmax_cross_entropy
from .layers.bptt import truncated_bptt
from .layers.gelu import gelu, gelu_tanh
from .layers.layer_norm import layer_norm
from .layers.self_attention import causal_mask, causal_self_attention
from .layers.softmax import softmax
from .layers.transformer_block import transformer_block
from .gpt import gpt
from .layers.gru import gru
from .layers.lstm import lstm
from .layers.rnn import rnn
from .language_model import language_model
from .network import deep_conv_net, mlp, simple_conv_net
from .seq2seq import seq2seq


class Case(NamedTuple):
    name: str
    kind: str  # "node", "graph", "layer", "loss" or "network"
    build: Callable[[jax.Array, tuple[int, ...]], tuple[Layer, Any, Any, Any]]  # layer, params, x, targets
    shapes: tuple[tuple[int, ...], ...]


def _drawn(draw):
    """``draw(key, shape)`` as one compiled program per shape, at LLVM -O0: eagerly, each
    ``jax.random`` call compiles its own threefry program at the default level (0.3-0.5 s per
    shape; 0.1 s at -O0, values within 3 ulp of them): 20 of the 112 s of ``pure-backprop check``."""
    return functools.wraps(draw)(jax.jit(draw, static_argnums=1, compiler_options=ONE_OFF))


@_drawn
def normal(key, shape):
    return jax.random.normal(key, shape)


@_drawn
def away_from_zero(key, shape, low=0.1):
    """Entries of magnitude in [low, 1 + low) with random signs: no ReLU kink within a step."""
    k_sign, k_mag = jax.random.split(key)
    return jnp.where(jax.random.bernoulli(k_sign, 0.5, shape), 1.0, -1.0) * (low + jax.random.uniform(k_mag, shape))


@_drawn
def positive(key, shape):
    return jax.random.uniform(key, shape, minval=0.5, maxval=2.0)


def _unary(layer, draw=normal):
    def build(key, shape):
        return layer, (), draw(key, shape), None

    return build


def _pair(layer, shape_b, draw_b=normal):
    def build(key, shape):
        ka, kb = jax.random.split(key)
        return layer, (), (normal(ka, shape), draw_b(kb, shape_b(shape))), None

    return build


@functools.partial(jax.jit, compiler_options=ONE_OFF)
def _jitter(key, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def _with_params(layer, draw=normal):
    def build(key, shape):
        k_init, k_x = jax.random.split(key)
        params = _jitter(k_init, layer.init(k_init, shape)[0])
        return layer, params, draw(k_x, shape), None

    return build


@_drawn
def _scaled_normal(key, shape):
    return 3.0 * jax.random.normal(key, shape)


def _loss(loss, targets):
    def build(key, shape):
        k_x, k_t = jax.random.split(key)
        t = targets(k_t, shape)
        return with_targets(loss, t), (), _scaled_normal(k_x, shape), t

    return build


def _labels(key, shape):
    return jax.random.randint(key, shape[:1], 0, shape[1])


labels = _drawn(_labels)  # _labels inside other programs: compiler options belong to the outermost jit only


@_drawn
def soft_targets(key, shape):
    return jax.nn.softmax(jax.random.normal(key, shape), axis=1)


def _network(hidden, activation, classes=4, draw=normal):
    def build(key, shape):
        k_init, k_x, k_t = jax.random.split(key, 3)
        net = mlp(hidden, classes, activation)
        params, _ = net.init(k_init, shape)
        params = _jitter(k_init, params)  # nonzero biases: no unit sits exactly on ReLU's kink
        t = labels(k_t, (shape[0], classes))
        return serial(net, with_targets(softmax_cross_entropy, t)), (params, ()), draw(k_x, shape), t

    return build


DROP_RATE, DROPOUT_KEY, WEIGHT_DECAY = 0.3, jax.random.PRNGKey(42), 0.1


def batch_norm_state(features):
    """Running averages away from the initial (0, 1), so eval mode is tested off its start."""
    return {"mean": jnp.linspace(-0.5, 0.5, features), "var": jnp.linspace(0.5, 2.0, features)}


@functools.lru_cache(maxsize=None)
def _frozen_batch_norm(train, features):
    """One frozen layer per mode and width, so that the checker's compiled functions (cached per
    layer object) serve every seed."""
    return freeze(batch_norm(), batch_norm_state(features), None, train)


def _batch_norm(train):
    def build(key, shape):
        k_init, k_x = jax.random.split(key)
        layer = _frozen_batch_norm(train, shape[1])
        params, _ = layer.init(k_init, shape)
        return layer, _jitter(k_init, params), normal(k_x, shape), None

    return build


_DROPOUT = {train: freeze(dropout(DROP_RATE), (), DROPOUT_KEY if train else None, train) for train in (True, False)}


def _weight_decay(key, shape):
    """``affine(3) -> mse`` plus ``0.5 * lambda * sum(W**2)``: the penalty and its gradient ``lambda * W``."""
    k_init, k_x, k_t = jax.random.split(key, 3)
    net = affine(3)
    params = _jitter(k_init, net.init(k_init, shape)[0])
    t = normal(k_t, (shape[0], 3))
    return with_weight_decay(serial(net, with_targets(mse, t)), WEIGHT_DECAY), (params, ()), normal(k_x, shape), t


def _mlp_extend(key, shape, classes=4):
    """Three hidden ReLU layers, each with batch norm and dropout, the loss and weight decay."""
    k_init, k_x, k_t = jax.random.split(key, 3)
    net = mlp((6, 5, 4), classes, "relu", batchnorm=True, drop_rate=DROP_RATE)
    params, state, _ = net.init(k_init, shape)
    t = labels(k_t, (shape[0], classes))
    layer = serial(freeze(net, state, DROPOUT_KEY, True), with_targets(softmax_cross_entropy, t))
    return with_weight_decay(layer, WEIGHT_DECAY), (_jitter(k_init, params), ()), normal(k_x, shape), t


SIMPLE_CONV_NET = dict(out_dim=4, filters=3, kernel_size=3, hidden=6)
# one convolution per plan of conv2d's "auto": 1->4 (K = 9) im2col, 4->4 (K = 36) the convolution
# form, 4->3 with pad 2 (over-padded, like the book's pad-2 layer) offsets. Kept this small because
# full-mode finite differences compile one program per parameter leaf (about 1.5 s each here).
DEEP_CONV_NET = dict(out_dim=4, blocks=((4, 4), (3,)), paddings=(1, 1, 2), hidden=5, drop_rate=DROP_RATE)


def _simple_kinds(config):
    """The layers of ``simple_conv_net``, in order, as ``(kind, padding)`` (network.py's docstring)."""
    return (("conv", 0), ("relu", None), ("pool", None), ("flatten", None), ("affine", None), ("relu", None),
            ("affine", None))


def _deep_kinds(config):
    """The layers of ``deep_conv_net``, in order, as ``(kind, padding)`` (network.py's docstring)."""
    kinds, pads = [], iter(config["paddings"])
    for block in config["blocks"]:
        kinds += [k for _ in block for k in (("conv", next(pads)), ("relu", None))] + [("pool", None)]
    return tuple(kinds) + (("flatten", None), ("affine", None), ("relu", None), ("dropout", None), ("affine", None),
                           ("dropout", None))


def _kink_gap(kinds, params, x):
    """How close the forward of a conv network comes to a kink: the smallest ``|input|`` of a
    ReLU, and the smallest gap between the maximum of a 2x2 max pooling window and its
    runner-up, over windows whose maximum is positive (a window of ReLU zeros ties too, but
    flatly: no small step lifts an entry off 0). Replays the layers from ``kinds``; it stops at
    the first dropout, after which these networks are smooth."""
    if len(kinds) != len(params):
        raise ValueError(f"_kink_gap: {len(kinds)} layer kinds for {len(params)} layers")
    gap, h = jnp.inf, x
    for (kind, pad), p in zip(kinds, params):
        if kind == "conv":
            h = conv2d(p["W"].shape[0], p["W"].shape[2:], padding=pad).forward(p, h)[0]
        elif kind == "affine":
            h = h @ p["W"] + p["b"][None, :]
        elif kind == "relu":
            gap, h = jnp.minimum(gap, jnp.min(jnp.abs(h))), jnp.maximum(h, 0.0)
        elif kind == "pool":
            top2 = -jnp.sort(-jnp.stack(windows(h, (2, 2), (2, 2), (0, 0), -jnp.inf)), axis=0)[:2]
            gap = jnp.minimum(gap, jnp.min(jnp.where(top2[0] > 0, top2[0] - top2[1], jnp.inf)))
            h = top2[0]
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        else:
            break
    return gap


def _he_jittered(z, structure):
    """Params shaped like ``structure`` (``ShapeDtypeStruct`` leaves) from the standard normal
    entries ``z``: He weights (``std sqrt(2 / fan_in)``, ``fan_in`` the product of all but the
    first axis of an OIHW kernel, the first axis of an affine matrix) and biases of std 0.1, the
    distribution of ``_jitter(net.init(...))`` up to the jitter's 0.1 on the weights. Unused
    entries of ``z`` are returned too."""
    leaves, treedef = jax.tree_util.tree_flatten(structure)
    out, start = [], 0
    for leaf in leaves:
        size = math.prod(leaf.shape)
        fan_in = math.prod(leaf.shape[1:]) if len(leaf.shape) == 4 else leaf.shape[0]
        std = math.sqrt(2.0 / fan_in) if len(leaf.shape) > 1 else 0.1
        out.append(std * z[start:start + size].reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return treedef.unflatten(out), z[start:]


def _conv_network(make, kinds, config, margin=1e-3, tries=20, classes=4):
    """A small CNN (``make(**config)``) with its loss and integer labels, a ``StatefulLayer``
    frozen in train mode with ``DROPOUT_KEY``; params drawn by ``_he_jittered`` (nonzero
    biases, like ``_network``'s jitter) and params and input redrawn (``fold_in(key, attempt)``)
    until no ReLU input lies within ``margin`` of 0 and no pooled window's maximum within
    ``margin`` of its runner-up (``_kink_gap``), so no finite-difference step meets a kink."""

    net = make(**config)  # one network object per case: its layers' compiled functions serve every build
    layer = freeze(net, tuple(() for _ in kinds(config)), DROPOUT_KEY, True) if isinstance(net, StatefulLayer) else net

    def build(key, shape):
        structure = jax.eval_shape(lambda k: net.init(k, shape)[0], key)
        n_params = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(structure))

        # One compilation, one normal draw: XLA compiles each random draw apart, about 0.3-1 s
        # each, which a draw per leaf (as net.init does) would multiply.
        @functools.partial(jax.jit, compiler_options=ONE_OFF)
        def draw(k):
            k_z, k_t = jax.random.split(k)
            params, rest = _he_jittered(jax.random.normal(k_z, (n_params + math.prod(shape),)), structure)
            x = rest.reshape(shape)
            return params, x, _labels(k_t, (shape[0], classes)), _kink_gap(kinds(config), params, x)

        for attempt in range(tries):
            params, x, t, gap = draw(jax.random.fold_in(key, attempt))
            if float(gap) >= margin:
                break
        else:
            raise RuntimeError(f"_conv_network: no draw clear of kinks by {margin} in {tries} tries, shape {shape}")
        return serial(layer, with_targets(softmax_cross_entropy, t)), (params, ()), x, t

    return build


@_drawn
def distinct(key, shape):
    """A random permutation of ``n`` evenly spaced values in (-1, 1]: no two entries tie, and no
    finite-difference step (about ``6e-6 |x|``) closes the gap ``2 / n`` between two of them, so
    max pooling has no kink at the point or within a step."""
    n = math.prod(shape)
    return (2.0 * (jax.random.permutation(key, n) + 1) / n - 1.0).reshape(shape)


# The sequence layers of the sequel. The embedding's ids are integers, which the checkers cannot
# differentiate: its cases bind the ids (as a loss binds its labels, returned as the targets for the
# reference) and take the table W as x. EMBEDDING_IDS repeats ids 0 and 3 four times each (their dW
# rows add four rows of dy) and never uses id 4 of V = 5 (its dW row must be exactly 0).
EMBEDDING_IDS = ((0, 3, 0, 1), (3, 3, 2, 0), (1, 0, 3, 2))


@functools.lru_cache(maxsize=None)
def _embedding_lookup(ids, dim):
    """``W -> embedding.forward({"W": W}, ids)`` for fixed ``ids``: params ``()``, ``dx = dW``,
    with the embedding's own forward and backward; one layer object per ids and width."""
    bound = np.asarray(ids, np.int32)
    table = embedding(int(bound.max()) + 1, dim)

    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype
        return (), bound.shape + (in_shape[1],)

    def forward(params, W):
        del params
        y, residuals = table.forward({"W": W}, bound)
        return y, (W, residuals)

    def backward(params, residuals, dy):
        del params
        W, ids_residual = residuals
        grads, _ = table.backward({"W": W}, ids_residual, dy)
        return (), grads["W"]

    return Layer(init, forward, backward)


def _embedding(ids):
    def build(key, shape):
        return _embedding_lookup(ids, shape[1]), (), normal(key, shape), np.asarray(ids, np.int32)

    return build


def _padded_labels(key, shape):
    """Labels ``(N, T)`` for scores ``(N, T, V)``; row ``n`` ends in ``min(n, T - 1)`` positions of
    ``IGNORE_LABEL`` (padding): with ``N, T >= 2`` some are ignored, and every row counts its first."""
    n, t, v = shape
    pad = jnp.arange(t)[None, :] >= t - jnp.minimum(jnp.arange(n), t - 1)[:, None]
    return jnp.where(pad, IGNORE_LABEL, jax.random.randint(key, (n, t), 0, v))


padded_labels = _drawn(_padded_labels)


def _encoder_decoder(layer):
    """``x = (hs_enc (N, S, H), hs_dec (N, T, H))`` for a case shape ``(N, S, T, H)``."""
    def build(key, shape):
        n, s, t, h = shape
        k_enc, k_dec = jax.random.split(key)
        return layer, (), (normal(k_enc, (n, s, h)), normal(k_dec, (n, t, h))), None

    return build


TIME_ATTENTION_MASK = jnp.array([[True, True, True, True], [True, True, False, False]])  # (N, S) = (2, 4)


# The sequel's recurrent layers: x = (xs (N, T, D), state0) with a nonzero random state0 (h, or
# (h, c) for the LSTM), so the gradient of the initial state is checked too; y = (hs, stateT).
RNN, LSTM, GRU = rnn(3), lstm(3), gru(5)  # one layer object per case: compiled functions are shared


def _recurrent(layer):
    def build(key, shape):
        k_init, k_x, k_state = jax.random.split(key, 3)
        params, (_, state_shape) = layer.init(k_init, shape)
        paired = isinstance(state_shape[0], tuple)
        shapes = state_shape if paired else (state_shape,)
        states = tuple(normal(k, s) for k, s in zip(jax.random.split(k_state, len(shapes)), shapes))
        return layer, _jitter(k_init, params), (normal(k_x, shape), states if paired else states[0]), None

    return build


def truncated_bptt_state(batch, hidden):
    """An LSTM state ``(h, c)`` away from the zeros a window sequence starts from."""
    n = batch * hidden
    return jnp.linspace(-0.8, 0.9, n).reshape(batch, hidden), jnp.linspace(1.5, -1.2, n).reshape(batch, hidden)


@functools.lru_cache(maxsize=None)
def _frozen_truncated_bptt(batch, hidden):
    return freeze(truncated_bptt(lstm(hidden)), truncated_bptt_state(batch, hidden), None, True)


def _truncated_bptt_lstm(key, shape, hidden=3):
    """``truncated_bptt(lstm(3))`` running one window from a fixed nonzero state: ``x = xs``, ``y = hs``."""
    k_init, k_x = jax.random.split(key)
    layer = _frozen_truncated_bptt(shape[0], hidden)
    return layer, _jitter(k_init, layer.init(k_init, shape)[0]), normal(k_x, shape), None


SEQUENCE_VOCAB = 5  # the sequence networks' cases: 5 symbols, embeddings of 3, hidden states of 3 or 4


def _tables_as_x(frozen, tables, ids):
    """A network over integer ``ids`` as a ``Layer`` whose ``x`` is its embedding tables (the
    dict ``tables``: the key of each table's params in the network) and whose params are the
    rest: the ids are bound, as ``with_targets`` binds labels, since the checkers differentiate
    every leaf of ``x``. The backward is the network's own; the tables' gradients come back as
    ``dx`` (a tied table's is the sum of its two paths, the network's backward adds them)."""

    def full(rest, x):
        return {**rest, **{name: {"W": x[name]} for name in tables}}

    def init(key, in_shape, dtype=jnp.float32):
        raise NotImplementedError("a registry case: its params come with its build")

    def forward(rest, x):
        y, residuals = frozen.forward(full(rest, x), ids)
        return y, (residuals, x)

    def backward(rest, residuals, dy):
        residuals, x = residuals
        grads, _ = frozen.backward(full(rest, x), residuals, dy)
        return {k: v for k, v in grads.items() if k not in tables}, {name: grads[name]["W"] for name in tables}

    return Layer(init, forward, backward)


@functools.lru_cache(maxsize=None)
def _language_model_net(cell, tie, drop_rate):
    return language_model(SEQUENCE_VOCAB, 3, 3, cell, drop_rate, tie)


def _language_model(cell, tie=False, drop_rate=0.0):
    """A language model over ids ``shape = (N, T)`` from a nonzero state, frozen in train mode
    with ``DROPOUT_KEY``, with its loss; ``x`` is the embedding table. Its targets, for the
    reference, are ``(ids, next ids, state)``."""

    def build(key, shape):
        net = _language_model_net(cell, tie, drop_rate)
        k_init, k_ids, k_t, k_state = jax.random.split(key, 4)
        params, state, _ = net.init(k_init, shape)
        params = _jitter(k_init, params)
        state = jax.tree_util.tree_map(lambda s: 0.5 * normal(k_state, s.shape), state)
        if cell == "lstm":
            state = (state[0], -state[1])  # h and c apart
        ids = jax.random.randint(k_ids, shape, 0, SEQUENCE_VOCAB)
        t = jax.random.randint(k_t, shape, 0, SEQUENCE_VOCAB)
        layer = serial(_tables_as_x(freeze(net, state, DROPOUT_KEY, True), ("embed",), ids),
                       with_targets(time_softmax_cross_entropy, t))
        rest = {k: v for k, v in params.items() if k != "embed"}
        return layer, (rest, ()), {"embed": params["embed"]["W"]}, (ids, t, state)

    return build


@functools.lru_cache(maxsize=None)
def _seq2seq_net(decoder):
    return seq2seq(SEQUENCE_VOCAB, 3, 4, decoder)


def _seq2seq(decoder):
    """A seq2seq network with its loss at ``shape = (N, S, T)``: questions ``(N, S)``, decoder
    inputs and targets ``(N, T)``; ``x`` is the two embedding tables. Its targets, for the
    reference, are ``(questions, decoder inputs, targets)``."""

    def build(key, shape):
        net = _seq2seq_net(decoder)
        n, s, t = shape
        k_init, k_q, k_d, k_t = jax.random.split(key, 4)
        params = _jitter(k_init, net.init(k_init, ((n, s), (n, t)))[0])
        questions = jax.random.randint(k_q, (n, s), 0, SEQUENCE_VOCAB)
        inputs = jax.random.randint(k_d, (n, t), 0, SEQUENCE_VOCAB)
        targets = jax.random.randint(k_t, (n, t), 0, SEQUENCE_VOCAB)
        tables = ("enc_embed", "dec_embed")
        layer = serial(_tables_as_x(_Seq2seqOnIds(net, questions), tables, inputs),
                       with_targets(time_softmax_cross_entropy, targets))
        rest = {k: v for k, v in params.items() if k not in tables}
        return layer, (rest, ()), {name: params[name]["W"] for name in tables}, (questions, inputs, targets)

    return build


GPT_VOCAB, GPT_CONTEXT = 5, 4  # the GPT case: 5 symbols, context 4, one block of width 4, 2 heads


@functools.lru_cache(maxsize=None)
def _gpt_net(attention_backward):
    return gpt(GPT_VOCAB, GPT_CONTEXT, layers=1, heads=2, width=4, attention_backward=attention_backward)


def _gpt(attention_backward="plain"):
    """A one-block GPT with its loss over ids ``shape = (N, T)``; ``x`` is the token table (tied:
    its gradient sums the lookup's and the output layer's). Its targets, for the reference, are
    ``(ids, next ids)``."""

    def build(key, shape):
        net = _gpt_net(attention_backward)
        k_init, k_ids, k_t = jax.random.split(key, 3)
        params = _jitter(k_init, net.init(k_init, shape)[0])
        ids = jax.random.randint(k_ids, shape, 0, GPT_VOCAB)
        t = jax.random.randint(k_t, shape, 0, GPT_VOCAB)
        layer = serial(_tables_as_x(net, ("te",), ids), with_targets(time_softmax_cross_entropy, t))
        rest = {k: v for k, v in params.items() if k != "te"}
        return layer, (rest, ()), {"te": params["te"]["W"]}, (ids, t)

    return build


class _Seq2seqOnIds(NamedTuple):
    """A seq2seq network with its questions bound: a network over the decoder inputs alone."""

    net: Any
    questions: Any

    def forward(self, params, decoder_inputs):
        return self.net.forward(params, (self.questions, decoder_inputs))

    def backward(self, params, residuals, dy):
        return self.net.backward(params, residuals, dy)


CASES: tuple[Case, ...] = (
    # computational-graph nodes
    Case("add", "node", _pair(nodes.add, lambda s: s), ((3,), (4, 5))),
    Case("multiply", "node", _pair(nodes.multiply, lambda s: s), ((3,), (4, 5))),
    Case("multiply_broadcast", "node", _pair(nodes.multiply, lambda s: s[:-1] + (1,)), ((4, 5), (2, 3))),
    Case("matmul", "node", _pair(nodes.matmul, lambda s: (s[1], 3)), ((1, 3), (4, 5))),
    Case("bias_add", "node", _pair(nodes.bias_add, lambda s: s[1:]), ((1, 3), (4, 5))),
    Case("negate", "node", _unary(nodes.negate), ((3,), (4, 5))),
    Case("exp", "node", _unary(nodes.exp), ((3,), (4, 5))),
    Case("add_constant", "node", _unary(nodes.add_constant(1.0)), ((3,), (4, 5))),
    Case("multiply_constant", "node", _unary(nodes.multiply_constant(-2.5)), ((3,), (4, 5))),
    Case("reciprocal", "node", _unary(nodes.reciprocal, positive), ((3,), (4, 5))),
    Case("log", "node", _unary(nodes.log, positive), ((3,), (4, 5))),
    Case("sum", "node", _unary(nodes.sum()), ((3,), (4, 5))),
    Case("sum_rows", "node", _unary(nodes.sum(axis=1, keepdims=True)), ((4, 5), (2, 3))),
    # chapter 5's composed graphs
    Case("sigmoid_graph", "graph", lambda k, s: (graphs.sigmoid_graph, ((),) * 4, normal(k, s), None), ((3,), (4, 5))),
    Case("softmax_cross_entropy_graph", "graph", _loss(graphs.softmax_cross_entropy_graph, soft_targets), ((2, 3), (5, 10))),
    # layers
    Case("affine", "layer", _with_params(affine(3)), ((2, 4), (5, 2, 3))),
    Case("relu", "layer", _unary(relu, away_from_zero), ((3,), (4, 5))),
    Case("sigmoid", "layer", _unary(sigmoid), ((3,), (4, 5))),
    Case("tanh", "layer", _unary(tanh), ((3,), (4, 5))),
    Case("softmax_cross_entropy", "loss", _loss(softmax_cross_entropy, labels), ((2, 3), (5, 10))),
    Case("softmax_cross_entropy_soft", "loss", _loss(softmax_cross_entropy, soft_targets), ((2, 3), (5, 10))),
    Case("mse", "loss", _loss(mse, lambda k, s: normal(k, s)), ((2, 3), (5, 4))),
    # networks: three hidden layers and the loss
    Case("mlp_relu", "network", _network((6, 5, 4), "relu"), ((3, 7), (8, 5))),
    Case("mlp_sigmoid", "network", _network((6, 5, 4), "sigmoid"), ((3, 7),)),
    Case("mlp_tanh", "network", _network((6, 5, 4), "tanh"), ((3, 7),)),
    Case("two_layer_net", "network", _network((50,), "relu", classes=10), ((8, 64),)),
    # chapter 6: batch norm (train mode: the statistics depend on x; batches of several samples),
    # dropout with its key held fixed, the weight-decay penalty, and MultiLayerNetExtend with all three
    Case("batch_norm_train", "layer", _batch_norm(True), ((4, 3), (6, 5), (3, 2, 3, 4))),
    Case("batch_norm_eval", "layer", _batch_norm(False), ((4, 3), (3, 2, 3, 4))),
    Case("dropout", "layer", _unary(_DROPOUT[True]), ((4, 5), (2, 3, 4, 4))),
    Case("dropout_eval", "layer", _unary(_DROPOUT[False]), ((4, 5),)),
    Case("weight_decay", "loss", _weight_decay, ((5, 4),)),
    Case("mlp_extend", "network", _mlp_extend, ((6, 7),)),
    # chapter 7: convolution and pooling. conv2d: each formulation at stride 1 and 2, padding 0, 1
    # and 2, non-square inputs and filters, batch 1; (7 + 4 - 3) % 2 = 0 but (6 - 3) % 2 = 1 leaves
    # a remainder column. "auto" at (1, 4, 5, 6) runs "offsets" (K = 36, over-padded), at (2, 1, 4, 5)
    # im2col. Max pooling draws distinct values (no ties: a tie is a kink).
    Case("conv2d_im2col", "layer", _with_params(conv2d(4, (3, 2), padding=1, method="im2col")), ((2, 3, 7, 6), (1, 2, 5, 8))),
    Case("conv2d_im2col_stride2", "layer", _with_params(conv2d(3, 3, stride=2, padding=(2, 0), method="im2col")), ((2, 2, 7, 6),)),
    Case("conv2d_conv", "layer", _with_params(conv2d(4, (3, 2), padding=1, method="conv")), ((2, 3, 7, 6),)),
    Case("conv2d_conv_stride2", "layer", _with_params(conv2d(3, 3, stride=2, padding=(2, 0), method="conv")), ((2, 2, 7, 6),)),
    Case("conv2d_auto", "layer", _with_params(conv2d(2, 3, padding=2)), ((1, 4, 5, 6), (2, 1, 4, 5))),
    Case("conv2d_offsets", "layer", _with_params(conv2d(4, (3, 2), padding=(2, 1), method="offsets")), ((2, 3, 7, 6),)),
    Case("conv2d_offsets_stride2", "layer", _with_params(conv2d(3, 3, stride=2, padding=(2, 0), method="offsets")),
         ((2, 2, 7, 6),)),
    Case("conv2d_unpadded", "layer", _with_params(conv2d(3, (2, 3), stride=(2, 1), method="conv")), ((1, 3, 6, 7),)),
    Case("max_pool2d", "layer", _unary(max_pool2d(2, stride=2, padding=1), distinct), ((2, 3, 7, 6),)),
    Case("max_pool2d_overlap", "layer", _unary(max_pool2d((3, 2), stride=(2, 1), padding=1), distinct), ((2, 2, 7, 6),)),
    Case("avg_pool2d", "layer", _unary(avg_pool2d(2, stride=2, padding=1)), ((2, 3, 7, 6),)),
    Case("avg_pool2d_overlap", "layer", _unary(avg_pool2d((3, 2), stride=(2, 1), padding=1)), ((2, 2, 7, 6),)),
    Case("flatten", "layer", _unary(flatten), ((2, 3, 4, 5),)),
    # chapter 7-8 networks with their loss: SimpleConvNet (6x6 -> conv 3x3 -> 4x4 -> pool -> 2x2),
    # the deep CNN in train mode, dropout masks drawn from DROPOUT_KEY (4x4 -> conv -> conv -> pool
    # -> 2x2 -> conv pad 2 -> 4x4 -> pool -> 2x2); inputs clear of kinks (_conv_network)
    Case("simple_conv_net", "network", _conv_network(simple_conv_net, _simple_kinds, SIMPLE_CONV_NET), ((2, 1, 6, 6),)),
    Case("deep_conv_net", "network", _conv_network(deep_conv_net, _deep_kinds, DEEP_CONV_NET), ((2, 1, 4, 4),)),
    # the sequel's recurrent layers (x = (xs, state0), y = (hs, stateT)): batch 1 and length 1, and
    # truncated BPTT's window from a fixed nonzero LSTM state
    Case("rnn", "layer", _recurrent(RNN), ((1, 1, 3), (2, 3, 4))),
    Case("lstm", "layer", _recurrent(LSTM), ((1, 1, 3), (2, 3, 4))),
    Case("gru", "layer", _recurrent(GRU), ((1, 1, 3), (2, 3, 4))),
    Case("lstm_truncated_bptt", "layer", _truncated_bptt_lstm, ((2, 4, 3),)),
    # the sequel's chapter 8: attention. x = (hs (N, S, H), h (N, H)) for one decoder step, shape
    # = hs's; (hs, a (N, S)) for weight_sum, a drawn as softmax rows. time_attention's shape is
    # (N, S, T, H) (_encoder_decoder); its mask pads the last 2 of the 4 positions of sequence 1
    Case("attention_weight", "layer", _pair(attention_weight(), lambda s: (s[0], s[2])), ((2, 4, 3), (1, 1, 3))),
    Case("weight_sum", "layer", _pair(weight_sum, lambda s: s[:2], soft_targets), ((2, 4, 3), (1, 1, 3))),
    Case("attention", "layer", _pair(attention(), lambda s: (s[0], s[2])), ((2, 4, 3), (1, 1, 3))),
    Case("time_attention", "layer", _encoder_decoder(time_attention()), ((2, 4, 3, 3), (1, 1, 1, 3))),
    Case("time_attention_masked", "layer", _encoder_decoder(time_attention(TIME_ATTENTION_MASK)), ((2, 4, 3, 3),)),
    # the sequel's sequence layers: the embedding (its table as x, ids bound: repeated ids, an unused
    # row; one id), the time-distributed affine map, the time loss with padded targets
    Case("embedding", "layer", _embedding(EMBEDDING_IDS), ((5, 3),)),
    Case("embedding_one_id", "layer", _embedding(((2,),)), ((3, 2),)),
    Case("time_affine", "layer", _with_params(time_affine(3)), ((1, 1, 3), (2, 3, 4))),
    Case("time_softmax_cross_entropy", "loss", _loss(time_softmax_cross_entropy, padded_labels),
         ((1, 1, 4), (2, 3, 5))),
    # the sequel's networks with their loss (x: the embedding tables, the ids bound): language models
    # from a nonzero state over one window, the LSTM one tied (E = H) with dropout, the GRU one over
    # one step; the three seq2seq decoders at (N, S, T)
    Case("lstm_lm_tied", "network", _language_model("lstm", tie=True, drop_rate=DROP_RATE), ((2, 4),)),
    Case("gru_lm", "network", _language_model("gru"), ((1, 1),)),
    Case("seq2seq", "network", _seq2seq("plain"), ((2, 3, 2),)),
    Case("peeky_seq2seq", "network", _seq2seq("peeky"), ((2, 3, 2),)),
    Case("attention_seq2seq", "network", _seq2seq("attention"), ((2, 3, 4),)),
    # the transformer: layer norm over the last axis, the two GELUs, softmax along an axis (the
    # causal mask of 4 positions, -inf above the diagonal; along axis 0), causal self-attention
    # with one head and two, length 1, and the lean backward over blocks of 2 (the last one
    # padded), the pre-norm block, and a GPT with its loss at contexts of 1 and 4
    Case("layer_norm", "layer", _with_params(layer_norm()), ((2, 3, 4), (3, 5))),
    Case("gelu", "layer", _unary(gelu), ((3,), (4, 5))),
    Case("gelu_tanh", "layer", _unary(gelu_tanh), ((3,), (4, 5))),
    Case("softmax", "layer", _unary(softmax()), ((2, 3), (4, 5))),
    Case("softmax_causal", "layer", _unary(softmax(-1, causal_mask(4))), ((2, 4, 4),)),
    Case("softmax_axis0", "layer", _unary(softmax(0)), ((3, 4),)),
    Case("causal_self_attention", "layer", _with_params(causal_self_attention(2, block=2)), ((2, 3, 4), (1, 1, 2))),
    Case("causal_self_attention_one_head", "layer", _with_params(causal_self_attention(1)), ((2, 3, 3),)),
    Case("causal_self_attention_lean", "layer", _with_params(causal_self_attention(2, "lean", block=2)), ((2, 5, 4),)),
    Case("transformer_block", "layer", _with_params(transformer_block(2)), ((2, 3, 4),)),
    Case("gpt", "network", _gpt(), ((2, 4), (1, 1))),
    Case("gpt_lean", "network", _gpt("lean"), ((2, 3),)),
)

BY_NAME = {case.name: case for case in CASES}
