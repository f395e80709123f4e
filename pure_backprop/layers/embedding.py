r"""Embedding: the row of a table for each word id (the sequel's ``Embedding``/``TimeEmbedding``).

Forward, for a table ``W`` of shape ``(V, D)`` (one row per word of a vocabulary of ``V``) and
integer ``ids`` of any shape, ``(N, T)`` for a batch of sequences or ``(N,)`` for one step::

    y[n, t] = W[ids[n, t]]           # y: ids.shape + (D,)

It is the product ``onehot(ids) @ W`` without the one-hot matrix: picking a row costs ``D``
reads where the product would cost ``V * D`` multiply-adds.

Backward. Each output row is a copy of one row of ``W``, so ``dy[n, t, d] / dW[v, d]`` is 1 when
``ids[n, t] == v`` and 0 otherwise, and by the chain rule::

    dW[v] = sum over (n, t) with ids[n, t] == v of dy[n, t]

a scatter-add, ``zeros((V, D)).at[ids].add(dy)`` (the book's ``np.add.at(dW, ids, dy)``). An id
that occurs several times in the batch gets the sum of its rows of ``dy``: the book warns that
the plain assignment ``dW[ids] = dy`` keeps only one of them. A row of ``W`` whose id does not
occur gets exactly 0. The ids are integers, not a point of a continuum, so they have no
gradient; following ``jax.vjp``, which returns a ``float0`` cotangent for an integer input,
``backward`` returns ``dids = np.zeros(ids.shape, jax.dtypes.float0)`` (it is ``dx`` for a
``serial`` that starts with an embedding, and is discarded there).

Ids out of range. NumPy raises for an id ``>= V`` and reads ``W[V + id]`` for a negative id;
JAX's gather clamps an id ``>= V`` to ``V - 1`` and its scatter drops it, so a wrong id would
silently read a wrong row and train another. Here an id is valid when ``0 <= id < V``, a
negative id included (``-1`` is the ignore label of ``time_softmax_cross_entropy``; read as
"the last word" it would hide a bug). Concrete ids (not traced under ``jit``/``vmap``) are
checked eagerly and an id out of range raises ``ValueError``. Traced ids cannot be checked in
Python: an invalid one gives a row of NaN in ``y`` (so the loss is NaN, not wrong), and adds
nothing to ``dW`` (the derivative of that constant NaN row, as ``jax.vjp`` has it).

Initialization. The default ``w_init`` is the book's: a normal of std 0.01 (``weight_init("book")``)
for the language models of its chapters 5-7, where an LSTM or affine layer with its own scale
follows. Others in use are ``N(0, 1)`` (PyTorch's ``nn.Embedding``) and ``std 1 / sqrt(D)``
(flax's ``nn.Embed``); pass one as ``w_init(key, shape, dtype)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import require_rank
from ..core import Layer, is_traced
from ..initializers import weight_init
from .softmax_cross_entropy import require_array, require_floating

NAME = "embedding"


def require_ids(name: str, arg: str, ids, size: int, allowed: int | None = None):
    """``ids`` is an integer array; concrete entries lie in ``[0, size)`` (or equal ``allowed``)."""
    require_array(name, arg, ids)
    kind = jnp.result_type(ids)
    if not jnp.issubdtype(kind, jnp.integer):
        raise ValueError(f"{name}: {arg} must have an integer dtype, got dtype {kind}; "
                         f"cast with {arg}.astype(jnp.int32)")
    if is_traced(ids) or not jnp.size(ids):
        return
    concrete = np.asarray(ids)
    bad = (concrete < 0) | (concrete >= size)
    if allowed is not None:
        bad &= concrete != allowed
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        also = "" if allowed is None else f" (or be {allowed}, ignored)"
        raise ValueError(f"{name}: {arg} must lie in [0, {size}){also}, got {concrete[where]} at index {where} "
                         f"of {arg} shape {concrete.shape}")


def embedding(vocab_size: int, dim: int, w_init=None) -> Layer:
    """A table of ``vocab_size`` rows of ``dim`` entries, looked up by integer ids.

    ``init(key, ids_shape, dtype)`` returns ``{"W": (vocab_size, dim)}`` and the output shape
    ``ids_shape + (dim,)``; ``w_init(key, shape, dtype)`` defaults to a normal of std 0.01.
    ``forward(params, ids) -> (W[ids], ids)``; ``backward(params, ids, dy) -> ({"W": dW}, dids)``
    with ``dids`` a ``float0`` array of ``ids.shape`` (see the module docstring).
    """
    for arg, value in (("vocab_size", vocab_size), ("dim", dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{NAME}: {arg} must be a positive int, got {value!r}")
    w_init = w_init or weight_init("book")

    def init(key, in_shape, dtype=jnp.float32):
        return {"W": w_init(key, (vocab_size, dim), dtype)}, tuple(in_shape) + (dim,)

    return Layer(init, forward, backward)


def _table(params):
    if not isinstance(params, dict) or set(params) != {"W"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{NAME}: params must be a dict with the key ['W'], got {got}")
    W = params["W"]
    require_floating(NAME, "W", W)
    require_rank(NAME, "W", W, rank=2, hint=" (vocabulary, dim)")
    return W


def forward(params, ids):
    W = _table(params)
    require_ids(NAME, "ids", ids, W.shape[0])
    ids = jnp.asarray(ids)
    valid = (ids >= 0) & (ids < W.shape[0])
    rows = jnp.take(W, jnp.where(valid, ids, 0), axis=0, mode="clip")  # in range by now: clip changes nothing
    return jnp.where(valid[..., None], rows, jnp.nan), ids


def backward(params, ids, dy):
    W = _table(params)
    expected = tuple(jnp.shape(ids)) + (W.shape[1],)
    if jnp.shape(dy) != expected:
        raise ValueError(f"{NAME}: dy shape {jnp.shape(dy)} does not match output shape {expected} "
                         f"(ids shape {jnp.shape(ids)} + (D,), W.shape={W.shape})")
    valid = (ids >= 0) & (ids < W.shape[0])
    # accumulated in the common dtype of W and dy, returned in W's (as jax.vjp does)
    dW = jnp.zeros(W.shape, jnp.result_type(W, dy)).at[jnp.where(valid, ids, 0)].add(jnp.where(valid[..., None], dy, 0))
    return {"W": dW.astype(W.dtype)}, np.zeros(jnp.shape(ids), jax.dtypes.float0)
