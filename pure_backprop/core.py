"""The layer protocol: a layer is three pure functions, and a network is a layer.

A ``Layer`` is a NamedTuple ``(init, forward, backward)``, in the spirit of stax's
``(init_fun, apply_fun)`` and of the ``fwd``/``bwd`` pair of ``jax.custom_vjp``::

    params, out_shape = layer.init(key, in_shape)        # in_shape includes the batch axis
    y, residuals      = layer.forward(params, x)
    grads, dx         = layer.backward(params, residuals, dy)

``grads`` has the pytree structure of ``params`` and ``dx`` that of ``x``. Parameter-free
layers have ``params == ()`` and ``grads == ()``. Every function is pure: no state is
kept between calls, so all three work under ``jax.jit`` and ``jax.vmap``.

A ``Loss`` is the pair ``(forward, backward)`` for the last node of a network, the one
that also needs targets (labels)::

    loss, residuals = loss.forward(scores, targets)      # loss is a scalar
    dscores         = loss.backward(residuals, dloss)    # dloss is 1.0 to start backprop

``with_targets(loss, targets)`` binds the targets and turns a loss into a ``Layer``, so
that everything that checks or composes layers works on losses too.
``loss_and_grads(network, loss, params, x, targets)`` runs the whole forward pass and the
hand-written backward pass and returns ``(loss, grads)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Layer(NamedTuple):
    """Three pure functions: ``init(key, in_shape)``, ``forward(params, x)``,
    ``backward(params, residuals, dy)``."""

    init: Callable[[jax.Array, Any], tuple[Any, Any]]
    forward: Callable[[Any, Any], tuple[Any, Any]]
    backward: Callable[[Any, Any, Any], tuple[Any, Any]]


class Loss(NamedTuple):
    """Two pure functions: ``forward(scores, targets) -> (loss, residuals)`` and
    ``backward(residuals, dloss) -> dscores``."""

    forward: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]
    backward: Callable[[Any, jax.Array], jax.Array]


def no_params(key, in_shape):
    """``init`` of a parameter-free, shape-preserving layer."""
    del key
    return (), in_shape


def serial(*layers: Layer) -> Layer:
    """Compose layers in order: the network is itself a ``Layer``.

    forward:  ``x_{i+1} = layer_i.forward(params[i], x_i)``, residuals kept per layer.
    backward: the chain rule, ``(grads[i], dx_i) = layer_i.backward(params[i], r_i, dx_{i+1})``
    run from the last layer to the first; ``grads`` is a tuple with one entry per layer.
    Shape errors raised inside a layer are re-raised naming its position in the network.
    """
    if not layers:
        raise ValueError("serial: needs at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"serial: argument {i} is a {type(layer).__name__}, not a Layer")

    def init(key, in_shape):
        params, shape = [], in_shape
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, len(layers)))):
            with _located(i):
                p, shape = layer.init(k, shape)
            params.append(p)
        return tuple(params), shape

    def forward(params, x):
        _check_params_length(params, len(layers))
        residuals = []
        for i, (layer, p) in enumerate(zip(layers, params)):
            with _located(i):
                x, r = layer.forward(p, x)
            residuals.append(r)
        return x, tuple(residuals)

    def backward(params, residuals, dy):
        _check_params_length(params, len(layers))
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            with _located(i):
                grads[i], dy = layers[i].backward(params[i], residuals[i], dy)
        return tuple(grads), dy

    return Layer(init, forward, backward)


class _located:
    """Prefix a ``ValueError`` raised by layer ``i`` of a ``serial`` with its position."""

    def __init__(self, index):
        self.index = index

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is ValueError and not str(error).startswith("serial layer"):
            raise ValueError(f"serial layer {self.index}: {error}") from error
        return False


def _check_params_length(params, n):
    if not isinstance(params, (tuple, list)) or len(params) != n:
        got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
        raise ValueError(f"serial: params must be a tuple of {n} entries, one per layer, got {got}")


def with_targets(loss: Loss, targets) -> Layer:
    """Bind ``targets`` to ``loss`` and return a ``Layer`` from scores to the scalar loss.

    Its ``dy`` is the scalar ``dloss`` (1.0 to start backpropagation) and its params are ``()``.
    """

    def init(key, in_shape):
        del key
        return (), ()

    def forward(params, scores):
        del params
        return loss.forward(scores, targets)

    def backward(params, residuals, dloss):
        del params
        return (), loss.backward(residuals, dloss)

    return Layer(init, forward, backward)


def loss_and_grads(network: Layer, loss: Loss, params, x, targets):
    """Forward through ``network`` and ``loss``, then backward by hand from ``dloss = 1``.

    Returns ``(loss_value, grads)``, with ``grads`` shaped like ``params``. This is the
    hand-written replacement of ``jax.value_and_grad(lambda p: ...)(params)``.
    """
    scores, residuals = network.forward(params, x)
    value, loss_residuals = loss.forward(scores, targets)
    dscores = loss.backward(loss_residuals, jnp.ones_like(value))
    grads, _ = network.backward(params, residuals, dscores)
    return value, grads


def predict(network: Layer, params, x):
    """The network's output alone, without residuals."""
    return network.forward(params, x)[0]


def is_traced(value) -> bool:
    """True when ``value`` is abstract (under ``jit``/``vmap``) and has no concrete entries."""
    return isinstance(value, jax.core.Tracer)
