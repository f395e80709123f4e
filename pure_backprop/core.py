"""The layer protocol: a layer is three pure functions, and a network is a layer.

A ``Layer`` is a NamedTuple ``(init, forward, backward)``, in the spirit of stax's
``(init_fun, apply_fun)`` and of the ``fwd``/``bwd`` pair of ``jax.custom_vjp``::

    params, out_shape = layer.init(key, in_shape, dtype=float32)   # in_shape includes the batch axis
    y, residuals      = layer.forward(params, x)
    grads, dx         = layer.backward(params, residuals, dy)

``grads`` has the pytree structure of ``params`` and ``dx`` that of ``x``. ``dtype`` is the
floating dtype of the parameters (float64 under ``jax_enable_x64`` for the gradient checker, or
to compare with ``jax.grad`` in float64); ``serial``, ``lift`` and ``freeze`` pass it to every
layer, so ``mlp(...).init(key, in_shape, jnp.float64)`` is a float64 network. Parameter-free
layers have ``params == ()`` and ``grads == ()``, and accept ``dtype`` and ignore it. Every
function is pure: no state is kept between calls, so all three work under ``jax.jit`` and
``jax.vmap``.

A ``Loss`` is the pair ``(forward, backward)`` for the last node of a network, the one
that also needs targets (labels)::

    loss, residuals = loss.forward(scores, targets)      # loss is a scalar
    dscores         = loss.backward(residuals, dloss)    # dloss is 1.0 to start backprop

``with_targets(loss, targets)`` binds the targets and turns a loss into a ``Layer``, so
that everything that checks or composes layers works on losses too.
``loss_and_grads(network, loss, params, x, targets)`` runs the whole forward pass and the
hand-written backward pass and returns ``(loss, grads)``.

State and randomness (chapter 6): ``StatefulLayer``
---------------------------------------------------
Batch normalization keeps running averages (state) and dropout draws a mask (randomness).
They get them through a second protocol, and only they do: a stateless layer stays the
three functions above, with no argument it does not use. A ``StatefulLayer`` is::

    params, state, out_shape  = layer.init(key, in_shape, dtype=float32)
    y, new_state, residuals   = layer.forward(params, state, x, key, train)
    grads, dx                 = layer.backward(params, residuals, dy)     # as for Layer

* ``state`` is a pytree parallel to ``params`` (``()`` where a layer keeps none), its floating
  entries in ``dtype`` like the params (batch norm's running averages). It never gets a
  gradient, and it is never mutated: the forward returns the new running averages as new
  values, which the caller threads into the next call (haiku's ``transform_with_state``:
  ``apply(params, state, key, x) -> (y, state)``).
* ``key`` is a ``jax.random`` key or ``None``; a layer that needs one and gets ``None``
  raises. ``serial`` splits it into one key per layer, ``jax.random.split(key, n)[i]`` for
  layer ``i``, so each dropout draws its own mask and the same key gives the same masks.
* ``train`` is a Python ``bool`` fixed at the call (static under ``jit``), never a flag
  mutated on an object like the book's ``train_flg``: batch statistics and a random mask
  when ``True``, running averages and the identity when ``False``.
* ``backward`` is unchanged: everything the mode decided (the mask, the statistics) sits
  in the residuals, so the backward pass needs neither ``key`` nor ``train``.

Why a second protocol and not extra arguments for everyone (stax gives every
``apply_fun`` an ``rng``; flax threads ``mutable`` collections): most layers have neither
state nor randomness, and reading ``relu`` should not mean reading arguments it ignores.
Why explicit threading and not a mutable ``State`` object (equinox's ``State``, flax NNX's
``BatchStat``): everything stays a pure function of its arguments, so ``jit``, ``vmap``,
``lax.scan`` over an epoch and the gradient checker work with no special case, and a
``vmap`` over trials needs no ``axis_name`` (batch statistics are over the explicit batch
axis). ``serial`` lifts stateless layers into the protocol (``lift``) only when at least
one layer needs it, so a network of stateless layers is still a plain ``Layer``.
``freeze(layer, state, key, train)`` goes the other way: with the state and the key
fixed, a ``StatefulLayer`` is a ``Layer`` in ``(params, x)``; that is how the gradient
checker and the registry see batch norm (train mode: the batch statistics depend on
``x``) and dropout (a fixed key: a fixed mask, so finite differences are meaningful,
unlike the book's check that drew a new mask at every evaluation).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Layer(NamedTuple):
    """Three pure functions: ``init(key, in_shape, dtype=float32) -> (params, out_shape)``,
    ``forward(params, x)``, ``backward(params, residuals, dy)``."""

    init: Callable[..., tuple[Any, Any]]
    forward: Callable[[Any, Any], tuple[Any, Any]]
    backward: Callable[[Any, Any, Any], tuple[Any, Any]]


class Loss(NamedTuple):
    """Two pure functions: ``forward(scores, targets) -> (loss, residuals)`` and
    ``backward(residuals, dloss) -> dscores``."""

    forward: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]
    backward: Callable[[Any, jax.Array], jax.Array]


class StatefulLayer(NamedTuple):
    """A layer with state and/or randomness:
    ``init(key, in_shape, dtype=float32) -> (params, state, out_shape)``,
    ``forward(params, state, x, key, train) -> (y, new_state, residuals)``,
    ``backward(params, residuals, dy) -> (grads, dx)``. See the module docstring."""

    init: Callable[..., tuple[Any, Any, Any]]
    forward: Callable[[Any, Any, Any, Any, bool], tuple[Any, Any, Any]]
    backward: Callable[[Any, Any, Any], tuple[Any, Any]]


def lift(layer: Layer | StatefulLayer) -> StatefulLayer:
    """A ``Layer`` as a ``StatefulLayer`` with state ``()`` that ignores ``key`` and ``train``
    (its ``init`` passes ``dtype`` on); a ``StatefulLayer`` is returned as it is."""
    if isinstance(layer, StatefulLayer):
        return layer
    if not isinstance(layer, Layer):
        raise TypeError(f"lift: expected a Layer or StatefulLayer, got {type(layer).__name__}")

    def init(key, in_shape, dtype=jnp.float32):
        params, out_shape = _init_layer("lift", layer, key, in_shape, dtype)
        return params, (), out_shape

    def forward(params, state, x, key, train):
        del key, train
        y, residuals = layer.forward(params, x)
        return y, state, residuals

    return StatefulLayer(init, forward, layer.backward)


def freeze(layer: Layer | StatefulLayer, state=(), key=None, train: bool = True) -> Layer:
    """The ``Layer`` ``(params, x) -> y`` of a ``StatefulLayer`` with ``state``, ``key`` and
    ``train`` held fixed; the new state is dropped. Its ``init(key, in_shape, dtype=float32)``
    returns ``(params, out_shape)``."""
    if isinstance(layer, Layer):
        return layer
    stateful = lift(layer)
    check_train(train, "freeze")

    def init(k, in_shape, dtype=jnp.float32):
        params, _, out_shape = _init_layer("freeze", stateful, k, in_shape, dtype)
        return params, out_shape

    def forward(params, x):
        y, _, residuals = stateful.forward(params, state, x, key, train)
        return y, residuals

    return Layer(init, forward, stateful.backward)


def check_train(train, where: str):
    """``train`` decides the program's shape, so it must be a Python bool, not an array."""
    if not isinstance(train, bool):
        raise TypeError(
            f"{where}: train must be a Python bool (True for batch statistics and dropout, False for "
            f"inference), got {type(train).__name__}; under jax.jit mark it static"
        )


def no_params(key, in_shape, dtype=jnp.float32):
    """``init`` of a parameter-free, shape-preserving layer (``dtype`` has nothing to set)."""
    del key, dtype
    return (), in_shape


def _init_layer(where: str, layer: Layer | StatefulLayer, key, in_shape, dtype):
    """``layer.init(key, in_shape, dtype)`` for a combinator. A layer written before ``init``
    took a ``dtype``, ``init(key, in_shape)``, is called without it for the default float32,
    and refused (``TypeError``) for any other dtype, which it would silently ignore."""
    try:
        inspect.signature(layer.init).bind(key, in_shape, dtype)
    except TypeError:
        if jnp.dtype(dtype) != jnp.float32:
            raise TypeError(f"{where}: the layer's init(key, in_shape) takes no dtype, so it cannot build "
                            f"{jnp.dtype(dtype)} parameters; give it a dtype=jnp.float32 argument and pass "
                            f"it to its initializers") from None
        return layer.init(key, in_shape)
    return layer.init(key, in_shape, dtype)


def serial(*layers: Layer | StatefulLayer) -> Layer | StatefulLayer:
    """Compose layers in order: the network is itself a ``Layer``.

    forward:  ``x_{i+1} = layer_i.forward(params[i], x_i)``, residuals kept per layer.
    backward: the chain rule, ``(grads[i], dx_i) = layer_i.backward(params[i], r_i, dx_{i+1})``
    run from the last layer to the first; ``grads`` is a tuple with one entry per layer.
    Shape errors raised inside a layer are re-raised naming its position in the network.

    ``init(key, in_shape, dtype=float32)`` passes ``dtype`` to every layer's ``init``.
    If any layer is a ``StatefulLayer``, every layer is lifted (``lift``) and the network is
    a ``StatefulLayer`` whose ``state`` is a tuple with one entry per layer and whose ``key``
    is split into one key per layer (``jax.random.split(key, len(layers))[i]``).
    """
    if not layers:
        raise ValueError("serial: needs at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, (Layer, StatefulLayer)):
            raise TypeError(f"serial: argument {i} is a {type(layer).__name__}, not a Layer or StatefulLayer")
    if any(isinstance(layer, StatefulLayer) for layer in layers):
        return _serial_stateful(layers)

    def init(key, in_shape, dtype=jnp.float32):
        params, shape = [], in_shape
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, len(layers)))):
            with _located(i):
                p, shape = _init_layer(f"serial layer {i}", layer, k, shape, dtype)
            params.append(p)
        return tuple(params), shape

    def forward(params, x):
        _check_length("params", params, len(layers))
        residuals = []
        for i, (layer, p) in enumerate(zip(layers, params)):
            with _located(i):
                x, r = layer.forward(p, x)
            residuals.append(r)
        return x, tuple(residuals)

    return Layer(init, forward, _serial_backward(layers))


def _serial_backward(layers):
    def backward(params, residuals, dy):
        _check_length("params", params, len(layers))
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            with _located(i):
                grads[i], dy = layers[i].backward(params[i], residuals[i], dy)
        return tuple(grads), dy

    return backward


def _serial_stateful(originals: tuple[Layer | StatefulLayer, ...]) -> StatefulLayer:
    layers = tuple(lift(layer) for layer in originals)

    def init(key, in_shape, dtype=jnp.float32):
        params, state, shape = [], [], in_shape
        for i, (layer, k) in enumerate(zip(originals, jax.random.split(key, len(layers)))):
            with _located(i):  # the layer itself, not its lift: an error names the serial's position
                out = _init_layer(f"serial layer {i}", layer, k, shape, dtype)
            p, s, shape = out if isinstance(layer, StatefulLayer) else (out[0], (), out[1])
            params.append(p)
            state.append(s)
        return tuple(params), tuple(state), shape

    def forward(params, state, x, key, train):
        _check_length("params", params, len(layers))
        _check_length("state", state, len(layers))
        check_train(train, "serial")
        keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
        residuals, new_state = [], []
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state, keys)):
            with _located(i):
                x, s, r = layer.forward(p, s, x, k, train)
            residuals.append(r)
            new_state.append(s)
        return x, tuple(new_state), tuple(residuals)

    return StatefulLayer(init, forward, _serial_backward(layers))


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


def _check_length(name, value, n):
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = len(value) if isinstance(value, (tuple, list)) else type(value).__name__
        raise ValueError(f"serial: {name} must be a tuple of {n} entries, one per layer, got {got}")


def with_targets(loss: Loss, targets) -> Layer:
    """Bind ``targets`` to ``loss`` and return a ``Layer`` from scores to the scalar loss.

    Its ``dy`` is the scalar ``dloss`` (1.0 to start backpropagation) and its params are ``()``.
    The targets are bound as data, not as code: ``forward`` is a ``jax.tree_util.Partial``
    whose arguments hold them (``backward`` needs only the residuals), so a program compiled for
    the layer taken apart (``jax.tree_util.tree_flatten``), as the gradient checker compiles it,
    takes the targets as an input and serves every value of them.
    """
    return Layer(_no_params_of_a_loss, jax.tree_util.Partial(_targets_forward, loss, targets),
                 jax.tree_util.Partial(_targets_backward, loss))  # the residuals carry what it needs


def _no_params_of_a_loss(key, in_shape, dtype=jnp.float32):
    del key, in_shape, dtype
    return (), ()


def _targets_forward(loss, targets, params, scores):
    del params
    return loss.forward(scores, targets)


def _targets_backward(loss, params, residuals, dloss):
    del params
    return (), loss.backward(residuals, dloss)


def loss_and_grads(network: Layer, loss: Loss, params, x, targets, weight_decay: float = 0.0):
    """Forward through ``network`` and ``loss``, then backward by hand from ``dloss = 1``.

    Returns ``(loss_value, grads)``, with ``grads`` shaped like ``params``. This is the
    hand-written replacement of ``jax.value_and_grad(lambda p: ...)(params)``. With
    ``weight_decay = lambda > 0`` the loss gains ``0.5 * lambda * sum(W**2)`` over the weight
    matrices and their gradients ``lambda * W`` (``pure_backprop.layers.weight_decay``).
    """
    _check_loss_inputs("loss_and_grads", network, loss, x, (Layer,))
    scores, residuals = network.forward(params, x)
    value, loss_residuals = loss.forward(scores, targets)
    dscores = loss.backward(loss_residuals, jnp.ones_like(value))
    grads, _ = network.backward(params, residuals, dscores)
    return _decayed(value, grads, params, weight_decay)


def loss_and_grads_with_state(network: Layer | StatefulLayer, loss: Loss, params, state, x, targets,
                              key=None, train: bool = True, weight_decay: float = 0.0):
    """``loss_and_grads`` for a ``StatefulLayer``: returns ``(loss_value, grads, new_state)``.

    ``train=True`` (the default here: gradients are for training) uses batch statistics and
    draws dropout masks from ``key``; the running averages come back in ``new_state``.
    """
    _check_loss_inputs("loss_and_grads_with_state", network, loss, x, (Layer, StatefulLayer))
    stateful = lift(network)
    scores, new_state, residuals = stateful.forward(params, state, x, key, train)
    value, loss_residuals = loss.forward(scores, targets)
    dscores = loss.backward(loss_residuals, jnp.ones_like(value))
    grads, _ = stateful.backward(params, residuals, dscores)
    value, grads = _decayed(value, grads, params, weight_decay)
    return value, grads, new_state


def _decayed(value, grads, params, weight_decay):
    if isinstance(weight_decay, (int, float)) and weight_decay == 0:
        return value, grads
    from .layers.weight_decay import penalty, penalty_grads

    decay = jax.tree_util.tree_map(jnp.add, grads, penalty_grads(params, weight_decay))
    return value + penalty(params, weight_decay), decay


def _check_loss_inputs(where, network, loss, x, kinds):
    """A network of the right protocol, a ``Loss``, and a batch of at least one sample."""
    if not isinstance(network, kinds):
        hint = ("; for a StatefulLayer use loss_and_grads_with_state(network, loss, params, state, x, targets, key)"
                if isinstance(network, StatefulLayer) else "")
        raise TypeError(f"{where}: network must be a {' or '.join(k.__name__ for k in kinds)}, "
                        f"got {type(network).__name__}{hint}")
    if not isinstance(loss, Loss):
        raise TypeError(f"{where}: loss must be a Loss (forward, backward), e.g. pure_backprop.layers."
                        f"softmax_cross_entropy, got {type(loss).__name__}")
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) >= 1 and shape[0] == 0:
        raise ValueError(f"{where}: x is an empty batch (shape {tuple(shape)}); give at least one sample")


def predict(network: Layer | StatefulLayer, params, x, state=None):
    """The network's output alone, without residuals; a ``StatefulLayer`` runs in inference
    mode (``train=False``: running averages, no dropout) with its ``state``."""
    if isinstance(network, StatefulLayer):
        if state is None:
            raise ValueError("predict: a StatefulLayer needs its state (the running averages), got None")
        return network.forward(params, state, x, None, False)[0]
    return network.forward(params, x)[0]


def is_traced(value) -> bool:
    """True when ``value`` is abstract (under ``jit``/``vmap``) and has no concrete entries."""
    return isinstance(value, jax.core.Tracer)
