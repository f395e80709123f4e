r"""Truncated backprop through time: a recurrent layer over windows of a long sequence.

A language model reads a corpus of a million steps; backprop through all of them would keep a
million steps of residuals. The book's ``TimeRNN(stateful=True)`` cuts the sequence into
windows of ``T`` steps (35 in its PTB model) and runs them in order:

* **the state flows**: window ``k + 1`` starts from the last state of window ``k``, so the
  forward pass over the windows equals one run over the whole sequence;
* **the gradient stops** at the window's edge: each window's backward starts from
  ``dstateT = 0`` and its ``dstate0`` is dropped. The gradient of window ``k + 1``'s loss with
  respect to window ``k``'s steps, which would flow back through the carried state, is
  ignored; only the residuals of one window are kept, and the backward costs ``T`` steps
  whatever the length of the corpus. Dependencies longer than a window still shape the
  forward (through the state) but are learned only through the window's own steps.

``truncated_bptt(layer)`` wraps ``rnn``, ``lstm`` or ``gru`` (a ``Layer`` from
``x = (xs, state0)`` to ``y = (hs, stateT)``) as a ``StatefulLayer`` (``core.py``) whose
state is the recurrent state, ``h`` or ``(h, c)``, threaded as new values like batch norm's
running averages::

    params, state, out_shape = layer.init(key, (N, T, D), dtype)   # state: zeros of (N, H)
    hs, state, residuals     = layer.forward(params, state, xs, key, train)   # the next window's state
    grads, dxs               = layer.backward(params, residuals, dhs)

``forward`` runs the wrapped layer from ``state`` (``key`` and ``train`` change nothing) and
returns ``hs`` and the last state; ``backward`` is the wrapped backward with ``dy = (dhs, 0)``,
returning its ``(grads, dxs)``. The state entering ``forward`` goes through
``lax.stop_gradient``, so ``jax.grad`` of a loss over several windows stops at each edge too,
like the hand backward. To start afresh (a new epoch, the book's ``reset_state``), pass the
zeros of ``init`` again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..core import Layer, StatefulLayer, check_train


def truncated_bptt(layer: Layer) -> StatefulLayer:
    """``layer`` (``rnn``, ``lstm``, ``gru``) over windows: the state flows from one window to
    the next, the gradient stops at each window's edge (see the module docstring)."""
    if not isinstance(layer, Layer):
        raise TypeError(f"truncated_bptt: expected a recurrent Layer (rnn, lstm or gru), got {type(layer).__name__}")

    def init(key, in_shape, dtype=jnp.float32):
        params, out_shape = layer.init(key, in_shape, dtype)
        if not (isinstance(out_shape, tuple) and len(out_shape) == 2):
            raise ValueError("truncated_bptt: the layer's out_shape must be (hs shape, state shape), "
                             f"got {out_shape!r}")
        hs_shape, state_shape = out_shape
        state = jax.tree_util.tree_map(lambda s: jnp.zeros(s, dtype), state_shape, is_leaf=_is_shape)
        return params, state, hs_shape

    def forward(params, state, xs, key, train):
        del key
        check_train(train, "truncated_bptt")
        state = lax.stop_gradient(state)
        (hs, new_state), residuals = layer.forward(params, (xs, state))
        return hs, new_state, (residuals, state)

    def backward(params, residuals, dhs):
        residuals, state = residuals
        grads, (dxs, _) = layer.backward(params, residuals, (dhs, jax.tree_util.tree_map(jnp.zeros_like, state)))
        return grads, dxs

    return StatefulLayer(init, forward, backward)


def _is_shape(s):
    return isinstance(s, tuple) and all(isinstance(d, int) for d in s)
