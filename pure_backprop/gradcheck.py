r"""A gradient checker: the hand-written backward against ``jax.vjp`` and finite differences.

The seed note ends with "numerical differentiation becomes the tool that verifies backprop";
this module is that tool. For a layer (built-in or your own), its params and an input::

    report = gradcheck.check(layer, params, x, mode="fast")   # or mode="full"
    print(report)          # one row per parameter leaf and for dx
    report.ok              # False if any leaf disagrees with either oracle

What is compared. A seeded random cotangent ``dy`` turns the layer into the scalar
``phi(params, x) = <forward(params, x), dy>``, whose gradient is exactly what
``backward(params, residuals, dy)`` returns. Two oracles check it:

* ``jax.vjp`` of the layer's own forward, entry by entry (exact up to rounding);
* central differences of ``phi``. ``mode="full"``: every entry of every leaf,
  ``(phi(t + h e_i) - phi(t - h e_i)) / 2h``, jit-compiled in chunks of perturbations whose
  memory is bounded by ``memory_mb``. Each chunk is evaluated by ``perturb``, which runs the
  forward once at ``t`` and recomputes only what a moved entry changes (moving ``W[i, j]``
  changes one column of ``x @ W``), so it costs a fraction of a forward per entry instead of
  two whole forwards; ``mode="fast"``: ``directions`` random
  unit directions ``v`` per leaf, ``(phi(t + h v) - phi(t - h v)) / 2h`` against
  ``<hand, v>``, which is 2 forwards per direction. ``order=4`` uses the five-point stencil.

Everything runs in float64 inside a scoped ``jax.enable_x64`` (the caller's global setting is
untouched); float32 and integer inputs are promoted, never truncated, and the report says so.

Kinks. Where a function has a kink within the step (ReLU at 0, a max with ties), the
one-sided differences ``(phi(t + h) - phi(t)) / h`` and ``(phi(t) - phi(t - h)) / h``
disagree. An entry that fails but has such a jump, and whose hand value lies between the
two one-sided values (a valid subgradient), is reported as a kink, not a failure.
The same probe is run on entries where the hand value and ``jax.vjp`` disagree.

A leaf passes when, for every entry that is not a kink,
``|hand - oracle| <= atol + rtol * scale``, ``scale`` being the largest magnitude of the
leaf's hand or oracle gradient (``rtol=1e-10`` against jax, ``1e-6`` against finite
differences; ``atol`` defaults to the rounding noise of the difference quotient).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import perturb
from .core import Layer, Loss, serial, with_targets

EPS = float(np.finfo(np.float64).eps)
_STENCILS = {2: ((1.0, -1.0), (0.5, -0.5)), 4: ((1.0, -1.0, 2.0, -2.0), (8 / 12, -8 / 12, -1 / 12, 1 / 12))}
_MAX_PROBES = 256


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """The comparison for one leaf: a parameter (``params['W']``) or the input (``dx``)."""

    path: str
    shape: tuple
    abs_jax: float
    rel_jax: float
    abs_num: float
    rel_num: float
    worst: str  # the worst entry's index ("(2, 1)") or, in fast mode, the worst direction ("v3")
    hand: float
    jax: float
    numerical: float
    kinks: int
    ok: bool
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class Report:
    name: str
    mode: str
    promoted: tuple  # the input dtypes that were promoted to float64
    leaves: tuple
    problems: tuple = ()

    @property
    def ok(self) -> bool:
        return not self.problems and all(leaf.ok for leaf in self.leaves)

    @property
    def kinks(self) -> int:
        return sum(leaf.kinks for leaf in self.leaves)

    def __str__(self):
        promoted = f", promoted from {'/'.join(self.promoted)}" if self.promoted else ""
        lines = [f"gradcheck {self.name}: mode={self.mode}, float64{promoted}: {'ok' if self.ok else 'FAILED'}"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append(format_rows([(self.name, leaf) for leaf in self.leaves]))
        return "\n".join(lines)


_HEADER = ("case", "leaf", "shape", "rel err jax", "rel err numerical", "worst", "hand", "jax", "numerical", "kinks", "status")


def format_rows(rows) -> str:
    """A fixed-width table of ``(case name, LeafReport)`` rows."""
    table = [_HEADER]
    for name, leaf in rows:
        table.append((
            name, leaf.path, str(leaf.shape), f"{leaf.rel_jax:.1e}", f"{leaf.rel_num:.1e}", leaf.worst,
            f"{leaf.hand:.6g}", f"{leaf.jax:.6g}", f"{leaf.numerical:.6g}", str(leaf.kinks),
            "ok" if leaf.ok else ("FAIL " + leaf.problem).strip(),
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def _promote(tree, promoted):
    def one(leaf):
        leaf = jnp.asarray(leaf)
        if leaf.dtype != jnp.float64 and (jnp.issubdtype(leaf.dtype, jnp.floating) or jnp.issubdtype(leaf.dtype, jnp.integer)):
            promoted.add(str(leaf.dtype))
            return leaf.astype(jnp.float64)
        return leaf

    return jax.tree_util.tree_map(one, tree)


def check(layer: Layer, params, x, *, mode: str = "fast", seed: int = 0, directions: int = 3, order: int = 2,
          step: float | None = None, rtol_jax: float = 1e-10, rtol_num: float = 1e-6, atol: float | None = None,
          memory_mb: float = 256, name: str = "layer") -> Report:
    """Check ``layer.backward`` at ``(params, x)`` against ``jax.vjp`` and finite differences.

    ``mode``: "fast" (``directions`` random directions per leaf) or "full" (every entry).
    ``order``: 2 (central difference) or 4 (five-point stencil); ``step`` defaults to
    ``eps**(1/3)`` or ``eps**(1/5)``, scaled by the magnitude of each entry (full) or leaf (fast).
    ``memory_mb`` bounds one full-mode chunk: it holds ``memory_mb`` MiB divided by the bytes
    of every intermediate of one forward (as if all were dense), perturbed evaluations.
    """
    if mode not in ("fast", "full"):
        raise ValueError(f"gradcheck: mode must be 'fast' or 'full', got {mode!r}")
    if order not in _STENCILS:
        raise ValueError(f"gradcheck: order must be 2 or 4, got {order!r}")
    if directions < 1:
        raise ValueError(f"gradcheck: directions must be >= 1, got {directions}")
    step = step or EPS ** (1 / (order + 1))
    with jax.enable_x64(True):
        promoted = set()
        params, x = _promote(params, promoted), _promote(x, promoted)
        return _check(layer, params, x, mode, seed, directions, order, step, rtol_jax, rtol_num, atol,
                      memory_mb, name, tuple(sorted(promoted)))


def _phi(layer, treedef, leaves, dy):
    """The scalar ``<forward(params, x), dy>`` whose gradient the backward pass returns."""
    p, v = jax.tree_util.tree_unflatten(treedef, leaves)
    return _vdot(layer.forward(p, v)[0], dy)


def _flat_phi(layer, treedef, n, dy_def):
    """``phi`` as a function of the flat leaves followed by the flat leaves of ``dy``."""
    return lambda *flat: _phi(layer, treedef, list(flat[:n]), jax.tree_util.tree_unflatten(dy_def, flat[n:]))


@functools.partial(jax.jit, static_argnames=("layer",))
def _base(layer, params, x, key):
    y, residuals = layer.forward(params, x)
    dy = jax.tree_util.tree_map(lambda a: jax.random.normal(key, jnp.shape(a), jnp.float64), y)
    hand = layer.backward(params, residuals, dy)
    _, vjp = jax.vjp(lambda p, v: layer.forward(p, v)[0], params, x)
    magnitude = _vdot(jax.tree_util.tree_map(jnp.abs, y), jax.tree_util.tree_map(jnp.abs, dy))
    return dy, hand, vjp(dy), _vdot(y, dy), magnitude


@functools.partial(jax.jit, static_argnames=("layer", "treedef", "j"))
def _moved_entries(layer, treedef, j, leaves, dy, indices, values):
    """``phi`` with entry ``indices[k]`` of leaf ``j`` set to ``values[k]``, for every ``k``,
    evaluated by ``perturb`` (only what the moved entry changes is recomputed)."""
    dy_leaves, dy_def = jax.tree_util.tree_flatten(dy)
    return perturb.moved_values(_flat_phi(layer, treedef, len(leaves), dy_def), list(leaves) + dy_leaves, j, indices, values)


@functools.partial(jax.jit, static_argnames=("layer", "treedef", "j"))
def _moved_along(layer, treedef, j, leaves, dy, directions, step, offsets):
    """``phi`` with leaf ``j`` moved by ``offset * step * v`` for each direction ``v``."""

    def moved(v, o):
        return _phi(layer, treedef, leaves[:j] + [leaves[j] + o * step * v] + leaves[j + 1:], dy)

    return jax.vmap(lambda v: jax.vmap(lambda o: moved(v, o))(offsets))(directions)


class _Leaf:
    """What the comparisons of one leaf need: its values, gradients, tolerances and
    a chunked evaluator of ``phi`` with single entries moved."""

    def __init__(self, ctx, j, hand, oracle):
        self.ctx, self.j = ctx, j
        self.value = np.asarray(ctx.leaves[j])
        self.hand, self.oracle = hand.ravel(), oracle.ravel()
        self.steps = ctx.step * np.maximum(1.0, np.abs(self.value)).ravel()
        self.scale = max(float(np.max(np.abs(hand))), float(np.max(np.abs(oracle))))
        self.tol_jax = ctx.rtol_jax * self.scale
        self.tol_num = ctx.noise + ctx.rtol_num * self.scale

    def moved(self, indices, offsets):
        """``phi`` at each of ``indices`` moved by each offset times its step, chunk by chunk."""
        ctx = self.ctx
        offsets = np.asarray(offsets, np.float64)
        flat_value = self.value.ravel()
        entries = np.repeat(np.asarray(indices), len(offsets))
        moved = flat_value[entries] + np.tile(offsets, len(indices)) * self.steps[entries]
        # power-of-two chunks: a few compiled shapes serve every leaf size and probe count
        size = min(chunk_size(ctx.memory_mb, ctx.bytes_per_move()), 1 << (len(entries) - 1).bit_length())
        out = []
        for start in range(0, len(entries), size):
            idx, new = entries[start:start + size], moved[start:start + size]
            pad = size - len(idx)
            idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])
            new = np.concatenate([new, np.full(pad, flat_value[0])])
            values = _moved_entries(ctx.layer, ctx.treedef, self.j, ctx.leaves, ctx.dy, jnp.asarray(idx), jnp.asarray(new))
            out.append(np.asarray(values)[: size - pad])
        values = np.concatenate(out).reshape(len(indices), len(offsets))
        return [values[:, k] for k in range(len(offsets))]

    def jax_kinks(self):
        """Entries where hand and jax disagree but both are subgradients at a kink."""
        kinks = np.zeros(self.hand.size, bool)
        bad = np.flatnonzero(np.abs(self.hand - self.oracle) > self.tol_jax)
        if bad.size:
            probe = bad[np.argsort(-np.abs(self.hand - self.oracle)[bad])][:_MAX_PROBES]
            plus, minus = self.moved(probe, (1.0, -1.0))
            lo, hi = _one_sided(plus, minus, self.ctx.phi0, self.steps[probe])
            kinks[probe] = _is_kink(self.hand[probe], lo, hi, self.tol_num) & _is_kink(self.oracle[probe], lo, hi, self.tol_num)
        return kinks

    def full(self, kink_jax):
        offsets, weights = _STENCILS[self.ctx.order]
        values = self.moved(np.arange(self.hand.size), offsets)
        numerical = sum(w * v for w, v in zip(weights, values)) / self.steps
        lo, hi = _one_sided(values[0], values[1], self.ctx.phi0, self.steps)
        diff_jax, diff_num = np.abs(self.hand - self.oracle), np.abs(self.hand - numerical)
        kinks = kink_jax | ((diff_num > self.tol_num) & _is_kink(self.hand, lo, hi, self.tol_num))
        failing = ((diff_num > self.tol_num) | (diff_jax > self.tol_jax)) & ~kinks
        abs_num = float(np.max(np.where(kinks, 0.0, diff_num)))
        violation = np.where(kinks, -1.0, np.maximum(diff_jax / max(self.tol_jax, 1e-300), diff_num / self.tol_num))
        w = int(np.argmax(violation))
        return (abs_num, abs_num / self.scale if self.scale else abs_num, _index(w, self.value.shape),
                (self.hand[w], self.oracle[w], numerical[w]), int(kinks.sum()), not failing.any())

    def fast(self, kink_jax, directions):
        """``directions`` random unit directions; a direction that meets a kink sends the
        leaf to the entry-by-entry check, where kinks can be told from errors."""
        ctx = self.ctx
        offsets, weights = _STENCILS[ctx.order]
        v = np.random.default_rng((ctx.seed, self.j)).standard_normal((directions, self.hand.size))
        v = (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape((directions,) + self.value.shape)
        h = ctx.step * max(1.0, float(np.max(np.abs(self.value))))
        values = np.asarray(_moved_along(ctx.layer, ctx.treedef, self.j, ctx.leaves, ctx.dy, jnp.asarray(v), h,
                                         jnp.asarray(offsets, jnp.float64)))
        numerical = sum(w * values[:, k] for k, w in enumerate(weights)) / h
        lo, hi = _one_sided(values[:, 0], values[:, 1], ctx.phi0, h)
        flat_v = v.reshape(directions, -1)
        hand_dir, oracle_dir = flat_v @ self.hand, flat_v @ self.oracle
        scale = max(float(np.linalg.norm(self.hand)), float(np.linalg.norm(self.oracle)))
        tol = ctx.noise * math.sqrt(self.hand.size) + ctx.rtol_num * scale
        diff = np.abs(hand_dir - numerical)
        if np.any((diff > tol) & _is_kink(hand_dir, lo, hi, tol)):
            return self.full(kink_jax)
        failing_jax = (np.abs(self.hand - self.oracle) > self.tol_jax) & ~kink_jax
        abs_num = float(np.max(diff))
        if (diff > tol).any() and not failing_jax.any():
            d = int(np.argmax(diff))
            worst, values_at = f"v{d}", (hand_dir[d], oracle_dir[d], numerical[d])
        else:
            w = int(np.argmax(np.where(kink_jax, -1.0, np.abs(self.hand - self.oracle))))
            worst, values_at = _index(w, self.value.shape), (self.hand[w], self.oracle[w], math.nan)
        ok = not (diff > tol).any() and not failing_jax.any()
        return abs_num, abs_num / scale if scale else abs_num, worst, values_at, int(kink_jax.sum()), ok


def _check(layer, params, x, mode, seed, directions, order, step, rtol_jax, rtol_num, atol, memory_mb, name, promoted):
    key_dy = jax.random.PRNGKey(seed)
    leaves, treedef = jax.tree_util.tree_flatten((params, x))
    paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path((params, x))[0]]
    dy, hand, oracle, phi0, magnitude = _base(layer, params, x, key_dy)
    hand_leaves, hand_def = jax.tree_util.tree_flatten(hand)
    if hand_def != jax.tree_util.tree_structure(oracle):
        problem = f"backward returned (grads, dx) with structure {hand_def}, expected {treedef}"
        return Report(name, mode, promoted, (), (problem,))
    dy_leaves, dy_def = jax.tree_util.tree_flatten(dy)
    ctx = types.SimpleNamespace(
        bytes_per_move=functools.cache(lambda: perturb.dense_bytes(_flat_phi(layer, treedef, len(leaves), dy_def), list(leaves) + dy_leaves)),
        layer=layer, treedef=treedef, leaves=leaves, dy=dy, seed=seed, phi0=float(phi0), order=order,
        step=step, rtol_jax=rtol_jax, rtol_num=rtol_num, memory_mb=memory_mb,
        noise=atol if atol is not None else 64 * EPS * max(float(magnitude), abs(float(phi0))) / step,
    )
    reports = []
    for j, (path, h_leaf, o_leaf) in enumerate(zip(paths, hand_leaves, jax.tree_util.tree_leaves(oracle))):
        h_leaf, o_leaf = np.asarray(h_leaf, np.float64), np.asarray(o_leaf, np.float64)
        shape = tuple(leaves[j].shape)
        if h_leaf.shape != shape:
            reports.append(LeafReport(path, shape, math.inf, math.inf, math.inf, math.inf, "-", math.nan, math.nan,
                                      math.nan, 0, False, f"hand gradient has shape {h_leaf.shape}"))
            continue
        if h_leaf.size == 0:
            continue
        leaf = _Leaf(ctx, j, h_leaf, o_leaf)
        kink_jax = leaf.jax_kinks()
        abs_jax = float(np.max(np.where(kink_jax, 0.0, np.abs(leaf.hand - leaf.oracle))))
        abs_num, rel_num, worst, at, kinks, ok = leaf.full(kink_jax) if mode == "full" else leaf.fast(kink_jax, directions)
        reports.append(LeafReport(path, shape, abs_jax, abs_jax / leaf.scale if leaf.scale else abs_jax, abs_num,
                                  rel_num, worst, float(at[0]), float(at[1]), float(at[2]), kinks, bool(ok)))
    return Report(name, mode, promoted, tuple(reports))


def chunk_size(memory_mb, bytes_per_move) -> int:
    """How many perturbed evaluations full mode runs in one compiled call: ``memory_mb`` over
    the bytes one evaluation would take if every intermediate were dense and alive."""
    return int(max(1, memory_mb * 2**20 // bytes_per_move))


def _index(flat_index, shape) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat_index, shape))) if shape else "()"


def _is_kink(value, lo, hi, tol):
    """The one-sided derivatives jump (by far more than the tolerance) and ``value`` lies
    between them: a subgradient at a kink. The margin allows for the O(h) error of the
    one-sided quotients themselves."""
    jump = hi - lo
    margin = tol + 0.05 * jump
    return (jump > 10 * tol) & (value >= lo - margin) & (value <= hi + margin)


def _path(keypath) -> str:
    head, rest = keypath[0], keypath[1:]
    text = jax.tree_util.keystr(rest)
    return ("params" + text) if head.idx == 0 else ("dx" + text)


def _vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _one_sided(plus, minus, phi0, h):
    forward, backward = (plus - phi0) / h, (phi0 - minus) / h
    return np.minimum(forward, backward), np.maximum(forward, backward)


def check_pair(forward, backward, params, x, **kwargs) -> Report:
    """Check a bare ``forward(params, x) -> (y, residuals)`` / ``backward(params, residuals, dy)`` pair."""
    return check(Layer(None, forward, backward), params, x, **kwargs)


def check_loss(network: Layer, loss: Loss, params, x, targets, **kwargs) -> Report:
    """Check a whole network followed by its loss (``dy`` is then a random scalar)."""
    kwargs.setdefault("name", "network+loss")
    return check(serial(network, with_targets(loss, targets)), (params, ()), x, **kwargs)


def assert_close(layer: Layer, params, x, **kwargs) -> Report:
    """``check`` for pytest: raises ``AssertionError`` with the report's table when it fails."""
    report = check(layer, params, x, **kwargs)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report


def compare_with_jax(network: Layer, loss: Loss, params, x, targets) -> float:
    """Max relative error, over all parameter leaves, of the hand gradient of ``network + loss``
    against ``jax.grad``, computed in float64 (each leaf's error over its largest entry)."""
    from .core import loss_and_grads

    with jax.enable_x64(True):
        params = _promote(params, set())
        x = _promote(x, set())

        def value(p):
            return loss.forward(network.forward(p, x)[0], targets)[0]

        _, hand = loss_and_grads(network, loss, params, x, targets)
        oracle = jax.grad(value)(params)
        errors = [
            float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-300))
            for a, b in zip(jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(oracle))
        ]
    return max(errors, default=0.0)
