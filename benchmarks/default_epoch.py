"""Benchmark: where an epoch of the default training program goes, and what it takes to compile.

Compiles the program ``pure-backprop train`` runs by default (digits 64-50-10, batch 100,
augmentation, train/val/test evaluated after each epoch, 50 epochs per call) and the same
program without the evaluation, without the augmentation and without both, then calls them in
turn (interleaved, so that a drift of the machine's speed hits all alike) and prints the median
time per epoch and its spread. The differences are the cost of each part.

Run: ``python benchmarks/default_epoch.py [--repeats 9]``; one timing at a time on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pure_backprop.augment import affine_augmenter
from pure_backprop.data import load_digits, split_validation
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.network import mlp
from pure_backprop.train import _fit_program

EPOCHS_PER_CALL = 50


def default_program(augmented=True, evaluated=True):
    """``(run, call_args)``: the jitted chunk program ``pure-backprop train`` runs by default
    (``augmented``: with its warps; ``evaluated``: train/val/test after each epoch), and the
    arguments of one call of ``EPOCHS_PER_CALL`` epochs."""
    data = split_validation(load_digits(seed=0), 0.2, seed=0)
    net = mlp((50,), 10)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    optimizer = optax.sgd(0.1)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    splits = {"train": (x, y), "val": (jnp.asarray(data.x_val), jnp.asarray(data.y_val)),
              "test": (jnp.asarray(data.x_test), jnp.asarray(data.y_test))} if evaluated else {}
    augment = affine_augmenter(data.image_shape) if augmented else None
    run, _, split_arrays = _fit_program(net, softmax_cross_entropy, optimizer, x, y, 1000, 100, splits, augment,
                                        0.0, EPOCHS_PER_CALL, 500)
    return run, (params, (), optimizer.init(params), jax.random.PRNGKey(1), x, y, split_arrays,
                 np.int32(EPOCHS_PER_CALL), np.int32(0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    variants = {"default": (True, True), "without evaluation": (True, False),
                "without augmentation": (False, True), "without both": (False, False)}
    programs = {}
    for name, (augmented, evaluated) in variants.items():
        run, call_args = default_program(augmented, evaluated)
        start = time.perf_counter()
        compiled = run.lower(*call_args).compile()
        programs[name] = (compiled, call_args, time.perf_counter() - start)
        jax.block_until_ready(compiled(*call_args))  # warm up
    times = {name: [] for name in programs}
    for _ in range(args.repeats):
        for name, (compiled, call_args, _) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*call_args))
            times[name].append((time.perf_counter() - start) / EPOCHS_PER_CALL * 1e3)
    print(f"jax {jax.__version__}; medians over {args.repeats} calls of {EPOCHS_PER_CALL} epochs (min-max)\n")
    print("| program | compile (s) | ms per epoch |")
    print("|---|---|---|")
    for name, (_, _, seconds) in programs.items():
        t = times[name]
        print(f"| {name} | {seconds:.2f} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) |")


if __name__ == "__main__":
    main()
