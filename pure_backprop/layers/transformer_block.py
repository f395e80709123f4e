r"""The pre-norm transformer block (GPT-2's): attention and a two-layer perceptron, each read
through a layer norm and added back to its input (a residual connection).

Forward, ``x`` (N, T, D), the MLP of width ``4 D`` by default::

    h = x + attn(ln_1(x))                           # causal_self_attention
    y = h + proj(gelu(fc(ln_2(h))))                 # fc: D -> 4D, proj: 4D -> D (time_affine)

Backward. A residual ``h = x + f(x)`` is an add node: the gradient reaches ``x`` along both of its
paths, unchanged along the identity and through ``f``'s backward along the other, and the two
add (the sum is what keeps deep stacks trainable: the identity path carries ``dy`` to every
block untouched)::

    dh = dy + ln_2 backward(fc backward(gelu backward(proj backward(dy))))
    dx = dh + ln_1 backward(attn backward(dh))

each ``backward`` also giving its layer's parameter gradients. Every piece is a layer of its own
(``layer_norm``, ``self_attention``, ``gelu``, ``time_affine``) with its own derivation and checks;
the block only wires them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core import Layer
from .gelu import gelu, gelu_tanh
from .layer_norm import layer_norm
from .self_attention import causal_self_attention
from .time_affine import backward as affine_backward, forward as affine_forward

NAME = "transformer_block"
KEYS = ("ln_1", "attn", "ln_2", "fc", "proj")
ACTIVATIONS = {"gelu_tanh": gelu_tanh, "gelu": gelu}


def transformer_block(heads: int, mlp_ratio: int = 4, activation: str = "gelu_tanh", attention_backward: str = "plain",
                      w_init=None, out_init=None, attention_block: int = 64) -> Layer:
    """A pre-norm block over ``(N, T, D)``: ``heads`` heads, an MLP of ``mlp_ratio * D`` units with
    ``activation`` (``"gelu_tanh"``, GPT-2's, or the exact ``"gelu"``). ``w_init`` and ``out_init``
    initialize the weights read from the residual stream (``qkv``, ``fc``) and written back into
    it (the attention's ``out``, ``proj``); both default to a normal of std 0.02 (``gpt`` scales
    ``out_init`` by ``1 / sqrt(2 layers)``, GPT-2's). ``attention_backward`` and ``attention_block``
    are the attention's ``backward`` and ``block`` (``causal_self_attention``). Params
    ``{"ln_1", "attn", "ln_2", "fc", "proj"}``.
    """
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, int) or mlp_ratio < 1:
        raise ValueError(f"{NAME}: mlp_ratio must be a positive int, got {mlp_ratio!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{NAME}: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    w_init = w_init or jax.nn.initializers.normal(0.02)
    out_init = out_init or jax.nn.initializers.normal(0.02)
    norm_1, norm_2 = layer_norm(), layer_norm()
    attn = causal_self_attention(heads, attention_backward, attention_block, w_init=w_init, out_init=out_init)
    act = ACTIVATIONS[activation]

    def init(key, in_shape, dtype=jnp.float32):
        if len(in_shape) != 3:
            raise ValueError(f"{NAME}: in_shape must be (batch, time, features), got {tuple(in_shape)}")
        d = in_shape[2]
        k_attn, k_fc, k_proj = jax.random.split(key, 3)
        params = {"ln_1": norm_1.init(key, in_shape, dtype)[0], "attn": attn.init(k_attn, in_shape, dtype)[0],
                  "ln_2": norm_2.init(key, in_shape, dtype)[0],
                  "fc": {"W": w_init(k_fc, (d, mlp_ratio * d), dtype), "b": jnp.zeros((mlp_ratio * d,), dtype)},
                  "proj": {"W": out_init(k_proj, (mlp_ratio * d, d), dtype), "b": jnp.zeros((d,), dtype)}}
        return params, tuple(in_shape)

    def forward(params, x):
        _check_keys(params)
        a, r_ln_1 = norm_1.forward(params["ln_1"], x)
        a, r_attn = attn.forward(params["attn"], a)
        h = x + a
        m, r_ln_2 = norm_2.forward(params["ln_2"], h)
        m, r_fc = affine_forward(params["fc"], m)
        m, r_act = act.forward((), m)
        m, r_proj = affine_forward(params["proj"], m)
        return h + m, (r_ln_1, r_attn, r_ln_2, r_fc, r_act, r_proj)

    def backward(params, residuals, dy):
        _check_keys(params)
        r_ln_1, r_attn, r_ln_2, r_fc, r_act, r_proj = residuals
        g_proj, dm = affine_backward(params["proj"], r_proj, dy)
        _, dm = act.backward((), r_act, dm)
        g_fc, dm = affine_backward(params["fc"], r_fc, dm)
        g_ln_2, dm = norm_2.backward(params["ln_2"], r_ln_2, dm)
        dh = dy + dm  # the residual: the identity path and the MLP's
        g_attn, da = attn.backward(params["attn"], r_attn, dh)
        g_ln_1, da = norm_1.backward(params["ln_1"], r_ln_1, da)
        return {"ln_1": g_ln_1, "attn": g_attn, "ln_2": g_ln_2, "fc": g_fc, "proj": g_proj}, dh + da

    return Layer(init, forward, backward)


def _check_keys(params):
    if not isinstance(params, dict) or set(params) != set(KEYS):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{NAME}: params must be a dict with keys {sorted(KEYS)}, got {got}")
