r"""Gated recurrent unit over a whole sequence (the sequel book's ``GRU``, with a bias), with
backprop through time by hand.

Shapes and conventions as ``rnn`` (``rnn.py``): ``x = (xs, h0)``, ``y = (hs, hT)``,
``dy = (dhs, dhT)``, ``dx = (dxs, dh0)``; ``xs`` is ``(N, T, D)``, ``h`` is ``(N, H)``. Params
``{"Wx": (D, 3H), "Wh": (H, 3H), "b": (3H,)}``, the columns in the book's order ``z, r, h``
(update gate, reset gate, candidate). The book's GRU has no bias (its code takes ``b`` but
never uses it); this one adds ``b`` to each of the three pre-activations.

Forward, for ``t = 0 .. T-1`` (``h_{-1} = h0``; ``W.z`` is ``W[:, :H]``, ``W.r`` is
``W[:, H:2H]``, ``W.h`` is ``W[:, 2H:]``)::

    a_z = x_t Wx.z + h_{t-1} Wh.z + b.z;    z = sigmoid(a_z)
    a_r = x_t Wx.r + h_{t-1} Wh.r + b.r;    r = sigmoid(a_r)
    a_h = x_t Wx.h + (r * h_{t-1}) Wh.h + b.h;    h_hat = tanh(a_h)
    h_t = (1 - z) * h_{t-1} + z * h_hat

Backward, one step, with ``dh`` the total gradient of ``h_t`` (its ``dhs[t]`` plus what the
later steps send back). ``h_{t-1}`` reaches ``h_t`` by four paths: directly (through
``1 - z``), through ``z``, through ``r`` and through ``r * h_{t-1}`` into ``a_h``::

    dh_hat = dh * z;              da_h = dh_hat * tanh'(a_h)          # tanh' = sech**2
    dz     = dh * (h_hat - h_{t-1});  da_z = dz * z' (a_z)            # d h_t / d z = h_hat - h_{t-1}
    d(rh)  = da_h @ Wh.h.T                                           # a_h = ... + (r * h) Wh.h
    dr     = d(rh) * h_{t-1};     da_r = dr * r' (a_r)
    dh_{t-1} = dhs[t-1] + dh * (1 - z) + d(rh) * r + [da_z, da_r] @ [Wh.z, Wh.r].T

with ``sigmoid' = sigmoid(a) * sigmoid(-a)``. Because ``r`` multiplies ``h_{t-1}`` *before*
``Wh.h``, ``d(rh)`` must be known before ``da_r``, so the step needs two matrix products
(``da_h @ Wh.h.T``, then ``[da_z, da_r] @ [Wh.z, Wh.r].T``), as its forward needs two
(``h @ [Wh.z, Wh.r]`` for the gates, then ``(r * h) @ Wh.h``). The recursion starts from
``dh = dhT + dhs[T-1]`` and its last carry is ``dh0``. With ``dA_t = [da_z, da_r, da_h]``
(``(N, 3H)``), the parameters, used at every step, get sums over time, single products after
the loop::

    dWh.z, dWh.r = sum_t h_{t-1}.T @ [da_z, da_r]_t     dWh.h = sum_t (r_t * h_{t-1}).T @ da_h_t
    dWx = sum_t x_t.T @ dA_t;   db = sum_{t, n} dA_t;   dx_t = dA_t @ Wx.T

Implementation. Forward: one input projection for all steps before a ``lax.scan`` that emits
the pre-activations ``[a_z, a_r, a_h]`` and ``h_t`` (with ``xs`` and ``h0``: the residuals).
Backward: the step's factors that do not depend on the carried gradient, for all steps at
once (``z_n = sigmoid(-a_z)``, ``s_h = sech(a_h)``)::

    p_z = (h_hat - h_{t-1}) * z * z_n;   p_r = h_{t-1} * r * r_n;   q = z * s_h

then a reverse ``lax.scan`` carrying ``dh``::

    dh += dhs[t];  da_h = (dh * q) * s_h;  drh = da_h @ Wh.h.T
    da_zr = [dh * p_z, drh * p_r];   dh = dh * z_n + drh * r + da_zr @ [Wh.z, Wh.r].T

Numerics. ``1 - z`` is ``sigmoid(-a_z)`` in the forward and the backward (``1 - z`` keeps 3
digits at ``a_z = 30``); ``z'`` and ``r'`` are ``sigmoid(a) * sigmoid(-a)`` and ``tanh'(a_h)``
is ``sech(a_h)**2`` from ``e = exp(-|a|)``, so no derivative factor cancels (checked at
``|a| ~ 30`` against 120-digit arithmetic in ``tests/test_recurrent.py``). ``h_hat - h_{t-1}``
is a difference of two values, exact as a derivative (it is the true ``d h_t / d z``), and
only as accurate as they are relative to their size.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..core import Layer
from .rnn import (_carried, _check_dhs, _check_hidden, _check_params, _check_state, _check_xs, _flat, _init_params,
                  _input_grads, _previous, _project, _sech, _sigmoid_pair, _split_pair, _tanh)


def gru(hidden: int, w_init=None, b_init=None) -> Layer:
    """A GRU layer with ``hidden`` units over a whole sequence.

    ``x = (xs, h0)`` with ``xs`` of shape ``(N, T, D)`` and ``h0`` of shape ``(N, H)``; returns
    ``y = (hs, hT)``. ``w_init(key, shape, dtype)`` (for ``Wx`` and ``Wh``) defaults to the book's
    ``randn / sqrt(fan_in)``, ``b_init`` to zeros. ``init(key, in_shape, dtype)`` takes
    ``in_shape = (N, T, D)`` (or ``((N, T, D), (N, H))``) and returns ``((N, T, H), (N, H))``.
    """
    _check_hidden("gru", hidden)

    def init(key, in_shape, dtype=jnp.float32):
        return _init_params("gru", 3, hidden, w_init, b_init, key, in_shape, dtype, paired=False)

    def forward(params, x):
        xs, h0 = _split_pair("gru", "x", x, "(xs, h0)")
        Wx, Wh, b = _check_params("gru", params, 3)
        N, _, H = _check_xs("gru", xs, Wx, Wh)
        _check_state("gru", "h0", h0, N, H)
        xs_tm = jnp.swapaxes(xs, 0, 1)
        Wh_zr, Wh_h = Wh[:, :2 * H], Wh[:, 2 * H:]

        def step(h, xa_t):
            a_zr = xa_t[:, :2 * H] + h @ Wh_zr
            s, s_neg = _sigmoid_pair(a_zr)
            a_h = xa_t[:, 2 * H:] + (s[:, H:] * h) @ Wh_h
            h = s_neg[:, :H] * h + s[:, :H] * _tanh(a_h)
            return h, (jnp.concatenate([a_zr, a_h], axis=1), h)

        xa = _project(xs_tm, Wx, b)
        hT, (A, hs_tm) = lax.scan(step, _carried(h0, xa, Wh), xa)
        return (jnp.swapaxes(hs_tm, 0, 1), hT), (xs_tm, h0, A, hs_tm)

    def backward(params, residuals, dy):
        Wx, Wh, _ = _check_params("gru", params, 3)
        xs_tm, h0, A, hs_tm = residuals
        dhs, dhT = _split_pair("gru", "dy", dy, "(dhs, dhT)")
        dhs_tm = _check_dhs("gru", dhs, hs_tm)
        _check_state("gru", "dhT", dhT, *h0.shape)
        H = h0.shape[1]

        # every factor that does not depend on the carried gradient, for all steps at once
        s, s_neg = _sigmoid_pair(A[..., :2 * H])
        z, r, z_n = s[..., :H], s[..., H:], s_neg[..., :H]
        a_h = A[..., 2 * H:]
        s_h = _sech(a_h)
        h_prev = _previous(h0, hs_tm)
        p_z = (_tanh(a_h) - h_prev) * z * z_n
        p_r = h_prev * r * s_neg[..., H:]
        q = z * s_h
        Wh_zrT, Wh_hT = Wh[:, :2 * H].T, Wh[:, 2 * H:].T

        def step(dh, inputs):
            dh_t, p_z_t, p_r_t, q_t, s_h_t, z_n_t, r_t = inputs
            dh = dh + dh_t
            da_h = (dh * q_t) * s_h_t
            drh = da_h @ Wh_hT
            da_zr = jnp.concatenate([dh * p_z_t, drh * p_r_t], axis=1)
            return dh * z_n_t + drh * r_t + da_zr @ Wh_zrT, jnp.concatenate([da_zr, da_h], axis=1)

        dh0, dA = lax.scan(step, _carried(dhT, dhs_tm, p_z, Wh), (dhs_tm, p_z, p_r, q, s_h, z_n, r), reverse=True)
        dWx, db, dxs = _input_grads(xs_tm, dA, Wx)
        dWh = jnp.concatenate([_flat(h_prev).T @ _flat(dA[..., :2 * H]), _flat(r * h_prev).T @ _flat(dA[..., 2 * H:])],
                              axis=1)
        return {"Wx": dWx, "Wh": dWh, "b": db}, (dxs, dh0)

    return Layer(init, forward, backward)
