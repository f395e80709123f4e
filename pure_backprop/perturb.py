r"""Evaluate a function at many one-entry perturbations without redoing what they leave unchanged.

Full-mode gradient checking needs ``phi(t + h e_i)`` for every entry ``i`` of a leaf ``t``: for
the book's TwoLayerNet that is 80,000 forward passes, each dominated by the ``(100, 784) @
(784, 50)`` matrix product. Moving a single entry of ``W1`` changes only one column of that
product, so almost all of that work is wasted. This module runs the forward's jaxpr once at the
unperturbed point (the *base*) and then, for a batch of ``c`` perturbations, carries each
intermediate value in one of three forms:

* unaffected: the base value itself (no batch axis);
* ``Sparse(idx, new)``: the base value with the flat positions ``idx[k]`` replaced by ``new[k]``
  for perturbation ``k`` (the perturbed leaf starts as one position per perturbation);
* ``Dense(value)``: the whole perturbed value, with a leading batch axis of ``c``.

Rules keep values sparse as long as that is exact:

* elementwise ops (``exp``, ``max``, ``select_n``, ``add`` of an unaffected bias, ...) are applied
  to the moved positions only, every other position being the base output;
* ``reshape``, ``squeeze`` and a ``broadcast_in_dim`` that only adds axes of size 1 keep flat
  positions, ``transpose`` permutes them;
* ``dot_general`` is bilinear: with one operand moved at one position ``p`` by ``d``, the product
  moves by ``d`` times the matching slice of the other operand, at the output positions that ``p``
  reaches (a row or column), which stays sparse; with several moved positions the change is
  scatter-added onto the base product, which gives a dense value;
* ``reduce_sum`` adds the change of the moved positions to the base sum.

Everything else (and any rule whose conditions fail) materializes the dense value and applies the
op under ``vmap``, so any forward runs, only slower. Higher-order calls (``jit``,
``jax.checkpoint``, ``custom_jvp_call``, ``custom_vjp_call``) are entered and evaluated by the
same rules; the values are those of the primal function.

Every rule computes the forward's own operations at the perturbed point; the bilinear and
linear rewrites are exact in real arithmetic and differ from a full recomputation only by
rounding of order ``eps * |base value|``, the same as the recomputation's own rounding. The
finite differences taken from these values are therefore still an oracle independent of the
hand-written backward and of autodiff.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, DropVar, Jaxpr, Literal


class Sparse(NamedTuple):
    idx: jax.Array  # (c, m) flat positions, distinct within a row
    new: jax.Array  # (c, m) the values at those positions


class Dense(NamedTuple):
    value: jax.Array  # (c, *shape)


_ELEMENTWISE = frozenset("""
    neg exp exp2 log log1p expm1 tanh logistic abs sign sqrt rsqrt cbrt sin cos tan asin acos atan
    sinh cosh asinh acosh atanh erf erfc erf_inv lgamma digamma integer_pow square pow max min add
    sub mul div rem atan2 nextafter select_n convert_element_type stop_gradient reduce_precision
    copy copy_p floor ceil round is_finite eq ne lt le gt ge and or not xor clamp add_any
""".split())
# primitives that call a jaxpr once with their operands (loops such as scan and while also
# hold jaxprs, but run them many times: they take the dense path)
_CALL_PRIMITIVES = frozenset("jit pjit closed_call core_call remat remat2 checkpoint custom_jvp_call custom_vjp_call".split())
_CALLS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def moved_values(fun, args, j, idx, new):
    """``fun(*args)`` (a scalar) with ``args[j]`` moved at one flat position per perturbation:
    perturbation ``k`` sets entry ``idx[k]`` of ``args[j]`` to ``new[k]``. Returns shape ``(c,)``.
    Traceable: call it inside ``jax.jit``."""
    closed = jax.make_jaxpr(fun)(*args)
    c = idx.shape[0]
    inputs = [(a, None) for a in args]
    inputs[j] = (args[j], Sparse(idx.reshape(c, 1), jnp.asarray(new, jnp.result_type(args[j])).reshape(c, 1)))
    (out,) = _eval(closed.jaxpr, closed.consts, inputs, c)
    base, rep = out
    if jnp.shape(base) != ():
        raise ValueError(f"perturb: the function must return a scalar, got shape {jnp.shape(base)}")
    return _dense(base, rep, c).reshape(c)


def dense_bytes(fun, args) -> int:
    """An upper bound on the memory one perturbation costs: the bytes of every intermediate
    value of ``fun``'s jaxpr, as if all were dense and alive at once."""

    def total(jaxpr):
        size = 0
        for eqn in jaxpr.eqns:
            size += sum(math.prod(v.aval.shape) * v.aval.dtype.itemsize for v in eqn.outvars if hasattr(v.aval, "shape"))
            for k in _CALLS:
                sub = eqn.params.get(k)
                if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                    size += total(sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub)
        return size

    return max(8, total(jax.make_jaxpr(fun)(*args).jaxpr))


def _eval(jaxpr: Jaxpr, consts, inputs, c):
    env = {}

    def read(v):
        return (v.val, None) if isinstance(v, Literal) else env[v]

    def write(v, value):
        if not isinstance(v, DropVar):
            env[v] = value

    for v, const in zip(jaxpr.constvars, consts):
        write(v, (const, None))
    for v, value in zip(jaxpr.invars, inputs):
        write(v, value)
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if all(rep is None for _, rep in ins):
            outs = [(o, None) for o in _bind(eqn, [base for base, _ in ins])]
        else:
            outs = _rule(eqn, ins, c)
        for v, value in zip(eqn.outvars, outs):
            write(v, value)
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn, args):
    params = eqn.primitive.get_bind_params(eqn.params)  # (jax >= 0.7: the params only, subfuns among them)
    out = eqn.primitive.bind(*args, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _rule(eqn, ins, c):
    name = eqn.primitive.name
    sub = next((eqn.params[k] for k in _CALLS if k in eqn.params), None)
    if name in _CALL_PRIMITIVES and isinstance(sub, (ClosedJaxpr, Jaxpr)):
        jaxpr, consts = (sub.jaxpr, sub.consts) if isinstance(sub, ClosedJaxpr) else (sub, ())
        if len(jaxpr.invars) == len(ins):
            return _eval(jaxpr, consts, ins, c)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    base_out = None
    sparse = [(k, rep) for k, (_, rep) in enumerate(ins) if isinstance(rep, Sparse)]
    if len(sparse) == sum(rep is not None for _, rep in ins) and len(sparse) > 0:
        base_out = _bind(eqn, [base for base, _ in ins])
        if name in _ELEMENTWISE:
            out = _elementwise(eqn, ins, out_shape)
        elif name == "squeeze" or (name == "reshape" and eqn.params.get("dimensions") is None) or (
                name == "broadcast_in_dim" and math.prod(out_shape) == jnp.size(ins[0][0])
                and list(eqn.params["broadcast_dimensions"]) == sorted(eqn.params["broadcast_dimensions"])):
            out = ins[0][1]  # the row-major order of the entries is kept: flat positions are too
        elif name == "transpose":
            out = _transpose(ins[0], eqn.params["permutation"])
        elif name == "dot_general" and len(sparse) == 1:
            out = _dot_general(eqn, ins, base_out[0], c)
        elif name == "reduce_sum":
            out = _reduce_sum(ins[0], eqn.params["axes"], base_out[0], c)
        else:
            out = None
        if out is not None:
            return [(base_out[0], out)]
    return _batched(eqn, ins, c, base_out)


def _elementwise(eqn, ins, out_shape):
    sparse = [rep for _, rep in ins if rep is not None]
    idx = sparse[0].idx
    if any(rep.idx is not idx for rep in sparse):
        return None
    if any(rep is not None and tuple(v.aval.shape) != out_shape for (_, rep), v in zip(ins, eqn.invars)):
        return None
    args = []
    for base, rep in ins:
        if rep is not None:
            args.append(rep.new)
        else:
            base = jnp.asarray(base)
            args.append(jnp.broadcast_to(base, out_shape).ravel()[idx] if base.shape else jnp.broadcast_to(base, idx.shape))
    return Sparse(idx, _bind(eqn, args)[0])


def _transpose(value, permutation):
    base, rep = value
    shape = jnp.shape(base)
    coords = jnp.unravel_index(rep.idx, shape)
    out_shape = tuple(shape[p] for p in permutation)
    idx = jnp.ravel_multi_index(tuple(coords[p] for p in permutation), out_shape, mode="clip")
    return Sparse(idx, rep.new)


def _dot_general(eqn, ins, base_out, c):
    """The change of a bilinear product when one operand moves at its sparse positions."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs_moved = ins[0][1] is not None
    (s_base, rep), (o_base, _) = (ins[0], ins[1]) if lhs_moved else (ins[1], ins[0])
    sc, oc, sb, ob = (lc, rc, lb, rb) if lhs_moved else (rc, lc, rb, lb)
    s_shape, o_shape = jnp.shape(s_base), jnp.shape(o_base)
    s_free = [d for d in range(len(s_shape)) if d not in sc and d not in sb]
    o_free = [d for d in range(len(o_shape)) if d not in oc and d not in ob]
    coords = jnp.unravel_index(rep.idx, s_shape)
    dtype = jnp.result_type(base_out)
    delta = _change(s_base, rep, dtype)
    other = jnp.transpose(o_base, tuple(ob) + tuple(oc) + tuple(o_free))
    n_free = math.prod(o_shape[d] for d in o_free)
    if sb or sc:
        picked = other[tuple(coords[d] for d in sb) + tuple(coords[d] for d in sc)].reshape(rep.idx.shape + (n_free,))
    else:  # an outer product: every moved entry meets the whole other operand
        picked = jnp.broadcast_to(other.reshape(n_free), rep.idx.shape + (n_free,))
    change = delta[..., None] * picked.astype(dtype)
    # output dims: batch, lhs free, rhs free; positions reached by one moved entry
    out_shape = jnp.shape(base_out)
    strides = np.cumprod((1,) + out_shape[::-1])[:-1][::-1]
    nb, nl = len(sb), len(s_free) if lhs_moved else len(o_free)
    known_dims = list(range(nb)) + (list(range(nb, nb + nl)) if lhs_moved else list(range(nb + nl, len(out_shape))))
    free_dims = [d for d in range(nb, len(out_shape)) if d not in known_dims]
    known = jnp.zeros_like(rep.idx) + sum(coords[d] * int(strides[k]) for d, k in zip(list(sb) + s_free, known_dims))
    grid = np.indices(tuple(out_shape[d] for d in free_dims)).reshape(len(free_dims), -1) if free_dims else np.zeros((0, 1), int)
    offsets = jnp.asarray(sum((g * int(strides[d]) for g, d in zip(grid, free_dims)), np.zeros(grid.shape[1], int)))
    positions = (known[..., None] + offsets[None, None, :]).reshape(c, -1)
    if rep.idx.shape[1] == 1:  # one moved entry: its output positions are distinct, stay sparse
        return Sparse(positions, jnp.ravel(base_out)[positions] + change.reshape(c, -1))
    return _added(base_out, c, positions, change.reshape(c, -1))


def _reduce_sum(value, axes, base_out, c):
    base, rep = value
    shape = jnp.shape(base)
    coords = jnp.unravel_index(rep.idx, shape)
    kept = [d for d in range(len(shape)) if d not in axes]
    positions = jnp.ravel_multi_index(tuple(coords[d] for d in kept), tuple(shape[d] for d in kept), mode="clip") if kept else jnp.zeros_like(rep.idx)
    return _added(base_out, c, positions, _change(base, rep, jnp.result_type(base_out)))


def _change(base, rep, dtype):
    """How much each moved entry moved, in ``dtype``: the precision of the op's output, which
    may be wider than its input (a float32 leaf in a float64 product)."""
    return rep.new.astype(dtype) - jnp.ravel(base)[rep.idx].astype(dtype)


def _added(base_out, c, positions, change):
    """The dense ``(c, *shape)`` value: ``base_out`` with ``change[k]`` added at ``positions[k]``
    (repeated positions add up)."""
    flat = jnp.broadcast_to(jnp.ravel(base_out), (c, jnp.size(base_out)))
    flat = flat.at[jnp.arange(c)[:, None], positions].add(change)
    return Dense(flat.reshape((c,) + jnp.shape(base_out)))


def _dense(base, rep, c):
    base = jnp.asarray(base)
    if rep is None:
        return jnp.broadcast_to(base, (c,) + base.shape)
    if isinstance(rep, Dense):
        return rep.value
    flat = jnp.broadcast_to(base.ravel(), (c, base.size))
    return flat.at[jnp.arange(c)[:, None], rep.idx].set(rep.new).reshape((c,) + base.shape)


def _batched(eqn, ins, c, base_out=None):
    """The fallback: materialize every moved input and apply the op under ``vmap``."""
    args = [base if rep is None else _dense(base, rep, c) for base, rep in ins]
    axes = [None if rep is None else 0 for _, rep in ins]
    outs = jax.vmap(lambda *a: tuple(_bind(eqn, a)), in_axes=axes)(*args)
    if base_out is None:
        base_out = _bind(eqn, [base for base, _ in ins])
    return [(b, Dense(o)) for b, o in zip(base_out, outs)]
