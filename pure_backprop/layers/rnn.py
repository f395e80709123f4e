r"""A simple (Elman) recurrent layer over a whole sequence, with backprop through time by hand.

The sequel book's ``TimeRNN``, as one pure function of the sequence *and* of the initial state.
Shapes are batch-major like the book: ``xs`` is ``(N, T, D)`` (batch, time, features), the
state ``h`` is ``(N, H)``. The layer's input and output are pairs::

    x = (xs, h0)          y = (hs, hT)          hs: (N, T, H), hT = hs[:, T-1]
    dy = (dhs, dhT)       dx = (dxs, dh0)

so a decoder can start from an encoder's last state and hand the gradient ``dh0`` back to it
as the encoder's ``dhT``. ``truncated_bptt`` (``bptt.py``) makes the state flow between
windows of a long sequence without the gradient. Params ``{"Wx": (D, H), "Wh": (H, H), "b": (H,)}``.

Forward, for ``t = 0 .. T-1``::

    a_t = x_t Wx + h_{t-1} Wh + b            # (N, H), h_{-1} = h0
    h_t = tanh(a_t)

Backward. Write ``L`` for the loss; it depends on ``h_t`` directly (through ``dhs[t]``) and
through every later step, because ``h_t`` enters ``a_{t+1}``. Let ``dh_t`` be the total
gradient with respect to ``h_t``. Going back in time from ``dh_{T-1} = dhT + dhs[T-1]``::

    da_t     = dh_t * tanh'(a_t)              # tanh' = 1 - tanh**2 = sech**2
    dh_{t-1} = dhs[t-1] + da_t @ Wh.T         # a_t = ... + h_{t-1} Wh: the matmul node's dx
    dh0      = da_0 @ Wh.T                    # what flows out of the first step

``Wx``, ``Wh`` and ``b`` are the same at every step (the graph unrolled over time uses each
one ``T`` times), and a parameter used several times gets the sum of the gradients of its
uses (the book's Repeat node)::

    dWh = sum_t h_{t-1}.T @ da_t              # one (H, N*T) @ (N*T, H) product
    dWx = sum_t x_t.T @ da_t                  # one (D, N*T) @ (N*T, H) product
    db  = sum_t sum_n da_t[n]
    dx_t = da_t @ Wx.T                        # for all t at once

Only the recursion ``dh_{t-1} = dhs[t-1] + da_t @ Wh.T`` must run step by step; the rest are
single matrix products over all ``N * T`` rows once the ``da_t`` are known.

Implementation (shared by ``lstm`` and ``gru``). The sequence is turned time-major at entry
(``(T, N, D)``) and back at exit. The input projection of every step, ``xs @ Wx + b``, is one
``(T*N, D) @ (D, kH)`` product before the loop, so the forward ``lax.scan`` over time does only
``h @ Wh`` and the nonlinearity. The backward is a reverse ``lax.scan`` carrying ``dh``: per
step one add, the elementwise derivative and one ``da @ Wh.T``; it emits ``da_t``, and the
weight and input gradients are the single products above, after the scan. Residuals: ``xs``
(time-major), ``h0``, the pre-activations ``a_t`` and the outputs ``h_t``.

Numerics. ``tanh'(a)`` is ``sech(a)**2`` with ``sech(a) = 2e / (1 + e*e)``, ``e = exp(-|a|)``
(as in ``tanh.py``), never ``1 - h**2``, which cancels to 0 once ``|a| > 19``. It is computed
from the stored ``a_t``, for all steps at once before the reverse scan, and applied as
``(dh * s) * s``. Every factor is then a product or quotient of positive numbers, accurate to
a few ulps relative over the whole range (checked at ``|a| ~ 30`` against 120-digit arithmetic
in ``tests/test_recurrent.py``).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import lax

from ..checks import require_rank
from ..core import Layer
from ..initializers import one_off
from .sigmoid import forward as _sigmoid_forward
from .tanh import forward as _tanh_forward

# the book's randn / sqrt(fan_in) for Wx (fan_in D) and Wh (fan_in H), untruncated
BOOK_NORMAL = one_off(jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal"))


def rnn(hidden: int, w_init=None, b_init=None) -> Layer:
    """A tanh recurrent layer with ``hidden`` units over a whole sequence.

    ``x = (xs, h0)`` with ``xs`` of shape ``(N, T, D)`` and ``h0`` of shape ``(N, H)``; returns
    ``y = (hs, hT)``. ``w_init(key, shape, dtype)`` (for ``Wx`` and ``Wh``) defaults to the book's
    ``randn / sqrt(fan_in)`` (``variance_scaling(1, "fan_in", "normal")``), ``b_init`` to zeros.
    ``init(key, in_shape, dtype)`` takes ``in_shape = (N, T, D)`` (or ``((N, T, D), (N, H))``,
    mirroring ``x``) and returns ``out_shape = ((N, T, H), (N, H))``, mirroring ``y``.
    """
    _check_hidden("rnn", hidden)

    def init(key, in_shape, dtype=jnp.float32):
        return _init_params("rnn", 1, hidden, w_init, b_init, key, in_shape, dtype, paired=False)

    def forward(params, x):
        xs, h0 = _split_pair("rnn", "x", x, "(xs, h0)")
        Wx, Wh, b = _check_params("rnn", params, 1)
        N, _, H = _check_xs("rnn", xs, Wx, Wh)
        _check_state("rnn", "h0", h0, N, H)
        xs_tm = jnp.swapaxes(xs, 0, 1)

        def step(h, xa_t):
            a = xa_t + h @ Wh
            h = _tanh(a)
            return h, (a, h)

        xa = _project(xs_tm, Wx, b)
        hT, (A, hs_tm) = lax.scan(step, _carried(h0, xa, Wh), xa)
        return (jnp.swapaxes(hs_tm, 0, 1), hT), (xs_tm, h0, A, hs_tm)

    def backward(params, residuals, dy):
        Wx, Wh, _ = _check_params("rnn", params, 1)
        xs_tm, h0, A, hs_tm = residuals
        dhs, dhT = _split_pair("rnn", "dy", dy, "(dhs, dhT)")
        dhs_tm = _check_dhs("rnn", dhs, hs_tm)
        _check_state("rnn", "dhT", dhT, *h0.shape)
        s = _sech(A)
        WhT = Wh.T

        def step(dh, inputs):
            dh_t, s_t = inputs
            da = ((dh + dh_t) * s_t) * s_t
            return da @ WhT, da

        dh0, dA = lax.scan(step, _carried(dhT, dhs_tm, s, Wh), (dhs_tm, s), reverse=True)
        dWx, db, dxs = _input_grads(xs_tm, dA, Wx)
        dWh = _flat(_previous(h0, hs_tm)).T @ _flat(dA)
        return {"Wx": dWx, "Wh": dWh, "b": db}, (dxs, dh0)

    return Layer(init, forward, backward)


# --- shared by rnn, lstm and gru ---------------------------------------------------------------

def _sigmoid_pair(a):
    """``(sigmoid(a), sigmoid(-a))``, both without cancellation (``sigmoid.py``)."""
    return _sigmoid_forward((), a)[1]


def _tanh(a):
    """``tanh(a)`` within a few ulps (``tanh.py``)."""
    return _tanh_forward((), a)[0]


def _sech(a):
    """``sech(a) = 2e / (1 + e*e)``, ``e = exp(-|a|)``: ``tanh'(a) = sech(a)**2`` without cancellation."""
    e = jnp.exp(-jnp.abs(a))
    return 2 * e / (1 + e * e)


def _carried(state, *operands):
    """``state`` in the dtype of the step's result (a float64 state with float32 params and x64
    off computes in float32), which ``lax.scan`` needs for its carry."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(state), *operands)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), state)


def _flat(a):
    """``(T, N, F)`` as ``(T*N, F)``: the rows of every step, for one matrix product over time."""
    return a.reshape(-1, a.shape[-1])


def _project(xs_tm, Wx, b):
    """``x_t Wx + b`` for every step as one ``(T*N, D) @ (D, kH)`` product, shaped ``(T, N, kH)``."""
    T, N, _ = xs_tm.shape
    return (_flat(xs_tm) @ Wx + b[None, :]).reshape(T, N, Wx.shape[1])


def _previous(s0, ss_tm):
    """``s_{t-1}`` for ``t = 0 .. T-1``: ``s0`` followed by all but the last of ``ss_tm``."""
    return jnp.concatenate([s0[None], ss_tm[:-1]], axis=0)


def _input_grads(xs_tm, dA, Wx):
    """``dWx = sum_t x_t.T @ dA_t``, ``db = sum dA``, ``dxs = dA @ Wx.T`` (batch-major), each
    one product or sum over all ``T*N`` rows."""
    T, N, D = xs_tm.shape
    dA2 = _flat(dA)
    dxs = (dA2 @ Wx.T).reshape(T, N, D)
    return _flat(xs_tm).T @ dA2, jnp.sum(dA2, axis=0), jnp.swapaxes(dxs, 0, 1)


def _check_hidden(name, hidden):
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise ValueError(f"{name}: hidden must be a positive int (the number of hidden units H), got {hidden!r}")


def _is_shape(s):
    return isinstance(s, (tuple, list)) and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in s)


def _init_params(name, gates, hidden, w_init, b_init, key, in_shape, dtype, paired):
    """Params ``{"Wx": (D, gates*H), "Wh": (H, gates*H), "b": (gates*H,)}`` and the out_shape
    ``((N, T, H), state)``, ``state`` being ``(N, H)`` or, ``paired``, ``((N, H), (N, H))``.
    ``in_shape`` is ``(N, T, D)`` or ``((N, T, D), state)``, mirroring ``x = (xs, state0)``."""
    H = hidden
    if _is_shape(in_shape):
        xs_shape, given = tuple(map(int, in_shape)), None
    elif isinstance(in_shape, (tuple, list)) and len(in_shape) == 2 and _is_shape(in_shape[0]):
        xs_shape, given = tuple(map(int, in_shape[0])), in_shape[1]
    else:
        raise ValueError(f"{name}: in_shape must be (N, T, D) or ((N, T, D), state shape), got {in_shape!r}")
    if len(xs_shape) != 3 or min(xs_shape) < 1:
        raise ValueError(f"{name}: in_shape must be (N, T, D) with N, T, D >= 1, got {xs_shape}")
    N, T, D = xs_shape
    state = ((N, H), (N, H)) if paired else (N, H)
    if given is not None and _as_tuples(given) != state:
        raise ValueError(f"{name}: in_shape's state shape {given!r} does not match {state} for xs shape {xs_shape}")
    w_init = w_init or BOOK_NORMAL
    b_init = b_init or jax.nn.initializers.zeros
    k_x, k_h, k_b = jax.random.split(key, 3)
    params = {"Wx": w_init(k_x, (D, gates * H), dtype), "Wh": w_init(k_h, (H, gates * H), dtype),
              "b": b_init(k_b, (gates * H,), dtype)}
    return params, ((N, T, H), state)


def _as_tuples(shape):
    return tuple(_as_tuples(s) for s in shape) if isinstance(shape, (tuple, list)) else shape


def _split_pair(name, arg, value, what):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = f"a {len(value)}-tuple" if isinstance(value, (tuple, list)) else type(value).__name__
        raise ValueError(f"{name}: {arg} must be a pair {what}, got {got}")
    return value


def _check_params(name, params, gates):
    """``Wx: (D, gates*H)``, ``Wh: (H, gates*H)``, ``b: (gates*H,)``; returns them."""
    if not isinstance(params, dict) or set(params) != {"Wx", "Wh", "b"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{name}: params must be a dict with keys ['Wh', 'Wx', 'b'], got {got}")
    Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
    require_rank(name, "Wx", Wx, rank=2)
    require_rank(name, "Wh", Wh, rank=2)
    H = Wh.shape[0]
    k = "" if gates == 1 else str(gates)
    if Wh.shape[1] != gates * H:
        raise ValueError(f"{name}: Wh must have shape (H, {k}H), got {Wh.shape}")
    if Wx.shape[1] != gates * H:
        raise ValueError(f"{name}: Wx shape {Wx.shape} does not match Wh shape {Wh.shape}; expected (D, {gates * H})")
    if jnp.shape(b) != (gates * H,):
        raise ValueError(f"{name}: b shape {jnp.shape(b)} does not match Wh shape {Wh.shape}; expected {(gates * H,)}")
    return Wx, Wh, b


def _check_xs(name, xs, Wx, Wh):
    """``xs`` is ``(N, T, D)`` with ``N, T >= 1`` and ``D`` rows of ``Wx``; returns ``(N, T, H)``."""
    require_rank(name, "xs", xs, rank=3, hint=" (N, T, D): batch, time, features")
    N, T, D = xs.shape
    if N == 0:
        raise ValueError(f"{name}: xs is an empty batch (xs.shape={xs.shape}); give at least one sequence")
    if T == 0:
        raise ValueError(f"{name}: xs has no time steps (T = 0, xs.shape={xs.shape}); "
                         "give a sequence of at least one step")
    if D != Wx.shape[0]:
        raise ValueError(f"{name}: xs has {D} features but Wx expects {Wx.shape[0]} "
                         f"(xs.shape={xs.shape}, Wx.shape={Wx.shape})")
    return N, T, Wh.shape[0]


def _check_state(name, arg, value, N, H):
    if jnp.shape(value) != (N, H):
        raise ValueError(f"{name}: {arg} shape {jnp.shape(value)} does not match (N, H) = {(N, H)}")


def _check_dhs(name, dhs, hs_tm):
    """``dhs`` is shaped like ``hs``, ``(N, T, H)``; returns it time-major."""
    T, N, H = hs_tm.shape
    if jnp.shape(dhs) != (N, T, H):
        raise ValueError(f"{name}: dhs shape {jnp.shape(dhs)} does not match hs shape {(N, T, H)}")
    return jnp.swapaxes(dhs, 0, 1)
