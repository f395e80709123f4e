r"""Causal multi-head self-attention (Vaswani et al. 2017; GPT's), every step written out, with
two backward passes: the plain one, which keeps the attention weights, and a memory-lean one,
which recomputes them block by block (FlashAttention's backward, Dao et al. 2022).

Shapes: ``x`` (N, T, D), ``H`` heads of ``d = D / H`` features. Forward::

    q, k, v = split(x @ W_qkv + b_qkv)               # three (N, T, D): one affine map, 3D outputs
    q, k, v = heads(q), heads(k), heads(v)           # (N, H, T, d): feature block h is head h
    s       = q @ k^T / sqrt(d)                      # (N, H, T, T): query i against key j
    p       = softmax(s + causal)                    # causal[i, j] = 0 for j <= i, -inf for j > i
    o       = p @ v                                  # (N, H, T, d): each query's weighted values
    y       = merge(o) @ W_o + b_o                   # (N, T, D): the heads side by side, mixed

Position ``i`` sees positions ``0..i`` only, so a language model trained on every position at
once never reads the character it must predict.

Causal blocks (the plain forward and backward). The queries run in blocks of ``B`` (``block``,
the last block shorter when ``B`` does not divide ``T``), and block ``[a, b)`` meets keys
``0..b-1`` only: the blocks above the diagonal are all masked, so their weights are exactly 0
and add nothing to ``o``, ``dv``, ``dk`` or ``dq``. Skipping them computes the same sums with
fewer products: at ``T = 128`` in two blocks, three quarters of the ``T x T`` scores (the time
saved: ``docs/benchmarks.md``).

Backward, node by node from the output (``@`` over the last two axes, ``^T`` swaps them)::

    dW_o, db_o, dmerged = time_affine backward(dy)   # the output projection
    do = heads(dmerged)                              # merge and heads are reshapes: their inverse
    dp = do @ v^T                                    # o = p @ v: p's partner is v ...
    dv = p^T @ do                                    # ... and v's is p, summed over the queries
    ds = p * (dp - sum_j(p * dp))                    # softmax (``softmax.py``); 0 where masked
    dq = ds @ k / sqrt(d)                            # s = q @ k^T / sqrt(d)
    dk = ds^T @ q / sqrt(d)
    dW_qkv, db_qkv, dx = time_affine backward(concat(merge(dq), merge(dk), merge(dv)))

Each causal block runs these lines on its own rows of ``p``, ``dp`` and ``ds``, with ``k`` and
``v`` cut to the keys it meets; ``dk`` and ``dv`` add up every block's part.

The memory-lean backward (``backward="lean"``). The plain one keeps ``p``'s blocks on and below
the diagonal, about ``N H T (T + B) / 2`` numbers (at T = 1024, B = 64, batch 32 and 4 heads:
272 MiB in float32 per layer). The lean forward runs over blocks of ``B`` queries and keeps
only ``o`` and each query's log-sum-exp ``l_i = log sum_j exp(s_ij)`` (masked entries left out);
the backward recomputes ``p_ij = exp(s_ij - l_i)`` block by block, so no more than ``N H B T``
weights exist at once. Its softmax term uses ``sum_j p_ij dp_ij = sum_j p_ij (do_i . v_j) =
do_i . o_i``, which needs no full row of ``p``::

    delta_i = sum(do_i * o_i)                        # (N, H, T): once, before the blocks
    for each block of queries I:
        p_I  = exp(q_I @ k^T / sqrt(d) + causal_I - l_I)
        dp_I = do_I @ v^T
        ds_I = p_I * (dp_I - delta_I)                # dS = P * (dP - rowsum(dO * O))
        dq_I = ds_I @ k / sqrt(d)
        dk  += ds_I^T @ q_I / sqrt(d)
        dv  += p_I^T @ do_I

It equals the plain backward to rounding (checked against it and against ``jax.grad``);
``benchmarks/attention_memory.py`` measures both programs' peak memory and time. The plain
backward's softmax keeps every gradient's relative accuracy when a weight rounds to 1
(``attention.py``, Numerics); the lean one's ``dp - delta`` has the cancellation that form avoids,
an error of an ulp of ``|dp|`` absolute, as in FlashAttention.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..checks import require_rank
from ..core import Layer
from .time_affine import backward as affine_backward, forward as affine_forward
from .attention import _softmax
from .softmax import softmax_backward
from .softmax_cross_entropy import require_floating

NAME = "causal_self_attention"
BACKWARDS = ("plain", "lean")


class PlainResiduals(NamedTuple):
    qkv: object  # the input projection's residual (x)
    q: jax.Array  # (N, H, T, d)
    k: jax.Array
    v: jax.Array
    weights: tuple  # p by causal block: block [a, b) is (N, H, b - a, b); attention_weights() joins them
    out: object  # the output projection's residual (merged o)


class LeanResiduals(NamedTuple):
    qkv: object
    q: jax.Array
    k: jax.Array
    v: jax.Array
    o: jax.Array  # (N, H, T, d)
    logsumexp: jax.Array  # l, (N, H, T)
    out: object


def causal_mask(t: int, dtype=jnp.float32):
    """The additive causal mask ``(T, T)``: 0 where key ``j <= i`` (query ``i``), ``-inf`` after."""
    keep = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
    return jnp.where(keep, 0.0, -jnp.inf).astype(dtype)


def causal_self_attention(heads: int, backward: str = "plain", block: int = 64, w_init=None,
                          out_init=None) -> Layer:
    """Causal self-attention with ``heads`` heads over ``(N, T, D)`` inputs (``D`` a multiple of
    ``heads``). Params ``{"qkv": {"W": (D, 3D), "b": (3D,)}, "out": {"W": (D, D), "b": (D,)}}``;
    the columns of ``qkv["W"]`` are q's, k's and v's, each ``heads`` blocks of ``D / heads``.

    ``backward`` is ``"plain"`` (keeps the weights on and below the diagonal) or ``"lean"``
    (keeps the log-sum-exp and recomputes the weights). Both run ``block`` queries at a time:
    the plain one against the keys each block can see, the lean one (a ``lax.scan``, whose
    blocks share one shape) against all ``T``, masked. ``w_init`` and
    ``out_init`` (``(key, shape, dtype)``) default to GPT-2's normal of std 0.02; biases start at 0.
    """
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"{NAME}: heads must be a positive int, got {heads!r}")
    if backward not in BACKWARDS:
        raise ValueError(f"{NAME}: backward must be one of {BACKWARDS}, got {backward!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"{NAME}: block must be a positive int, got {block!r}")
    w_init = w_init or jax.nn.initializers.normal(0.02)
    out_init = out_init or jax.nn.initializers.normal(0.02)
    lean = backward == "lean"

    def init(key, in_shape, dtype=jnp.float32):
        if len(in_shape) != 3:
            raise ValueError(f"{NAME}: in_shape must be (batch, time, features), got {tuple(in_shape)}")
        d = in_shape[2]
        _check_width(d, heads)
        k_qkv, k_out = jax.random.split(key)
        zeros = jax.nn.initializers.zeros
        params = {"qkv": {"W": w_init(k_qkv, (d, 3 * d), dtype), "b": zeros(k_qkv, (3 * d,), dtype)},
                  "out": {"W": out_init(k_out, (d, d), dtype), "b": zeros(k_out, (d,), dtype)}}
        return params, tuple(in_shape)

    def forward(params, x):
        _check(params, x, heads)
        t, d = x.shape[1:]
        qkv, r_qkv = affine_forward(params["qkv"], x)
        q, k, v = (_heads(a, heads) for a in jnp.split(qkv, 3, axis=2))
        scale = 1.0 / math.sqrt(d // heads)
        if lean:
            o, lse = _lean_forward(q, k, v, scale, block)
        else:
            o, weights = _plain_forward(q, k, v, scale, block)
        y, r_out = affine_forward(params["out"], _merge(o))
        if lean:
            return y, LeanResiduals(r_qkv, q, k, v, o, lse, r_out)
        return y, PlainResiduals(r_qkv, q, k, v, weights, r_out)

    def plain_backward(params, residuals, dy):
        r_qkv, q, k, v, weights, r_out = residuals
        _check_dy(dy, r_out)
        t, scale = q.shape[2], 1.0 / math.sqrt(q.shape[3])
        g_out, dmerged = affine_backward(params["out"], r_out, dy)
        do = _heads(dmerged, heads)
        dqs, dk_t, dv_t = [], 0.0, 0.0  # dk^T, dv^T (N, H, d, T): the layout their products write
        for (start, stop), p in zip(_causal_blocks(t, block), weights):
            q_i, do_i = q[:, :, start:stop], do[:, :, start:stop]
            dp = jnp.einsum("nhid,nhjd->nhij", do_i, v[:, :, :stop])
            dv_t = dv_t + _padded_keys(jnp.einsum("nhid,nhij->nhdj", do_i, p), t)  # (p^T @ do)^T
            ds = softmax_backward(p, dp)
            dqs.append(jnp.einsum("nhij,nhjd->nhid", ds, k[:, :, :stop]) * scale)
            dk_t = dk_t + _padded_keys(jnp.einsum("nhid,nhij->nhdj", q_i, ds), t) * scale  # (ds^T @ q)^T
        dq, dk, dv = jnp.concatenate(dqs, axis=2), jnp.swapaxes(dk_t, 2, 3), jnp.swapaxes(dv_t, 2, 3)
        return _input_backward(params, r_qkv, g_out, dq, dk, dv)

    def lean_backward(params, residuals, dy):
        r_qkv, q, k, v, o, lse, r_out = residuals
        _check_dy(dy, r_out)
        n, h, t, d = q.shape
        scale = 1.0 / math.sqrt(d)
        g_out, dmerged = affine_backward(params["out"], r_out, dy)
        do = _heads(dmerged, heads)
        delta = jnp.sum(do * o, axis=-1)  # (N, H, T): sum_j p_ij dp_ij, row by row
        b, blocks, take, visible = _query_blocks(t, block)
        qb, dob, lseb, deltab = (_padded(a, blocks * b) for a in (q, do, lse, delta))

        def one_block(carry, i):
            dk, dv = carry
            q_i, do_i, lse_i, delta_i = take(qb, i), take(dob, i), take(lseb, i), take(deltab, i)
            s_i = jnp.einsum("nhid,nhjd->nhij", q_i, k) * scale
            p_i = jnp.where(visible(i), jnp.exp(jnp.where(visible(i), s_i - lse_i[..., None], -jnp.inf)), 0.0)
            dp_i = jnp.einsum("nhid,nhjd->nhij", do_i, v)
            ds_i = p_i * (dp_i - delta_i[..., None])
            dq_i = jnp.einsum("nhij,nhjd->nhid", ds_i, k) * scale
            dk = dk + jnp.einsum("nhij,nhid->nhjd", ds_i, q_i) * scale
            dv = dv + jnp.einsum("nhij,nhid->nhjd", p_i, do_i)
            return (dk, dv), dq_i

        (dk, dv), dqs = jax.lax.scan(one_block, (jnp.zeros_like(k), jnp.zeros_like(v)), jnp.arange(blocks))
        dq = jnp.moveaxis(dqs, 0, 2).reshape(n, h, blocks * b, d)[:, :, :t]  # (blocks, N, H, B, d) -> (N, H, T, d)
        return _input_backward(params, r_qkv, g_out, dq, dk, dv)

    def _input_backward(params, r_qkv, g_out, dq, dk, dv):
        dqkv = jnp.concatenate([_merge(dq), _merge(dk), _merge(dv)], axis=2)
        g_qkv, dx = affine_backward(params["qkv"], r_qkv, dqkv)
        return {"qkv": g_qkv, "out": g_out}, dx

    return Layer(init, forward, lean_backward if lean else plain_backward)


def _causal_blocks(t, block):
    """The query blocks ``[(start, stop), ...]`` of ``B = min(block, T)`` queries (the last one
    shorter when ``B`` does not divide ``T``): block ``[start, stop)`` sees keys ``0..stop-1``."""
    return [(start, min(start + block, t)) for start in range(0, t, block)]


def _plain_forward(q, k, v, scale, block):
    """``(o, weights)``: the attention's output (N, H, T, d) and its weights by causal block, block
    ``[start, stop)`` (N, H, stop - start, stop): the blocks on and below the diagonal, without
    the upper ones, which are all 0."""
    t = q.shape[2]
    os, weights = [], []
    for start, stop in _causal_blocks(t, block):
        s = jnp.einsum("nhid,nhjd->nhij", q[:, :, start:stop], k[:, :, :stop]) * scale
        p = _softmax(s + causal_mask(t, s.dtype)[None, None, start:stop, :stop], None)
        os.append(jnp.einsum("nhij,nhjd->nhid", p, v[:, :, :stop]))
        weights.append(p)
    return jnp.concatenate(os, axis=2), tuple(weights)


def _padded(a, length):
    """``a`` (N, H, T, ...) padded with zeros along T to ``length``."""
    return jnp.pad(a, [(0, 0), (0, 0), (0, length - a.shape[2])] + [(0, 0)] * (a.ndim - 3))


def _query_blocks(t, block):
    """``(B, blocks, take, visible)``: queries in ``blocks`` blocks of ``B = min(block, T)`` (the
    last one padded with queries that see nothing); ``take(a, i)`` is block ``i`` of a padded
    ``a``, ``visible(i)`` the (B, T) mask of the keys its queries see (``j <= i``, real queries)."""
    b = min(block, t)
    blocks = -(-t // b)
    rows = jnp.arange(blocks * b).reshape(blocks, b)

    def take(a, i):
        return jax.lax.dynamic_slice_in_dim(a, i * b, b, axis=2)

    def visible(i):
        return (jnp.arange(t)[None, :] <= rows[i][:, None]) & (rows[i][:, None] < t)

    return b, blocks, take, visible


def _lean_forward(q, k, v, scale, block):
    """``(o, l)``: the attention's output (N, H, T, d) and each query's log-sum-exp (N, H, T),
    ``block`` queries at a time, so no more than (N, H, block, T) scores exist at once."""
    n, h, t, d = q.shape
    b, blocks, take, visible = _query_blocks(t, block)
    qb = _padded(q, blocks * b)

    def one_block(_, i):
        s_i = jnp.where(visible(i), jnp.einsum("nhid,nhjd->nhij", take(qb, i), k) * scale, -jnp.inf)
        top = jnp.max(s_i, axis=-1, keepdims=True)
        top = jnp.where(jnp.isfinite(top), top, 0.0)  # a padded query sees nothing: its row is all -inf
        e = jnp.exp(s_i - top)  # 0 where masked
        total = jnp.sum(e, axis=-1, keepdims=True)
        o_i = jnp.einsum("nhij,nhjd->nhid", e / jnp.where(total > 0, total, 1.0), v)
        return None, (o_i, (top + jnp.log(total))[..., 0])

    _, (os, lses) = jax.lax.scan(one_block, None, jnp.arange(blocks))
    o = jnp.moveaxis(os, 0, 2).reshape(n, h, blocks * b, d)[:, :, :t]
    return o, jnp.moveaxis(lses, 0, 2).reshape(n, h, blocks * b)[:, :, :t]


def attention_weights(residuals):
    """The plain forward's weights ``p`` as one (N, H, T, T) array (0 above the diagonal), from
    its residuals' blocks."""
    t = residuals.q.shape[2]
    return jnp.concatenate([_padded_keys(p, t) for p in residuals.weights], axis=2)


def _padded_keys(a, t):
    """``a`` (..., S), a block's part for keys ``0..S-1``, padded with zeros to T keys."""
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, t - a.shape[-1])])


def _heads(a, heads):
    """(N, T, D) -> (N, H, T, D / H): feature block ``h`` becomes head ``h``."""
    n, t, d = a.shape
    return a.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)


def _merge(a):
    """(N, H, T, d) -> (N, T, H d), the inverse of ``_heads``."""
    n, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(n, t, h * d)


def _check_width(d, heads):
    if d % heads:
        raise ValueError(f"{NAME}: the width D = {d} must be a multiple of heads = {heads} (each head takes "
                         f"D / heads features)")


def _check(params, x, heads):
    if not isinstance(params, dict) or set(params) != {"qkv", "out"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{NAME}: params must be a dict with keys ['out', 'qkv'], got {got}")
    require_floating(NAME, "x", x)
    require_rank(NAME, "x", x, rank=3, hint=" (batch, time, features)")
    n, t, d = x.shape
    if n == 0 or t == 0:
        raise ValueError(f"{NAME}: x has no sequence or no position (shape {x.shape}); give N, T >= 1")
    _check_width(d, heads)
    if jnp.shape(params["qkv"].get("W")) != (d, 3 * d):
        raise ValueError(f"{NAME}: qkv W shape {jnp.shape(params['qkv'].get('W'))} does not match x shape {x.shape}; "
                         f"expected (D, 3D) = {(d, 3 * d)}")
    if jnp.shape(params["out"].get("W")) != (d, d):
        raise ValueError(f"{NAME}: out W shape {jnp.shape(params['out'].get('W'))} does not match x shape {x.shape}; "
                         f"expected (D, D) = {(d, d)}")


def _check_dy(dy, r_out):
    if jnp.shape(dy) != jnp.shape(r_out):
        raise ValueError(f"{NAME}: dy shape {jnp.shape(dy)} does not match output shape {jnp.shape(r_out)}")
