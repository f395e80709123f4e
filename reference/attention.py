"""Independent reference forwards for attention (the sequel's chapter 8).

Nothing here imports ``pure_backprop``; each function takes ``(params, x)`` like a layer's
forward (``params`` is ignored: attention has none) and returns only the output. Written
straight from the definitions: scores as plain sums of products, ``jax.nn.softmax`` over the
encoder positions with ``jnp.where(mask, scores, -inf)`` for padding, and a Python loop over
the decoder steps for ``time_attention``, so ``jax.vjp`` of them is an oracle for the hand
backward passes, the batched products included.

A row whose positions are all padding has no softmax (every score is ``-inf``); it is
handled explicitly: its scores are replaced by zeros before the softmax (a harmless finite
row) and its weights by zeros after it, so neither the value nor ``jax.vjp`` sees a NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _weights(hs, h, mask):
    """Softmax over S of ``sum_k hs[n, j, k] * h[n, k]``; 0 at padding and in empty rows."""
    scores = jnp.sum(hs * h[:, None, :], axis=2)
    if mask is None:
        return jax.nn.softmax(scores, axis=1)
    has_real = jnp.any(mask, axis=1, keepdims=True)
    masked = jnp.where(mask, scores, -jnp.inf)
    finite = jnp.where(has_real, masked, jnp.zeros_like(scores))
    return jnp.where(has_real, jax.nn.softmax(finite, axis=1), jnp.zeros_like(scores))


def _context(hs, a):
    return jnp.sum(hs * a[:, :, None], axis=1)


def attention_weight(mask=None):
    """``x = (hs (N, S, H), h (N, H))`` -> weights (N, S)."""
    def forward(params, x):
        hs, h = x
        return _weights(hs, h, mask)

    return forward


def weight_sum(params, x):
    """``x = (hs (N, S, H), a (N, S))`` -> context (N, H)."""
    hs, a = x
    return _context(hs, a)


def attention(mask=None):
    """``x = (hs (N, S, H), h (N, H))`` -> context (N, H)."""
    def forward(params, x):
        hs, h = x
        return _context(hs, _weights(hs, h, mask))

    return forward


def time_attention(mask=None):
    """``x = (hs_enc (N, S, H), hs_dec (N, T, H))`` -> contexts (N, T, H), one step at a time."""
    def forward(params, x):
        hs_enc, hs_dec = x
        steps = [_context(hs_enc, _weights(hs_enc, hs_dec[:, t, :], mask)) for t in range(hs_dec.shape[1])]
        return jnp.stack(steps, axis=1)

    return forward


def time_attention_weights(hs_enc, hs_dec, mask=None):
    """The weights (N, T, S), one decoder step at a time."""
    return jnp.stack([_weights(hs_enc, hs_dec[:, t, :], mask) for t in range(hs_dec.shape[1])], axis=1)
