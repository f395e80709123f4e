r"""Sequence to sequence (the sequel's chapters 7 and 8): an encoder LSTM reads the question, a
decoder LSTM writes the answer from the encoder's last state. Three decoders, as in the book:
``"plain"`` (``Seq2seq``), ``"peeky"`` (``PeekySeq2seq``: the encoder's last ``h`` is also fed
to every decoder step and to the output layer) and ``"attention"`` (``AttentionSeq2seq``: every
decoder step also reads a weighted sum of all the encoder's states).

``seq2seq(...)`` is a ``Layer`` over ``x = (questions (N, S), decoder_inputs (N, T))``, integer
ids, giving scores ``(N, T, V)`` for the decoder's targets (``tasks.decoder_io``: the answer
shifted by one, teacher forcing). Forward, attention decoder::

    hs_enc, (h, c) = lstm_enc(embed_enc[questions], (0, 0))       # (N, S, H), the last state
    hs_dec, _      = lstm_dec(embed_dec[decoder_inputs], (h, c))   # (N, T, H)
    contexts       = time_attention(hs_enc, hs_dec)               # (N, T, H)
    scores         = [contexts, hs_dec] @ W_out + b_out             # concatenated on the last axis

Backward, the pieces' own backward passes in reverse; where a value fed two consumers its
gradients are summed::

    d[contexts, hs_dec]  = time_affine backward(dscores)            # split on the last axis
    dhs_enc, dhs_dec'    = time_attention backward(dcontexts)
    dhs_dec              = dhs_dec (from the output layer) + dhs_dec' (from the attention)
    d embed_dec, (dh, dc) = lstm_dec backward(dhs_dec, dstate_T = 0)  # the gradient of its start
    d embed_enc, _        = lstm_enc backward(dhs_enc, (dh, dc))      # enters the encoder's end

The plain decoder has no attention (``dhs_enc = 0``: the encoder learns through ``(dh, dc)``
alone). The peeky decoder concatenates ``h`` repeated over ``T`` before the decoder's input and
before the output layer; ``h``'s gradient is the sum, over every step, of those two copies, plus
the decoder's ``dh0``.

The decoder starts from the encoder's whole last state ``(h, c)``; the book passes ``h`` alone
and starts ``c`` at zero. Both embeddings are the book's separate tables, drawn from a standard
normal (``language_model.EMBED_INIT``) rather than the book's std 0.01: chosen on the validation
split of addition (attention decoder, embedding 16, LSTMs of 128, Adam 1e-3, batch 128, clipping
5, questions padded then reversed as in the sequel, seed 0), where it reached 88.3 % exact match
at epoch 10 and 95.3 % at 15, against 55.4 % and 84.8 % from the book's start.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .checks import require_pair
from .core import Layer
from .layers.attention import time_attention_backward, time_attention_forward
from .layers.embedding import embedding
from .layers.lstm import lstm
from .language_model import EMBED_INIT
from .layers.time_affine import time_affine

DECODERS = ("plain", "peeky", "attention")


def seq2seq(vocab_size: int, embed: int = 16, hidden: int = 128, decoder: str = "attention",
            embed_init=None, w_init=None) -> Layer:
    """The encoder-decoder network. ``init(key, (question_shape, decoder_input_shape), dtype)``
    returns params ``{"enc_embed", "encoder", "dec_embed", "decoder", "out"}`` and the scores'
    shape. ``embed_init`` (both tables) defaults to ``EMBED_INIT``, ``w_init`` (the LSTMs) to the
    LSTM's."""
    if decoder not in DECODERS:
        raise ValueError(f"seq2seq: decoder must be one of {list(DECODERS)}, got {decoder!r}")
    embed_init = embed_init or EMBED_INIT
    enc_embed, dec_embed = embedding(vocab_size, embed, embed_init), embedding(vocab_size, embed, embed_init)
    encoder, dec_lstm = lstm(hidden, w_init), lstm(hidden, w_init)
    out = time_affine(vocab_size)
    peeky, attend = decoder == "peeky", decoder == "attention"

    def init(key, in_shape, dtype=jnp.float32):
        q_shape, d_shape = _pair_shapes(in_shape)
        if q_shape[0] != d_shape[0]:
            raise ValueError(f"seq2seq: questions and decoder inputs must have the same batch, got shapes "
                             f"{q_shape} and {d_shape}")
        (n, t) = d_shape
        keys = jax.random.split(key, 5)
        p_ee, e_shape = enc_embed.init(keys[0], q_shape, dtype)
        p_enc, _ = encoder.init(keys[1], e_shape, dtype)
        p_de, _ = dec_embed.init(keys[2], d_shape, dtype)
        p_dec, _ = dec_lstm.init(keys[3], (n, t, embed + hidden if peeky else embed), dtype)
        p_out, out_shape = out.init(keys[4], (n, t, 2 * hidden if peeky or attend else hidden), dtype)
        return {"enc_embed": p_ee, "encoder": p_enc, "dec_embed": p_de, "decoder": p_dec, "out": p_out}, out_shape

    def encode(params, questions):
        e, r_ee = enc_embed.forward(params["enc_embed"], questions)
        zeros = jnp.zeros((e.shape[0], hidden), e.dtype)
        (hs_enc, state), r_enc = encoder.forward(params["encoder"], (e, (zeros, zeros)))
        return hs_enc, state, (r_ee, r_enc)

    def decode(params, hs_enc, state, decoder_inputs):
        """The decoder from ``state`` over ``decoder_inputs``: ``(scores, last state, residuals)``."""
        e, r_de = dec_embed.forward(params["dec_embed"], decoder_inputs)
        h_enc = hs_enc[:, -1]
        if peeky:
            e = jnp.concatenate([_repeat(h_enc, e.shape[1]), e], axis=-1)
        (hs_dec, last), r_dec = dec_lstm.forward(params["decoder"], (e, state))
        r_att = None
        if attend:
            contexts, r_att = time_attention_forward(hs_enc, hs_dec)
            z = jnp.concatenate([contexts, hs_dec], axis=-1)
        elif peeky:
            z = jnp.concatenate([_repeat(h_enc, hs_dec.shape[1]), hs_dec], axis=-1)
        else:
            z = hs_dec
        scores, r_out = out.forward(params["out"], z)
        return scores, last, (r_de, r_dec, r_att, r_out)

    def forward(params, x):
        questions, decoder_inputs = require_pair("seq2seq", x)
        hs_enc, state, r_enc = encode(params, questions)
        scores, _, r_dec = decode(params, hs_enc, state, decoder_inputs)
        return scores, (r_enc, r_dec, state, hs_enc)

    def backward(params, residuals, dscores):
        (r_ee, r_enc), (r_de, r_dec, r_att, r_out), state, hs_enc = residuals
        g_out, dz = out.backward(params["out"], r_out, dscores)
        dhs_enc = jnp.zeros(hs_enc.shape, dz.dtype)  # the plain and peeky decoders read no encoder state but the last
        if attend:
            dcontexts, dhs_dec = dz[..., :hidden], dz[..., hidden:]
            dhs_enc, dhs_dec_att = time_attention_backward(r_att, dcontexts)
            dhs_dec = dhs_dec + dhs_dec_att
        elif peeky:
            dh_peeked = jnp.sum(dz[..., :hidden], axis=1)  # the copies of h_enc = hs_enc[:, -1] at the output
            dhs_dec = dz[..., hidden:]
        else:
            dhs_dec = dz
        zeros = jax.tree_util.tree_map(jnp.zeros_like, state)
        g_dec, (de, dstate) = dec_lstm.backward(params["decoder"], r_dec, (dhs_dec, zeros))
        if peeky:  # and the copies at the decoder's input
            dhs_enc = dhs_enc.at[:, -1].set(dh_peeked + jnp.sum(de[..., :hidden], axis=1))
            de = de[..., hidden:]
        g_de, d_answers = dec_embed.backward(params["dec_embed"], r_de, de)
        g_enc, (de_enc, _) = encoder.backward(params["encoder"], r_enc, (dhs_enc, dstate))
        g_ee, d_questions = enc_embed.backward(params["enc_embed"], r_ee, de_enc)
        grads = {"enc_embed": g_ee, "encoder": g_enc, "dec_embed": g_de, "decoder": g_dec, "out": g_out}
        return grads, (d_questions, d_answers)

    layer = Layer(init, forward, backward)
    return Seq2seqNetwork(layer, encode, decode)


class Seq2seqNetwork(Layer):
    """A ``Layer`` (``init``, ``forward``, ``backward``) with the two halves a caller needs to
    generate: ``encode(params, questions) -> (hs_enc, state, residuals)`` and
    ``decode(params, hs_enc, state, decoder_inputs) -> (scores, state, residuals)``."""

    def __new__(cls, layer, encode, decode):
        self = super().__new__(cls, *layer)
        self._halves = (encode, decode)
        return self

    @property
    def encode(self):
        return self._halves[0]

    @property
    def decode(self):
        return self._halves[1]


def greedy_decode(network: Seq2seqNetwork, params, questions, start_id: int, length: int):
    """The answers ``(N, length)`` the network writes for ``questions``: from the start symbol,
    each step feeds back its own most likely character (argmax), as the book's ``generate``."""
    hs_enc, state, _ = network.encode(params, questions)
    first = jnp.full((questions.shape[0], 1), start_id, jnp.int32)

    def step(carry, _):
        token, state = carry
        scores, state, _ = network.decode(params, hs_enc, state, token)
        token = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        return (token, state), token[:, 0]

    _, tokens = jax.lax.scan(step, (first, state), None, length=length)
    return tokens.T


def attention_map(network: Seq2seqNetwork, params, questions, answers_in):
    """The attention weights ``(N, T, S)`` of an attention network reading ``questions`` and
    writing with the decoder inputs ``answers_in``: which question characters each output
    character attended to (the book's heat maps)."""
    hs_enc, state, _ = network.encode(params, questions)
    _, _, (_, _, r_att, _) = network.decode(params, hs_enc, state, answers_in)
    if r_att is None:
        raise ValueError("attention_map: the network has no attention (decoder 'plain' or 'peeky')")
    return r_att.weights


def _repeat(h, t):
    return jnp.broadcast_to(h[:, None, :], (h.shape[0], t, h.shape[1]))


def _pair_shapes(in_shape):
    if (not isinstance(in_shape, (tuple, list)) or len(in_shape) != 2
            or not all(isinstance(s, (tuple, list)) and len(s) == 2 for s in in_shape)):
        raise ValueError(f"seq2seq: in_shape must be ((N, S), (N, T)), the questions' and the decoder inputs' shapes, "
                         f"got {in_shape!r}")
    return tuple(in_shape[0]), tuple(in_shape[1])
