"""Reference forwards of the recurrent layers: a Python loop over time, one step per
iteration, written from the formulas.

Each takes ``(params, x)`` with ``x = (xs, state0)``, ``xs`` of shape ``(N, T, D)``, and returns
``(hs, stateT)``: ``hs`` of shape ``(N, T, H)``, ``stateT`` the state after the last step
(``h``, or ``(h, c)`` for the LSTM). Nothing here imports ``pure_backprop``.

The nonlinearities are written so that ``jax.vjp`` of them is accurate over the whole range,
which ``jax.nn.sigmoid`` and ``jnp.tanh`` are not: their derivatives are taken as
``y * (1 - y)`` and ``1 - y**2``, which cancel to 0 once ``|a|`` passes about 37 and 19 (a
recurrent pre-activation of 600 has a true sigmoid' of 1e-261, and ``jax.vjp`` of
``jax.nn.sigmoid`` gives 0). Here::

    sigmoid(a) = exp(-logaddexp(0, -a))                  # its jvp is sigmoid(a) * sigmoid(-a)
    tanh(a)    = s * (1 - e) / (1 + e),  e = exp(-2 s a),  s = sign(a) (+1 at 0)

and the jvp of the second, ``4e / (1 + e)**2`` computed as a sum of two positive terms, has no
cancellation either; both forwards are within a few ulps of ``jax.nn.sigmoid`` and ``jnp.tanh``
(``tanh`` absolutely, near 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sigmoid(a):
    return jnp.exp(-jnp.logaddexp(0.0, -a))


def tanh(a):
    s = jnp.where(a >= 0, 1.0, -1.0).astype(a.dtype)
    e = jnp.exp(-2 * (s * a))
    return s * (1 - e) / (1 + e)


def _affine(x, W, b):
    return jnp.einsum("nd,dm->nm", x, W) + b[None, :]


def rnn(params, x):
    """``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``."""
    xs, h = x
    hs = []
    for t in range(xs.shape[1]):
        h = tanh(_affine(xs[:, t], params["Wx"], params["b"]) + h @ params["Wh"])
        hs.append(h)
    return jnp.stack(hs, axis=1), h


def lstm(params, x):
    """The book's LSTM: ``A = x Wx + h Wh + b`` split into ``f, g, i, o`` in that order;
    ``c_t = f * c_{t-1} + g * i``, ``h_t = o * tanh(c_t)``."""
    xs, (h, c) = x
    H = h.shape[1]
    hs = []
    for t in range(xs.shape[1]):
        a = _affine(xs[:, t], params["Wx"], params["b"]) + h @ params["Wh"]
        forget = sigmoid(a[:, :H])
        candidate = tanh(a[:, H:2 * H])
        input_gate = sigmoid(a[:, 2 * H:3 * H])
        output_gate = sigmoid(a[:, 3 * H:])
        c = forget * c + candidate * input_gate
        h = output_gate * tanh(c)
        hs.append(h)
    return jnp.stack(hs, axis=1), (h, c)


def gru(params, x):
    """The book's GRU with a bias: columns ``z, r, h`` in ``Wx``, ``Wh`` and ``b``;
    ``h_hat = tanh(x Wxh + (r * h) Whh + bh)``, ``h_new = (1 - z) * h + z * h_hat``, ``z = sigmoid(a_z)``."""
    xs, h = x
    H = h.shape[1]
    Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
    hs = []
    for t in range(xs.shape[1]):
        x_t = xs[:, t]
        a_z = _affine(x_t, Wx[:, :H], b[:H]) + h @ Wh[:, :H]
        z = sigmoid(a_z)
        r = sigmoid(_affine(x_t, Wx[:, H:2 * H], b[H:2 * H]) + h @ Wh[:, H:2 * H])
        h_hat = tanh(_affine(x_t, Wx[:, 2 * H:], b[2 * H:]) + (r * h) @ Wh[:, 2 * H:])
        h = sigmoid(-a_z) * h + z * h_hat  # 1 - z = sigmoid(-a_z), which keeps its digits as z nears 1
        hs.append(h)
    return jnp.stack(hs, axis=1), h
