"""Training a ``seq2seq`` network on a generated task (``tasks.make_task``): teacher forcing with
the hand backward, epochs of shuffled batches in one compiled ``lax.scan``, and the exact match of
greedy decoding on the validation split after each epoch, with the validation loss (teacher forced,
as in training) to break its ties.

Epoch ``e`` (counted from 0) shuffles with ``train.epoch_key(key, e)``, as ``train.fit`` does: a
function of the run's key and the epoch alone. The loss is ``time_softmax_cross_entropy``, the
mean over the answer's characters (padding spaces included: the model must also say where the
answer ends). **Exact match** is the fraction of questions whose greedy answer (``seq2seq.greedy_decode``,
every character fed back) equals the true answer character for character, padding included.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .core import loss_and_grads
from .layers.time_softmax_cross_entropy import time_softmax_cross_entropy
from .seq2seq import Seq2seqNetwork, greedy_decode
from .tasks import START, SequenceTask, decoder_io
from .train import TRAINING, epoch_batches, epoch_key


class Seq2seqFitResult(NamedTuple):
    """The last params and opt_state, the ``best_params`` with their epoch, the history
    (``epoch``, ``train_loss``, ``val_exact_match``, ``val_loss`` per epoch), and whether the run
    was interrupted (``best_val_exact_match`` is ``-inf`` if no epoch ran, ``best_params`` the
    params given). The best epoch has the highest validation exact match and, among epochs
    tied on it, the lowest validation loss: exact match is coarse near 100 % (one question of
    5,000 is 0.02 %), where several epochs tie and the loss still tells them apart."""

    params: object
    opt_state: object
    best_params: object
    best_epoch: int
    best_val_exact_match: float
    history: list
    interrupted: bool


@functools.lru_cache(maxsize=None)
def make_seq2seq_epoch(network: Seq2seqNetwork, optimizer: optax.GradientTransformation, batch_size: int):
    """``epoch(params, opt_state, key, questions, answers) -> (params, opt_state, losses)``: one
    shuffled pass of ``len(questions) // batch_size`` teacher-forced steps."""

    def epoch(params, opt_state, key, questions, answers):
        batches = epoch_batches(key, questions.shape[0], batch_size)

        def body(carry, index):
            params, opt_state = carry
            inputs, targets = decoder_io(answers[index])
            value, grads = loss_and_grads(network, time_softmax_cross_entropy, params, (questions[index], inputs),
                                          targets)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, losses

    return jax.jit(epoch, compiler_options=TRAINING)


@functools.lru_cache(maxsize=None)
def make_seq2seq_loss(network: Seq2seqNetwork):
    """``loss(params, questions, answers) -> mean cross entropy``: teacher forced, as in training."""

    def loss(params, questions, answers):
        inputs, targets = decoder_io(answers)
        scores, _ = network.forward(params, (questions, inputs))
        return time_softmax_cross_entropy.forward(scores, targets)[0]

    return jax.jit(loss, compiler_options=TRAINING)


@functools.lru_cache(maxsize=None)
def _decoder(network: Seq2seqNetwork, start_id: int, length: int):
    return jax.jit(lambda params, questions: greedy_decode(network, params, questions, start_id, length))


def decode_answers(network: Seq2seqNetwork, params, questions, vocab: str, length: int, batch: int = 1000):
    """Greedy answers ``(N, length)`` for ``questions``, in batches of ``batch`` (the last one
    padded to the same size, so one compiled program serves all)."""
    run = _decoder(network, vocab.index(START), length)
    questions = np.asarray(questions)
    out = []
    for i in range(0, len(questions), batch):
        chunk = questions[i:i + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)]) if len(chunk) < batch else chunk
        out.append(np.asarray(run(params, jnp.asarray(padded)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, length), np.int32)


def exact_match(network: Seq2seqNetwork, params, questions, answers, vocab: str, batch: int = 1000) -> float:
    """The fraction of ``questions`` whose greedy answer equals ``answers[:, 1:]`` exactly."""
    answers = np.asarray(answers)
    if len(answers) == 0:
        raise ValueError("exact_match: no examples to score")
    decoded = decode_answers(network, params, questions, vocab, answers.shape[1] - 1, batch)
    return float(np.mean(np.all(decoded == answers[:, 1:], axis=1)))


def fit_seq2seq(network: Seq2seqNetwork, optimizer: optax.GradientTransformation, params, task: SequenceTask, *,
                epochs: int, batch_size: int, key, opt_state=None, start_epoch: int = 0,
                on_epoch: Callable[[dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> Seq2seqFitResult:
    """Train ``epochs`` epochs (from ``start_epoch``) on ``task``'s training split, scoring the
    validation split's exact match after each."""
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit_seq2seq: {arg} must be a positive int, got {value!r}")
    if batch_size > len(task.x_train):
        raise ValueError(f"fit_seq2seq: batch_size {batch_size} is larger than the {len(task.x_train)} training examples")
    epoch_fn = make_seq2seq_epoch(network, optimizer, batch_size)
    questions, answers = jnp.asarray(task.x_train), jnp.asarray(task.t_train)
    if opt_state is None:
        opt_state = optimizer.init(params)
    val_loss = make_seq2seq_loss(network)
    history, best, interrupted = [], ((-np.inf, -np.inf), params, start_epoch), False
    try:
        for e in range(start_epoch, epochs):
            if should_stop is not None and should_stop():
                interrupted = True
                break
            params, opt_state, losses = epoch_fn(params, opt_state, epoch_key(key, e), questions, answers)
            record = {"epoch": e + 1, "train_loss": float(jnp.mean(losses)),
                      "val_exact_match": exact_match(network, params, task.x_val, task.t_val, task.vocab),
                      "val_loss": float(val_loss(params, jnp.asarray(task.x_val), jnp.asarray(task.t_val)))}
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            score = (record["val_exact_match"], -record["val_loss"])
            if score > best[0]:
                best = (score, params, e + 1)
    except KeyboardInterrupt:
        interrupted = True
    return Seq2seqFitResult(params, opt_state, best[1], best[2], best[0][0], history, interrupted)
