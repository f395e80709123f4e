"""Causal self-attention's two backward passes side by side: the plain one, which keeps the
attention weights on and below the diagonal from the forward, and the lean one, which keeps each
query's log-sum-exp and recomputes the weights a block of queries at a time. For each context length:
the memory XLA plans for the compiled forward-and-backward program (its temporary buffers, the
residuals among them: ``compiled.memory_analysis()``, exact, not sampled) and the time of one
forward and backward (median over repeats, the two alternating).

    python benchmarks/attention_memory.py [--contexts 128,512,1024,2048] [--batch 4] [--repeats 5]

Width 128, 4 heads, float32, blocks of 64 queries.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pure_backprop.layers.self_attention import causal_self_attention  # noqa: E402

WIDTH, HEADS, BLOCK = 128, 4, 64


def program(backward, batch, context):
    layer = causal_self_attention(HEADS, backward, BLOCK)
    params, _ = layer.init(jax.random.PRNGKey(0), (batch, context, WIDTH))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, context, WIDTH))

    def step(params, x):
        y, residuals = layer.forward(params, x)
        return layer.backward(params, residuals, y)

    compiled = jax.jit(step).lower(params, x).compile()
    return compiled, params, x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="128,512,1024,2048")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"batch {args.batch}, width {WIDTH}, {HEADS} heads, float32; MiB of temporary buffers, ms per "
          f"forward + backward (median of {args.repeats}, range)")
    print(f"{'T':>6} {'plain MiB':>10} {'lean MiB':>9} {'ratio':>6}   {'plain ms':>16} {'lean ms':>16} {'ratio':>6}")
    for context in (int(c) for c in args.contexts.split(",")):
        runs = {name: program(name, args.batch, context) for name in ("plain", "lean")}
        memory = {name: c.memory_analysis().temp_size_in_bytes / 2**20 for name, (c, _, _) in runs.items()}
        times = {name: [] for name in runs}
        for name, (c, p, x) in runs.items():
            jax.block_until_ready(c(p, x))  # warm
        for _ in range(args.repeats):
            for name, (c, p, x) in runs.items():
                started = time.perf_counter()
                jax.block_until_ready(c(p, x))
                times[name].append(1e3 * (time.perf_counter() - started))
        ms = {name: statistics.median(ts) for name, ts in times.items()}
        cell = lambda name: f"{ms[name]:6.1f} ({min(times[name]):.0f}-{max(times[name]):.0f})"  # noqa: E731
        print(f"{context:>6} {memory['plain']:10.1f} {memory['lean']:9.1f} {memory['lean'] / memory['plain']:6.2f}   "
              f"{cell('plain'):>16} {cell('lean'):>16} {ms['lean'] / ms['plain']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
