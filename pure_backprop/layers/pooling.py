r"""Max pooling and average pooling (chapter 7), NCHW, any window, stride and padding.

Both read the windows of ``windows.py``: for a window ``(KH, KW)``, stride ``(sh, sw)`` and
padding ``(ph, pw)``, ``OH = (H + 2 ph - KH) // sh + 1`` (the book's ``Pooling`` computes
``OH = (H - KH) // sh + 1``, ignoring ``pad``, and fails for ``pad != 0``; here the padding
counts) and ``w_t[n, c, i, j] = xp[n, c, i sh + u, j sw + v]`` for ``t = u KW + v``. The stride
defaults to the window (non-overlapping windows). The padding must be smaller than the window,
so that every window holds at least one entry of ``x``.

**Max pooling**, ``xp`` padded with ``-inf`` (a padding entry never wins)::

    y[n, c, i, j]      = max_t w_t[n, c, i, j]
    t*[n, c, i, j]     = the FIRST t reaching that maximum (row-major window order) at an entry of x
    dy[n,c,i,j]/dw_t   = 1 if t = t*[n, c, i, j] else 0
    dx                 = add_windows([dy * (t*== t) for t in windows])

A window holding two equal maxima has no derivative (it is a kink); the whole gradient goes to
the first of them in row-major order: the book's ``np.argmax``, and what ``jax.grad`` of
``lax.reduce_window(x, -inf, lax.max, ...)`` does (it lowers to ``select_and_scatter_add`` with a
``>=`` selection). ``jax.grad`` of ``jnp.max`` over reshaped windows splits it among the ties
instead. A window whose entries of ``x`` are all ``-inf`` gives ``y = -inf`` and a tie of those
entries with its padding: the gradient goes to the first entry of ``x``, never to the padding
(``reduce_window``'s gradient picks the padding where it comes first, and that gradient is lost).
Overlapping windows each pick their own maximum, and a pixel that wins in several
windows collects all their gradients (``add_windows`` adds). The residual is ``t*``, one
integer per output, as the book keeps ``arg_max``.

**Average pooling**, ``xp`` padded with zeros, and the divisor is always the window area
``KH KW``, padding included (``count_include_pad=True``, as a mean over the book's zero-padded
``im2col`` rows would give; PyTorch's default too)::

    y[n, c, i, j]    = (1 / (KH KW)) sum_t w_t[n, c, i, j]
    dy[n,c,i,j]/dw_t = 1 / (KH KW)
    dx               = add_windows([dy / (KH KW)] * (KH KW))     (padding rows dropped)

Speed (``benchmarks/conv_speed.py``, batch 100, float32, 2-core CPU): max pooling 2x2 stride 2,
forward + backward, takes 0.3-0.7x the time of ``jax.vjp`` of ``lax.reduce_window`` for the
pooling layers of SimpleConvNet and DeepConvNet. ``forward`` and ``backward`` are wrapped in
``jax.jit``; they nest under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..checks import require_rank
from ..core import Layer
from .windows import add_windows, output_size, pair, require_fits, windows


def max_pool2d(window, stride=None, padding=0) -> Layer:
    """Max pooling over ``window`` (int or pair); ``stride`` defaults to ``window``; ``-inf`` padding.

    Ties: the first maximum in row-major window order receives the whole gradient, always an
    entry of ``x`` (a window of ``-inf`` entries gives ``-inf`` and never sends it to the padding).
    """
    window, stride, padding = _arguments("max_pool2d", window, stride, padding)

    def forward(params, x):
        del params
        _check_input("max_pool2d", x, window, padding)
        stacked = jnp.stack(windows(x, window, stride, padding, -jnp.inf))   # (KH KW, N, C, OH, OW)
        y = jnp.max(stacked, axis=0)
        first_max = jnp.argmax(stacked, axis=0)                             # argmax returns the first
        # y = -inf: every entry of x in the window is -inf, and so is the padding, which comes
        # first where the window starts above or left of x; its first entry of x takes dy instead
        is_x = jnp.stack(windows(jnp.ones((1, 1) + x.shape[2:]), window, stride, padding))  # 1 on x, 0 on padding
        first_max = jnp.where(y == -jnp.inf, jnp.argmax(is_x, axis=0), first_max)
        return y, (x, first_max)

    def backward(params, residuals, dy):
        del params
        x, first_max = residuals
        _check_dy("max_pool2d", dy, first_max.shape)
        parts = [jnp.where(first_max == t, dy, jnp.zeros_like(dy)) for t in range(window[0] * window[1])]
        return (), add_windows(parts, x.shape, window, stride, padding)

    return Layer(_init("max_pool2d", window, stride, padding), jax.jit(forward), jax.jit(backward))


def avg_pool2d(window, stride=None, padding=0) -> Layer:
    """Average pooling over ``window`` (int or pair); ``stride`` defaults to ``window``; zero
    padding, counted in the divisor (always ``KH * KW``)."""
    window, stride, padding = _arguments("avg_pool2d", window, stride, padding)
    area = window[0] * window[1]

    def forward(params, x):
        del params
        _check_input("avg_pool2d", x, window, padding)
        views = windows(x, window, stride, padding, 0.0)
        total = views[0]
        for view in views[1:]:
            total = total + view
        return total / area, x

    def backward(params, x, dy):
        del params
        _check_dy("avg_pool2d", dy, x.shape[:2] + output_size(x.shape[2:], window, stride, padding))
        share = dy / area
        return (), add_windows([share] * area, x.shape, window, stride, padding)

    return Layer(_init("avg_pool2d", window, stride, padding), jax.jit(forward), jax.jit(backward))


def _init(name, window, stride, padding):
    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype  # no params
        if len(in_shape) != 4:
            raise ValueError(f"{name}: in_shape must be (N, C, H, W), got {tuple(in_shape)}")
        require_fits(name, in_shape[2:], window, padding, f"in_shape {tuple(in_shape)}")
        return (), tuple(in_shape[:2]) + output_size(in_shape[2:], window, stride, padding)

    return init


def _arguments(name, window, stride, padding):
    window = pair(name, "window", window, 1)
    stride = window if stride is None else pair(name, "stride", stride, 1)
    padding = pair(name, "padding", padding, 0)
    if padding[0] >= window[0] or padding[1] >= window[1]:
        raise ValueError(f"{name}: padding {padding} must be smaller than the window {window}, "
                         f"so that every window holds an entry of the input")
    return window, stride, padding


def _check_input(name, x, window, padding):
    require_rank(name, "x", x, rank=4, hint=" (N, C, H, W)")
    require_fits(name, x.shape[2:], window, padding, f"x.shape={x.shape}")


def _check_dy(name, dy, out_shape):
    if jnp.shape(dy) != tuple(out_shape):
        raise ValueError(f"{name}: dy shape {jnp.shape(dy)} does not match output shape {tuple(out_shape)}")
