"""Where the GPT's training step spends its time: each piece of the step (the whole hand step and
jax.grad's, the forward, one block, its attention, layer norm, GELU and affine maps, the attention's
softmax and one of its batched products) compiled alone at the size it has inside the step (batch
32, context 128, width 128, 4 heads), timed as the median of 7 calls with the min-max.

    python benchmarks/gpt_parts.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pure_backprop.core import loss_and_grads  # noqa: E402
from pure_backprop.gpt import gpt  # noqa: E402
from pure_backprop.layers.attention import _softmax, _softmax_backward  # noqa: E402
from pure_backprop.layers.gelu import gelu_tanh  # noqa: E402
from pure_backprop.layers.layer_norm import layer_norm  # noqa: E402
from pure_backprop.layers.self_attention import causal_mask, causal_self_attention  # noqa: E402
from pure_backprop.layers.time_affine import backward as affine_backward, forward as affine_forward  # noqa: E402
from pure_backprop.layers.time_softmax_cross_entropy import time_softmax_cross_entropy as loss  # noqa: E402
from pure_backprop.layers.transformer_block import transformer_block  # noqa: E402
from pure_backprop.train_gpt import gpt_optimizer  # noqa: E402

N, T, D, H, V = 32, 128, 128, 4, 103


def timed(name, f, *args, calls=7):
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(1e3 * (time.perf_counter() - started))
    print(f"  {name:36s} {statistics.median(times):7.2f} ms ({min(times):.1f}-{max(times):.1f})", flush=True)


def forward_backward(layer, params, x):
    y, residuals = layer.forward(params, x)
    return layer.backward(params, residuals, y)


def main():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (N, T, D))
    net = gpt(V, T)
    params, _ = net.init(key, (N, T))
    ids = jax.random.randint(key, (N, T), 0, V)
    print(f"ms per call, median of 7 (min-max); batch {N}, context {T}, width {D}, {H} heads, float32")
    timed("the GPT's forward and loss", lambda p, i: loss.forward(net.forward(p, i)[0], i)[0], params, ids)
    timed("the hand loss_and_grads", lambda p, i: loss_and_grads(net, loss, p, i, i), params, ids)
    timed("jax.grad of the forward",
          lambda p, i: jax.grad(lambda p: loss.forward(net.forward(p, i)[0], i)[0])(p), params, ids)
    optimizer = gpt_optimizer()
    timed("AdamW's update", optimizer.update, params, optimizer.init(params), params)
    block = transformer_block(H)
    p_block, _ = block.init(key, x.shape)
    timed("one block, forward", lambda p, x: block.forward(p, x)[0], p_block, x)
    timed("one block, forward and backward", lambda p, x: forward_backward(block, p, x), p_block, x)
    for backward in ("plain", "lean"):
        attention = causal_self_attention(H, backward)
        p_attention, _ = attention.init(key, x.shape)
        timed(f"attention ({backward}), forward and backward", lambda p, x: forward_backward(attention, p, x),
              p_attention, x)
    norm = layer_norm()
    timed("layer norm, forward and backward", lambda p, x: forward_backward(norm, p, x), norm.init(key, x.shape)[0], x)
    wide = jax.random.normal(key, (N, T, 4 * D))
    timed("GELU (tanh) at (N, T, 4D), both ways", lambda x: forward_backward(gelu_tanh, (), x), wide)
    fc = {"W": jax.random.normal(key, (D, 4 * D)), "b": jnp.zeros(4 * D)}
    timed("affine D -> 4D, forward and backward",
          lambda p, x: (lambda y, r: affine_backward(p, r, y))(*affine_forward(p, x)), fc, x)
    scores = jax.random.normal(key, (N, H, T, T))
    mask = causal_mask(T)[None, None]
    timed("causal softmax and its backward", lambda s: _softmax_backward(_softmax(s + mask, None), s), scores)
    q = jax.random.normal(key, (N, H, T, D // H))
    timed("one batched product q @ k^T", lambda q: jnp.einsum("nhid,nhjd->nhij", q, q), q)


if __name__ == "__main__":
    main()
