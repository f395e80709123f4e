"""Benchmark: data-parallel throughput of the default convnet's training epoch on 1, 2 and 4
local devices, side by side in one run, float32.

The network is ``pure-backprop train --model convnet``'s (SimpleConvNet: conv 30 5x5, pool,
affine 100, affine 10; SGD with weight decay 1e-3, affine augmentation, batch 100) on two
inputs: the bundled 8x8 digits (the default run: 1150 training images, 11 steps an epoch) and
28x28 images of MNIST's size (random pixels: the speed does not depend on them; 1200 images,
12 steps). Each program is one compiled epoch (``make_train_epoch``), as ``fit`` runs it:

* ``no mesh``: the one-device program, no sharding at all;
* ``N devices``: ``make_train_epoch(..., mesh=data_mesh(N))``, each batch split over N devices.

The process starts with 4 CPU devices (``jax_num_cpu_devices``). On a CPU they are not more
hardware: they share the machine's cores (each device's work runs on XLA's thread pool of the
process), so the figures show the cost of splitting, not a gain. Prints images per second
(median and min-max over ``--repeats`` rounds, interleaved) and the scaling efficiency,
``throughput(N) / (N * throughput(1 device))``.

Run: ``python benchmarks/data_parallel.py [--repeats 15]``, on a machine otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from pure_backprop.augment import affine_augmenter  # noqa: E402
from pure_backprop.data import load_digits, split_validation  # noqa: E402
from pure_backprop.layers import softmax_cross_entropy  # noqa: E402
from pure_backprop.network import simple_conv_net  # noqa: E402
from pure_backprop.parallel import data_mesh, replicate  # noqa: E402
from pure_backprop.train import make_train_epoch  # noqa: E402

BATCH = 100


def workloads():
    digits = split_validation(load_digits())
    rng = np.random.default_rng(0)
    return {
        "digits 8x8 (1150 images)": (digits.x_train.reshape(-1, 1, 8, 8), digits.y_train, 2),
        "28x28 (1200 images)": (rng.random((1200, 1, 28, 28), np.float32), rng.integers(0, 10, 1200).astype(np.int32), 0),
    }


def programs(x, y, padding):
    """``{name: (callable, images per call)}``, each a whole training epoch."""
    net = simple_conv_net(init="he", padding=padding)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, *x.shape[1:]))
    optimizer = optax.sgd(0.2)
    augment = affine_augmenter(x.shape[2:])
    steps = len(x) // BATCH
    out = {}
    for name, mesh in [("no mesh", None)] + [(f"{n} device{'s' if n > 1 else ''}", data_mesh(n)) for n in (1, 2, 4)]:
        epoch = make_train_epoch(net, softmax_cross_entropy, optimizer, BATCH, augment, weight_decay=1e-3, mesh=mesh)
        placed = (params, optimizer.init(params), jax.random.PRNGKey(1), x, y)
        if mesh is not None:
            placed = replicate(placed, mesh)
        out[name] = (lambda epoch=epoch, placed=placed: jax.block_until_ready(epoch(*placed)), steps * BATCH)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{jax.device_count()} CPU devices; load average at start {os.getloadavg()[0]:.2f}")
    for workload, (x, y, padding) in workloads().items():
        fns = programs(x, y, padding)
        for fn, _ in fns.values():
            fn()  # compile and warm up
        times = {name: [] for name in fns}
        names = list(fns)
        for r in range(args.repeats):  # rounds interleaved, the order rotated
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                fns[name][0]()
                times[name].append(time.perf_counter() - start)
        print(f"\n{workload}, batch {BATCH}, a whole epoch per call; images/s, median (min-max) of {args.repeats}")
        one = fns["1 device"][1] / statistics.median(times["1 device"])
        for name, t in times.items():
            images = fns[name][1]
            rate = images / statistics.median(t)
            n = int(name.split()[0]) if name[0].isdigit() else 1
            print(f"  {name:10s} {rate:9.0f} ({images / max(t):.0f}-{images / min(t):.0f})"
                  f"   {rate / one:.2f}x one device's, efficiency {rate / (n * one):.2f}")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
