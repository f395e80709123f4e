r"""Weight decay (the book's chapter 6.4.1): an L2 penalty on the weight matrices, added to the loss.

Over the leaves named ``W`` (the weights of ``affine`` and of the convolutions), never over
biases, batch norm's ``gamma``/``beta`` or running averages::

    P  = 0.5 * lambda * sum_W sum(W**2)
    dP/dW = lambda * W               # d(0.5 w^2)/dw = w, entry by entry; 0 for every other leaf

``loss_and_grads(..., weight_decay=lambda)`` and the trainers add ``P`` to the loss and
``lambda * W`` to each weight's gradient (the book's ``grad += lambda * W``; the same as
``optax.add_decayed_weights(lambda, mask)`` before SGD). ``with_weight_decay(layer, lambda)``
adds the penalty to a layer whose output is the scalar loss, so that the penalized loss
can be checked like any layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..core import Layer


def is_weight(path) -> bool:
    """True for a leaf whose last key is ``"W"``."""
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and last.key == "W"


def _check(weight_decay):
    if isinstance(weight_decay, jax.Array):  # traced (a vmapped sweep over lambda): nothing to check here
        return
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay: lambda must be a finite float >= 0, got {weight_decay!r}")


def penalty(params, weight_decay: float):
    """``0.5 * lambda * sum(W**2)`` over the weight leaves of ``params``."""
    _check(weight_decay)
    leaves = [w for path, w in jax.tree_util.tree_flatten_with_path(params)[0] if is_weight(path)]
    return 0.5 * weight_decay * sum((jnp.sum(w * w) for w in leaves), jnp.zeros(()))


def penalty_grads(params, weight_decay: float):
    """``lambda * W`` for the weight leaves, zeros for the others: shaped like ``params``."""
    _check(weight_decay)
    return jax.tree_util.tree_map_with_path(
        lambda path, p: weight_decay * p if is_weight(path) else jnp.zeros_like(p), params)


def with_weight_decay(layer: Layer, weight_decay: float) -> Layer:
    """``layer`` (whose output is a scalar loss) plus the penalty on its params.

    forward: ``L + P(params)``;  backward: the layer's grads plus ``dL * lambda * W``.
    """
    _check(weight_decay)

    def forward(params, x):
        y, residuals = layer.forward(params, x)
        if jnp.shape(y) != ():
            raise ValueError(f"with_weight_decay: the layer must output a scalar loss, got shape {jnp.shape(y)}")
        return y + penalty(params, weight_decay), residuals

    def backward(params, residuals, dloss):
        grads, dx = layer.backward(params, residuals, dloss)
        decay = penalty_grads(params, weight_decay)
        return jax.tree_util.tree_map(lambda g, d: g + dloss * d, grads, decay), dx

    return Layer(layer.init, forward, backward)
