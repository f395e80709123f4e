"""pure_backprop: hand-derived backpropagation as pure JAX functions, checked against
``jax.grad`` and numerical differentiation.

A layer is ``Layer(init, forward, backward)``; a network is ``serial(*layers)``; a loss is
``Loss(forward, backward)``. See ``pure_backprop.core`` for the protocol,
``pure_backprop.layers`` and ``pure_backprop.nodes`` for the derivations.
"""

from .core import Layer, Loss, loss_and_grads, predict, serial, with_targets

__version__ = "0.1.0"

__all__ = ["Layer", "Loss", "loss_and_grads", "predict", "serial", "with_targets"]
