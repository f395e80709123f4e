"""Benchmark: the first eager draws of initial weights, plain against ``initializers.one_off``.

Nine draws (He normal, jax's truncated He normal and Xavier, each in three shapes), each
variant in a fresh process (compiled programs are cached per process), alternating, so that
what is timed is the compilation of each draw on first use.

Run: ``python benchmarks/first_init.py [--repeats 2]``; one timing at a time on the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

DRAWS = r"""
import sys, time, jax, jax.numpy as jnp
from pure_backprop.initializers import one_off
inits = [jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal"), jax.nn.initializers.he_normal(),
         jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal")]
if sys.argv[1] == "one_off":
    inits = [one_off(init) for init in inits]
key = jax.random.PRNGKey(0)
start = time.perf_counter()
for init in inits:
    for shape in ((64, 100), (100, 100), (100, 10)):
        jax.block_until_ready(init(key, shape, jnp.float32))
print(time.perf_counter() - start)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times = {"plain": [], "one_off": []}
    for _ in range(args.repeats):
        for variant in times:
            out = subprocess.run([sys.executable, "-c", DRAWS, variant], check=True, capture_output=True, text=True)
            times[variant].append(float(out.stdout.strip().splitlines()[-1]))
    for variant, t in times.items():
        print(f"{variant:8s} nine first draws: " + ", ".join(f"{s:.2f}" for s in t) + " s")


if __name__ == "__main__":
    main()
