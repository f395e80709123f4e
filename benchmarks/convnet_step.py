"""Benchmark: one whole training step (forward, backward, SGD update; jit-compiled, float32,
batch 100, 1x28x28 input) of the book's SimpleConvNet (``simple_conv_net()``) and of its deep
CNN (``deep_conv_net(paddings=(1, 1, 1, 2, 1, 1))``, dropout in train mode), three ways:

* ``hand``: ``pure_backprop.train.make_train_step``, the hand-written backward passes;
* ``jax.grad lax``: ``jax.value_and_grad`` of the plain ``lax`` forward a JAX user would write
  (``lax.conv_general_dilated``, ``lax.reduce_window``; ``reference/conv.py``'s networks), then
  the same optax update;
* ``jax.grad same``: ``jax.value_and_grad`` of the package's own forward (im2col where ``auto``
  picks it), differentiated by autodiff instead of by hand.

The deep net's dropout masks come from the same key in all three (``serial``'s rule: layer
``i`` draws with ``jax.random.split(key, n_layers)[i]``). The three steps are first checked to
agree, then timed in interleaved rounds (the order rotated each round, each after an untimed
call); the median is printed in milliseconds with the ratio ``jax.grad / hand`` (the target:
>= 1.5 for both networks). The load average is printed before and after: the 2-core machine is
shared. Run: ``python benchmarks/convnet_step.py`` (about 2-4 minutes).
"""

import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for reference/

import reference.conv as ref7  # noqa: E402
from pure_backprop.layers import softmax_cross_entropy  # noqa: E402
from pure_backprop.network import deep_conv_net, simple_conv_net  # noqa: E402
from pure_backprop.train import make_train_step  # noqa: E402

N, ROUNDS, REPEATS, LR = 100, 5, 3, 0.01
BOOK_BLOCKS, BOOK_PADDINGS, BOOK_DROP = ((16, 16), (32, 32), (64, 64)), (1, 1, 1, 2, 1, 1), 0.5


def grad_step(loss_fn, optimizer):
    """``(params, opt_state, key, x, t) -> (params, opt_state, loss)`` with ``jax.value_and_grad``."""

    def step(params, opt_state, key, x, t):
        loss, grads = jax.value_and_grad(loss_fn)(params, key, x, t)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def variants(name):
    """The three steps of one network, each as ``(params, opt_state, key, x, t) -> (params, loss)``."""
    optimizer = optax.sgd(LR)
    if name == "SimpleConvNet":
        net = simple_conv_net()
        params, _ = net.init(jax.random.PRNGKey(0), (N, 1, 28, 28))
        hand = make_train_step(net, softmax_cross_entropy, optimizer)
        hand_fn = lambda p, o, k, x, t: hand(p, o, (x, t))  # noqa: E731
        lax_loss = lambda p, k, x, t: ref7.simple_conv_net(p, x, t)  # noqa: E731
        same_loss = lambda p, k, x, t: softmax_cross_entropy.forward(net.forward(p, x)[0], t)[0]  # noqa: E731
    else:
        net = deep_conv_net(paddings=BOOK_PADDINGS)
        params, state, _ = net.init(jax.random.PRNGKey(0), (N, 1, 28, 28))
        hand = make_train_step(net, softmax_cross_entropy, optimizer)

        def hand_fn(p, o, k, x, t):
            p, _, o, loss = hand(p, state, o, k, (x, t))
            return p, o, loss

        def lax_loss(p, k, x, t):
            return ref7.deep_conv_net(BOOK_BLOCKS, BOOK_PADDINGS, BOOK_DROP, k)(p, x, t)

        def same_loss(p, k, x, t):
            return softmax_cross_entropy.forward(net.forward(p, state, x, k, True)[0], t)[0]
    fns = {"hand": hand_fn, "jax.grad lax": grad_step(lax_loss, optimizer),
           "jax.grad same": grad_step(same_loss, optimizer)}
    x = jax.random.normal(jax.random.PRNGKey(1), (N, 1, 28, 28), jnp.float32)
    t = jax.random.randint(jax.random.PRNGKey(2), (N,), 0, 10)
    args = (params, optimizer.init(params), jax.random.PRNGKey(3), x, t)
    return fns, args


def check(fns, args):
    """Every step gives the same loss and new params as ``jax.grad lax`` (float32 tolerance)."""
    expected = jax.tree_util.tree_leaves(fns["jax.grad lax"](*args))
    for name, f in fns.items():
        got = jax.tree_util.tree_leaves(f(*args))
        for a, e in zip(got, expected):
            err = float(np.max(np.abs(np.asarray(a, np.float64) - e)) / max(np.max(np.abs(e)), 1e-30))
            assert err < 1e-4, (name, err)


def timed(f, *args):
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - start


def main():
    print(f"training step (forward, backward, SGD), median ms over {ROUNDS} interleaved rounds x {REPEATS} calls, "
          f"batch {N}, 1x28x28, float32, {jax.devices()[0].platform}, jax {jax.__version__}, {os.cpu_count()} cores")
    print("load average before: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"{'network':14s} {'hand':>9s} {'jax.grad lax':>13s} {'jax.grad same':>14s}   lax/hand  same/hand")
    start = time.perf_counter()
    for network in ("SimpleConvNet", "DeepConvNet"):
        fns, args = variants(network)
        check(fns, args)
        names = list(fns)
        times = {n: [] for n in names}
        for r in range(ROUNDS):
            for name in names[r % len(names):] + names[:r % len(names)]:
                timed(fns[name], *args)
                times[name] += [timed(fns[name], *args) for _ in range(REPEATS)]
        ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        print(f"{network:14s} {ms['hand']:9.1f} {ms['jax.grad lax']:13.1f} {ms['jax.grad same']:14.1f}   "
              f"{ms['jax.grad lax'] / ms['hand']:8.2f} {ms['jax.grad same'] / ms['hand']:10.2f}", flush=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average after: {load}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
