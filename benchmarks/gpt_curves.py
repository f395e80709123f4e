"""The GPT of ``pure-backprop train --model gpt`` trained twice from the same initialization on the
same batches, once with the hand-written gradient and once with ``jax.grad`` of the same forward:
prints how far apart the two training curves (the loss at every step) are over the first steps.

    python benchmarks/gpt_curves.py [--steps 100]

Float32 throughout. The two gradients differ only in the order of their roundings, so the curves
should agree to float32 rounding, amplified a little by training itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pure_backprop.gpt import gpt  # noqa: E402
from pure_backprop.text import load_text  # noqa: E402
from pure_backprop.train_gpt import gpt_optimizer, make_gpt_chunk  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    corpus = load_text()
    net = gpt(len(corpus.vocab), 128)
    params, _ = net.init(jax.random.PRNGKey(0), (32, 128))
    optimizer = gpt_optimizer(steps=1500)
    ids = jax.numpy.asarray(corpus.train)
    curves = {}
    for grads in ("hand", "jax"):
        run = make_gpt_chunk(net, optimizer, args.steps, 32, 128, grads)
        curves[grads] = np.asarray(run(params, optimizer.init(params), jax.random.PRNGKey(1), ids, 0)[2])
    gap = np.abs(curves["hand"] - curves["jax"]) / np.abs(curves["jax"])
    print(f"loss at steps 1, {args.steps}: hand {curves['hand'][0]:.6f}, {curves['hand'][-1]:.6f}; "
          f"jax.grad {curves['jax'][0]:.6f}, {curves['jax'][-1]:.6f}")
    print(f"relative gap of the two curves: largest {gap.max():.2e} (at step {int(gap.argmax()) + 1}), "
          f"median {np.median(gap):.2e}; float32's epsilon is {np.finfo(np.float32).eps:.2e}")


if __name__ == "__main__":
    main()
