"""Reference forwards of the sequence networks with their loss, built from the other reference
forwards (``reference.sequence``, ``reference.recurrent``, ``reference.attention``): a language
model over one window from a given state, and the three seq2seq networks. Nothing here imports
``pure_backprop``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import attention as ref_attention
from . import recurrent as ref_recurrent
from . import sequence as ref_sequence

CELLS = {"rnn": ref_recurrent.rnn, "lstm": ref_recurrent.lstm, "gru": ref_recurrent.gru}


def _dropout(x, rate, key):
    if rate == 0:
        return x
    keep = 1.0 - rate
    return jnp.where(jax.random.bernoulli(key, keep, x.shape), x / keep, 0.0)


def language_model(cell, tie, drop_rate, key):
    """``(params, ids, targets, state) -> loss``: embedding, dropout, the cell from ``state``,
    dropout, the output layer (the table transposed when ``tie``), the mean cross entropy. The
    two dropout masks are drawn from ``jax.random.split(key)``, in that order."""

    def forward(params, ids, targets, state):
        k_embed, k_hidden = jax.random.split(key)
        e = _dropout(ref_sequence.embedding(params["embed"], ids), drop_rate, k_embed)
        hs, _ = CELLS[cell](params["cell"], (e, state))
        hs = _dropout(hs, drop_rate, k_hidden)
        out = {"W": params["embed"]["W"].T, "b": params["out"]["b"]} if tie else params["out"]
        return ref_sequence.time_softmax_cross_entropy(ref_sequence.time_affine(out, hs), targets)

    return forward


def seq2seq(decoder):
    """``(params, questions, decoder_inputs, targets) -> loss`` for ``decoder`` in ``"plain"``,
    ``"peeky"``, ``"attention"``; the decoder starts from the encoder's last ``(h, c)``."""

    def forward(params, questions, decoder_inputs, targets):
        e = ref_sequence.embedding(params["enc_embed"], questions)
        n, hidden = e.shape[0], params["encoder"]["Wh"].shape[0]
        zeros = jnp.zeros((n, hidden), e.dtype)
        hs_enc, state = ref_recurrent.lstm(params["encoder"], (e, (zeros, zeros)))
        d = ref_sequence.embedding(params["dec_embed"], decoder_inputs)
        steps = d.shape[1]
        h_last = jnp.stack([state[0]] * steps, axis=1)
        if decoder == "peeky":
            d = jnp.concatenate([h_last, d], axis=2)
        hs_dec, _ = ref_recurrent.lstm(params["decoder"], (d, state))
        if decoder == "attention":
            z = jnp.concatenate([ref_attention.time_attention()(None, (hs_enc, hs_dec)), hs_dec], axis=2)
        elif decoder == "peeky":
            z = jnp.concatenate([h_last, hs_dec], axis=2)
        else:
            z = hs_dec
        return ref_sequence.time_softmax_cross_entropy(ref_sequence.time_affine(params["out"], z), targets)

    return forward
