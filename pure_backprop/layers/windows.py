r"""The sliding windows of convolution and pooling, and their adjoint (im2col's two halves).

For a window ``(KH, KW)``, stride ``(sh, sw)`` and padding ``(ph, pw)`` on an ``(N, C, H, W)``
input, ``xp`` is the input padded with ``pad_value`` and output ``(i, j)`` reads the window
``xp[:, :, i sh : i sh + KH, j sw : j sw + KW]``::

    OH = (H + 2 ph - KH) // sh + 1               (the book's Pooling forgets the 2 ph: its bug)
    windows(x)[u KW + v][n, c, i, j] = xp[n, c, i sh + u, j sw + v]       u < KH, v < KW

one strided ``lax.slice`` per offset ``(u, v)``, in row-major window order, each ``(N, C, OH, OW)``:
the book's ``im2col`` loops, before its final transpose.

``windows`` copies entries, so its backward adds: ``add_windows(d)[n, c, a, e]`` is the sum of
``d[u KW + v][n, c, i, j]`` over every ``(u, v, i, j)`` with ``i sh + u = a + ph`` and
``j sw + v = e + pw`` (the book's ``col2im``). The adjoint of a strided slice is a ``lax.pad``
with ``s - 1`` zeros between entries, ``u - ph`` before them and the rest after; a negative
amount crops, which drops the padding rows (a constant has no gradient).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def output_size(hw, window, stride, padding):
    """``(OH, OW)``; the caller has checked that the padded input holds one window."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(hw, window, stride, padding))


def windows(x, window, stride, padding, pad_value=0.0):
    """The ``KH * KW`` strided views of padded ``x``, each ``(N, C, OH, OW)``, row-major order."""
    N, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw) = window, stride, padding
    oh, ow = output_size((H, W), window, stride, padding)
    xp = lax.pad(x, jnp.asarray(pad_value, x.dtype), [(0, 0, 0), (0, 0, 0), (ph, ph, 0), (pw, pw, 0)])
    return [lax.slice(xp, (0, 0, u, v), (N, C, u + (oh - 1) * sh + 1, v + (ow - 1) * sw + 1), (1, 1, sh, sw))
            for u in range(KH) for v in range(KW)]


def add_windows(parts, x_shape, window, stride, padding):
    """The adjoint of ``windows``: scatter-add ``KH * KW`` arrays ``(N, C, OH, OW)`` back onto ``x_shape``."""
    _, _, H, W = x_shape
    (KH, KW), (sh, sw), (ph, pw) = window, stride, padding
    oh, ow = output_size((H, W), window, stride, padding)
    dx = None
    for t, part in enumerate(parts):
        u, v = divmod(t, KW)
        placed = lax.pad(part, jnp.zeros((), part.dtype), [(0, 0, 0), (0, 0, 0),
                                                           (u - ph, H + ph - u - (oh - 1) * sh - 1, sh - 1),
                                                           (v - pw, W + pw - v - (ow - 1) * sw - 1, sw - 1)])
        dx = placed if dx is None else dx + placed
    return dx


def pair(layer, arg, value, minimum):
    """An int or a pair of ints, each ``>= minimum``, as a pair; a ``ValueError`` otherwise."""
    both = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(both, (tuple, list)) or len(both) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in both)):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{layer}: {arg} must be a {kind} int or a pair of {kind} ints, got {value!r}")
    return tuple(both)


def require_fits(layer, hw, window, padding, what, noun="window"):
    """The padded input holds at least one window."""
    padded = (hw[0] + 2 * padding[0], hw[1] + 2 * padding[1])
    if padded[0] < window[0] or padded[1] < window[1]:
        raise ValueError(f"{layer}: {noun} {tuple(window)} is larger than the padded input {padded} "
                         f"({what}, padding {tuple(padding)}); use a smaller {noun} or more padding")
