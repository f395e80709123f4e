r"""The hand-written backward inside any JAX program: a layer as a ``jax.custom_vjp`` function.

``as_jax_function(layer)`` turns a ``Layer`` (a built-in layer, a network, a layer of your
own) into an ordinary JAX function whose derivative is the layer's hand-written backward::

    f = as_jax_function(layer)                     # Layer
    y = f(params, x)

    f = as_jax_function(stateful, train=True)      # StatefulLayer (batch norm, dropout)
    y, new_state = f(params, state, x, key)        # key may be left out (None) without dropout

    f = as_jax_function(loss)                      # Loss (softmax_cross_entropy, mse)
    value = f(scores, targets)

The rule: ``f`` is a ``jax.custom_vjp`` function. Its ``fwd`` is the layer's ``forward``, and
the residuals it keeps are the forward's own residuals, carried as they are (with ``params``,
which the backward reads); its ``bwd`` is the layer's ``backward``::

    fwd(params, x):                 y, residuals = forward(params, x)
                                    return y, (params, residuals)
    bwd((params, residuals), dy):   return backward(params, residuals, dy)    # (grads, dx)

A ``StatefulLayer`` runs ``forward(params, state, x, key, train)`` in ``fwd`` and returns
``(y, new_state)``; a ``Loss`` keeps its own residuals and its ``bwd`` is ``loss.backward``.

So ``jax.grad``, ``jax.value_and_grad``, ``jax.vjp``, ``jax.jacrev`` and every optax loop written
around them compute the gradients the hand derivation gives, and they compose with
``jax.jit``, ``jax.vmap`` (per-example gradients: ``jax.vmap(jax.grad(loss))``) and
``jax.checkpoint`` like any JAX function: the forward and backward are traced under them.

What has no gradient (a zero cotangent, ``None`` in the ``bwd`` rule):

* a ``StatefulLayer``'s ``state`` and ``key``: the running averages and the dropout key are
  not differentiated (``jax.grad`` with respect to ``state`` gives zeros; a key, typed or a raw
  ``uint32`` ``PRNGKey``, gets JAX's ``float0`` cotangent, and ``key=None`` is an empty input);
* ``new_state``: the returned running averages carry no gradient back, as if wrapped in
  ``jax.lax.stop_gradient`` (the backward of batch norm is the derivative of ``y`` only);
* a ``Loss``'s ``targets``: only ``scores`` gets a gradient.

``train`` is fixed when the function is made (a Python ``bool``, default ``True``: batch
statistics and dropout masks; ``False``: running averages and no dropout); it is accepted and
ignored for a plain ``Layer`` or a ``Loss``.

Not supported:

* **Forward mode.** A ``custom_vjp`` function has a reverse-mode rule only, so ``jax.jvp``,
  ``jax.jacfwd`` and the linear function of ``jax.linearize`` raise JAX's own
  ``TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp function.`` Use
  ``jax.vjp``, ``jax.grad`` or ``jax.jacrev`` instead.
* **Second order, unless the backward is differentiable.** ``jax.grad(jax.grad(g))``,
  ``jax.jacrev(jax.jacrev(g))`` and ``jax.hessian(g)`` differentiate, by JAX's autodiff, the
  forward's residuals and the hand-written backward: the result is the true second
  derivative exactly when the backward is a differentiable formula of its inputs that agrees
  with the first derivative in a neighbourhood (tanh's ``dx = dy * (1 - y**2)``, sigmoid's,
  affine's). A backward built from non-differentiable steps (ReLU's and max pooling's
  ``where``, an integer index) gives the derivative of those steps, which is zero almost
  everywhere, as JAX's own ReLU does.
* **Residuals that are not arrays.** ``custom_vjp`` stores the residuals as arrays: a Python
  number in the residuals reaches the backward as a JAX array, and a string or other
  non-array leaf is refused by JAX. Every built-in layer keeps arrays (or ``None``) only.
"""

from __future__ import annotations

from typing import Callable

import jax

from .core import Layer, Loss, StatefulLayer, check_train


def as_jax_function(layer: Layer | StatefulLayer | Loss, *, train: bool = True) -> Callable:
    """A ``jax.custom_vjp`` function that runs ``layer.forward`` and differentiates by ``layer.backward``.

    * ``Layer``: ``f(params, x) -> y``; ``jax.grad`` gives ``(grads, dx)`` of the backward.
    * ``StatefulLayer``: ``f(params, state, x, key=None) -> (y, new_state)`` in the mode
      ``train`` (a Python ``bool``); no gradient reaches ``state``, ``key`` or from ``new_state``.
    * ``Loss``: ``f(scores, targets) -> loss``; no gradient reaches ``targets``.

    Forward mode (``jax.jvp``, ``jax.jacfwd``) raises; second derivatives are JAX's autodiff
    of the backward (see the module docstring).
    """
    check_train(train, "as_jax_function")
    if isinstance(layer, StatefulLayer):
        return _stateful(layer, train)
    if isinstance(layer, Layer):
        return _stateless(layer)
    if isinstance(layer, Loss):
        return _loss(layer)
    raise TypeError(f"as_jax_function: layer must be a Layer, StatefulLayer or Loss (e.g. pure_backprop.network."
                    f"mlp((50,), 10)), got {type(layer).__name__}")


def _stateless(layer: Layer):
    @jax.custom_vjp
    def bridged(params, x):
        return layer.forward(params, x)[0]

    def fwd(params, x):
        y, residuals = layer.forward(params, x)
        return y, (params, residuals)

    def bwd(saved, dy):
        params, residuals = saved
        return layer.backward(params, residuals, dy)

    bridged.defvjp(fwd, bwd)
    return bridged


def _stateful(layer: StatefulLayer, train: bool):
    @jax.custom_vjp
    def bridged(params, state, x, key=None):
        y, new_state, _ = layer.forward(params, state, x, key, train)
        return y, new_state

    def fwd(params, state, x, key):  # custom_vjp fills in bridged's default for a key left out
        y, new_state, residuals = layer.forward(params, state, x, key, train)
        return (y, new_state), (params, residuals)

    def bwd(saved, cotangents):
        params, residuals = saved
        dy, _ = cotangents  # new_state's cotangent: no gradient flows back from the running averages
        grads, dx = layer.backward(params, residuals, dy)
        return grads, None, dx, None  # None: a zero cotangent for state and key

    bridged.defvjp(fwd, bwd)
    return bridged


def _loss(loss: Loss):
    @jax.custom_vjp
    def bridged(scores, targets):
        return loss.forward(scores, targets)[0]

    def fwd(scores, targets):
        return loss.forward(scores, targets)

    def bwd(residuals, dloss):
        return loss.backward(residuals, dloss), None  # None: no gradient to the targets

    bridged.defvjp(fwd, bwd)
    return bridged
