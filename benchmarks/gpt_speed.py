"""The GPT's training step, side by side in one process: the hand-written backward, ``jax.grad``
of the same forward, and PyTorch's reference step (``benchmarks/gpt_torch.py``'s model, if torch
is installed), at the configuration of ``pure-backprop train --model gpt`` (4 layers, 4 heads,
width 128, context 128, batch 32, AdamW, clipping).

    python benchmarks/gpt_speed.py [--repeats 5] [--steps 10] [--lean] [--one-block]

Each figure is the median over ``--repeats`` runs of ``--steps`` compiled steps (one ``lax.scan``,
as training runs them), per step; the three alternate, so drift on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pure_backprop.gpt import gpt  # noqa: E402
from pure_backprop.text import load_text  # noqa: E402
from pure_backprop.train_gpt import gpt_optimizer, make_gpt_chunk  # noqa: E402

LAYERS, HEADS, WIDTH, CONTEXT, BATCH = 4, 4, 128, 128, 32


def jax_runner(grads, corpus, steps, attention_backward="plain", attention_block=64):
    net = gpt(len(corpus.vocab), CONTEXT, LAYERS, HEADS, WIDTH, attention_backward=attention_backward,
              attention_block=attention_block)
    params, _ = net.init(jax.random.PRNGKey(0), (BATCH, CONTEXT))
    optimizer = gpt_optimizer(steps=1500)
    run = make_gpt_chunk(net, optimizer, steps, BATCH, CONTEXT, grads)
    ids = jax.numpy.asarray(corpus.train)
    state = [params, optimizer.init(params)]
    key = jax.random.PRNGKey(1)

    def once():
        p, o, losses = run(state[0], state[1], key, ids, 0)
        losses.block_until_ready()
        state[:] = [p, o]

    once()  # compile
    return once


def torch_runner(corpus, steps):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    from gpt_torch import GPT

    torch.manual_seed(0)
    model = GPT(len(corpus.vocab), CONTEXT, LAYERS, HEADS, WIDTH)
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99))
    train = torch.from_numpy(corpus.train.astype(np.int64))
    generator = torch.Generator().manual_seed(0)

    def once():
        for _ in range(steps):
            offsets = torch.randint(0, len(train) - CONTEXT, (BATCH,), generator=generator)
            rows = offsets[:, None] + torch.arange(CONTEXT)[None, :]
            loss = F.cross_entropy(model(train[rows]).flatten(0, 1), train[rows + 1].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

    once()
    return once


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lean", action="store_true", help="also time the hand step with the lean attention backward")
    parser.add_argument("--one-block", action="store_true",
                        help="also time the hand step with the attention in one block of all T queries "
                             "(whole T x T products, no causal blocks skipped)")
    args = parser.parse_args(argv)
    corpus = load_text()
    runners = {"hand": jax_runner("hand", corpus, args.steps), "jax.grad": jax_runner("jax", corpus, args.steps)}
    if args.lean:
        runners["hand, lean attention"] = jax_runner("hand", corpus, args.steps, "lean")
    if args.one_block:
        runners["hand, one block"] = jax_runner("hand", corpus, args.steps, attention_block=CONTEXT)
    torch_once = torch_runner(corpus, args.steps)
    if torch_once is not None:
        runners["pytorch"] = torch_once
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, once in runners.items():
            started = time.perf_counter()
            once()
            times[name].append(1e3 * (time.perf_counter() - started) / args.steps)
    hand = statistics.median(times["hand"])
    print(f"ms per step, median of {args.repeats} x {args.steps} steps (range); ratio = that / hand")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:22s} {m:7.1f}  ({min(ts):.1f}-{max(ts):.1f})  x{m / hand:.2f}")


if __name__ == "__main__":
    main()
