"""Run folders of the sequence models (``pure-backprop train --model lstm-lm`` or
``--model attention-seq2seq``): what they hold, how to load one, and what a loaded run does.

A sequence run folder holds:

* ``metrics.json``: the run's ``options`` (everything needed to rebuild the network: ``model``,
  ``dataset``, ``vocab``, ``embed``, ``hidden``, ...), its figures (``val_bits_per_char`` for a
  language model; ``val_exact_match`` and ``test_exact_match`` for a seq2seq model), the
  validation history, and for text the file's size and SHA-256 (the default text is the running
  Python's help topics, which change with the Python release: compare runs only on the same text).
* ``params.npz``: the parameters of the best validation figure (the ones the figures and the
  commands below use), keys like ``params/embed/W`` (``train.as_numpy_tree``).
* ``curves.png``, and ``attention.png`` for ``attention-seq2seq``.

``load_sequence_run(folder)`` gives a ``SequenceRun``; ``generate`` samples text from a language
model's run and ``answer`` answers questions with a seq2seq run.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

LANGUAGE_MODELS = {"rnn-lm": "rnn", "lstm-lm": "lstm", "gru-lm": "gru"}
GPT_MODELS = ("gpt",)
TEXT_MODELS = (*LANGUAGE_MODELS, *GPT_MODELS)  # the models that read and write text: generate serves them
SEQ2SEQ_MODELS = {"seq2seq": "plain", "peeky-seq2seq": "peeky", "attention-seq2seq": "attention"}
SEQUENCE_MODELS = (*LANGUAGE_MODELS, *GPT_MODELS, *SEQ2SEQ_MODELS)


class SequenceRunError(ValueError):
    """A folder that is not a readable sequence run, or a request the run cannot serve."""


class SequenceRun(NamedTuple):
    """A loaded sequence run: its ``network``, its best ``params``, its ``options`` and the folder."""

    network: object
    params: object
    options: dict
    folder: Path


def sequence_network(options: dict):
    """The network of a sequence run's options (``language_model`` or ``seq2seq``)."""
    model = options["model"]
    if model in LANGUAGE_MODELS:
        from .language_model import language_model

        return language_model(len(options["vocab"]), options["embed"], options["hidden"], LANGUAGE_MODELS[model],
                              options["dropout"], options["tie"])
    if model in GPT_MODELS:
        from .gpt import gpt

        return gpt(len(options["vocab"]), options["seq_length"], options["layers"], options["heads"], options["width"])
    if model in SEQ2SEQ_MODELS:
        from .seq2seq import seq2seq

        return seq2seq(len(options["vocab"]), options["embed"], options["hidden"], SEQ2SEQ_MODELS[model])
    raise SequenceRunError(f"model {model!r} is not a sequence model; choose one of {', '.join(SEQUENCE_MODELS)}")


def init_shape(options: dict, batch: int = 1):
    """The ``in_shape`` the network of ``options`` is initialized with (any batch serves)."""
    if options["model"] in TEXT_MODELS:
        return (batch, options["seq_length"])
    from .tasks import _WIDTHS

    question, answer = _WIDTHS[options["dataset"]]
    return ((batch, question), (batch, answer - 1))


def is_sequence_run(folder) -> bool:
    """Whether ``folder``'s ``metrics.json`` names a sequence model (``False`` if unreadable)."""
    try:
        options = json.loads((Path(folder) / "metrics.json").read_text())["options"]
        return options["model"] in SEQUENCE_MODELS
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_sequence_run(folder) -> SequenceRun:
    """The run in ``folder``: its options from ``metrics.json``, its params from ``params.npz``
    (each array checked against the network the options build); ``SequenceRunError`` naming the
    file otherwise."""
    import jax

    from .runs import RunError, _tree_from_arrays

    folder = Path(folder)
    metrics_path, params_path = folder / "metrics.json", folder / "params.npz"
    if not folder.is_dir():
        raise SequenceRunError(f"{folder}: no such folder; give a run folder written by pure-backprop train")
    try:
        options = json.loads(metrics_path.read_text())["options"]
        network = sequence_network(options)
        like = jax.eval_shape(lambda k: network.init(k, init_shape(options))[0], jax.random.PRNGKey(0))
    except OSError as e:
        raise SequenceRunError(f"{metrics_path}: cannot read ({e.strerror or e})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise SequenceRunError(f"{metrics_path}: not the metrics of a sequence run ({type(e).__name__}: {e})") from None
    try:
        with np.load(params_path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except OSError as e:
        raise SequenceRunError(f"{params_path}: cannot read ({e.strerror or e})") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise SequenceRunError(f"{params_path}: not a readable npz, truncated or damaged ({e})") from None
    try:
        params = _tree_from_arrays(arrays, "params", like, str(params_path))
    except RunError as e:
        raise SequenceRunError(str(e)) from None
    return SequenceRun(network, params, options, folder)


# --- what a run does ---------------------------------------------------------------------


def _require(run: SequenceRun, kind: str, command: str):
    models = TEXT_MODELS if kind == "language model" else SEQ2SEQ_MODELS
    if run.options["model"] not in models:
        other = "generate" if run.options["model"] in TEXT_MODELS else "predict"
        raise SequenceRunError(f"{run.folder}: {command} needs a {kind} run; this run is {run.options['model']}; "
                               f"use 'pure-backprop {other}'")


def generate(run: SequenceRun, prompt: str, length: int, temperature: float = 1.0, seed: int = 0,
             top_k: int | None = None) -> str:
    """``length`` characters a language model's run writes after ``prompt``: the prompt read from
    a zero state (a GPT: its last ``context`` characters), then each character drawn from
    ``softmax(scores / temperature)`` (``temperature 0``: the most likely one) and fed back. With
    ``top_k = K`` only the ``K`` highest scores can be drawn (ties at the K-th score kept). A prompt
    with characters the run's vocabulary lacks raises ``SequenceRunError`` naming them."""
    _require(run, "language model", "generate")
    if not prompt:
        raise SequenceRunError("generate: the prompt is empty; give at least one character to start from")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise SequenceRunError(f"generate: length must be an int >= 0, got {length!r}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature >= 0):
        raise SequenceRunError(f"generate: temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise SequenceRunError(f"generate: top_k must be a positive int or None, got {top_k!r}")
    vocab = run.options["vocab"]
    unknown = sorted(set(prompt) - set(vocab))
    if unknown:
        raise SequenceRunError(f"generate: the prompt has characters the run's text never had: {''.join(unknown)!r}")
    prompt_ids = np.array([[vocab.index(c) for c in prompt]], np.int32)
    top_k = None if top_k is None or top_k >= len(vocab) else top_k  # every character: no cut
    if run.options["model"] in GPT_MODELS:
        ids = _sample_gpt(run.network, run.params, prompt_ids, run.options["seq_length"], length, float(temperature),
                          seed, top_k)
    else:
        ids = _sample(run.network, run.params, prompt_ids, length, float(temperature), seed, top_k)
    return "".join(vocab[i] for i in ids)


def _draw(scores, key, temperature, top_k):
    """One id per row of ``scores`` (N, V): the argmax at temperature 0, else drawn from
    ``softmax(scores / temperature)`` over the ``top_k`` highest scores (all with ``None``)."""
    import jax
    import jax.numpy as jnp

    if temperature == 0:
        return jnp.argmax(scores, axis=-1).astype(jnp.int32)
    if top_k is not None:
        kth = jax.lax.top_k(scores, top_k)[0][:, -1:]
        scores = jnp.where(scores < kth, -jnp.inf, scores)
    return jax.random.categorical(key, scores / temperature, axis=-1).astype(jnp.int32)


def _sample_gpt(network, params, prompt_ids, context, length, temperature, seed, top_k):
    import jax
    import jax.numpy as jnp

    prompt = prompt_ids[0, -context:]  # a GPT reads at most its context
    window = np.zeros((1, context), np.int32)
    window[0, :len(prompt)] = prompt
    return np.asarray(_gpt_sampler(network, context, length, temperature, top_k)(
        params, jnp.asarray(window), len(prompt), jax.random.PRNGKey(seed))).tolist()


@functools.lru_cache(maxsize=None)
def _gpt_sampler(network, context, length, temperature, top_k):
    """One compiled program per network, length, temperature and top-k. The window holds the last
    ``context`` characters from its start; the scores at its last filled position depend on the
    positions up to it only (the attention is causal), so what lies after it does not matter."""
    import jax
    import jax.numpy as jnp

    def run(params, window, filled, key):
        def step(carry, k):
            window, filled = carry
            scores = network.forward(params, window)[0][:, filled - 1]
            token = _draw(scores, k, temperature, top_k)
            full = filled == context
            window = jnp.where(full, jnp.roll(window, -1, axis=1), window)  # drop the oldest when full
            window = window.at[0, jnp.where(full, context - 1, filled)].set(token[0])
            return (window, jnp.minimum(filled + 1, context)), token[0]

        _, tokens = jax.lax.scan(step, (window, filled), jax.random.split(key, length))
        return tokens

    return jax.jit(run)


def _sample(network, params, prompt_ids, length, temperature, seed, top_k=None):
    import jax
    import jax.numpy as jnp

    state_shapes = jax.eval_shape(lambda k: network.init(k, prompt_ids.shape)[1], jax.random.PRNGKey(0))
    state = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), state_shapes)
    return np.asarray(_sampler(network, length, temperature, top_k)(params, state, jnp.asarray(prompt_ids),
                                                                   jax.random.PRNGKey(seed))).tolist()


@functools.lru_cache(maxsize=None)
def _sampler(network, length, temperature, top_k=None):
    """One compiled program per network, length, temperature and top-k."""
    import jax
    import jax.numpy as jnp

    def run(params, state, prompt, key):
        scores, state, _ = network.forward(params, state, prompt, None, False)

        def step(carry, k):
            last, state = carry
            token = _draw(last, k, temperature, top_k)
            scores, state, _ = network.forward(params, state, token[:, None], None, False)
            return (scores[:, -1], state), token[0]

        _, tokens = jax.lax.scan(step, (scores[:, -1], state), jax.random.split(key, length))
        return tokens

    return jax.jit(run)


def answer(run: SequenceRun, questions: list[str]) -> list[str]:
    """The greedy answers of a seq2seq run to ``questions`` (written as the task writes them,
    reversed for the network when the run was trained reversed); ``SequenceRunError`` naming a
    question that is too long or has characters outside the task's vocabulary."""
    from .tasks import _WIDTHS, decode, encode_questions
    from .train_seq2seq import decode_answers

    _require(run, "seq2seq", "predict")
    task = run.options["dataset"]
    try:
        ids = encode_questions(task, list(questions), run.options["reverse"])
    except ValueError as e:
        raise SequenceRunError(str(e)) from None
    decoded = decode_answers(run.network, run.params, ids, run.options["vocab"], _WIDTHS[task][1] - 1,
                             batch=min(1000, max(1, len(ids))))
    return [decode(run.options["vocab"], row) for row in decoded]
