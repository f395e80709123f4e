"""Benchmark: forward + backward of every convolution and pooling layer of the book's
SimpleConvNet and DeepConvNet, batch 100, 1x28x28 input, float32.

For each layer, in one run: the hand layer (``method="auto"``, and each forced formulation:
im2col, conv form, mixed, offsets), ``jax.vjp`` of the ``lax`` forward (as in ``reference/conv.py``), and a
faithful NumPy port of the book's ``Convolution``/``Pooling`` with ``im2col``/``col2im``
(``common/util.py``; its ``np.zeros`` make ``col`` float64, as in the book). JAX functions are
jit-compiled and timed after compilation; the JAX variants of a layer are timed in interleaved
rounds (the order rotated each round, each variant after an untimed warm-up call), the book's
NumPy after them, and the median is printed, in milliseconds. Every variant's gradients are first
checked against ``jax.vjp``. Run: ``python benchmarks/conv_speed.py`` (about 1-2 minutes).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from jax import lax

from pure_backprop.layers import conv2d, max_pool2d
from pure_backprop.layers.conv2d import auto_plan

N, ROUNDS, REPEATS, BOOK_REPEATS = 100, 4, 2, 3


# --- the book's NumPy code (common/util.py, common/layers.py) --------------------------------

def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


def book_convolution(W, b, x, dout, stride, pad):
    """``Convolution.forward`` then ``Convolution.backward``."""
    FN, C, FH, FW = W.shape
    N, C, H, Wd = x.shape
    out_h = 1 + int((H + 2 * pad - FH) / stride)
    out_w = 1 + int((Wd + 2 * pad - FW) / stride)
    col = im2col(x, FH, FW, stride, pad)
    col_W = W.reshape(FN, -1).T
    out = (np.dot(col, col_W) + b).reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    db = np.sum(dout, axis=0)
    dW = np.dot(col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
    dx = col2im(np.dot(dout, col_W.T), x.shape, FH, FW, stride, pad)
    return out, dW, db, dx


def book_pooling(x, dout, pool_h, pool_w, stride):
    """``Pooling.forward`` then ``Pooling.backward`` (pad 0: the book's out_h ignores pad)."""
    N, C, H, W = x.shape
    out_h = int(1 + (H - pool_h) / stride)
    out_w = int(1 + (W - pool_w) / stride)
    col = im2col(x, pool_h, pool_w, stride, 0).reshape(-1, pool_h * pool_w)
    arg_max = np.argmax(col, axis=1)
    out = np.max(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
    dout = dout.transpose(0, 2, 3, 1)
    pool_size = pool_h * pool_w
    dmax = np.zeros((dout.size, pool_size))
    dmax[np.arange(arg_max.size), arg_max.flatten()] = dout.flatten()
    dmax = dmax.reshape(dout.shape + (pool_size,))
    dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
    return out, col2im(dcol, x.shape, pool_h, pool_w, stride, 0)


# --- the layers of the two networks ----------------------------------------------------------

# (network, name, kind, C, H, filters or None, kernel, stride, padding)
LAYERS = [
    ("SimpleConvNet", "conv1 1->30 5x5", "conv", 1, 28, 30, 5, 1, 0),
    ("SimpleConvNet", "pool 30x24x24", "pool", 30, 24, None, 2, 2, 0),
    ("DeepConvNet", "conv1 1->16 3x3 p1", "conv", 1, 28, 16, 3, 1, 1),
    ("DeepConvNet", "conv2 16->16 3x3 p1", "conv", 16, 28, 16, 3, 1, 1),
    ("DeepConvNet", "pool1 16x28x28", "pool", 16, 28, None, 2, 2, 0),
    ("DeepConvNet", "conv3 16->32 3x3 p1", "conv", 16, 14, 32, 3, 1, 1),
    ("DeepConvNet", "conv4 32->32 3x3 p2", "conv", 32, 14, 32, 3, 1, 2),
    ("DeepConvNet", "pool2 32x16x16", "pool", 32, 16, None, 2, 2, 0),
    ("DeepConvNet", "conv5 32->64 3x3 p1", "conv", 32, 8, 64, 3, 1, 1),
    ("DeepConvNet", "conv6 64->64 3x3 p1", "conv", 64, 8, 64, 3, 1, 1),
    ("DeepConvNet", "pool3 64x8x8", "pool", 64, 8, None, 2, 2, 0),
]


def lax_conv(stride, padding):
    def forward(params, x):
        y = lax.conv_general_dilated(x, params["W"], (stride, stride), [(padding, padding)] * 2,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + params["b"].reshape(1, -1, 1, 1)

    return forward


def lax_max_pool(window, stride):
    return lambda params, x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, window, window), (1, 1, stride, stride), "VALID")


def hand_step(layer):
    def step(params, x, dy):
        y, residuals = layer.forward(params, x)
        return y, layer.backward(params, residuals, dy)

    return jax.jit(step)


def vjp_step(forward):
    def step(params, x, dy):
        y, vjp = jax.vjp(forward, params, x)
        return y, vjp(dy)

    return jax.jit(step)


def timed(f, *args):
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - start


def variants(kind, C, H, filters, kernel, stride, padding):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (N, C, H, H), jnp.float32)
    if kind == "conv":
        params, out_shape = conv2d(filters, kernel, stride, padding).init(key, x.shape)
        params["b"] = jnp.linspace(-0.1, 0.1, filters, dtype=jnp.float32)
        hand = {m: hand_step(conv2d(filters, kernel, stride, padding, method=m)) for m in ("auto", "im2col", "conv", "mixed", "offsets")}
        reference = vjp_step(lax_conv(stride, padding))
        book = lambda p, v, d: book_convolution(np.asarray(p["W"]), np.asarray(p["b"]), v, d, stride, padding)  # noqa: E731
    else:
        params, out_shape = (), max_pool2d(kernel, stride, padding).init(key, x.shape)[1]
        hand = {"auto": hand_step(max_pool2d(kernel, stride, padding))}
        reference = vjp_step(lax_max_pool(kernel, stride))
        book = lambda p, v, d: book_pooling(v, d, kernel, kernel, stride)  # noqa: E731
    dy = jax.random.normal(jax.random.PRNGKey(1), out_shape, jnp.float32)
    fns = {f"hand {m}": f for m, f in hand.items()}
    fns["jax.vjp"] = reference
    args = {name: (params, x, dy) for name in fns}
    fns["book NumPy"] = book
    args["book NumPy"] = (params, np.asarray(x), np.asarray(dy))
    return fns, args


def check(fns, args):
    """Every variant agrees with jax.vjp (float32 tolerance). The leaves come in one order for
    all: ``(y, dW, db, dx)`` for a convolution (``"W" < "b"``), ``(y, dx)`` for pooling."""
    expected = jax.tree_util.tree_leaves(fns["jax.vjp"](*args["jax.vjp"]))
    for name, f in fns.items():
        got = jax.tree_util.tree_leaves(f(*args[name]))
        assert len(got) == len(expected), name
        for a, e in zip(got, expected):
            err = np.max(np.abs(np.asarray(a, np.float64) - e)) / np.max(np.abs(e))
            assert err < 1e-4, (name, err)


def main():
    columns = ["hand auto", "hand im2col", "hand conv", "hand mixed", "hand offsets", "jax.vjp", "book NumPy"]
    print(f"forward + backward, median ms over {ROUNDS} interleaved rounds x {REPEATS} calls (book: {BOOK_REPEATS}), "
          f"batch {N}, float32, "
          f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), jax {jax.__version__}")
    print(f"{'network':14s} {'layer':22s} {'auto plan':9s} " + " ".join(f"{c:>11s}" for c in columns) + "  auto/vjp")
    start = time.perf_counter()
    for network, name, kind, C, H, filters, kernel, stride, padding in LAYERS:
        fns, args = variants(kind, C, H, filters, kernel, stride, padding)
        check(fns, args)
        times = {name_: [] for name_ in fns}
        jax_names = [n for n in fns if n != "book NumPy"]
        for r in range(ROUNDS):  # JAX variants interleaved, the order rotated, each after an untimed call
            for name_ in jax_names[r % len(jax_names):] + jax_names[:r % len(jax_names)]:
                timed(fns[name_], *args[name_])
                times[name_] += [timed(fns[name_], *args[name_]) for _ in range(REPEATS)]
        time.sleep(0.5)  # then the book, on its own: NumPy's BLAS threads keep spinning after a call
        times["book NumPy"] = [timed(fns["book NumPy"], *args["book NumPy"]) for _ in range(BOOK_REPEATS)]
        ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        plan = auto_plan((filters, C, kernel, kernel), (padding, padding)) if kind == "conv" else "-"
        cells = " ".join(f"{ms[c]:11.1f}" if c in ms else f"{'-':>11s}" for c in columns)
        print(f"{network:14s} {name:22s} {plan:9s} {cells}  {ms['hand auto'] / ms['jax.vjp']:8.2f}", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
