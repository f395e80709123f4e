r"""Character language models (the sequel's ``Rnnlm`` and ``BetterRnnlm``): an embedding, a
recurrent layer run over windows (truncated backprop through time), dropout, and a
time-distributed affine layer to scores over the vocabulary; trained on the next character with
``time_softmax_cross_entropy``. A ``StatefulLayer``: its state is the recurrent state carried from
one window to the next.

Forward, for ids ``x`` of shape ``(N, T)``::

    e  = dropout(W_embed[x])                 # (N, T, E)
    hs, state' = cell(e, state)              # (N, T, H), the state flows on to the next window
    s  = dropout(hs) @ W_out + b_out         # (N, T, V)

Backward: the layers' own backward passes in reverse, ``time_affine``, ``dropout``, the cell's
reverse scan through the window (no gradient into the previous window: ``truncated_bptt``),
``dropout``, and the embedding's scatter-add.

Dropout is drawn per position (a mask for every sequence, step and unit, the book's
``TimeDropout``) and applied to the non-recurrent connections only, the embedding's output and the
cell's output, as in Zaremba et al. (2014) and ``BetterRnnlm``: the recurrent path ``h @ Wh``
itself is not dropped, so one mask per sequence (Gal and Ghahramani's variational dropout, which
is meant for the recurrent path) would buy nothing here but correlated noise.

Weight tying (``tie=True``, Press and Wolf 2017, ``BetterRnnlm``): the output layer uses the
embedding's table, ``W_out = W_embed.T`` (so ``E == H``), and only ``b_out`` of its own. ``W_embed``
then reaches the loss along two paths, and its gradient is the sum of the two::

    dW_embed = scatter_add(x, de)  +  dW_out.T       # the lookup's gradient + the output layer's

(``language_model``'s backward adds them; the registry's tied case checks the sum against
``jax.vjp`` and finite differences.)

The embedding starts as a standard normal (``EMBED_INIT``, PyTorch's default for ``nn.Embedding``),
not the book's std 0.01: chosen on the validation split of the default text, where the character
LSTM (embedding 64, LSTM 256, windows of 64, batch 32, Adam 3e-3, clipping 1.0, seed 0, evaluated
every 200 steps) reached a best of 1.740 bits per character (at step 1,200) against 1.784 (at step
1,600) from the book's start; ``benchmarks/char_lm.py`` gives the figures of the settings chosen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .core import StatefulLayer, check_train
from .layers.bptt import truncated_bptt
from .layers.dropout import dropout
from .layers.embedding import embedding
from .layers.gru import gru
from .layers.lstm import lstm
from .layers.rnn import rnn
from .layers.time_affine import time_affine

CELLS = {"rnn": rnn, "lstm": lstm, "gru": gru}
EMBED_INIT = jax.nn.initializers.normal(1.0)


def language_model(vocab_size: int, embed: int = 64, hidden: int = 256, cell: str = "lstm", drop_rate: float = 0.0,
                   tie: bool = False, embed_init=None) -> StatefulLayer:
    """A character (or word) language model; ``cell`` is ``"rnn"``, ``"lstm"`` or ``"gru"``.

    ``init(key, (N, T), dtype)`` returns ``(params, state, (N, T, vocab_size))`` with params
    ``{"embed": {"W"}, "cell": {...}, "out": {"W", "b"}}`` (``"out": {"b"}`` when tied) and the
    state of the cell at zero. ``forward(params, state, ids, key, train)`` needs a key when
    ``train`` and ``drop_rate > 0``. ``embed_init`` defaults to ``EMBED_INIT``.
    """
    if cell not in CELLS:
        raise ValueError(f"language_model: cell must be one of {sorted(CELLS)}, got {cell!r}")
    if tie and embed != hidden:
        raise ValueError(f"language_model: tie=True shares the embedding table with the output layer, so embed "
                         f"must equal hidden, got embed={embed}, hidden={hidden}")
    lookup = embedding(vocab_size, embed, embed_init or EMBED_INIT)
    recurrent = truncated_bptt(CELLS[cell](hidden))
    drop = dropout(drop_rate)
    out = time_affine(vocab_size)

    def init(key, in_shape, dtype=jnp.float32):
        k_embed, k_cell, k_out = jax.random.split(key, 3)
        p_embed, e_shape = lookup.init(k_embed, in_shape, dtype)
        p_cell, state, h_shape = recurrent.init(k_cell, e_shape, dtype)
        p_out, out_shape = out.init(k_out, h_shape, dtype)
        params = {"embed": p_embed, "cell": p_cell, "out": {"b": p_out["b"]} if tie else p_out}
        return params, state, out_shape

    def out_params(params):
        return {"W": params["embed"]["W"].T, "b": params["out"]["b"]} if tie else params["out"]

    def forward(params, state, ids, key, train):
        check_train(train, "language_model")
        k_embed, k_hidden = jax.random.split(key) if key is not None else (None, None)
        e, r_embed = lookup.forward(params["embed"], ids)
        e, _, r_drop_e = drop.forward((), (), e, k_embed, train)
        hs, new_state, r_cell = recurrent.forward(params["cell"], state, e, None, train)
        hs, _, r_drop_h = drop.forward((), (), hs, k_hidden, train)
        scores, r_out = out.forward(out_params(params), hs)
        return scores, new_state, (r_embed, r_drop_e, r_cell, r_drop_h, r_out)

    def backward(params, residuals, dscores):
        r_embed, r_drop_e, r_cell, r_drop_h, r_out = residuals
        g_out, dhs = out.backward(out_params(params), r_out, dscores)
        _, dhs = drop.backward((), r_drop_h, dhs)
        g_cell, de = recurrent.backward(params["cell"], r_cell, dhs)
        _, de = drop.backward((), r_drop_e, de)
        g_embed, dids = lookup.backward(params["embed"], r_embed, de)
        if tie:  # W_embed reaches the loss twice: through the lookup and as W_out.T
            g_embed = {"W": g_embed["W"] + g_out["W"].T}
            g_out = {"b": g_out["b"]}
        return {"embed": g_embed, "cell": g_cell, "out": g_out}, dids

    return StatefulLayer(init, forward, backward)
