r"""A GPT (Radford et al. 2018, 2019): token and position embeddings, pre-norm transformer blocks,
a final layer norm, and scores over the vocabulary from the token table itself (tied weights).
Trained on the next character with ``time_softmax_cross_entropy``, like the recurrent language
models, but with no state carried between windows: every window is read whole, in parallel.

Forward, for ids ``x`` of shape ``(N, T)`` with ``T <= context``::

    e = W_te[x] + W_pe[:T]                          # (N, T, D): what, plus where
    h = block_L(... block_1(e))                     # transformer_block, L of them
    s = ln_f(h) @ W_te^T                            # (N, T, V): scores, the token table as W_out

Backward, from ``ds``::

    z      = ln_f(h)
    dW_te  = ds2^T @ z2                             # the output path: W_te's partner is z (rows N T)
    dz     = ds @ W_te
    dh     = ln_f backward(dz)
    de     = block_1 backward(... block_L backward(dh))
    dW_te += scatter_add(x, de)                     # the lookup path (embedding.py)
    dW_pe[:T] = sum over the N sequences of de      # position t is added to every sequence;
                                                    # rows T.. get exactly 0

``W_te`` reaches the loss along two paths, the lookup and the output layer, so its gradient is
the sum of both (``language_model.py`` derives the same for its tied LSTM).

Initialization, GPT-2's (nanoGPT's): every weight matrix and both tables from a normal of std
0.02, the two projections that write into the residual stream (each block's attention ``out``
and MLP ``proj``) from std ``0.02 / sqrt(2 L)`` so that the stream's variance does not grow with
depth, biases 0, layer norms ``gamma = 1``, ``beta = 0``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .checks import require_rank
from .core import Layer
from .layers.embedding import backward as lookup_backward, forward as lookup_forward, require_ids
from .layers.layer_norm import layer_norm
from .layers.transformer_block import transformer_block

NAME = "gpt"
STD = 0.02


def gpt(vocab: int, context: int, layers: int = 4, heads: int = 4, width: int = 128, activation: str = "gelu_tanh",
        attention_backward: str = "plain", attention_block: int = 64) -> Layer:
    """A character (or token) GPT. ``init(key, (N, T), dtype)`` returns params
    ``{"te": {"W": (vocab, width)}, "pe": {"W": (context, width)}, "blocks": (block params, ...),
    "ln_f": {"gamma", "beta"}}`` and the output shape ``(N, T, vocab)``; ``T <= context``.
    ``forward(params, ids)``, ``backward(params, residuals, dscores) -> (grads, dids)`` with
    ``dids`` a ``float0`` array (ids have no gradient). ``attention_backward`` and
    ``attention_block`` are each block's attention's ``backward`` and ``block``
    (``causal_self_attention``)."""
    for arg, value in (("vocab", vocab), ("context", context), ("layers", layers), ("heads", heads),
                       ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{NAME}: {arg} must be a positive int, got {value!r}")
    if width % heads:
        raise ValueError(f"{NAME}: width = {width} must be a multiple of heads = {heads}")
    normal = jax.nn.initializers.normal(STD)
    block = transformer_block(heads, activation=activation, attention_backward=attention_backward,
                              attention_block=attention_block, w_init=normal,
                              out_init=jax.nn.initializers.normal(STD / math.sqrt(2 * layers)))
    final = layer_norm()

    def init(key, in_shape, dtype=jnp.float32):
        if len(in_shape) != 2 or not 1 <= in_shape[1] <= context:
            raise ValueError(f"{NAME}: in_shape must be (batch, T) with 1 <= T <= context = {context}, "
                             f"got {tuple(in_shape)}")
        k_te, k_pe, *k_blocks = jax.random.split(key, 2 + layers)
        shape = tuple(in_shape) + (width,)
        params = {"te": {"W": normal(k_te, (vocab, width), dtype)}, "pe": {"W": normal(k_pe, (context, width), dtype)},
                  "blocks": tuple(block.init(k, shape, dtype)[0] for k in k_blocks),
                  "ln_f": final.init(key, shape, dtype)[0]}
        return params, tuple(in_shape) + (vocab,)

    def forward(params, ids):
        _check(params, ids, layers)
        table = params["te"]["W"]
        t = ids.shape[1]
        e, r_lookup = lookup_forward(params["te"], ids)
        h = e + params["pe"]["W"][None, :t]
        residuals = []
        for p in params["blocks"]:
            h, r = block.forward(p, h)
            residuals.append(r)
        z, r_final = final.forward(params["ln_f"], h)
        scores = jnp.einsum("ntd,vd->ntv", z, table)
        return scores, (r_lookup, tuple(residuals), r_final, z)

    def backward(params, residuals, dscores):
        _check_keys(params, layers)
        r_lookup, r_blocks, r_final, z = residuals
        table = params["te"]["W"]
        if jnp.shape(dscores) != z.shape[:2] + (table.shape[0],):
            raise ValueError(f"{NAME}: dscores shape {jnp.shape(dscores)} does not match the scores' shape "
                             f"{z.shape[:2] + (table.shape[0],)}")
        d_out = jnp.einsum("ntv,ntd->vd", dscores, z)  # the output path into W_te
        dz = jnp.einsum("ntv,vd->ntd", dscores, table)
        g_final, dh = final.backward(params["ln_f"], r_final, dz)
        g_blocks = [None] * layers
        for i in reversed(range(layers)):
            g_blocks[i], dh = block.backward(params["blocks"][i], r_blocks[i], dh)
        g_lookup, dids = lookup_backward(params["te"], r_lookup, dh)
        t = dh.shape[1]
        d_pe = jnp.zeros_like(params["pe"]["W"]).at[:t].set(jnp.sum(dh, axis=0))
        grads = {"te": {"W": g_lookup["W"] + d_out}, "pe": {"W": d_pe}, "blocks": tuple(g_blocks), "ln_f": g_final}
        return grads, dids

    return Layer(init, forward, backward)


def _check_keys(params, layers):
    if not isinstance(params, dict) or set(params) != {"te", "pe", "blocks", "ln_f"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{NAME}: params must be a dict with keys ['blocks', 'ln_f', 'pe', 'te'], got {got}")
    if not isinstance(params["blocks"], (tuple, list)) or len(params["blocks"]) != layers:
        got = len(params["blocks"]) if isinstance(params["blocks"], (tuple, list)) else type(params["blocks"]).__name__
        raise ValueError(f"{NAME}: params['blocks'] must hold {layers} blocks, got {got}")


def _check(params, ids, layers):
    _check_keys(params, layers)
    require_rank(NAME, "ids", ids, rank=2, hint=" (batch, T): a window of ids per sequence")
    context, width = params["pe"]["W"].shape
    if not 1 <= ids.shape[1] <= context:
        raise ValueError(f"{NAME}: ids shape {tuple(ids.shape)} has T = {ids.shape[1]} positions; the model reads "
                         f"1 to context = {context}")
    if params["te"]["W"].shape[1] != width:
        raise ValueError(f"{NAME}: te W shape {params['te']['W'].shape} does not match pe W shape "
                         f"{params['pe']['W'].shape}: both need the width {width}")
    require_ids(NAME, "ids", ids, params["te"]["W"].shape[0])


def parameter_count(params) -> int:
    """The number of parameters (tied tables counted once)."""
    return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(params)))
