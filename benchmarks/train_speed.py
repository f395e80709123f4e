"""Benchmark: training speed of the hand backward against jax.grad, NumPy (the book's way)
and PyTorch eager, side by side in one run, float32.

Prints one table with medians over repeats (and the min-max spread), the sgemm rate of this
run, the compile time of the default training program, the default ``pure-backprop train``
wall time (``--cli``), peak memory and the machine. PyTorch is measured when installed
(``pip install torch``; not a dependency) and skipped otherwise.

The JAX programs of a workload are timed side by side (``timed_together``: their rounds
interleaved), then NumPy and PyTorch each in a block of their own: their BLAS and OpenMP
threads keep spinning after a call, and a JAX round right after one ran 1.2-1.5x slower
(TwoLayerNet's hand step: 0.34 ms alone, 0.44 after PyTorch steps, 0.50 after NumPy's).

Run: ``python benchmarks/train_speed.py [--repeats 7] [--cli]``. Never run two timings at
once on a shared machine: the ratios are only meaningful within one quiet run.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pure_backprop.augment import affine_augmenter
from pure_backprop.data import load_digits, split_validation
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.network import mlp
from pure_backprop.train import _compiled_epochs, make_train_epoch, make_train_step

try:
    import torch
except ImportError:  # PyTorch is optional
    torch = None


def timed(fn, repeats, number=1):
    """Median, min and max seconds of one call of ``fn`` over ``repeats`` rounds of ``number`` calls."""
    return timed_together({"fn": fn}, repeats, number)["fn"]


def timed_together(fns, repeats, number=1):
    """``timed`` for several functions side by side (after a warm-up call each): their rounds
    interleaved, the order rotated each round, so that a drift of the machine's speed hits all
    of them alike."""
    for fn in fns.values():
        fn()  # warm up
    names, rounds = list(fns), {name: [] for name in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(number):
                fns[name]()
            rounds[name].append((time.perf_counter() - start) / number)
    return {name: (statistics.median(t), min(t), max(t)) for name, t in rounds.items()}


# --- the four implementations of one SGD step of an MLP with softmax cross-entropy ------------


def jax_steps(sizes, lr=0.1):
    net = mlp(sizes[1:-1], sizes[-1])
    params, _ = net.init(jax.random.PRNGKey(0), (-1, sizes[0]))
    optimizer = optax.sgd(lr)
    hand = make_train_step(net, softmax_cross_entropy, optimizer)

    @jax.jit
    def autodiff(params, opt_state, batch):
        loss, grads = jax.value_and_grad(
            lambda p: softmax_cross_entropy.forward(net.forward(p, batch[0])[0], batch[1])[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return net, params, optimizer, hand, autodiff


def numpy_params(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((a, b), np.float32) * np.float32(np.sqrt(2 / a)), np.zeros(b, np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])]


def numpy_step(params, x, t, lr=np.float32(0.1)):
    """The book's layers, in place: Affine/ReLU forward, SoftmaxWithLoss, backward, SGD."""
    hs, masks = [x], []
    for i, (w, b) in enumerate(params):
        a = hs[-1] @ w + b
        if i < len(params) - 1:
            mask = a > 0
            masks.append(mask)
            a = a * mask
        hs.append(a)
    s = hs[-1]
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = p
    d[np.arange(len(t)), t] -= 1
    d /= len(t)
    for i in reversed(range(len(params))):
        w, b = params[i]
        dw, db = hs[i].T @ d, d.sum(0)
        if i:
            d = (d @ w.T) * masks[i - 1]
        w -= lr * dw
        b -= lr * db


def torch_step_fn(sizes, lr=0.1):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, t):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), t)
        loss.backward()
        optimizer.step()
        return loss

    return step


# --- workloads ---------------------------------------------------------------------------------


def one_step(sizes, batch, repeats, number):
    rng = np.random.default_rng(1)
    x = rng.random((batch, sizes[0]), np.float32)
    t = rng.integers(0, sizes[-1], batch).astype(np.int32)
    net, params, optimizer, hand, autodiff = jax_steps(sizes)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    state = {"hand": (params, optimizer.init(params)), "jax": (params, optimizer.init(params))}

    def run(name, step):
        def call():
            p, s, loss = step(*state[name], (xj, tj))
            state[name] = (p, s)
            loss.block_until_ready()

        return call

    out = timed_together({"hand + jit": run("hand", hand), "jax.grad + jit": run("jax", autodiff)}, repeats, number)
    np_params = numpy_params(sizes)
    out["NumPy, the book's way"] = timed(lambda: numpy_step(np_params, x, t), repeats, number)
    if torch is not None:
        step = torch_step_fn(sizes)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
        out["PyTorch eager"] = timed(lambda: step(xt, tt), repeats, number)
    return out


def one_epoch(sizes, n, batch, repeats):
    rng = np.random.default_rng(2)
    x = rng.random((n, sizes[0]), np.float32)
    t = rng.integers(0, sizes[-1], n).astype(np.int32)
    net, params, optimizer, _, _ = jax_steps(sizes)
    epoch = make_train_epoch(net, softmax_cross_entropy, optimizer, batch)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    carry = [params, optimizer.init(params)]
    key = [jax.random.PRNGKey(0)]

    def hand():
        key[0], k = jax.random.split(key[0])
        carry[0], carry[1], losses = epoch(carry[0], carry[1], k, xj, tj)
        losses.block_until_ready()

    out = {"hand + jit": timed(hand, repeats)}
    np_params = numpy_params(sizes)

    def numpy_epoch():
        order = rng.permutation(n)
        for i in range(n // batch):
            index = order[i * batch:(i + 1) * batch]
            numpy_step(np_params, x[index], t[index])

    out["NumPy, the book's way"] = timed(numpy_epoch, repeats)
    if torch is not None:
        step = torch_step_fn(sizes)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))

        def torch_epoch():
            order = torch.randperm(n)
            for i in range(n // batch):
                index = order[i * batch:(i + 1) * batch]
                step(xt[index], tt[index])

        out["PyTorch eager"] = timed(torch_epoch, repeats)
    return out


def digits_step(repeats):
    """Per step inside the scanned epoch of the default run (digits 64-50-10, batch 100)."""
    data = split_validation(load_digits(seed=0), 0.2, seed=0)
    x, t = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    steps = len(data.x_train) // 100
    net, params, optimizer, _, _ = jax_steps((64, 50, 10))
    fns = {}
    for name, augment in (("hand + jit", None), ("hand + jit, augmented", affine_augmenter((8, 8)))):
        epoch = make_train_epoch(net, softmax_cross_entropy, optimizer, 100, augment=augment)
        carry = [params, optimizer.init(params)]

        def call(epoch=epoch, carry=carry):
            carry[0], carry[1], losses = epoch(carry[0], carry[1], jax.random.PRNGKey(0), x, t)
            losses.block_until_ready()

        fns[name] = call
    np_params = numpy_params((64, 50, 10))
    xn, tn = np.asarray(data.x_train), np.asarray(data.y_train)
    rng = np.random.default_rng(0)

    def numpy_call():
        order = rng.permutation(len(xn))
        for i in range(steps):
            index = order[i * 100:(i + 1) * 100]
            numpy_step(np_params, xn[index], tn[index])

    out = timed_together(fns, repeats, 20)
    out["NumPy, the book's way"] = timed(numpy_call, repeats, 20)
    return {name: (median / steps, low / steps, high / steps) for name, (median, low, high) in out.items()}


def sgemm_rate(repeats):
    """FLOP/s of one float32 (1024 x 784) @ (784 x 4096) product through XLA, the MLP's largest."""
    a = jnp.ones((1024, 784), jnp.float32)
    b = jnp.ones((784, 4096), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    median, _, _ = timed(lambda: matmul(a, b).block_until_ready(), repeats, 3)
    return 2 * 1024 * 784 * 4096 / median


def default_compile_seconds():
    """Lowering plus compilation of the program ``pure-backprop train`` runs by default."""
    data = split_validation(load_digits(seed=0), 0.2, seed=0)
    net = mlp((50,), 10)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    optimizer = optax.sgd(0.1)
    splits = tuple((jnp.asarray(a), jnp.asarray(b)) for a, b in
                   ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)))
    run = _compiled_epochs(net, softmax_cross_entropy, optimizer, 100, affine_augmenter((8, 8)), 0.0, 500,
                           ("train", "val", "test"), 50)
    start = time.perf_counter()
    run.lower(params, (), optimizer.init(params), jax.random.PRNGKey(0), splits[0][0], splits[0][1], splits,
              np.int32(50), np.int32(0)).compile()
    return time.perf_counter() - start


def cli_seconds(repeats):
    """Wall time of ``pure-backprop train`` with defaults, start to exit, in a fresh process:
    ``{"compiling": ..., "cache warm": ...}``, runs alternating between ``--compile-cache none``
    (every program compiled, as on a first run) and the user's cache (after one untimed run that
    fills it)."""
    modes = {"compiling": ["--compile-cache", "none"], "cache warm": []}
    times = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pure_backprop.cli", "train", "--out", f"{tmp}/fill", "--no-progress"],
                       check=True, capture_output=True)
        for i in range(repeats):
            for mode, extra in modes.items():
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pure_backprop.cli", "train", "--out", f"{tmp}/{mode}{i}",
                                "--no-progress", *extra], check=True, capture_output=True)
                times[mode].append(time.perf_counter() - start)
    return {mode: (statistics.median(t), min(t), max(t)) for mode, t in times.items()}


def fmt(entry, unit):
    scale = {"ms": 1e3, "us": 1e6, "s": 1.0}[unit]
    median, low, high = entry
    return f"{median * scale:.3g} {unit} ({low * scale:.3g}-{high * scale:.3g})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cli", action="store_true", help="also time `pure-backprop train` with defaults (3 runs)")
    args = parser.parse_args()
    columns = ["hand + jit", "jax.grad + jit", "NumPy, the book's way", "PyTorch eager"]
    rows = []

    two = one_step((784, 50, 10), 100, args.repeats, 50)
    rows.append(("TwoLayerNet 784-50-10, batch 100, one step", two, "ms"))
    epoch = one_epoch((784, 50, 10), 60_000, 100, max(3, args.repeats // 2))
    rows.append(("same, an epoch of 600 steps (ours: one lax.scan)", epoch, "ms"))
    digits = digits_step(args.repeats)
    rows.append(("digits 64-50-10, batch 100, per step inside the epoch", digits, "us"))
    wide = one_step((784, 4096, 10), 1024, args.repeats, 3)
    rows.append(("MLP 784-4096-10, batch 1024, one step", wide, "ms"))
    rate = sgemm_rate(args.repeats)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {_cpu_name()}; python {platform.python_version()}, "
          f"jax {jax.__version__}, numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}")
    print(f"medians over {args.repeats} repeats (min-max in brackets), float32\n")
    print("| workload | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, results, unit in rows:
        cells = []
        for c in columns:
            label = "hand + jit" if c == "hand + jit" else c
            cell = fmt(results[label], unit) if label in results else ""
            if c == "hand + jit" and "hand + jit, augmented" in results:
                cell += f"; augmented {fmt(results['hand + jit, augmented'], unit)}"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    flops = 2 * 1024 * (784 * 4096 * 2 + 4096 * 10 * 3)  # the first layer's dx is never computed
    print(f"\nsgemm rate of this run: {rate / 1e9:.1f} GFLOP/s; the wide MLP's hand step runs at "
          f"{flops / wide['hand + jit'][0] / rate:.0%} of it, jax.grad's at {flops / wide['jax.grad + jit'][0] / rate:.0%}")
    print("ratios (median / median):")
    for name, results, _ in rows:
        base = results["hand + jit"][0]
        others = ", ".join(f"{k} {v[0] / base:.2f}x" for k, v in results.items() if k != "hand + jit")
        print(f"  {name}: hand is 1; {others}")
    print(f"compilation of the default training program: {default_compile_seconds():.2f} s")
    if args.cli:
        walls = cli_seconds(3)
        print("pure-backprop train with defaults, wall time: "
              + "; ".join(f"{mode} {fmt(entry, 's')}" for mode, entry in walls.items()))
    print(f"peak memory (max RSS of this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
