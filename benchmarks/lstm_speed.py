"""Benchmark: one training step of the character LSTM language model, the hand backward against
``jax.grad`` of the same forward and against PyTorch (the fused ``nn.LSTM`` and an
``nn.LSTMCell`` loop), side by side in one run, float32.

The model and step of the sequel's configuration (``benchmarks/char_lm.py``): embedding 64, one
LSTM of 256, windows of 64 characters, batch 32, vocabulary of the default text (103), the
cross entropy over every position, gradients clipped to a global norm of 1.0, Adam 3e-3. Each
step is one compiled call (JAX) or one eager step (PyTorch) on the same window, timed to its
result (``block_until_ready``).

Also printed, to say where the hand step's time goes: the forward alone (with the loss), the LSTM
layer alone (its forward and hand backward over inputs already embedded: the two scans), and the
recurrent product ``h @ Wh`` of all 64 steps, once as a ``lax.scan`` of ``(32, 256) @ (256, 1024)``
products (with the ``tanh`` that makes each step depend on the last) and once as a single
``(2048, 256) @ (256, 1024)`` product of the same work: the price of running it step by step;
and the same scan for batches of 8, 16 and 64 rows, to show how a step's product grows with them.

Run: ``python benchmarks/lstm_speed.py [--repeats 21]``. PyTorch is measured when installed
(``pip install torch``; not a dependency). Never run two timings at once on a shared machine:
the ratios are only meaningful within one quiet run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from train_speed import timed, timed_together  # noqa: E402

from pure_backprop import text  # noqa: E402
from pure_backprop.core import loss_and_grads_with_state  # noqa: E402
from pure_backprop.language_model import language_model  # noqa: E402
from pure_backprop.layers.time_softmax_cross_entropy import time_softmax_cross_entropy  # noqa: E402
from pure_backprop.train import TRAINING  # noqa: E402

try:
    import torch
except ImportError:  # PyTorch is optional
    torch = None

EMBED, HIDDEN, LENGTH, BATCH, LR, CLIP = 64, 256, 64, 32, 3e-3, 1.0


def jax_steps(vocab, seed=0):
    """The hand step, the ``jax.grad`` step and the forward alone, each one compiled call."""
    net = language_model(vocab, EMBED, HIDDEN, "lstm")
    params, state, _ = net.init(jax.random.PRNGKey(seed), (BATCH, LENGTH))
    optimizer = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
    opt_state = optimizer.init(params)

    def hand(params, state, opt_state, x, t):
        loss, grads, state = loss_and_grads_with_state(net, time_softmax_cross_entropy, params, state, x, t, None, True)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    def autodiff(params, state, opt_state, x, t):
        def loss_fn(p):
            scores, new_state, _ = net.forward(p, state, x, None, True)
            return time_softmax_cross_entropy.forward(scores, t)[0], new_state

        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    def forward(params, state, x, t):
        scores, _, _ = net.forward(params, state, x, None, True)
        return time_softmax_cross_entropy.forward(scores, t)[0]

    jit = lambda f: jax.jit(f, compiler_options=TRAINING)  # noqa: E731
    return params, state, opt_state, jit(hand), jit(autodiff), jit(forward)


def recurrence_only(seed=0):
    """The LSTM layer's own forward and hand backward over precomputed inputs: the scan's share."""
    from pure_backprop.layers.lstm import lstm

    layer = lstm(HIDDEN)
    h0 = jnp.zeros((BATCH, HIDDEN))
    params, _ = layer.init(jax.random.PRNGKey(seed), ((BATCH, LENGTH, EMBED), ((BATCH, HIDDEN), (BATCH, HIDDEN))))
    xs = jax.random.normal(jax.random.PRNGKey(1), (BATCH, LENGTH, EMBED))
    dhs = jax.random.normal(jax.random.PRNGKey(2), (BATCH, LENGTH, HIDDEN))

    def run(params, xs, dhs):
        (hs, state), residuals = layer.forward(params, (xs, (h0, h0)))
        grads, _ = layer.backward(params, residuals, (dhs, (jnp.zeros_like(h0), jnp.zeros_like(h0))))
        return grads

    run = jax.jit(run, compiler_options=TRAINING)  # compiled as the training step is

    return lambda: jax.block_until_ready(run(params, xs, dhs))


def recurrent_products(seed=0, batch=BATCH):
    """``h @ Wh`` for every step: a scan of small products of ``batch`` rows (timed) against one
    large product of the same work (timed for the benchmark's own batch)."""
    key = jax.random.PRNGKey(seed)
    Wh = jax.random.normal(key, (HIDDEN, 4 * HIDDEN)) / HIDDEN ** 0.5
    xa = jax.random.normal(key, (LENGTH, batch, 4 * HIDDEN))

    @jax.jit
    def scanned(Wh, xa):
        def step(h, x):
            h = jnp.tanh(x + h @ Wh)[:, :HIDDEN]
            return h, h

        return jax.lax.scan(step, jnp.zeros((batch, HIDDEN)), xa)[1]

    @jax.jit
    def at_once(Wh, xa):
        return jnp.tanh(xa.reshape(-1, 4 * HIDDEN) + xa.reshape(-1, 4 * HIDDEN)[:, :HIDDEN] @ Wh)

    return (lambda: jax.block_until_ready(scanned(Wh, xa))), (lambda: jax.block_until_ready(at_once(Wh, xa)))


def torch_step(vocab, fused, seed=0):
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(vocab, EMBED)
    lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True) if fused else torch.nn.LSTMCell(EMBED, HIDDEN)
    out = torch.nn.Linear(HIDDEN, vocab)
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    optimizer = torch.optim.Adam(params, lr=LR)
    state = [torch.zeros(1, BATCH, HIDDEN), torch.zeros(1, BATCH, HIDDEN)]

    def step(x, t):
        optimizer.zero_grad(set_to_none=True)
        e = emb(x)
        if fused:
            hs, (h, c) = lstm(e, tuple(state))
        else:
            h, c = state[0][0], state[1][0]
            outs = []
            for k in range(LENGTH):
                h, c = lstm(e[:, k], (h, c))
                outs.append(h)
            hs, h, c = torch.stack(outs, 1), h[None], c[None]
        loss = torch.nn.functional.cross_entropy(out(hs).reshape(-1, vocab), t.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        state[0], state[1] = h.detach(), c.detach()
        return loss

    return step


def fmt(entry):
    median, low, high = entry
    return f"{median * 1e3:8.2f} ms  ({low * 1e3:.2f}-{high * 1e3:.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    corpus = text.load_text()
    vocab = len(corpus.vocab)
    xs, ts = text.windows(corpus.train, BATCH, LENGTH)
    x, t = jnp.asarray(xs[0]), jnp.asarray(ts[0])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}, "
          f"torch {torch.__version__ if torch else 'not installed'}")
    print(f"one training step: embedding {EMBED}, LSTM {HIDDEN}, window {LENGTH}, batch {BATCH}, vocabulary {vocab}, "
          f"clip {CLIP}, Adam {LR}; median of {args.repeats} (min-max)")

    params, state, opt_state, hand, autodiff, forward = jax_steps(vocab)
    scanned, at_once = recurrent_products()
    for name, step in (("hand", hand), ("jax.grad", autodiff)):  # the two agree before they race
        loss = step(params, state, opt_state, x, t)[3]
        print(f"  first loss, {name}: {float(loss):.6f}")
    jax_times = timed_together({
        "hand backward (jit)": lambda: jax.block_until_ready(hand(params, state, opt_state, x, t)),
        "jax.grad of the same forward (jit)": lambda: jax.block_until_ready(autodiff(params, state, opt_state, x, t)),
        "forward only (jit)": lambda: jax.block_until_ready(forward(params, state, x, t)),
        "LSTM layer alone, forward + hand backward": recurrence_only(),
        f"h @ Wh of {LENGTH} steps, lax.scan": scanned,
        f"h @ Wh of {LENGTH} steps, one product": at_once,
        **{f"h @ Wh of {LENGTH} steps, lax.scan, batch {b}": recurrent_products(batch=b)[0] for b in (8, 16, 64)},
    }, args.repeats)
    rows = dict(jax_times)
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
        xt, tt = torch.from_numpy(np.asarray(xs[0]).astype(np.int64)), torch.from_numpy(np.asarray(ts[0]).astype(np.int64))
        fused, cell = torch_step(vocab, True), torch_step(vocab, False)
        rows["PyTorch nn.LSTM (fused)"] = timed(lambda: fused(xt, tt), args.repeats)
        rows["PyTorch nn.LSTMCell loop"] = timed(lambda: cell(xt, tt), max(5, args.repeats // 3))
    width = max(map(len, rows))
    hand_median = rows["hand backward (jit)"][0]
    for name, entry in rows.items():
        print(f"  {name:{width}}  {fmt(entry)}  {entry[0] / hand_median:5.2f}x the hand step")


if __name__ == "__main__":
    main()
