"""Text for character language models: the English help text that every CPython installation
ships (the default, no download), or a user's own UTF-8 file, as ids and windows.

The default corpus is ``pydoc_data.topics.topics`` (what ``help("assert")`` prints): its topics
joined in sorted key order, about 465,000 characters of English prose and code examples over
about 100 distinct characters. It changes with the Python release, even with the patch level, so
``TextCorpus`` carries its size and SHA-256 (a run records them in ``metrics.json``): two runs on
different Pythons read different text and their figures are not comparable blindly.

The split is contiguous: the first 90 % trains, the last 10 % validates (a random split of
windows would validate on text overlapping the training windows). The vocabulary is every
distinct character of the whole text, sorted; a character that occurs only in the validation part
is then a known id, never an error.

Batches follow the sequel's ``RnnlmTrainer`` (truncated backprop through time): the training ids
are cut into ``batch`` contiguous streams of equal length; window ``k`` of stream ``n`` holds
characters ``k * T ... k * T + T - 1`` of that stream, and its targets are the same positions plus
one. One window after the other, each stream reads its text in order, so the recurrent state at
the end of window ``k`` is the right start for window ``k + 1``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

DEFAULT_TEXT = "python-help"


class TextError(ValueError):
    """A text file that cannot be used: unreadable, not UTF-8, empty or too short."""


class TextCorpus(NamedTuple):
    """A text as int32 ids: ``train`` and ``val`` (contiguous), ``vocab`` (id ``i`` is
    character ``vocab[i]``), ``name``, ``characters`` (of the whole text) and ``sha256`` (of its
    UTF-8 bytes)."""

    train: np.ndarray
    val: np.ndarray
    vocab: str
    name: str
    characters: int
    sha256: str


def default_text() -> str:
    """The help topics of the running Python (``pydoc_data.topics``), joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def read_text(path) -> str:
    """The UTF-8 text of ``path``; ``TextError`` naming the file if it is missing, empty or not
    UTF-8 (with the byte offset of the first bad byte)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TextError(f"{path}: cannot read ({e.strerror or e})") from None
    if not raw:
        raise TextError(f"{path}: the file is empty; a language model needs text to train on")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}, {e.reason}); "
                        "save it as UTF-8") from None


def make_corpus(text: str, name: str, validation: float = 0.1) -> TextCorpus:
    """``text`` as ids, its last ``validation`` fraction (rounded to a character) held out."""
    if isinstance(validation, bool) or not isinstance(validation, (int, float)) or not 0 < validation < 1:
        raise ValueError(f"make_corpus: validation must be a fraction in (0, 1), got {validation!r}")
    if len(text) < 2:
        raise TextError(f"{name}: {len(text)} characters; a language model needs at least 2 (an input and its next)")
    vocab = "".join(sorted(set(text)))
    table = np.zeros(ord(max(vocab)) + 1, np.int32)
    table[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    ids = table[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    n_val = min(max(1, round(validation * len(text))), len(text) - 1)
    return TextCorpus(ids[:-n_val], ids[-n_val:], vocab, name, len(text),
                      hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_text(path=None, validation: float = 0.1) -> TextCorpus:
    """The corpus of ``path`` (a UTF-8 file), or the default help text when ``path`` is ``None``."""
    if path is None:
        return make_corpus(default_text(), DEFAULT_TEXT, validation)
    return make_corpus(read_text(path), str(path), validation)


def encode(vocab: str, text: str) -> np.ndarray:
    """``text`` as int32 ids of ``vocab``; ``ValueError`` naming the characters it lacks."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise ValueError(f"encode: characters not in the model's vocabulary: {''.join(unknown)!r}")
    return np.array([index[c] for c in text], np.int32)


def decode(vocab: str, ids) -> str:
    """The characters of ``ids``."""
    return "".join(vocab[i] for i in np.asarray(ids).reshape(-1).tolist())


def windows(ids: np.ndarray, batch: int, length: int, what: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """``(xs, ts)``, each ``(K, batch, length)`` int32: ``ids`` cut into ``batch`` contiguous
    streams of ``K * length + 1`` characters, window ``k`` of stream ``n`` its characters
    ``k * length ...`` and the targets those one further on. The last ``len(ids) - batch * (K *
    length + 1)`` characters (fewer than ``batch * length + batch``) are in no window; a text too
    short for one window per stream raises ``TextError`` naming the sizes."""
    for arg, value in (("batch", batch), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"windows: {arg} must be a positive int, got {value!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"windows: ids must be one sequence (1 axis), got shape {ids.shape}")
    k = (len(ids) // batch - 1) // length
    if k < 1:
        raise TextError(f"{what}: {len(ids)} characters are too short for {batch} streams of one window of {length} "
                        f"(and its next character): it needs at least {batch * (length + 1)}; use a shorter "
                        "sequence length or a smaller batch")
    streams = ids[:batch * (k * length + 1)].reshape(batch, k * length + 1)
    xs = streams[:, :-1].reshape(batch, k, length).transpose(1, 0, 2)
    ts = streams[:, 1:].reshape(batch, k, length).transpose(1, 0, 2)
    return np.ascontiguousarray(xs, np.int32), np.ascontiguousarray(ts, np.int32)


def bits_per_char(mean_nats: float) -> float:
    """A mean cross entropy in nats per character as bits per character (divided by ln 2)."""
    return float(mean_nats) / float(np.log(2.0))
