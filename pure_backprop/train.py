"""Training with the hand-written gradients: a jit-compiled step, an epoch as one
compiled ``lax.scan`` over shuffled batches, and batched evaluation over every sample.

Any ``optax.GradientTransformation`` drives the update; the gradients come from
``loss_and_grads`` (the hand-written backward), never from ``jax.grad``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from .core import Layer, Loss, loss_and_grads

OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr: optax.adagrad(lr),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adam": lambda lr: optax.adam(lr),
}


def make_step(network: Layer, loss: Loss, optimizer: optax.GradientTransformation):
    """The un-jitted step ``(params, opt_state, batch) -> (params, opt_state, loss)``."""

    def step(params, opt_state, batch):
        x, targets = batch
        value, grads = loss_and_grads(network, loss, params, x, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def make_train_step(network: Layer, loss: Loss, optimizer: optax.GradientTransformation):
    """A jit-compiled ``(params, opt_state, batch) -> (params, opt_state, loss)``."""
    return jax.jit(make_step(network, loss, optimizer))


def make_train_epoch(network: Layer, loss: Loss, optimizer: optax.GradientTransformation, batch_size: int,
                     augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None):
    """A jit-compiled ``(params, opt_state, key, x, targets) -> (params, opt_state, losses)``.

    The samples are shuffled with ``key`` and cut into ``len(x) // batch_size`` batches
    that one ``lax.scan`` runs through; the remainder of fewer than ``batch_size`` samples
    sits out this epoch (a different remainder each epoch, since the shuffle changes).
    ``augment(key, x_batch) -> x_batch`` (e.g. ``augment.affine_augmenter``), if given, is
    applied to each batch with its own key split from ``key``.
    """
    step = make_step(network, loss, optimizer)

    def epoch(params, opt_state, key, x, targets):
        n = x.shape[0]
        if n < batch_size:
            raise ValueError(f"train: batch size {batch_size} exceeds the {n} training samples")
        key_order, key_augment = jax.random.split(key) if augment is not None else (key, None)
        batches = jax.random.permutation(key_order, n)[: (n // batch_size) * batch_size].reshape(-1, batch_size)
        keys = None if augment is None else jax.random.split(key_augment, batches.shape[0])

        def body(carry, batch):
            params, opt_state = carry
            index, key = batch
            xb = x[index] if augment is None else augment(key, x[index])
            params, opt_state, value = step(params, opt_state, (xb, targets[index]))
            return (params, opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (batches, keys))
        return params, opt_state, losses

    return jax.jit(epoch)


def make_evaluate(network: Layer, loss: Loss, batch_size: int):
    """A jit-compiled ``(params, x, labels) -> (mean loss, accuracy)`` over *every* sample.

    The data are padded up to a whole number of batches and the padding is masked out, so
    the last partial batch counts exactly once. ``labels`` are integer class labels.
    """

    def evaluate(params, x, labels):
        n = x.shape[0]
        pad = (-n) % batch_size
        xs = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((-1, batch_size) + x.shape[1:])
        ys = jnp.concatenate([labels, jnp.zeros((pad,), labels.dtype)]).reshape(-1, batch_size)
        mask = (jnp.arange(n + pad) < n).reshape(-1, batch_size)

        def body(totals, batch):
            xb, yb, mb = batch
            scores = network.forward(params, xb)[0]
            per_sample = jax.vmap(lambda s, y: loss.forward(s[None], y[None])[0])(scores, yb)
            correct = jnp.argmax(scores, axis=1) == yb
            batch_loss = jnp.sum(jnp.where(mb, per_sample, 0)).astype(jnp.float32)
            batch_correct = jnp.sum(correct & mb).astype(jnp.float32)
            return (totals[0] + batch_loss, totals[1] + batch_correct), None

        zero = jnp.zeros((), jnp.float32)
        (total_loss, total_correct), _ = jax.lax.scan(body, (zero, zero), (xs, ys, mask))
        return total_loss / n, total_correct / n

    return jax.jit(evaluate)
