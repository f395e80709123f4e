"""Benchmark: gradcheck on the book's TwoLayerNet(784, 50, 10) at batch 100, float64.

Prints, in one run: the book's loop-per-entry numerical gradient (NumPy, 2 forwards per
parameter entry), gradcheck ``full`` over the same parameter entries and over the input too,
and gradcheck ``fast`` after compilation. Run: ``python benchmarks/gradcheck_speed.py``.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from pure_backprop import gradcheck, serial, with_targets
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.network import mlp


def book_numerical_gradient(f, x):
    """The book's numerical_gradient: a Python loop over every entry, central difference."""
    h = 1e-4
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f1 = f()
        x[i] = old - h
        f2 = f()
        grad[i] = (f1 - f2) / (2 * h)
        x[i] = old
        it.iternext()
    return grad


def book_loss(p, x, t):
    h = np.maximum(x @ p["W1"] + p["b1"], 0)
    s = h @ p["W2"] + p["b2"]
    s = s - s.max(1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    return -logp[np.arange(len(t)), t].mean()


def main():
    rng = np.random.default_rng(0)
    x = rng.random((100, 784))
    t = rng.integers(0, 10, 100)
    net = mlp((50,), 10, "relu")
    with jax.enable_x64(True):
        params, _ = net.init(jax.random.PRNGKey(0), (-1, 784), )
        params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    p = {"W1": params[0]["W"].copy(), "b1": params[0]["b"].copy(), "W2": params[2]["W"].copy(), "b2": params[2]["b"].copy()}

    start = time.perf_counter()
    for name in p:
        book_numerical_gradient(lambda: book_loss(p, x, t), p[name])
    loop = time.perf_counter() - start
    n_params = sum(v.size for v in p.values())
    print(f"book loop-per-entry numerical gradient, {n_params} parameter entries: {loop:.1f} s")

    # gradcheck over the parameters only (x as a constant inside the layer), as the book's loop does
    layer = serial(net, with_targets(softmax_cross_entropy, t))
    from pure_backprop import Layer
    fixed_x = Layer(None, lambda prm, _: layer.forward(prm, x), lambda prm, r, dy: (layer.backward(prm, r, dy)[0], jnp.zeros(())))
    for label, lay, inputs in (("parameters", fixed_x, jnp.zeros(())), ("parameters and input", layer, x)):
        for mode in ("full", "fast"):
            start = time.perf_counter()
            gradcheck.check(lay, (params, ()), inputs, mode=mode)  # compile
            first = time.perf_counter() - start
            start = time.perf_counter()
            report = gradcheck.check(lay, (params, ()), inputs, mode=mode)
            seconds = time.perf_counter() - start
            extra = f", {loop / seconds:.1f}x faster than the loop" if label == "parameters" and mode == "full" else ""
            print(f"gradcheck {mode:4s} over the {label}: {seconds:.2f} s after compilation "
                  f"({first:.2f} s with it), ok={report.ok}{extra}")
    print_memory(layer, params, x)


def print_memory(layer, params, x, memory_mb=256):
    """What one compiled full-mode chunk takes, as XLA's own memory analysis reports it."""
    from pure_backprop.gradcheck import _base, _flat_phi, _moved_entries, _taken_apart, chunk_size
    from pure_backprop import perturb

    with jax.enable_x64(True):
        leaves, treedef = jax.tree_util.tree_flatten(((params, ()), jnp.asarray(x)))
        skeleton, bound = _taken_apart(layer)  # the targets enter the programs as inputs
        dy = _base(skeleton, bound, (params, ()), jnp.asarray(x), jax.random.PRNGKey(0))[0]
        dy_leaves, dy_def = jax.tree_util.tree_flatten(dy)
        per_move = perturb.dense_bytes(_flat_phi(layer, treedef, len(leaves), dy_def), leaves + dy_leaves)
        chunk = chunk_size(memory_mb, per_move)
        idx, new = jnp.zeros(chunk, int), jnp.zeros(chunk)
        for j, name in ((0, "W1"), (len(leaves) - 1, "x")):
            compiled = _moved_entries.lower(skeleton, bound, treedef, j, leaves, dy, idx, new).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes
            print(f"memory, full mode on {name}: {chunk} perturbations per call (memory_mb={memory_mb}, "
                  f"dense bound {chunk * per_move / 2**20:.0f} MiB); XLA temporaries {temp / 2**20:.1f} MiB")

if __name__ == "__main__":
    main()
