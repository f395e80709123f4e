"""Independent reference forwards for the transformer layers: layer norm, the two GELUs, the
masked softmax, causal multi-head self-attention, the pre-norm block and a GPT with its loss.
Nothing here imports ``pure_backprop``; each is written from its definition, with ``jax.nn`` and
``jax.scipy`` where they have the function (``jax.nn.gelu``, ``jax.nn.softmax``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .sequence import time_softmax_cross_entropy


def layer_norm(params, x, eps=1e-5):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    lead = (1,) * (x.ndim - 1)
    return (x - mu) / jnp.sqrt(var + eps) * params["gamma"].reshape(lead + (-1,)) + params["beta"].reshape(lead + (-1,))


def gelu(params, x):
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(params, x):
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def softmax(axis=-1, mask=None):
    return lambda params, x: jax.nn.softmax(x if mask is None else x + jnp.broadcast_to(mask, x.shape), axis=axis)


def causal_self_attention(heads):
    def forward(params, x):
        n, t, d = x.shape
        qkv = jnp.einsum("ntd,de->nte", x, params["qkv"]["W"]) + params["qkv"]["b"][None, None]
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(n, t, heads, d // heads) for i in range(3))
        s = jnp.einsum("nihc,njhc->nhij", q, k) / math.sqrt(d // heads)
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool))[None, None], s, -jnp.inf)
        o = jnp.einsum("nhij,njhc->nihc", jax.nn.softmax(s, axis=-1), v).reshape(n, t, d)
        return jnp.einsum("ntd,de->nte", o, params["out"]["W"]) + params["out"]["b"][None, None]

    return forward


def transformer_block(heads, activation=gelu_tanh):
    attention = causal_self_attention(heads)

    def forward(params, x):
        h = x + attention(params["attn"], layer_norm(params["ln_1"], x))
        m = jnp.einsum("ntd,de->nte", layer_norm(params["ln_2"], h), params["fc"]["W"]) + params["fc"]["b"][None, None]
        return h + jnp.einsum("ntd,de->nte", activation((), m), params["proj"]["W"]) + params["proj"]["b"][None, None]

    return forward


def gpt(heads, activation=gelu_tanh):
    """``(params, ids) -> scores``: embeddings, blocks, final norm, the token table as the output."""
    block = transformer_block(heads, activation)

    def forward(params, ids):
        h = params["te"]["W"][ids] + params["pe"]["W"][None, : ids.shape[1]]
        for p in params["blocks"]:
            h = block(p, h)
        return jnp.einsum("ntd,vd->ntv", layer_norm(params["ln_f"], h), params["te"]["W"])

    return forward


def gpt_loss(heads, activation=gelu_tanh):
    forward = gpt(heads, activation)
    return lambda params, ids, targets: time_softmax_cross_entropy(forward(params, ids), targets)
