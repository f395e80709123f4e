r"""2-D convolution (chapter 7), NCHW like the book, with two hand-derived backward passes.

Shapes: ``x`` is ``(N, C, H, W)``, the filters ``W`` are ``(FN, C, FH, FW)`` (OIHW), the bias
``b`` is ``(FN,)``, the stride is ``(sh, sw)`` and the zero padding ``(ph, pw)``. ``xp`` is ``x``
padded with ``ph`` zero rows above and below and ``pw`` zero columns left and right.

Forward (a cross-correlation, as in the book and in every deep-learning library)::

    OH = (H + 2 ph - FH) // sh + 1                 OW = (W + 2 pw - FW) // sw + 1
    y[n, f, i, j] = b[f] + sum_{c, u, v} W[f, c, u, v] * xp[n, c, i sh + u, j sw + v]

Partial derivatives (``y`` is linear in each of ``b``, ``W`` and ``xp``)::

    dy[n,f,i,j]/db[f]        = 1
    dy[n,f,i,j]/dW[f,c,u,v]  = xp[n, c, i sh + u, j sw + v]
    dy[n,f,i,j]/dxp[n,c,a,e] = W[f, c, a - i sh, e - j sw]     (0 where the offset leaves the filter)

so, summing over every output that each input reaches::

    db[f]         = sum_{n,i,j} dy[n, f, i, j]
    dW[f,c,u,v]   = sum_{n,i,j} dy[n, f, i, j] * xp[n, c, i sh + u, j sw + v]
    dxp[n,c,a,e]  = sum_{f,i,j} dy[n, f, i, j] * W[f, c, a - i sh, e - j sw]
    dx            = dxp[:, :, ph:ph+H, pw:pw+W]      (the padding is a constant: its gradient is dropped)

**im2col form (the book).** ``col[(n,i,j), (c,u,v)] = xp[n, c, i sh + u, j sw + v]`` copies every
window into one row of an ``(N OH OW, C FH FW)`` matrix, and ``Wc = W.reshape(FN, C FH FW)``::

    y2  = col @ Wc.T + b                   y = y2.reshape(N, OH, OW, FN).transpose(0, 3, 1, 2)
    dy2 = dy.transpose(0, 2, 3, 1).reshape(N OH OW, FN)
    db  = sum(dy2, axis=0)                 dW = (dy2.T @ col).reshape(FN, C, FH, FW)
    dcol = dy2 @ Wc                        dx = col2im(dcol)

That is the affine layer's backward on the matrix product. ``im2col`` is a copy node, so its
backward ``col2im`` *adds* each entry of ``dcol`` to the pixel it was copied from (a pixel that lies
in several windows collects several terms). Both are written with strided ``lax.slice`` and its
adjoint, an interior-padded ``lax.pad``, one per filter offset ``(u, v)`` like the book's loops
(``windows.py``, shared with pooling).

**Convolution form.** The same sums, read as convolutions (``lax.conv_general_dilated``):

* ``dW[f,c,u,v] = sum_{n,i,j} xp[n,c,u + i sh, v + j sw] dy[n,f,i,j]`` is a correlation of ``xp``
  with ``dy`` as the kernel, the roles of the axes exchanged (``x`` read as ``CNHW``: batch ``c``,
  features ``n``; ``dy`` as ``IOHW``: in ``n``, out ``f``), the kernel dilated by the stride
  (``rhs_dilation``), at stride 1. Its spatial size is ``Hp - (OH-1) sh = FH + rh``, where
  ``rh = (H + 2 ph - FH) - (OH - 1) sh`` is the *remainder*: the last ``rh`` rows no window
  reaches. The first ``FH`` rows (and ``FW`` columns) are ``dW``.
* ``dxp[a] = sum_i dy[i] W[a - i sh]`` is a *true* convolution (the filter flipped) of ``dy``
  dilated by the stride (``sh - 1`` zeros between rows: ``lhs_dilation``) with ``W`` read as
  ``IOHW`` (in ``f``, out ``c``). Padding the dilated ``dy`` by ``FH - 1`` on each side gives
  the full convolution, of length ``(OH-1) sh + FH = Hp - rh``; the remainder adds ``rh`` more
  at the bottom, and cropping ``ph`` on each side gives ``dx`` directly, so the padding is
  ``(FH - 1 - ph, FH - 1 - ph + rh)`` (negative when ``ph > FH - 1``, which crops). Forgetting
  ``rh`` loses the last rows whenever ``(H + 2 ph - FH) % sh != 0``; reusing the forward's
  ``(ph, ph)`` is right only when ``ph = FH - 1 - ph``.

**Offsets form of ``dW``.** im2col's ``dW = dy2.T @ col`` taken one column block at a time: the
block of offset ``(u, v)`` is the ``(N OH OW, C)`` matrix ``xs_uv[(n,i,j), c] = xp[n, c, i sh + u,
j sw + v]``, so ``dW[:, :, u, v] = dy2.T @ xs_uv``: ``FH FW`` matrix products, each of a strided
view of ``xp`` read as NHWC (a plain matrix, no transpose per block), and ``col`` is never built.

**Which one ``method="auto"`` runs.** Each of the three parts (forward, ``dW``, ``dx``) is chosen
from the layer's shape. Forward + backward, float32, batch 100, jit-compiled, median ms on the
2-core CPU, shared with other jobs (about +-30 % noise: ``auto`` and the forced method it picks
run the same computation). The layers of the book's networks come from one run of
``benchmarks/conv_speed.py``; the rows marked * from a scratch run of the same formulations::

    layer (K = C FH FW)               im2col  conv form  mixed  jax.vjp   auto picks
    1->30  5x5 p0 on 28x28  (K=25)        34       145    103      130   im2col
    1->16  3x3 p1 on 28x28  (K=9)         13        32     20       35   im2col
    3->16  3x3 p1 on 28x28  (K=27) *       8        19     12       16   im2col
    2->30  5x5 p2 on 28x28  (K=50) *      76        60     38       75   conv
    8->16  3x3 p1 on 28x28  (K=72) *      64        30     65       28   conv
    16->16 3x3 p1 on 28x28               275       103    245      124   conv
    16->32 3x3 p1 on 14x14                44        30     43       32   conv
    16->32 3x3 s2 p1 on 28x28 *           32        33     35       34   conv
    32->64 3x3 p1 on 8x8                  16        18     15       15   conv
    64->64 3x3 p1 on 8x8                  39        48     42       38   conv
    32->32 3x3 p2 on 14x14               190       589    179      599   offsets
    16->16 3x3 p2 on 28x28 *             175       211    168      206   offsets

("mixed": forward and ``dW`` by im2col, ``dx`` by the convolution form.) A later run (one script,
``x`` 100 x C x H x H, 3x3 filters, the machine loaded 7-8 on 2 cores, so every figure is inflated)
added ``"offsets"``: forward and ``dx`` by the convolution form, ``dW`` by the offsets form::

    layer                             im2col  conv form  mixed  offsets  jax.vjp
    32->32 3x3 p2 on 14x14               141       390    139       69      408
    16->16 3x3 p2 on 28x28               226       330    224      135      381
    8->16  3x3 p2 on 28x28               100       181    103       71      182
    16->16 3x3 p1 on 28x28               202        72    231      111       98
    64->64 3x3 p1 on 8x8                  45        37     37       35       40

``benchmarks/conv_speed.py`` then gave, for DeepConvNet's 32->32 pad-2 layer (loaded 8 on 2 cores):
auto (offsets) 53, forced offsets 72 (the same computation: noise), mixed 124, im2col 119, conv
form 419, ``jax.vjp`` 425. The rule drawn from them:

1. ``K = C FH FW <= 32`` (one input channel of 5x5, up to three of 3x3): **im2col for all
   three parts**, 2-4x faster than ``jax.vjp``. ``col`` is then at most ``K`` copies of a thin
   input and its matrix products are cheap, while XLA's CPU convolution with so few input
   channels is slow.
2. Otherwise, if the layer is *over-padded*, ``2 ph > FH - 1`` or ``2 pw > FW - 1`` (the output
   is larger than the input, as in DeepConvNet's pad-2 layer): **offsets**. The ``dW``
   convolution's kernel ``dy`` is then larger than ``x`` itself, and XLA's CPU convolution was
   1.2-3x slower than im2col on such shapes (``jax.vjp`` runs the same convolution); im2col's
   product avoids it but copies ``x`` ``FH FW`` times into ``col`` and transposes it, and the
   offsets form does the same products without that copy, 1.4-2x faster than mixed (im2col
   forward and ``dW``, convolution ``dx``), which this rule picked before. Forward and ``dx``
   stay convolutions (col2im costs ``FH FW`` scatter-adds of the whole input).
3. Otherwise: **the convolution form for all three parts**: the convolutions ``jax.vjp`` runs,
   so the two are level (ratios 0.8-1.1 in the runs), and faster than materialising a ``col``
   of ``FH FW`` times a many-channel input.

``auto_plan`` returns the choice; ``method="im2col"``, ``"conv"``, ``"mixed"`` or ``"offsets"`` forces one.
``forward`` and ``backward`` are wrapped in ``jax.jit`` (the im2col path is dozens of small
operations; compiled once per shape they run fast eagerly too); they nest under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..checks import require_rank
from ..core import Layer
from ..initializers import weight_init
from .windows import add_windows, output_size, pair, require_fits, windows

METHODS = ("auto", "im2col", "conv", "mixed", "offsets")
# (forward and dW by im2col, dx by col2im); without col, dW is the offsets form for "offsets"
# and a convolution for "conv"
PLANS = {"im2col": (True, True), "mixed": (True, False), "conv": (False, False), "offsets": (False, False)}
SMALL_CONTRACTION = 32  # K = C * FH * FW at or below which im2col runs all three parts


def conv2d(filters: int, kernel_size, stride=1, padding=0, method: str = "auto", w_init=None, b_init=None) -> Layer:
    """A 2-D convolution with ``filters`` output channels; NCHW input, OIHW filters.

    ``kernel_size``, ``stride`` and ``padding`` are an int or a pair ``(rows, columns)``.
    ``method``: ``"auto"`` (chosen per shape, see the module docstring), ``"im2col"``, ``"conv"``,
    ``"mixed"`` (forward and ``dW`` by im2col, ``dx`` by the convolution form) or ``"offsets"``
    (forward and ``dx`` by the convolution form, ``dW`` by one matrix product per filter offset).
    ``w_init(key, shape, dtype)`` defaults to He: a normal of std ``sqrt(2 / fan_in)`` with
    ``fan_in = C * FH * FW`` (``weight_init("he", in_axis=1, out_axis=0)``: OIHW axes; jax's
    ``he_normal()`` assumes HWIO and would take ``fan_in = FN * C * FH``); ``b_init`` defaults to
    zeros. Params: ``{"W": (filters, C, FH, FW), "b": (filters,)}``.
    """
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
        raise ValueError(f"conv2d: filters must be a positive int, got {filters!r}")
    kernel = pair("conv2d", "kernel_size", kernel_size, minimum=1)
    strides = pair("conv2d", "stride", stride, minimum=1)
    pads = pair("conv2d", "padding", padding, minimum=0)
    if method not in METHODS:
        raise ValueError(f"conv2d: method must be one of {METHODS}, got {method!r}")
    w_init = w_init or weight_init("he", in_axis=1, out_axis=0)
    b_init = b_init or jax.nn.initializers.zeros

    def init(key, in_shape, dtype=jnp.float32):
        if len(in_shape) != 4:
            raise ValueError(f"conv2d: in_shape must be (N, C, H, W), got {tuple(in_shape)}")
        out_hw = _output_size(in_shape[2:], kernel, strides, pads, f"in_shape {tuple(in_shape)}")
        k_w, k_b = jax.random.split(key)
        params = {"W": w_init(k_w, (filters, in_shape[1]) + kernel, dtype), "b": b_init(k_b, (filters,), dtype)}
        return params, (in_shape[0], filters) + out_hw

    def forward(params, x):
        W, b = params["W"], params["b"]
        _check(x, W, b, kernel, strides, pads)
        col_forward, _ = PLANS[auto_plan(W.shape, pads) if method == "auto" else method]
        if col_forward:
            col, (oh, ow) = im2col(x, kernel, strides, pads)
            y2 = col @ W.reshape(W.shape[0], -1).T + b[None, :]
            y = y2.reshape(x.shape[0], oh, ow, W.shape[0]).transpose(0, 3, 1, 2)
            return y, (x, col)
        x, W = _promoted(x, W)
        y = lax.conv_general_dilated(x, W, strides, [(pads[0], pads[0]), (pads[1], pads[1])],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None], (x, None)

    def backward(params, residuals, dy):
        W = params["W"]
        x, col = residuals
        out = (x.shape[0], W.shape[0]) + output_size(x.shape[2:], kernel, strides, pads)
        if dy.shape != out:
            raise ValueError(f"conv2d: dy shape {dy.shape} does not match output shape {out}")
        plan = auto_plan(W.shape, pads) if method == "auto" else method
        _, dx_by_col2im = PLANS[plan]
        dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, W.shape[0])  # (N OH OW, FN): im2col's rows
        db = jnp.sum(dy, axis=(0, 2, 3))
        if col is not None:
            dW = (dy2.T @ col).reshape(W.shape)
        elif plan == "offsets":
            dW = offsets_dW(x, dy2, kernel, strides, pads)
        else:
            dW = conv_dW(x, dy, kernel, strides, pads)
        if dx_by_col2im:
            dx = col2im(dy2 @ W.reshape(W.shape[0], -1), x.shape, kernel, strides, pads)
        else:
            dx = conv_dx(dy, W, x.shape, strides, pads)
        return {"W": dW, "b": db}, dx

    return Layer(init, jax.jit(forward), jax.jit(backward))


def auto_plan(w_shape, padding) -> str:
    """``method="auto"``'s choice for filters of shape ``(FN, C, FH, FW)`` and ``padding`` (an int
    or a pair ``(rows, columns)``, as ``conv2d`` takes it): ``"im2col"``, ``"offsets"`` or ``"conv"``
    (the rule of the module docstring)."""
    _, C, FH, FW = w_shape
    ph, pw = pair("conv2d", "padding", padding, minimum=0)
    if C * FH * FW <= SMALL_CONTRACTION:
        return "im2col"
    if 2 * ph > FH - 1 or 2 * pw > FW - 1:  # over-padded: output larger than input
        return "offsets"
    return "conv"


# --- im2col / col2im: a copy of every window, and its adjoint (``windows.py``) ---------------

def im2col(x, kernel, stride, padding):
    """``(N, C, H, W) -> (N OH OW, C FH FW)``: row ``(n, i, j)`` holds the window of output ``(i, j)``."""
    N, C = x.shape[:2]
    views = windows(x, kernel, stride, padding)                 # FH FW arrays (N, C, OH, OW)
    oh, ow = views[0].shape[2:]
    col = jnp.stack(views, axis=2).reshape(N, C * kernel[0] * kernel[1], oh, ow)
    return col.transpose(0, 2, 3, 1).reshape(N * oh * ow, -1), (oh, ow)


def col2im(dcol, x_shape, kernel, stride, padding):
    """The adjoint of ``im2col``: each entry of ``dcol`` is added to the pixel it was copied from."""
    N, C = x_shape[:2]
    oh, ow = output_size(x_shape[2:], kernel, stride, padding)
    d = dcol.reshape(N, oh, ow, C, kernel[0] * kernel[1]).transpose(4, 0, 3, 1, 2)  # (FH FW, N, C, OH, OW)
    return add_windows(list(d), x_shape, kernel, stride, padding)


# --- the backward pass as convolutions -------------------------------------------------------

def conv_dW(x, dy, kernel, stride, padding):
    """``dW``: ``x`` correlated with ``dy`` dilated by the stride, batch and feature axes exchanged."""
    (FH, FW), (ph, pw) = kernel, padding
    x, dy = _promoted(x, dy)
    full = lax.conv_general_dilated(x, dy, (1, 1), [(ph, ph), (pw, pw)], rhs_dilation=stride,
                                    dimension_numbers=("CNHW", "IOHW", "CNHW"))  # (FN, C, FH + rh, FW + rw)
    return full[:, :, :FH, :FW]


def offsets_dW(x, dy2, kernel, stride, padding):
    """``dW[:, :, u, v] = dy2.T @ xs_uv`` for each filter offset: ``xs_uv`` is the ``(N OH OW, C)``
    strided view of ``xp`` (NHWC) that im2col would copy into ``col``'s block ``(u, v)``."""
    (FH, FW), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C = x.shape[:2]
    x, dy2 = _promoted(x, dy2)
    xp = jnp.pad(x.transpose(0, 2, 3, 1), ((0, 0), (ph, ph), (pw, pw), (0, 0)))  # (N, Hp, Wp, C)
    oh, ow = output_size(x.shape[2:], kernel, stride, padding)
    blocks = [dy2.T @ lax.slice(xp, (0, u, v, 0), (N, u + (oh - 1) * sh + 1, v + (ow - 1) * sw + 1, C),
                                (1, sh, sw, 1)).reshape(-1, C)
              for u in range(FH) for v in range(FW)]                                  # FH FW of (FN, C)
    return jnp.stack(blocks, axis=-1).reshape(dy2.shape[1], C, FH, FW)


def conv_dx(dy, W, x_shape, stride, padding):
    """``dx``: ``dy`` dilated by the stride, convolved with the flipped filters, remainder padded."""
    _, _, FH, FW = W.shape
    (sh, sw), (ph, pw) = stride, padding
    rh = (x_shape[2] + 2 * ph - FH) - (dy.shape[2] - 1) * sh
    rw = (x_shape[3] + 2 * pw - FW) - (dy.shape[3] - 1) * sw
    dy, W = _promoted(dy, W)
    return lax.conv_general_dilated(dy, jnp.flip(W, (2, 3)), (1, 1),
                                    [(FH - 1 - ph, FH - 1 - ph + rh), (FW - 1 - pw, FW - 1 - pw + rw)],
                                    lhs_dilation=stride, dimension_numbers=("NCHW", "IOHW", "NCHW"))


def _promoted(a, b):
    """``lax.conv_general_dilated`` wants equal dtypes; promote like the matrix products do."""
    dtype = jnp.result_type(a, b)
    return a.astype(dtype), b.astype(dtype)


# --- argument and shape checks ---------------------------------------------------------------

def _output_size(hw, kernel, stride, padding, what):
    require_fits("conv2d", hw, kernel, padding, what, noun="kernel")
    return output_size(hw, kernel, stride, padding)


def _check(x, W, b, kernel, stride, padding):
    require_rank("conv2d", "x", x, rank=4, hint=" (N, C, H, W)")
    require_rank("conv2d", "W", W, rank=4, hint=" (FN, C, FH, FW)")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but W expects {W.shape[1]} "
                         f"(x.shape={x.shape}, W.shape={W.shape})")
    if W.shape[2:] != kernel:
        raise ValueError(f"conv2d: W has kernel {W.shape[2:]} but the layer was built with kernel_size {kernel} "
                         f"(W.shape={W.shape})")
    if jnp.shape(b) != (W.shape[0],):
        raise ValueError(f"conv2d: b shape {jnp.shape(b)} does not match W shape {W.shape}; expected {(W.shape[0],)}")
    _output_size(x.shape[2:], kernel, stride, padding, f"x.shape={x.shape}")
