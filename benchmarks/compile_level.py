"""Benchmark: XLA's LLVM optimization level for the training programs, compile time against speed.

``jax.jit(..., compiler_options={"xla_backend_optimization_level": L})`` sets the LLVM level
XLA's CPU backend compiles at (3 by default, ``DefaultDebugOptionsIgnoringFlags`` in XLA's
``debug_options_flags.cc``; the package's one-off programs use 0). A lower
level compiles faster; whether the compiled program runs as fast is what this measures, for:

* ``default``: the program ``pure-backprop train`` runs by default (digits 64-50-10, batch 100,
  augmentation, train/val/test evaluated after each epoch, 50 epochs per call);
* ``SimpleConvNet`` and ``DeepConvNet``: one jit-compiled training step (forward, hand backward,
  SGD), float32, batch 100, 1x28x28, as ``benchmarks/convnet_step.py``.

Each program is lowered afresh and compiled ``--compiles`` times per level, the levels
alternating (jax keeps the executable of a lowering it compiled; the persistent cache is off
here), then the compiled programs are called in interleaved rounds.
Medians (min-max). Run: ``python benchmarks/compile_level.py [--levels -1 3 2 1 0] [--repeats 7]``;
one timing at a time on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from default_epoch import EPOCHS_PER_CALL, default_program  # benchmarks/, the script's folder
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.network import deep_conv_net, simple_conv_net
from pure_backprop.train import make_step


def default_program_of_the_cli():
    """``(function, args, calls-per-timing-unit, unit)`` of the default training program."""
    run, args = default_program()
    return run.__wrapped__, args, EPOCHS_PER_CALL, "ms per epoch"  # the function under its jit and its options


def conv_program(name):
    if name == "SimpleConvNet":
        net = simple_conv_net()
        (params, _), state = net.init(jax.random.PRNGKey(0), (100, 1, 28, 28)), ()
    else:  # dropout in train mode: a stateful network, its key explicit
        net = deep_conv_net(paddings=(1, 1, 1, 2, 1, 1))
        params, state, _ = net.init(jax.random.PRNGKey(0), (100, 1, 28, 28))
    optimizer = optax.sgd(0.01)
    step = make_step(net, softmax_cross_entropy, optimizer)
    x = jax.random.normal(jax.random.PRNGKey(1), (100, 1, 28, 28), jnp.float32)
    t = jax.random.randint(jax.random.PRNGKey(2), (100,), 0, 10)
    args = (params, state, optimizer.init(params), jax.random.PRNGKey(3), (x, t))
    return step, args, 1, "ms per step"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[-1, 3, 2, 1],
                        help="LLVM levels; -1: no option given (XLA's default, 3)")
    parser.add_argument("--compiles", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--programs", nargs="+", default=["default", "SimpleConvNet", "DeepConvNet"])
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    print(f"jax {jax.__version__}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(f"medians over {args.compiles} compilations and {args.repeats} timed calls per level (min-max)\n")
    print(f"| program | level | compile (s), lowering excluded | time | speed vs {'default' if args.levels[0] < 0 else args.levels[0]} |")
    print("|---|---|---|---|---|")
    for name in args.programs:
        fun, call_args, per_call, unit = default_program_of_the_cli() if name == "default" else conv_program(name)
        compiled, compile_s = {}, {level: [] for level in args.levels}
        for _ in range(args.compiles):
            for level in args.levels:
                # a fresh lowering each time: jax keeps the executable of a lowering it compiled
                lowered = jax.jit(lambda *a: fun(*a)).lower(*call_args)  # noqa: B023
                options = None if level < 0 else {"xla_backend_optimization_level": level}
                start = time.perf_counter()
                compiled[level] = lowered.compile(options)
                compile_s[level].append(time.perf_counter() - start)
        for level in args.levels:
            jax.block_until_ready(compiled[level](*call_args))  # warm up
        times = {level: [] for level in args.levels}
        for _ in range(args.repeats):
            for level in args.levels:
                start = time.perf_counter()
                jax.block_until_ready(compiled[level](*call_args))
                times[level].append((time.perf_counter() - start) / per_call * 1e3)
        base = statistics.median(times[args.levels[0]])
        for level in args.levels:
            c, t = compile_s[level], times[level]
            print(f"| {name} | {'default' if level < 0 else level} | {statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f}) | "
                  f"{statistics.median(t):.3f} ({min(t):.3f}-{max(t):.3f}) {unit} | "
                  f"{base / statistics.median(t):.2f}x |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
