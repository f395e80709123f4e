r"""Long short-term memory over a whole sequence (the sequel book's ``TimeLSTM``), with
backprop through time by hand.

Shapes and conventions as ``rnn`` (``rnn.py``), with the state a pair ``(h, c)``::

    x = (xs, (h0, c0))        y = (hs, (hT, cT))        xs: (N, T, D), hs: (N, T, H), h, c: (N, H)
    dy = (dhs, (dhT, dcT))    dx = (dxs, (dh0, dc0))

Params ``{"Wx": (D, 4H), "Wh": (H, 4H), "b": (4H,)}``, the four gates side by side in the
book's order ``f, g, i, o``.

Forward, for ``t = 0 .. T-1`` (``(h_{-1}, c_{-1}) = (h0, c0)``)::

    A_t = x_t Wx + h_{t-1} Wh + b                  # (N, 4H)
    f = sigmoid(A_t[:, :H])        # forget gate
    g = tanh(A_t[:, H:2H])         # candidate cell
    i = sigmoid(A_t[:, 2H:3H])     # input gate
    o = sigmoid(A_t[:, 3H:])       # output gate
    c_t = f * c_{t-1} + g * i
    h_t = o * tanh(c_t)

Backward, one step. Let ``dh`` and ``dc`` be the total gradients with respect to ``h_t`` and
``c_t`` (from the loss at step ``t`` and from every later step). ``h_t = o * tanh(c_t)`` is a
product node, and ``c_t`` also feeds the next step directly, so the gradient reaching ``c_t``
is a sum of two paths::

    do = dh * tanh(c_t)
    ds = dc + dh * o * tanh'(c_t)                  # ds: total gradient of c_t
    df = ds * c_{t-1};   dg = ds * i;   di = ds * g
    dc_{t-1} = ds * f                              # c_t = f * c_{t-1} + ...: the carried cell gradient

then through each gate's nonlinearity (``sigmoid' = sigmoid(a) * sigmoid(-a)``,
``tanh' = sech**2``)::

    dA_t = [df * f' (A_f),  dg * tanh'(A_g),  di * i' (A_i),  do * o' (A_o)]     # (N, 4H)
    dh_{t-1} = dhs[t-1] + dA_t @ Wh.T              # A_t = ... + h_{t-1} Wh

The recursion starts from ``dh = dhT + dhs[T-1]``, ``dc = dcT`` and ends with
``(dh0, dc0) = (dA_0 @ Wh.T, ds_0 * f_0)``. ``Wx``, ``Wh`` and ``b`` are used at every step,
so their gradients sum over time (and batch) and are single products after the loop::

    dWh = sum_t h_{t-1}.T @ dA_t     dWx = sum_t x_t.T @ dA_t     db = sum_{t, n} dA_t
    dx_t = dA_t @ Wx.T

Implementation. The forward ``lax.scan`` does one ``h @ Wh`` per step (the input projection
of all steps is one product before it) and emits ``A_t``, ``h_t`` and ``c_t``, the residuals
with ``xs`` and ``(h0, c0)``. The reverse ``lax.scan`` carries ``(dh, dc)``; each step forms
the factors that do not depend on the carried gradients from its own ``A_t``, ``c_t`` and
``c_{t-1}``::

    P_t = [c_{t-1} * f * f_n,  (i * s_g) * s_g,  g * i * i_n,  tanh(c_t) * o * o_n]   # (N, 4H)
    q_t = o * s_c,   s_c = sech(c_t)

(``x_n`` is ``sigmoid(-A_x)``, ``s_g = sech(A_g)``), then does one matmul::

    dh += dhs[t];   ds = dc + (dh * q_t) * s_c
    dA_t = [ds, ds, ds, dh] * P_t;   dh, dc = dA_t @ Wh.T, ds * f

Forming the factors inside the step, where ``A_t`` is already in cache, is faster than forming
them for all steps before the scan and reading them back (``benchmarks/lstm_speed.py``), and
gives the same numbers.

Numerics. No derivative factor is formed by a subtraction: ``sigmoid'`` is ``sigmoid(a) *
sigmoid(-a)``, both from ``e = exp(-|a|)`` (``1 - sigmoid(a)`` would keep 3 digits at
``a = 30``), and ``tanh'`` of ``A_g`` and of ``c_t`` is ``sech**2`` from ``e = exp(-|a|)``
(``1 - tanh(c)**2`` is exactly 0 beyond ``|c| = 19.1``). Every factor is a product of
positive magnitudes or of values computed to a few ulps, so each gradient entry that is a
single product (``db``, ``dWx``, ``dWh``, ``dc0`` of one step) is accurate to a few ulps
relative to itself even where it is ``1e-26``; ``tests/test_recurrent.py`` checks this at
``|A| ~ 30`` against 120-digit arithmetic, where ``jax.grad`` of ``jax.nn.sigmoid`` and
``jnp.tanh`` loses most digits.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..core import Layer
from .rnn import (_carried, _check_dhs, _check_hidden, _check_params, _check_state, _check_xs, _flat, _init_params,
                  _input_grads, _previous, _project, _sech, _sigmoid_pair, _split_pair, _tanh)


def lstm(hidden: int, w_init=None, b_init=None) -> Layer:
    """An LSTM layer with ``hidden`` units over a whole sequence.

    ``x = (xs, (h0, c0))`` with ``xs`` of shape ``(N, T, D)`` and ``h0``, ``c0`` of shape
    ``(N, H)``; returns ``y = (hs, (hT, cT))``. ``w_init(key, shape, dtype)`` (for ``Wx`` and
    ``Wh``) defaults to the book's ``randn / sqrt(fan_in)``, ``b_init`` to zeros.
    ``init(key, in_shape, dtype)`` takes ``in_shape = (N, T, D)`` (or ``((N, T, D), ((N, H),
    (N, H)))``) and returns ``out_shape = ((N, T, H), ((N, H), (N, H)))``.
    """
    _check_hidden("lstm", hidden)

    def init(key, in_shape, dtype=jnp.float32):
        return _init_params("lstm", 4, hidden, w_init, b_init, key, in_shape, dtype, paired=True)

    def forward(params, x):
        xs, state0 = _split_pair("lstm", "x", x, "(xs, (h0, c0))")
        h0, c0 = _split_pair("lstm", "state0", state0, "(h0, c0)")
        Wx, Wh, b = _check_params("lstm", params, 4)
        N, _, H = _check_xs("lstm", xs, Wx, Wh)
        _check_state("lstm", "h0", h0, N, H)
        _check_state("lstm", "c0", c0, N, H)
        xs_tm = jnp.swapaxes(xs, 0, 1)

        def step(carry, xa_t):
            h, c = carry
            A = xa_t + h @ Wh
            s = _sigmoid_pair(A)[0]
            c = s[:, :H] * c + _tanh(A[:, H:2 * H]) * s[:, 2 * H:3 * H]
            h = s[:, 3 * H:] * _tanh(c)
            return (h, c), (A, h, c)

        xa = _project(xs_tm, Wx, b)
        stateT, (A, hs_tm, cs_tm) = lax.scan(step, _carried((h0, c0), xa, Wh), xa)
        return (jnp.swapaxes(hs_tm, 0, 1), stateT), (xs_tm, h0, c0, A, hs_tm, cs_tm)

    def backward(params, residuals, dy):
        Wx, Wh, _ = _check_params("lstm", params, 4)
        xs_tm, h0, c0, A, hs_tm, cs_tm = residuals
        dhs, dstateT = _split_pair("lstm", "dy", dy, "(dhs, (dhT, dcT))")
        dhT, dcT = _split_pair("lstm", "dstateT", dstateT, "(dhT, dcT)")
        dhs_tm = _check_dhs("lstm", dhs, hs_tm)
        _check_state("lstm", "dhT", dhT, *h0.shape)
        _check_state("lstm", "dcT", dcT, *h0.shape)
        H = h0.shape[1]

        WhT = Wh.T

        def step(carry, inputs):
            dh, dc = carry
            dh_t, A_t, c_t, c_prev = inputs
            s, s_neg = _sigmoid_pair(A_t)  # the factors of step t, none depending on (dh, dc)
            f, i, o = s[:, :H], s[:, 2 * H:3 * H], s[:, 3 * H:]
            A_g = A_t[:, H:2 * H]
            s_g, s_c = _sech(A_g), _sech(c_t)
            dh = dh + dh_t
            ds = dc + (dh * (o * s_c)) * s_c
            dA = jnp.concatenate([ds * (c_prev * f * s_neg[:, :H]), ds * ((i * s_g) * s_g),
                                  ds * (_tanh(A_g) * i * s_neg[:, 2 * H:3 * H]),
                                  dh * (_tanh(c_t) * o * s_neg[:, 3 * H:])], axis=1)
            return (dA @ WhT, ds * f), dA

        dstate0, dA = lax.scan(step, _carried((dhT, dcT), dhs_tm, A, Wh), (dhs_tm, A, cs_tm, _previous(c0, cs_tm)),
                               reverse=True)
        dWx, db, dxs = _input_grads(xs_tm, dA, Wx)
        dWh = _flat(_previous(h0, hs_tm)).T @ _flat(dA)
        return {"Wx": dWx, "Wh": dWh, "b": db}, (dxs, dstate0)

    return Layer(init, forward, backward)
