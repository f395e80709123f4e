"""The character LSTM language model on the default text (the running Python's help topics), with
the hand backward: its best validation bits per character, for a few seeds.

The configuration of the PyTorch reference (fused ``nn.LSTM`` on the same text and split: 1.79
bits per character at step 1,000, its best 1.77 near step 2,000, then overfitting): embedding 64,
one LSTM of 256, windows of 64 characters, batch 32, Adam 3e-3, gradients clipped to a global
norm of 1.0. Chosen here on the validation split: a cosine decay of the learning rate to 0 over
the run (``--schedule constant`` for the reference's) and the embedding drawn from a standard
normal (``language_model.EMBED_INIT``). Validation every 200 steps; the best is reported.

Run: ``python benchmarks/char_lm.py [--steps 2000] [--seeds 0 1 2] [--schedule cosine|constant]``.
"""

import argparse
import time

import jax
import numpy as np
import optax

from pure_backprop import text
from pure_backprop.language_model import language_model
from pure_backprop.train_text import fit_language_model


def run(corpus, seed, steps, schedule, cell="lstm", embed=64, hidden=256, batch=32, length=64, lr=3e-3, clip=1.0):
    train_windows = text.windows(corpus.train, batch, length)
    val_windows = text.windows(corpus.val, batch, length, "validation text")
    net = language_model(len(corpus.vocab), embed, hidden, cell)
    params, state, _ = net.init(jax.random.PRNGKey(seed), (batch, length))
    rate = optax.cosine_decay_schedule(lr, steps) if schedule == "cosine" else lr
    optimizer = optax.chain(optax.clip_by_global_norm(clip), optax.adam(rate))
    return fit_language_model(net, optimizer, params, state, train_windows, val_windows, steps=steps,
                              key=jax.random.PRNGKey(1000 + seed), eval_every=200)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    args = parser.parse_args()
    corpus = text.load_text()
    print(f"text: {corpus.name}, {corpus.characters:,} characters, sha256 {corpus.sha256[:16]}, "
          f"{len(corpus.vocab)} distinct; {args.steps} steps, {args.schedule} learning rate")
    bests = []
    for seed in args.seeds:
        start = time.perf_counter()
        result = run(corpus, seed, args.steps, args.schedule)
        curve = " ".join(f"{r['val_bits_per_char']:.3f}" for r in result.history)
        print(f"seed {seed}: best {result.best_val_bits_per_char:.3f} bits/char at step {result.best_step} "
              f"({time.perf_counter() - start:.0f} s); every 200 steps: {curve}", flush=True)
        bests.append(result.best_val_bits_per_char)
    print(f"best validation bits per character: mean {np.mean(bests):.3f}, range {min(bests):.3f}-{max(bests):.3f} "
          f"over seeds {args.seeds}")


if __name__ == "__main__":
    main()
