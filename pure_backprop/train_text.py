"""Training a language model over windows of text (truncated backprop through time), in compiled
chunks of steps, with validation in bits per character and early stopping on it.

Step ``k`` (counted from 0) trains on window ``k mod K`` of the training windows (``text.windows``:
``(K, N, T)``), in order, so each stream reads its text from start to end and the recurrent state
at the end of one window starts the next; at window 0 (the start of every pass over the text) the
state starts again from zero. Each step draws its dropout from ``jax.random.fold_in(key, k)``: a
function of the run's key and the step alone, so cutting the steps into compiled chunks changes no
number. The optimizer is any optax transformation; the sequel clips the gradient's global norm
first (``optax.chain(optax.clip_by_global_norm(c), optax.adam(lr))``).

Validation runs the model over every validation window in order from a zero state, without
dropout: the mean cross entropy per character in bits (``text.bits_per_char``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .core import StatefulLayer, loss_and_grads_with_state
from .layers.time_softmax_cross_entropy import time_softmax_cross_entropy
from .text import bits_per_char
from .train import TRAINING


class TextFitResult(NamedTuple):
    """What ``fit_language_model`` returns: the last params/state/opt_state, the ``best_params``
    (lowest validation bits per character) and the step they were taken at, the history (one
    record per evaluation: ``step``, ``train_loss`` in nats, the mean over the steps since the
    last record, ``val_bits_per_char``), and whether training stopped early or was interrupted."""

    params: object
    state: object
    opt_state: object
    best_params: object
    best_step: int
    best_val_bits_per_char: float
    history: list
    stopped_early: bool
    interrupted: bool


def _zeros_like(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


@functools.lru_cache(maxsize=None)
def make_text_chunk(network: StatefulLayer, optimizer: optax.GradientTransformation, steps: int):
    """``run(params, state, opt_state, key, xs, ts, start) -> (params, state, opt_state, losses)``:
    ``steps`` training steps from step ``start``, one ``lax.scan``, compiled once."""

    def run(params, state, opt_state, key, xs, ts, start):
        windows = xs.shape[0]

        def body(carry, k):
            params, state, opt_state = carry
            w = k % windows
            state = jax.tree_util.tree_map(lambda s: jnp.where(w == 0, jnp.zeros_like(s), s), state)
            value, grads, state = loss_and_grads_with_state(network, time_softmax_cross_entropy, params, state,
                                                            xs[w], ts[w], jax.random.fold_in(key, k), True)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), state, opt_state), value

        (params, state, opt_state), losses = jax.lax.scan(body, (params, state, opt_state), start + jnp.arange(steps))
        return params, state, opt_state, losses

    return jax.jit(run, compiler_options=TRAINING)


@functools.lru_cache(maxsize=None)
def make_text_evaluate(network: StatefulLayer):
    """``evaluate(params, state_like, xs, ts) -> mean nats per character`` over all windows in
    order from a zero state (``state_like`` gives the state's structure), without dropout."""

    def evaluate(params, state_like, xs, ts):
        def body(state, window):
            x, t = window
            scores, state, _ = network.forward(params, state, x, None, False)
            return state, time_softmax_cross_entropy.forward(scores, t)[0]

        _, losses = jax.lax.scan(body, _zeros_like(state_like), (xs, ts))
        return jnp.mean(losses)

    return jax.jit(evaluate, compiler_options=TRAINING)


def fit_language_model(network: StatefulLayer, optimizer: optax.GradientTransformation, params, state, train_windows,
                       val_windows, *, steps: int, key, eval_every: int = 200, patience: int | None = None,
                       opt_state=None, start_step: int = 0,
                       on_eval: Callable[[dict], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> TextFitResult:
    """Train ``steps`` steps (from ``start_step``), evaluating every ``eval_every`` steps and at
    the end; with ``patience=P``, stop after ``P`` evaluations in a row without a new best."""
    for arg, value in (("steps", steps), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit_language_model: {arg} must be a positive int, got {value!r}")
    xs, ts = (jnp.asarray(a) for a in train_windows)
    vx, vt = (jnp.asarray(a) for a in val_windows)
    if opt_state is None:
        opt_state = optimizer.init(params)
    evaluate = make_text_evaluate(network)
    history, best = [], (np.inf, params, start_step)
    since_best, done, stopped, interrupted = 0, start_step, False, False
    try:
        while done < steps:
            if should_stop is not None and should_stop():
                interrupted = True
                break
            n = min(eval_every - done % eval_every, steps - done)
            params, state, opt_state, losses = make_text_chunk(network, optimizer, n)(
                params, state, opt_state, key, xs, ts, done)
            done += n
            val = bits_per_char(evaluate(params, state, vx, vt))
            record = {"step": done, "train_loss": float(jnp.mean(losses)), "val_bits_per_char": val}
            history.append(record)
            if on_eval is not None:
                on_eval(record)
            if val < best[0]:
                best, since_best = (val, params, done), 0
            else:
                since_best += 1
                if patience is not None and since_best >= patience:
                    stopped = True
                    break
    except KeyboardInterrupt:
        interrupted = True
    return TextFitResult(params, state, opt_state, best[1], best[2], best[0], history, stopped, interrupted)
