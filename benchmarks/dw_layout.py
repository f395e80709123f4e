"""Benchmark: the weight gradient ``dW = x.T @ dy`` as XLA's CPU backend runs it, and the same
product with ``x.T`` laid out in memory first.

Written as ``x.T @ dy``, the product contracts the batch axis of both operands; XLA folds the
transpose into the dot's dimension numbers and, on the CPU, gives such a dot to Eigen, because
YNNPACK (which runs the plain row-major products, e.g. the forward ``x @ W``) takes no transposed
left operand (``IsDotSupportedByYnn`` in XLA's ``backends/cpu/ynn_support.cc``). Copying ``x.T``
behind ``lax.optimization_barrier`` (without it XLA folds the transpose back) makes it a plain
product for YNNPACK, at the price of the copy. This prints both, side by side, for the shapes of
the affine layers of the benchmarks and of im2col's ``dW = dy2.T @ col`` in the conv nets.

Run: ``python benchmarks/dw_layout.py [--repeats 5]``; one timing at a time on the machine. To
see which library runs a dot: ``jax.jit(f).lower(*args).compile().as_text()`` (``__ynn_fusion``
or a bare ``dot``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

CASES = [(n, d, m) for n in (100, 256, 1024) for d, m in ((784, 50), (64, 50), (50, 10), (784, 4096), (4096, 10))]
CASES += [(6400, 30, 25), (57600, 30, 25), (25600, 64, 288)]  # conv dW: (N OH OW, FN) x (N OH OW, C FH FW)

contracted = jax.jit(lambda x, dy: x.T @ dy)
laid_out = jax.jit(lambda x, dy: lax.optimization_barrier(x.T) @ dy)


def seconds(fn, args, number):
    start = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / number


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; medians of {args.repeats} rounds, float32, "
          "the two forms alternating")
    print("| N | D | M | MFLOP | x.T @ dy (Eigen) | x.T laid out (YNNPACK) | ratio |")
    print("|---|---|---|---|---|---|---|")
    key_x, key_dy = jax.random.split(jax.random.PRNGKey(0))
    for n, d, m in CASES:
        x, dy = jax.random.normal(key_x, (n, d)), jax.random.normal(key_dy, (n, m))
        flops = 2 * n * d * m
        number = max(3, min(2000, int(2e9 / flops)))
        for fn in (contracted, laid_out):
            jax.block_until_ready(fn(x, dy))
        a, b = [], []
        for _ in range(args.repeats):
            a.append(seconds(contracted, (x, dy), number))
            b.append(seconds(laid_out, (x, dy), number))
        ta, tb = statistics.median(a), statistics.median(b)
        print(f"| {n} | {d} | {m} | {flops / 1e6:.1f} | {ta * 1e6:.0f} us ({flops / ta / 1e9:.0f} GFLOP/s) | "
              f"{tb * 1e6:.0f} us ({flops / tb / 1e9:.0f} GFLOP/s) | {ta / tb:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
