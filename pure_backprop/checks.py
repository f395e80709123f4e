"""Shape and argument checks shared by the layers: they run at trace time, in Python,
and raise ``ValueError`` naming the layer, the argument and the shapes."""

from __future__ import annotations

import jax.numpy as jnp


def require_rank(layer: str, arg: str, x, rank: int | None = None, min_rank: int | None = None, hint: str = ""):
    """``x`` has exactly ``rank`` axes, or at least ``min_rank``."""
    shape = jnp.shape(x)
    if rank is not None and len(shape) != rank:
        raise ValueError(f"{layer}: {arg} must have {rank} axes, got shape {shape}{hint}")
    if min_rank is not None and len(shape) < min_rank:
        raise ValueError(f"{layer}: {arg} must have at least {min_rank} axes, got shape {shape}{hint}")


def require_same_shape(layer: str, arg_a: str, a, arg_b: str, b):
    """``a`` and ``b`` have identical shapes (nothing is broadcast silently)."""
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{layer}: {arg_a} shape {jnp.shape(a)} does not match {arg_b} shape {jnp.shape(b)}"
        )


def require_pair(layer: str, x):
    """Two-input nodes take ``x = (a, b)``."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(f"{layer}: x must be a pair (a, b) of arrays, got {type(x).__name__}")
    return x
