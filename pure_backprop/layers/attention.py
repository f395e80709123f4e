r"""Attention (the sequel's chapter 8): attention weights, their weighted sum, one decoder step
of both, and every decoder step at once.

Shapes: ``hs`` (N, S, H) holds the S encoder states of each of N sequences, ``h`` (N, H) one
decoder state per sequence, ``a`` (N, S) the attention weights, ``c`` (N, H) the context. Every
layer here takes two inputs, ``x = (hs, h)`` (``x = (hs, a)`` for ``weight_sum``), and returns
``dx = (dhs, dh)``; none has parameters.

Attention weight (``attention_weight``): the book's graph repeats ``h`` over the S positions,
multiplies by ``hs`` and sums over H, then takes a softmax over S::

    s[n, j] = sum_k hs[n, j, k] * h[n, k]            # the score of encoder position j
    a[n, :] = softmax(s[n, :])                        # over the S positions

Backward, node by node from the output. The softmax's Jacobian is
``d a_i / d s_j = a_i ([i == j] - a_j)``, so ``ds_j = sum_i da_i a_i ([i == j] - a_j)``::

    ds  = a * (da - sum(a * da, axis=1, keepdims=True))    # softmax (computed as in Numerics)
    dhs = ds[:, :, None] * h[:, None, :]                    # the multiply node: hs's partner is h
    dh  = sum(ds[:, :, None] * hs, axis=1)                  # multiply node, then the repeat node:
                                                            # h was copied over S, so its gradient sums them

Weighted sum (``weight_sum``): ``a`` repeated over H, multiplied by ``hs``, summed over S::

    c[n, k] = sum_j hs[n, j, k] * a[n, j]
    dhs     = dc[:, None, :] * a[:, :, None]    # the sum node copies dc to every j; times hs's partner a
    da      = sum(dc[:, None, :] * hs, axis=2)  # times a's partner hs, summed over the repeat of a over H

Attention (``attention``), one decoder step: ``c = weight_sum(hs, attention_weight(hs, h))``.
``hs`` feeds both pieces, so its gradient is the sum of the two branches; the backward calls
the two backwards in reverse order::

    dhs_1, da = weight_sum backward(dc)
    dhs_2, dh = attention_weight backward(da)
    dhs       = dhs_1 + dhs_2

Time attention (``time_attention``): the book runs one ``Attention`` per decoder step ``t`` of
``hs_dec`` (N, T, H), every one over the same ``hs_enc`` (N, S, H). Stacked over ``t`` the same
formulas are batched matrix products (``@`` over the last two axes, ``^T`` swaps them)::

    scores   = hs_dec @ hs_enc^T                  # (N, T, S): s for every t at once
    weights  = softmax(scores) over S             # (N, T, S)
    contexts = weights @ hs_enc                   # (N, T, H)

    dweights = dc @ hs_enc^T                      # (N, T, S): da for every t
    dscores  = weights * (dweights - sum(weights * dweights, over S))   # as ds (Numerics)
    dhs_enc  = weights^T @ dc + dscores^T @ hs_dec   # summed over t: every step reads hs_enc
    dhs_dec  = dscores @ hs_enc                   # dh for every t

The weights are kept in the residuals (``residuals.weights``, for every layer here), so a
caller can read them after a forward pass; ``time_attention_weights(hs_enc, hs_dec, mask)``
returns them alone (the heat maps of a trained model).

Padding mask. ``mask`` is a boolean (N, S) array, True where an encoder position is real and
False where it is padding. A padded position gets weight exactly 0 and gradient exactly 0:
its score is replaced by ``-inf`` before the softmax (``exp(-inf) = 0``), and its state by 0
before any product, so its values (even inf or NaN) never enter the arithmetic. A row with
every position masked has nothing to attend to: its weights, its context and every gradient
through it are 0, with no NaN. The module's pure functions (``time_attention_forward(hs_enc,
hs_dec, mask)``, ...) take the mask as an argument, so a network passes each batch's mask;
the layer factories (``time_attention(mask)``, ...) bind one fixed mask, the way
``with_targets`` binds labels, because a ``Layer``'s ``x`` holds only what is differentiated.
``mask_from_lengths(lengths, S)`` builds the mask of sequences of the given lengths.

Numerics. The softmax subtracts the row's maximum over the real positions before ``exp``
(0 for a fully masked row), so scores of any finite size neither overflow nor give
``inf / inf``; the exponentials are at most 1 and their sum at least 1 in a row with a real
position. The softmax backward is the product form ``a * (g - sum(a * g))``: it never divides
by ``a`` or by the sum of exponentials, and ``a = 0`` gives exactly 0, so scores of +-1e3
(weights that underflow to 0 or round to 1) give finite gradients. It is taken with
``g = da - da[k]``, ``k`` the position of the row's largest weight, not with ``g = da``: the
two are equal in exact arithmetic (the weights sum to 1, so the Jacobian maps a constant
``da`` to 0), but with ``g = da``, when one weight ``a_k`` is near 1 its factor
``da_k - sum(a * da)`` (the true value ``sum_(i != k) a_i (da_k - da_i)``, of size
``(1 - a_k) |da|``) is the difference of two numbers of size ``|da|``: an absolute error of
an ulp of ``|da|``, 100% of ``ds_k`` once ``1 - a_k < 1e-16``, and the error reaches ``dh``
through ``sum(ds * hs)``. With ``g_k = 0`` that factor is ``-sum_(i != k) a_i g_i``, a sum of
small terms with no cancellation, and every ``ds`` keeps its relative accuracy, whatever its
size, up to the rounding of the scores themselves (an ulp of ``|s|`` moves a weight by that
much relative: 1e-13 at ``|s| ~ 500``). ``tests/test_attention.py`` measures contexts and
gradients within 1e-13 of 1200-bit ``mpmath`` entry by entry, at rows one-hot to within
1e-16 whose other weights are 1e-20 to 1e-260. ``jax.vjp`` of ``jax.nn.softmax`` (its rule is
the textbook form, ``g = da``) has the cancellation, so near one-hot rows are compared with
``mpmath``, not with it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..checks import require_pair, require_rank
from ..core import Layer
from .softmax_cross_entropy import require_floating


# --- the shared pieces: the masked softmax, its backward, and the checks --------------------

def _real(hs, mask):
    """``hs`` with the states of padded positions set to 0 (``mask`` (N, S) or None)."""
    return hs if mask is None else jnp.where(mask[:, :, None], hs, 0.0)


def _softmax(scores, mask):
    """Softmax over the last axis of ``scores``; ``mask`` (same rank, broadcast over the axes of
    size 1) or None. Masked entries are exactly 0; a row with no real entry is all 0."""
    if mask is None:
        e = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
        return e / jnp.sum(e, axis=-1, keepdims=True)
    z = jnp.where(mask, scores, -jnp.inf)
    top = jnp.max(z, axis=-1, keepdims=True)
    top = jnp.where(jnp.any(mask, axis=-1, keepdims=True), top, 0.0)  # -inf in a fully masked row
    e = jnp.exp(z - top)  # exactly 0 where masked
    total = jnp.sum(e, axis=-1, keepdims=True)  # >= 1 in a row with a real entry, 0 in one without
    return e / jnp.where(total > 0, total, 1.0)


def _softmax_backward(a, da):
    """``ds = a * (da - sum(a * da))`` over the last axis, the softmax Jacobian times ``da``,
    computed as ``a * (g - sum(a * g))`` with ``g = da - da[k]``, ``k = argmax(a)`` (Numerics)."""
    top = jnp.take_along_axis(da, jnp.argmax(a, axis=-1)[..., None], axis=-1)
    g = da - top
    return a * (g - jnp.sum(a * g, axis=-1, keepdims=True))


def _check_states(name, arg, x, rank, hint):
    require_floating(name, arg, x)
    require_rank(name, arg, x, rank=rank, hint=hint)


def _check_hs_h(name, hs, h):
    """``hs`` (N, S, H) with S >= 1 and ``h`` (N, H)."""
    _check_states(name, "hs", hs, 3, " (N, S, H): N sequences of S encoder states of H features")
    _check_states(name, "h", h, 2, " (N, H)")
    n, s, features = hs.shape
    if s == 0:
        raise ValueError(f"{name}: hs has no encoder position (shape {hs.shape}); give S >= 1")
    if h.shape != (n, features):
        raise ValueError(f"{name}: h shape {h.shape} does not match hs shape {hs.shape}; "
                         f"expected (N, H) = {(n, features)}")


def _check_mask_kind(name, mask):
    """``mask`` is None or a boolean array of two axes (its sizes are checked against the input)."""
    if mask is None:
        return
    if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
        raise ValueError(f"{name}: mask must be a boolean array of shape (N, S), got a {type(mask).__name__}; "
                         f"wrap it in jnp.asarray(...)")
    if mask.dtype != jnp.bool_:
        raise ValueError(f"{name}: mask must be a boolean array (True at real encoder positions, False at "
                         f"padding), got dtype {mask.dtype}; build it with a comparison, e.g. "
                         f"mask_from_lengths(lengths, S)")
    if mask.ndim != 2:
        raise ValueError(f"{name}: mask must have shape (N, S), got shape {mask.shape}")


def _check_mask(name, mask, hs_arg, hs):
    _check_mask_kind(name, mask)
    if mask is not None and mask.shape != hs.shape[:2]:
        raise ValueError(f"{name}: mask shape {mask.shape} does not match {hs_arg} shape {hs.shape}; "
                         f"expected (N, S) = {hs.shape[:2]}")


def _check_gradient(name, arg, dy, expected_shape, what):
    if jnp.shape(dy) != tuple(expected_shape):
        raise ValueError(f"{name}: {arg} shape {jnp.shape(dy)} does not match the {what} shape "
                         f"{tuple(expected_shape)}")


def mask_from_lengths(lengths, length: int):
    """The (N, S) padding mask of N sequences of the given ``lengths`` padded to ``S = length``:
    ``mask[n, j] = j < lengths[n]`` (True at the first ``lengths[n]`` positions)."""
    require_rank("mask_from_lengths", "lengths", lengths, rank=1, hint=" (N,): one length per sequence")
    return jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]


# --- attention weight ----------------------------------------------------------------------

class AttentionWeightResiduals(NamedTuple):
    hs: jax.Array  # (N, S, H), padded states set to 0
    h: jax.Array  # (N, H)
    weights: jax.Array  # (N, S)


def attention_weight_forward(hs, h, mask=None):
    """``a = softmax over S of sum_k hs[:, :, k] * h[:, None, k]``, (N, S); masked positions 0."""
    _check_hs_h("attention_weight", hs, h)
    _check_mask("attention_weight", mask, "hs", hs)
    hs = _real(hs, mask)
    scores = jnp.sum(hs * h[:, None, :], axis=2)
    a = _softmax(scores, mask)
    return a, AttentionWeightResiduals(hs, h, a)


def attention_weight_backward(residuals, da):
    """``(dhs, dh)`` from ``da`` (N, S)."""
    hs, h, a = residuals
    _check_gradient("attention_weight", "da", da, a.shape, "weights")
    ds = _softmax_backward(a, da)
    return ds[:, :, None] * h[:, None, :], jnp.sum(ds[:, :, None] * hs, axis=1)


# --- weighted sum --------------------------------------------------------------------------

class WeightSumResiduals(NamedTuple):
    hs: jax.Array  # (N, S, H)
    weights: jax.Array  # (N, S)


def weight_sum_forward(hs, a):
    """``c = sum_j hs[:, j, :] * a[:, j, None]``, (N, H)."""
    _check_weight_sum(hs, a)
    return jnp.sum(hs * a[:, :, None], axis=1), WeightSumResiduals(hs, a)


def _check_weight_sum(hs, a):
    _check_states("weight_sum", "hs", hs, 3, " (N, S, H): N sequences of S encoder states of H features")
    _check_states("weight_sum", "a", a, 2, " (N, S): one weight per encoder position")
    if a.shape != hs.shape[:2]:
        raise ValueError(f"weight_sum: a shape {a.shape} does not match hs shape {hs.shape}; "
                         f"expected (N, S) = {hs.shape[:2]}")


def weight_sum_backward(residuals, dc):
    """``(dhs, da)`` from ``dc`` (N, H)."""
    hs, a = residuals
    _check_gradient("weight_sum", "dc", dc, (hs.shape[0], hs.shape[2]), "context")
    dc_copied = dc[:, None, :]  # the sum over S copies dc to every position
    return dc_copied * a[:, :, None], jnp.sum(dc_copied * hs, axis=2)


# --- attention: the two for one decoder step -----------------------------------------------

class AttentionResiduals(NamedTuple):
    attention_weight: AttentionWeightResiduals
    weight_sum: WeightSumResiduals

    @property
    def weights(self):
        """The attention weights (N, S)."""
        return self.attention_weight.weights


def attention_forward(hs, h, mask=None):
    """The context ``c`` (N, H) of one decoder state ``h`` (N, H) over ``hs`` (N, S, H)."""
    _check_hs_h("attention", hs, h)
    _check_mask("attention", mask, "hs", hs)
    hs = _real(hs, mask)
    a, weight_residuals = attention_weight_forward(hs, h, mask)
    c, sum_residuals = weight_sum_forward(hs, a)
    return c, AttentionResiduals(weight_residuals, sum_residuals)


def attention_backward(residuals, dc):
    """``(dhs, dh)`` from ``dc`` (N, H): the two backwards in reverse order."""
    hs = residuals.weight_sum.hs
    _check_gradient("attention", "dc", dc, (hs.shape[0], hs.shape[2]), "context")
    dhs_sum, da = weight_sum_backward(residuals.weight_sum, dc)
    dhs_weight, dh = attention_weight_backward(residuals.attention_weight, da)
    return dhs_sum + dhs_weight, dh


# --- time attention: every decoder step at once --------------------------------------------

class TimeAttentionResiduals(NamedTuple):
    hs_enc: jax.Array  # (N, S, H), padded states set to 0
    hs_dec: jax.Array  # (N, T, H)
    weights: jax.Array  # (N, T, S): weights[n, t] are decoder step t's weights over the S positions


def _check_time(hs_enc, hs_dec, mask):
    name = "time_attention"
    _check_states(name, "hs_enc", hs_enc, 3, " (N, S, H): N sequences of S encoder states")
    _check_states(name, "hs_dec", hs_dec, 3, " (N, T, H): N sequences of T decoder states")
    n, s, features = hs_enc.shape
    if s == 0:
        raise ValueError(f"{name}: hs_enc has no encoder position (shape {hs_enc.shape}); give S >= 1")
    if hs_dec.shape[0] != n or hs_dec.shape[2] != features:
        raise ValueError(f"{name}: hs_dec shape {hs_dec.shape} does not match hs_enc shape {hs_enc.shape}; "
                         f"expected (N, T, H) = ({n}, T, {features})")
    _check_mask(name, mask, "hs_enc", hs_enc)


def time_attention_forward(hs_enc, hs_dec, mask=None):
    """Contexts (N, T, H): decoder step ``t`` of ``hs_dec`` (N, T, H) attends over ``hs_enc``
    (N, S, H); ``mask`` (N, S) boolean or None. Returns ``(contexts, residuals)``."""
    _check_time(hs_enc, hs_dec, mask)
    hs_enc = _real(hs_enc, mask)
    scores = jnp.einsum("nth,nsh->nts", hs_dec, hs_enc)
    weights = _softmax(scores, None if mask is None else mask[:, None, :])
    contexts = jnp.einsum("nts,nsh->nth", weights, hs_enc)
    return contexts, TimeAttentionResiduals(hs_enc, hs_dec, weights)


def time_attention_backward(residuals, dc):
    """``(dhs_enc, dhs_dec)`` from ``dc`` (N, T, H)."""
    hs_enc, hs_dec, weights = residuals
    _check_gradient("time_attention", "dc", dc, hs_dec.shape, "contexts")
    dweights = jnp.einsum("nth,nsh->nts", dc, hs_enc)
    dscores = _softmax_backward(weights, dweights)
    dhs_enc = jnp.einsum("nts,nth->nsh", weights, dc) + jnp.einsum("nts,nth->nsh", dscores, hs_dec)
    dhs_dec = jnp.einsum("nts,nsh->nth", dscores, hs_enc)
    return dhs_enc, dhs_dec


def time_attention_weights(hs_enc, hs_dec, mask=None):
    """The attention weights (N, T, S) of ``time_attention_forward``: row ``[n, t]`` is how
    decoder step ``t`` of sequence ``n`` spreads over the S encoder positions (sums to 1 over
    the real ones, 0 at padding). Under ``jit`` the contexts are not computed."""
    return time_attention_forward(hs_enc, hs_dec, mask)[1].weights


# --- the layers ----------------------------------------------------------------------------

def _pair_layer(name, forward, backward, mask):
    """A parameter-free two-input ``Layer`` around ``forward(a, b, mask)`` and ``backward``;
    its ``init`` takes ``in_shape = (shape_a, shape_b)`` and runs the forward's checks on them."""
    _check_mask_kind(name, mask)

    def init(key, in_shape, dtype=jnp.float32):
        del key  # no params
        shapes = require_pair(name, in_shape)
        abstract = [jax.ShapeDtypeStruct(tuple(s), dtype) for s in shapes]
        y = jax.eval_shape(lambda a, b: forward(a, b, mask)[0], *abstract)
        return (), y.shape

    def layer_forward(params, x):
        del params
        a, b = require_pair(name, x)
        return forward(a, b, mask)

    def layer_backward(params, residuals, dy):
        del params
        return (), backward(residuals, dy)

    return Layer(init, layer_forward, layer_backward)


def attention_weight(mask=None) -> Layer:
    """``x = (hs, h)`` -> weights (N, S); ``mask`` (N, S) boolean, bound, or None."""
    return _pair_layer("attention_weight", attention_weight_forward, attention_weight_backward, mask)


weight_sum = _pair_layer("weight_sum", lambda hs, a, mask: weight_sum_forward(hs, a), weight_sum_backward, None)
"""``x = (hs, a)`` -> context (N, H)."""


def attention(mask=None) -> Layer:
    """``x = (hs, h)`` -> context (N, H) of one decoder step; ``mask`` (N, S) boolean, bound, or None."""
    return _pair_layer("attention", attention_forward, attention_backward, mask)


def time_attention(mask=None) -> Layer:
    """``x = (hs_enc, hs_dec)`` -> contexts (N, T, H); ``mask`` (N, S) boolean, bound, or None.
    The weights of a forward pass are ``residuals.weights`` (N, T, S)."""
    return _pair_layer("time_attention", time_attention_forward, time_attention_backward, mask)
