"""Networks built from the layers: the book's multi-layer perceptron as ``serial``."""

from __future__ import annotations

import jax

from .core import Layer, serial
from .layers import affine, relu, sigmoid, tanh

ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh}

# He initialisation for ReLU, Xavier (Glorot) for the saturating activations (book, ch. 6).
_WEIGHT_INIT = {
    "relu": jax.nn.initializers.he_normal(),
    "sigmoid": jax.nn.initializers.glorot_normal(),
    "tanh": jax.nn.initializers.glorot_normal(),
}


def mlp(hidden: tuple[int, ...] | list[int], out_dim: int, activation: str = "relu") -> Layer:
    """``affine -> activation`` for each hidden width, then a last ``affine`` to ``out_dim`` scores.

    ``mlp((50,), 10)`` is the book's TwoLayerNet; the loss is kept apart (see ``Loss``).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    widths = list(hidden)
    if any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"mlp: hidden widths must be positive ints, got {widths}")
    w_init = _WEIGHT_INIT[activation]
    layers = []
    for width in widths:
        layers += [affine(width, w_init=w_init), ACTIVATIONS[activation]]
    layers.append(affine(out_dim, w_init=w_init))
    return serial(*layers)
