"""Training a GPT on text: random windows, AdamW with weight decay on the matrices, clipping by
global norm, a linear warm-up and a cosine decay, validation in bits per character.

Step ``k`` (counted from 0) reads ``batch`` windows of ``context`` characters from the training
ids at offsets drawn from ``jax.random.fold_in(key, k)`` (nanoGPT's ``get_batch``), and their
targets one character further on: a function of the run's key and the step alone, so cutting the
steps into compiled chunks changes no number. Unlike the recurrent models' windows
(``train_text``), no state runs from one window to the next; every window is read from its start.

The gradient is the hand-written one (``core.loss_and_grads``), or ``jax.grad`` of the same
forward (``grads="jax"``): the two runs start from the same parameters and read the same
batches, so their curves can be compared step by step (``tests/test_gpt.py``) and timed side by
side (``benchmarks/gpt_speed.py``).

Validation reads the validation ids as consecutive windows of ``context`` characters (the last
partial one left out), without overlap, each from its start: the mean cross entropy per character
in bits.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .core import Layer, loss_and_grads
from .layers.time_softmax_cross_entropy import time_softmax_cross_entropy
from .text import TextError, bits_per_char, windows
from .train import TRAINING

GRADS = ("hand", "jax")


def gpt_optimizer(lr: float = 1e-3, steps: int = 1500, warmup: int = 100, final_lr: float = 1e-4,
                  weight_decay: float = 0.1, clip: float = 1.0, b1: float = 0.9, b2: float = 0.99):
    """``optax.chain(clip_by_global_norm(clip), adamw(...))``: the learning rate rises linearly
    from 0 to ``lr`` over ``warmup`` steps, then follows a cosine down to ``final_lr`` at ``steps``
    (``optax.warmup_cosine_decay_schedule``); decoupled weight decay applies to the parameters of
    two or more axes (the matrices and the two embedding tables, as nanoGPT), not to biases or
    the layer norms' ``gamma`` and ``beta``."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), final_lr)
    matrices = lambda params: jax.tree_util.tree_map(lambda a: a.ndim >= 2, params)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=matrices))


def random_windows(key, ids, batch: int, context: int):
    """``(x, t)``, each ``(batch, context)``: windows of ``ids`` at offsets drawn uniformly from
    ``[0, len(ids) - context - 1]``, and the characters one further on."""
    offsets = jax.random.randint(key, (batch,), 0, ids.shape[0] - context)
    rows = offsets[:, None] + jnp.arange(context)[None, :]
    return ids[rows], ids[rows + 1]


def validation_windows(ids: np.ndarray, context: int, what: str = "text"):
    """``(xs, ts)``, each ``(K, context)``: the consecutive windows of ``ids`` and their targets."""
    xs, ts = windows(ids, 1, context, what)
    return xs[:, 0], ts[:, 0]


def _loss_and_grads(network: Layer, grads: str):
    if grads == "hand":
        return lambda params, x, t: loss_and_grads(network, time_softmax_cross_entropy, params, x, t)

    def with_jax(params, x, t):
        return jax.value_and_grad(lambda p: time_softmax_cross_entropy.forward(network.forward(p, x)[0], t)[0])(params)

    return with_jax


@functools.lru_cache(maxsize=None)
def make_gpt_chunk(network: Layer, optimizer: optax.GradientTransformation, steps: int, batch: int, context: int,
                   grads: str = "hand"):
    """``run(params, opt_state, key, ids, start) -> (params, opt_state, losses)``: ``steps``
    training steps from step ``start``, one ``lax.scan``, compiled once."""
    value_and_grads = _loss_and_grads(network, grads)

    def run(params, opt_state, key, ids, start):
        def body(carry, k):
            params, opt_state = carry
            x, t = random_windows(jax.random.fold_in(key, k), ids, batch, context)
            value, g = value_and_grads(params, x, t)
            updates, opt_state = optimizer.update(g, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), start + jnp.arange(steps))
        return params, opt_state, losses

    return jax.jit(run, compiler_options=TRAINING)


@functools.lru_cache(maxsize=None)
def make_gpt_evaluate(network: Layer, batch: int):
    """``evaluate(params, xs, ts) -> mean nats per character`` over the windows ``(K, T)``, in
    batches of ``batch`` windows (the last one padded and its padding not counted)."""

    def evaluate(params, xs, ts):
        k, t = xs.shape
        n = -(-k // batch)
        pad = n * batch - k
        xs = jnp.pad(xs, ((0, pad), (0, 0))).reshape(n, batch, t)
        ts = jnp.pad(ts, ((0, pad), (0, 0)), constant_values=-1).reshape(n, batch, t)  # -1: ignored

        def body(total, window):
            x, y = window
            scores = network.forward(params, x)[0]
            return total + time_softmax_cross_entropy.forward(scores, y)[0] * jnp.sum(y != -1), None

        total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (xs, ts))
        return total / (k * t)

    return jax.jit(evaluate, compiler_options=TRAINING)


class GptFitResult(NamedTuple):
    """What ``fit_gpt`` returns: the last params and opt_state, the ``best_params`` (lowest
    validation bits per character), the step they were taken at and their figure, the history
    (one record per evaluation: ``step``, ``train_loss`` in nats, the mean over the steps since
    the last record, ``val_bits_per_char``, ``seconds`` of training since the start), and whether
    training was interrupted."""

    params: object
    opt_state: object
    best_params: object
    best_step: int
    best_val_bits_per_char: float
    history: list
    interrupted: bool


def fit_gpt(network: Layer, optimizer: optax.GradientTransformation, params, train_ids, val_ids, *, steps: int,
            batch: int, context: int, key, eval_every: int = 250, grads: str = "hand", opt_state=None,
            start_step: int = 0, on_eval: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> GptFitResult:
    """Train ``steps`` steps (from ``start_step``), evaluating every ``eval_every`` steps and at the end."""
    import time

    for arg, value in (("steps", steps), ("batch", batch), ("context", context), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit_gpt: {arg} must be a positive int, got {value!r}")
    if grads not in GRADS:
        raise ValueError(f"fit_gpt: grads must be one of {GRADS}, got {grads!r}")
    if len(train_ids) < context + 1:
        raise TextError(f"fit_gpt: the training text has {len(train_ids)} characters; a window of context {context} "
                        f"and its next character need {context + 1}")
    ids = jnp.asarray(train_ids, jnp.int32)
    vx, vt = (jnp.asarray(a) for a in validation_windows(val_ids, context, "the validation text"))
    if opt_state is None:
        opt_state = optimizer.init(params)
    evaluate = make_gpt_evaluate(network, batch)
    history, best = [], (np.inf, params, start_step)
    done, interrupted, seconds = start_step, False, 0.0
    try:
        while done < steps:
            if should_stop is not None and should_stop():
                interrupted = True
                break
            n = min(eval_every - done % eval_every, steps - done)
            started = time.perf_counter()
            params, opt_state, losses = make_gpt_chunk(network, optimizer, n, batch, context, grads)(
                params, opt_state, key, ids, done)
            losses = np.asarray(losses)
            seconds += time.perf_counter() - started
            done += n
            val = bits_per_char(evaluate(params, vx, vt))
            record = {"step": done, "train_loss": float(np.mean(losses)), "val_bits_per_char": val,
                      "seconds": seconds}
            history.append(record)
            if on_eval is not None:
                on_eval(record)
            if val < best[0]:
                best = (val, params, done)
    except KeyboardInterrupt:
        interrupted = True
    return GptFitResult(params, opt_state, best[1], best[2], best[0], history, interrupted)
