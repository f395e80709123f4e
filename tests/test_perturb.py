"""``perturb.moved_values`` (the engine of full-mode gradcheck) equals recomputing the function
at each perturbed point, for every rule it has (sparse elementwise, reshape, transpose,
dot_general in every operand role, reduce_sum, calls) and for its dense fallback, and on the
forward of every registry case."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pure_backprop import perturb
from pure_backprop.registry import CASES, normal


def _recomputed(fun, args, j, idx, new):
    def one(i, v):
        moved = list(args)
        moved[j] = args[j].ravel().at[i].set(v).reshape(args[j].shape)
        return fun(*moved)

    return jax.vmap(one)(idx, new)


def _compare(fun, args, j=0, seed=0):
    args = [jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else jnp.asarray(a) for a in args]
    rng = np.random.default_rng(seed)
    size = args[j].size
    idx = jnp.asarray(np.concatenate([np.arange(size), rng.integers(0, size, 7)]))
    new = args[j].ravel()[idx] + jnp.asarray(rng.normal(size=idx.shape))
    got = jax.jit(lambda a, i, n: perturb.moved_values(fun, a, j, i, n))(args, idx, new)
    want = _recomputed(fun, args, j, idx, new)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@jax.custom_vjp
def _clipped_tanh(x):
    return jnp.tanh(x)


_clipped_tanh.defvjp(lambda x: (jnp.tanh(x), x), lambda x, g: (jnp.clip(g, -1, 1) * (1 - jnp.tanh(x) ** 2),))

R = np.random.default_rng(0)
A, B, V = R.normal(size=(3, 4)), R.normal(size=(4, 5)), R.normal(size=4)
T3, U3 = R.normal(size=(2, 3, 4)), R.normal(size=(2, 4, 3))

FUNCTIONS = {
    "matmul lhs": (lambda a, b: jnp.sum(jnp.tanh(a @ b)), (A, B), 0),
    "matmul rhs": (lambda a, b: jnp.sum(jnp.tanh(a @ b)), (A, B), 1),
    "matmul then matmul": (lambda a, b: jnp.sum(jnp.sin(jnp.maximum(a @ b, 0.0) @ b.T)), (A, B), 0),
    "batched matmul lhs": (lambda s, u: jnp.sum(jnp.exp(jnp.einsum("bij,bjk->bik", s, u))), (T3, U3), 0),
    "batched matmul rhs": (lambda s, u: jnp.sum(jnp.exp(jnp.einsum("bij,bjk->bik", s, u))), (T3, U3), 1),
    "contract two dims": (lambda s, u: jnp.sum(jnp.cos(jnp.einsum("bij,bji->", s, u) * s)), (T3, U3), 0),
    "contract first dims": (lambda a, c: jnp.sum(jnp.tanh(jnp.einsum("ij,ik->jk", a, c))), (A, A[:, :2]), 1),
    "vector dot": (lambda v, w: jnp.exp(jnp.dot(v, w)), (V, V[::-1]), 0),
    "outer product": (lambda v, w: jnp.sum(jnp.tanh(jnp.outer(v, w))), (V, V[:3]), 1),
    "matrix-vector": (lambda a, v: jnp.sum(jnp.exp(a @ v)), (A, V), 1),
    "transpose": (lambda a, b: jnp.sum(jnp.tanh(a.T) @ b[:3, :2]), (A, B), 0),
    "transpose 3d": (lambda s: jnp.sum(jnp.sin(jnp.transpose(s, (2, 0, 1))) * jnp.arange(24.0).reshape(4, 2, 3)), (T3,), 0),
    "reshape": (lambda a: jnp.sum(jnp.exp(a.reshape(2, 6)) * jnp.arange(12.0).reshape(2, 6)), (A,), 0),
    "squeeze": (lambda a: jnp.sum(jnp.exp(jnp.squeeze(a[:, None, :], 1)) * jnp.arange(12.0).reshape(3, 4)), (A,), 0),
    "broadcast bias": (lambda a, v: jnp.sum(jnp.tanh(a + v[None, :])), (A, V), 0),
    "broadcast bias moved": (lambda a, v: jnp.sum(jnp.tanh(a + v[None, :])), (A, V), 1),
    "reduce_sum axis 0": (lambda a: jnp.sum(jnp.exp(jnp.sum(a, 0))), (A,), 0),
    "reduce_sum axis 1": (lambda a: jnp.sum(jnp.sin(jnp.sum(a, 1))), (A,), 0),
    "reduce_max": (lambda a: jnp.sum(jnp.max(a, 1) ** 2), (A,), 0),
    "softmax": (lambda a: jnp.sum(jax.nn.log_softmax(a) * jnp.arange(12.0).reshape(3, 4)), (A,), 0),
    "custom_vjp": (lambda a, b: jnp.sum(_clipped_tanh(a @ b) ** 2), (A, B), 0),
    "relu custom_jvp": (lambda a: jnp.sum(jax.nn.relu(a) * a), (A,), 0),
    "where": (lambda a: jnp.sum(jnp.where(a > 0, a**2, -a)), (A,), 0),
    "x times x": (lambda a: jnp.sum(jnp.exp(a * a.T.T)), (A,), 0),
    "x @ x.T": (lambda a: jnp.sum(jnp.tanh(a @ a.T)), (A,), 0),
    "cumsum fallback": (lambda a: jnp.sum(jnp.cumsum(a, 1) ** 3), (A,), 0),
    "sort fallback": (lambda a: jnp.sum(jnp.sort(a, 1) * jnp.arange(12.0).reshape(3, 4)), (A,), 0),
    "scan": (lambda a: jnp.sum(jax.lax.scan(lambda c, r: (jnp.tanh(c + r), c * r), jnp.zeros(4), a)[1] ** 2), (A,), 0),
    "fori_loop": (lambda a: jnp.sum(jax.lax.fori_loop(0, 3, lambda i, c: jnp.sin(c) * a, a)), (A,), 0),
    "cond": (lambda a: jax.lax.cond(jnp.sum(a) > 0, lambda u: jnp.sum(u ** 2), lambda u: jnp.sum(jnp.exp(u)), a), (A,), 0),
    "convolution": (lambda img, k: jnp.sum(jnp.tanh(jax.lax.conv(img, k, (1, 1), "SAME"))),
                    (R.normal(size=(1, 2, 5, 5)), R.normal(size=(3, 2, 3, 3))), 1),
    "int labels": (lambda a, t: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(a), t[:, None], 1)), (A, np.array([0, 3, 1])), 0),
    "scalar leaf": (lambda s, a: jnp.sum(jnp.tanh(s * a)), (np.float64(0.7), A), 0),
    "inner jit": (lambda a, b: jax.jit(lambda u, w: jnp.sum(jnp.tanh(u @ w)))(a, b), (A, B), 1),
    "unaffected output": (lambda a, b: jnp.sum(b), (A, B), 0),
}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_moved_values_equal_recomputation(name):
    fun, args, j = FUNCTIONS[name]
    _compare(fun, args, j)


def _with_entry(leaf, i, v):
    """``leaf`` with flat entry ``i`` set to ``v``, in NumPy (eagerly in JAX, each new shape
    compiles its own ravel, scatter and reshape)."""
    a = np.array(leaf)
    a.flat[i] = v
    return a


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_moved_values_on_every_registry_case(case):
    layer, params, x, _ = case.build(jax.random.PRNGKey(3), case.shapes[0])
    # float64, as gradcheck runs it (a float32 leaf's sums round differently in each evaluation)
    params, x = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, (params, x))
    leaves, treedef = jax.tree_util.tree_flatten((params, x))
    y = jax.eval_shape(lambda p, v: layer.forward(p, v)[0], params, x)  # a pair (hs, state) for recurrent layers
    y_leaves, y_def = jax.tree_util.tree_flatten(y)
    keys = [jax.random.PRNGKey(4)] + [jax.random.PRNGKey(5 + i) for i in range(len(y_leaves) - 1)]
    dy = y_def.unflatten([normal(k, leaf.shape) for k, leaf in zip(keys, y_leaves)])  # float64; drawn at -O0

    def phi(*flat):
        p, v = jax.tree_util.tree_unflatten(treedef, flat)
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(layer.forward(p, v)[0]),
                                                  jax.tree_util.tree_leaves(dy), strict=True))

    phi_jit = jax.jit(phi)
    moved = jax.jit(lambda a, i, n, j: perturb.moved_values(phi, a, j, i, n), static_argnums=3)
    rng = np.random.default_rng(0)
    n = len(leaves)  # networks: the first and a middle layer, the last weight and x (a compile each)
    for j in sorted({0, n // 2, n - 2, n - 1} if n > 4 else range(n)):
        leaf = leaves[j]
        if not jnp.size(leaf):
            continue
        idx = rng.choice(leaf.size, min(leaf.size, 6), replace=False)  # a few entries: plain recomputation is slow
        new = (leaf.ravel()[idx] + rng.normal(size=idx.shape)).astype(leaf.dtype)
        want = [phi_jit(*leaves[:j], _with_entry(leaf, i, v), *leaves[j + 1:]) for i, v in zip(idx, new)]
        np.testing.assert_allclose(moved(leaves, jnp.asarray(idx), new, j), want, rtol=1e-12, atol=1e-12)


def test_scalar_output_is_required():
    with pytest.raises(ValueError, match="scalar"):
        perturb.moved_values(lambda a: a * 2, [jnp.ones(3)], 0, jnp.zeros(2, int), jnp.ones(2))


def test_dense_bytes_bounds_the_intermediates():
    # (3,4)@(4,5) -> 15 values, tanh 15, sum 1: 31 float64 values
    assert perturb.dense_bytes(lambda a, b: jnp.sum(jnp.tanh(a @ b)), [jnp.asarray(A), jnp.asarray(B)]) == 31 * 8
