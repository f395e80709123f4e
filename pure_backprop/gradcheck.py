r"""A gradient checker: the hand-written backward against ``jax.vjp`` and finite differences.

Chapter 5 of the book ends with "numerical differentiation becomes the tool that verifies backprop";
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
  ``<hand, v>``, which is 4 forwards per direction (at ``+-h`` and ``+-2h``, the latter to
  tell kinks from curvature, below). ``order=4`` uses the five-point stencil.

Everything runs in float64 inside a scoped ``jax.enable_x64`` (the caller's global setting is
untouched); float32 and integer inputs are promoted, never truncated, and the report says so.

Fast mode passes a leaf only when every direction agrees cleanly; a leaf whose hand gradient
disagrees with ``jax.vjp`` at some entry, or one of whose directions disagrees with the
numerical derivative, meets a kink (a jump, below) or gives a non-finite value, is checked
entry by entry as in full mode, and its row then shows the worst entry. A passing fast row
shows the worst direction ``vN`` and the three derivatives along it.

Kinks. Where a function has a kink within the step (ReLU at 0, a max with ties), the
one-sided differences ``(phi(t + h) - phi(t)) / h`` and ``(phi(t) - phi(t - h)) / h``
disagree. Where ``phi`` merely curves they disagree too, by ``h * phi''``; the same quotients
at ``2h`` tell the two apart: the jump ``2 J(h) - J(2h)`` (``J`` being right minus left
quotient) removes the curvature term and leaves the kink's jump. An entry that fails, whose
jump is finite and exceeds 10 times the tolerance, and whose hand value lies between the
one-sided derivatives (a valid subgradient, within the tolerance plus 5 % of the jump) is
reported as a kink, not a failure; where the hand value and ``jax.vjp`` disagree, both must lie
there. An infinite jump (a pole or an overflow within the step) is no kink: its margin would
excuse any value, so the entry fails, naming the non-finite numerical value.

A leaf passes when, for every entry that is not a kink,
``|hand - oracle| <= atol + rtol * scale``, ``scale`` being the largest magnitude of the
leaf's hand or oracle gradient (``rtol=1e-10`` against jax, ``1e-6`` against finite
differences; ``atol`` defaults to the rounding noise of the difference quotient). Every
comparison fails closed: a NaN or infinite hand gradient, ``jax.vjp`` gradient, forward
output or numerical value fails its leaf, and the report names the entry and the value.
Settings that would make the check meaningless (a zero or negative step, memory bound or
tolerance, an empty batch, nothing to differentiate, an output that is not float64 when the
inputs are) are refused with a ``ValueError``.

Your own function. ``check_function(f, *args, reference=None, argnums=None)`` checks any JAX
function, typically one with a ``jax.custom_vjp`` or ``jax.custom_jvp`` rule: the "hand" gradient
is ``jax.vjp(f, *args)``'s, which applies the rule, against finite differences of ``f`` and, given
a ``reference`` (a plain function computing the same values), against ``jax.vjp`` of it; without
one the jax columns read ``-``. ``f`` becomes a ``Layer`` whose params are the floating arrays of
the arguments checked, so everything above applies unchanged; rows are named ``args[0]['W']``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import perturb
from .core import Layer, Loss, StatefulLayer, freeze, serial, with_targets
from .initializers import ONE_OFF  # programs that run once compile at LLVM -O0

EPS = float(np.finfo(np.float64).eps)
_STENCILS = {2: ((1.0, -1.0), (0.5, -0.5)), 4: ((1.0, -1.0, 2.0, -2.0), (8 / 12, -8 / 12, -1 / 12, 1 / 12))}


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
    jax_compared: bool = True  # False where no jax oracle ran (``check_function`` without a reference)


@dataclasses.dataclass(frozen=True)
class Report:
    name: str
    mode: str
    promoted: tuple  # the input dtypes that were promoted to float64
    leaves: tuple
    problems: tuple = ()
    directions: int = 3
    oracles: str = ""  # what the hand, jax and numerical columns are, where they are not a layer's

    @property
    def ok(self) -> bool:
        """True only when there is something checked and every leaf passed."""
        return bool(self.leaves) and not self.problems and all(leaf.ok for leaf in self.leaves)

    @property
    def kinks(self) -> int:
        return sum(leaf.kinks for leaf in self.leaves)

    def __str__(self):
        promoted = f", promoted from {'/'.join(self.promoted)}" if self.promoted else ""
        lines = [f"gradcheck {self.name}: mode={self.mode}, float64{promoted}: {'ok' if self.ok else 'FAILED'}"]
        lines.append("  " + rows_legend(self.mode, self.directions))
        lines += [f"  {self.oracles}"] if self.oracles else []
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append(format_rows([(self.name, leaf) for leaf in self.leaves]))
        return "\n".join(lines)


_HEADER = ("case", "leaf", "shape", "rel err jax", "rel err numerical", "worst", "hand", "jax", "numerical", "kinks", "status")


def rows_legend(mode: str, directions: int = 3) -> str:
    """What a row of the table compares, in ``mode``: one line for the report's header."""
    if mode == "full":
        return "rows: each leaf's worst entry (i, j); hand, jax, numerical: d<y, dy>/d(entry)"
    return (f"rows: each leaf's worst of {directions} random unit directions vN; hand, jax, numerical: "
            "d<y, dy>/d(vN); an entry (i, j) where the leaf needed the entry-by-entry check "
            "(a kink, a disagreement, a non-finite value)")


def format_rows(rows) -> str:
    """A fixed-width table of ``(case name, LeafReport)`` rows."""
    table = [_HEADER]
    for name, leaf in rows:
        rel_jax, jax_value = (f"{leaf.rel_jax:.1e}", f"{leaf.jax:.6g}") if leaf.jax_compared else ("-", "-")
        table.append((
            name, leaf.path, str(leaf.shape), rel_jax, f"{leaf.rel_num:.1e}", leaf.worst,
            f"{leaf.hand:.6g}", jax_value, f"{leaf.numerical:.6g}", str(leaf.kinks),
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


def check(layer: Layer | StatefulLayer, params, x, *, mode: str = "fast", seed: int = 0, directions: int = 3,
          order: int = 2, step: float | None = None, rtol_jax: float = 1e-10, rtol_num: float = 1e-6,
          atol: float | None = None, memory_mb: float = 256, name: str = "layer", state=(), key=None,
          train: bool = True) -> Report:
    """Check ``layer.backward`` at ``(params, x)`` against ``jax.vjp`` and finite differences.

    A ``StatefulLayer`` is checked as ``core.freeze(layer, state, key, train)``: with its state
    and key held fixed (dropout's mask does not move between evaluations) and, by default, in
    train mode, where batch statistics depend on ``x``.

    ``mode``: "fast" (``directions`` random directions per leaf) or "full" (every entry).
    ``order``: 2 (central difference) or 4 (five-point stencil); ``step`` (> 0) defaults to
    ``eps**(1/3)`` or ``eps**(1/5)``, scaled by the magnitude of each entry (full) or leaf (fast).
    ``rtol_jax``, ``rtol_num`` and ``atol`` (>= 0) are the tolerances described in the module.
    ``memory_mb`` (> 0) bounds one full-mode chunk: it holds ``memory_mb`` MiB divided by the bytes
    of every intermediate of one forward (as if all were dense), perturbed evaluations.
    Raises ``ValueError`` for a setting out of range, an empty batch, a leaf that is not a real
    number, a layer with nothing to check, or an output that is not float64 (a layer that casts).
    """
    _check_settings(mode, seed, directions, order, step, rtol_jax, rtol_num, atol, memory_mb)
    if isinstance(layer, StatefulLayer):
        layer = freeze(layer, state, key, train)
    elif state != () or key is not None:
        raise ValueError("gradcheck: state and key apply to a StatefulLayer; this layer is a plain Layer")
    step = EPS ** (1 / (order + 1)) if step is None else float(step)
    with jax.enable_x64(True):
        promoted = set()
        params, x = _promote(params, promoted), _promote(x, promoted)
        _check_inputs(layer, params, x)
        return _check(layer, params, x, mode, seed, directions, order, step, rtol_jax, rtol_num, atol,
                      memory_mb, name, tuple(sorted(promoted)))


def _number(value):
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value):
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_settings(mode, seed, directions, order, step, rtol_jax, rtol_num, atol, memory_mb):
    """Refuse the settings under which a check could not mean anything, naming the argument and the fix."""
    if mode not in ("fast", "full"):
        raise ValueError(f"gradcheck: mode must be 'fast' or 'full', got {mode!r}")
    if _integer(order) not in _STENCILS:
        raise ValueError(f"gradcheck: order must be 2 or 4, got {order!r}")
    if _integer(directions) is None or directions < 1:
        raise ValueError(f"gradcheck: directions must be an integer >= 1, got {directions!r}; pass e.g. directions=3")
    if _integer(seed) is None or not 0 <= seed < 2**63:
        raise ValueError(f"gradcheck: seed must be an integer in [0, 2**63), got {seed!r}; pass e.g. seed=0")
    value = None if step is None else _number(step)
    if step is not None and not (value is not None and math.isfinite(value) and value > 0):
        raise ValueError(f"gradcheck: step must be a finite number > 0 (the finite-difference step, relative to "
                         f"the entries' magnitude), got {step!r}; pass e.g. step=1e-5, or None for the default")
    for arg, given, default in (("rtol_jax", rtol_jax, "1e-10"), ("rtol_num", rtol_num, "1e-6"), ("atol", atol, None)):
        if given is None and default is None:
            continue
        value = _number(given)
        if not (value is not None and math.isfinite(value) and value >= 0):
            fix = f"pass e.g. {arg}={default} (the default)" if default else "pass e.g. atol=1e-9, or None for the rounding noise"
            raise ValueError(f"gradcheck: {arg} must be a finite number >= 0 (a tolerance), got {given!r}; {fix}")
    value = _number(memory_mb)
    if not (value is not None and math.isfinite(value) and value > 0):
        raise ValueError(f"gradcheck: memory_mb must be a finite number > 0 (MiB for one compiled full-mode chunk), "
                         f"got {memory_mb!r}; pass e.g. memory_mb=256 (the default)")


def _check_inputs(layer, params, x):
    """Refuse an empty batch, a leaf that is not a real number, and a layer with nothing to check."""
    entries = 0
    for keypath, leaf in jax.tree_util.tree_flatten_with_path((params, x))[0]:
        arg = ("params" if keypath[0].idx == 0 else "x") + jax.tree_util.keystr(keypath[1:])
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"gradcheck: {arg} has dtype {leaf.dtype}; gradcheck differentiates real floating "
                             "(or integer, promoted to float64) values only: close over the others in the layer")
        if keypath[0].idx == 1 and leaf.size == 0:
            raise ValueError(f"gradcheck: x is an empty batch ({arg} has shape {tuple(leaf.shape)}); "
                             "give at least one example")
        entries += leaf.size
    if not entries:
        raise ValueError("gradcheck: params and x hold no entries to check; give the layer at least one "
                         "parameter or input entry")
    y = jax.eval_shape(lambda p, v: layer.forward(p, v)[0], params, x)
    outputs = 0
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(y)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"gradcheck: the layer's output y{jax.tree_util.keystr(keypath)} has dtype {leaf.dtype}; "
                             "the output checked must be floating")
        if leaf.dtype != jnp.float64:  # its cotangent dy would be float64: jax.vjp refuses the mismatch
            raise ValueError(f"gradcheck: the layer's output y{jax.tree_util.keystr(keypath)} has dtype {leaf.dtype} "
                             "from float64 params and x; gradcheck compares in float64, so the layer must compute "
                             "in the dtype of its inputs (look for a fixed astype or a float32 constant)")
        outputs += math.prod(leaf.shape)
    if not outputs:
        raise ValueError("gradcheck: the layer's output y has no entries, so there is nothing to check; "
                         "give an input for which the layer returns at least one value")


class _Skeleton(tuple):
    """A layer taken apart (``jax.tree_util.tree_flatten``) without its array leaves: the
    static, hashable argument of the compiled programs below, which take the arrays (data bound
    into the layer, as ``with_targets`` binds its targets) as inputs and put them back with
    ``_whole``. A check of the same layer with other bound values then compiles nothing new."""

    __slots__ = ()


def _taken_apart(layer):
    """``(skeleton, arrays)``: ``layer``'s pytree with every array leaf replaced by ``None``
    (hashable: functions and Python values), and those arrays in order."""
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    bound = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
    return (_Skeleton((treedef, tuple(None if b else leaf for b, leaf in zip(bound, leaves)))),
            [leaf for b, leaf in zip(bound, leaves) if b])


def _whole(skeleton, arrays):
    """The layer that ``_taken_apart`` took apart, with ``arrays`` (traced, inside a program) back in place."""
    treedef, statics = skeleton
    given = iter(arrays)
    return jax.tree_util.tree_unflatten(treedef, [next(given) if leaf is None else leaf for leaf in statics])


def _phi(layer, treedef, leaves, dy):
    """The scalar ``<forward(params, x), dy>`` whose gradient the backward pass returns."""
    p, v = jax.tree_util.tree_unflatten(treedef, leaves)
    return _vdot(layer.forward(p, v)[0], dy)


def _flat_phi(layer, treedef, n, dy_def):
    """``phi`` as a function of the flat leaves followed by the flat leaves of ``dy``."""
    return lambda *flat: _phi(layer, treedef, list(flat[:n]), jax.tree_util.tree_unflatten(dy_def, flat[n:]))


@functools.partial(jax.jit, static_argnames=("layer",), compiler_options=ONE_OFF)
def _base(layer, bound, params, x, key):
    layer = _whole(layer, bound)
    y, residuals = layer.forward(params, x)
    y_leaves, y_def = jax.tree_util.tree_flatten(y)  # an independent dy per output leaf (the first from key itself)
    dy = jax.tree_util.tree_unflatten(y_def, [jax.random.normal(jax.random.fold_in(key, i) if i else key, jnp.shape(a),
                                                                jnp.float64) for i, a in enumerate(y_leaves)])
    hand = layer.backward(params, residuals, dy)
    _, vjp = jax.vjp(lambda p, v: layer.forward(p, v)[0], params, x)
    magnitude = _vdot(jax.tree_util.tree_map(jnp.abs, y), jax.tree_util.tree_map(jnp.abs, dy))
    return dy, hand, vjp(dy), _vdot(y, dy), magnitude, y


@functools.partial(jax.jit, static_argnames=("layer", "treedef", "j"))
def _moved_entries(layer, bound, treedef, j, leaves, dy, indices, values):
    """``phi`` with entry ``indices[k]`` of leaf ``j`` set to ``values[k]``, for every ``k``,
    evaluated by ``perturb`` (only what the moved entry changes is recomputed)."""
    layer = _whole(layer, bound)
    dy_leaves, dy_def = jax.tree_util.tree_flatten(dy)
    return perturb.moved_values(_flat_phi(layer, treedef, len(leaves), dy_def), list(leaves) + dy_leaves, j, indices, values)


@functools.partial(jax.jit, static_argnames=("layer", "treedef"))
def _moved_dense(layer, bound, treedef, leaves, dy, which, indices, values):
    """``phi`` with entry ``indices[k]`` of leaf ``which[k]`` set to ``values[k]``, for every
    ``k``, each evaluated whole (``vmap`` of the forward). ``which`` is an argument, not part of
    the program, so that one compiled program serves every leaf of a small problem."""
    layer = _whole(layer, bound)

    def one(w, i, v):
        moved = [leaf.ravel().at[jnp.where(w == j, i, leaf.size)].set(v, mode="drop").reshape(leaf.shape)
                 if leaf.size else leaf  # (JAX refuses any index into an empty leaf; none is moved)
                 for j, leaf in enumerate(leaves)]  # the index of every other leaf is out of range: dropped
        return _phi(layer, treedef, moved, dy)

    return jax.vmap(one)(which, indices, values)


# Up to this many entries in all leaves together, full mode evaluates each move densely in one
# program shared by all leaves (a compilation per chunk size) rather than by ``perturb`` in a
# program per leaf: for small layers compiling dominates. Measured on the registry's
# ``mlp_extend`` case (12 leaves): see the README's checker section.
DENSE_ENTRIES = 4096


@functools.partial(jax.jit, static_argnames=("layer", "treedef"), compiler_options=ONE_OFF)
def _moved_along_every_leaf(layer, bound, treedef, leaves, dy, moves, leaf_of_move, offsets):
    """``phi`` at the flat concatenation of the leaves moved by ``offset * moves[r]`` inside
    leaf ``leaf_of_move[r]`` only (the others untouched, bit for bit), for every row ``r`` and
    offset: fast mode's directions of all leaves in one compiled program."""
    layer = _whole(layer, bound)
    sizes = [int(leaf.size) for leaf in leaves]
    flat = jnp.concatenate([leaf.ravel() for leaf in leaves])
    segment = jnp.asarray(np.repeat(np.arange(len(leaves)), sizes))

    def moved(move, j, o):
        new = jnp.where(segment == j, flat + o * move, flat)
        parts = jnp.split(new, np.cumsum(sizes)[:-1])
        return _phi(layer, treedef, [part.reshape(leaf.shape) for part, leaf in zip(parts, leaves)], dy)

    return jax.vmap(lambda move, j: jax.vmap(lambda o: moved(move, j, o))(offsets))(moves, leaf_of_move)


# Fast mode evaluates the directions of every leaf in one program (instead of one program per
# leaf: compiling dominates a fast check) while the moves, a dense (leaves x directions) x
# entries matrix, hold at most this many float64 values (64 MiB).
ALONG_ENTRIES = 2**23


@functools.partial(jax.jit, static_argnames=("layer", "treedef", "j"), compiler_options=ONE_OFF)
def _moved_along(layer, bound, treedef, j, leaves, dy, directions, step, offsets):
    """``phi`` with leaf ``j`` moved by ``offset * step * v`` for each direction ``v``."""
    layer = _whole(layer, bound)

    def moved(v, o):
        return _phi(layer, treedef, leaves[:j] + [leaves[j] + o * step * v] + leaves[j + 1:], dy)

    return jax.vmap(lambda v: jax.vmap(lambda o: moved(v, o))(offsets))(directions)


class _Leaf:
    """What the comparisons of one leaf need: its values, gradients, tolerances and
    a chunked evaluator of ``phi`` with single entries moved. ``hand`` and ``oracle`` are finite."""

    def __init__(self, ctx, j, path, hand, oracle):
        self.ctx, self.j, self.path = ctx, j, path
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
        if ctx.dense_size:  # one chunk size for every leaf and probe: one program
            size = ctx.dense_size
        else:  # power-of-two chunks: a few compiled shapes serve every leaf size and probe count
            size = min(chunk_size(ctx.memory_mb, ctx.bytes_per_move()), 1 << (len(entries) - 1).bit_length())
        out = []
        for start in range(0, len(entries), size):
            idx, new = entries[start:start + size], moved[start:start + size]
            pad = size - len(idx)
            idx = jnp.asarray(np.concatenate([idx, np.zeros(pad, idx.dtype)]))
            new = jnp.asarray(np.concatenate([new, np.full(pad, flat_value[0])]))
            if ctx.dense_size:
                values = _moved_dense(ctx.layer, ctx.bound, ctx.treedef, ctx.leaves, ctx.dy, jnp.full(size, self.j), idx, new)
            else:
                values = _moved_entries(ctx.layer, ctx.bound, ctx.treedef, self.j, ctx.leaves, ctx.dy, idx, new)
            out.append(np.asarray(values)[: size - pad])
        values = np.concatenate(out).reshape(len(indices), len(offsets))
        return [values[:, k] for k in range(len(offsets))]

    def report(self, abs_jax, abs_num, scale_num, worst, at, kinks, ok, problem=""):
        return LeafReport(self.path, tuple(self.value.shape), abs_jax, abs_jax / self.scale if self.scale else abs_jax,
                          abs_num, abs_num / scale_num if scale_num else abs_num, worst,
                          float(at[0]), float(at[1]), float(at[2]), int(kinks), bool(ok), problem)

    def full(self):
        """Every entry against ``jax.vjp`` and its central difference; failing entries are
        probed at ``+-2h`` as well, and excused only where they are kinks (``_Kink``)."""
        ctx = self.ctx
        offsets, weights = _STENCILS[ctx.order]
        values = self.moved(np.arange(self.hand.size), offsets)
        numerical = sum(w * v for w, v in zip(weights, values)) / self.steps
        diff_jax, diff_num = np.abs(self.hand - self.oracle), np.abs(self.hand - numerical)
        ok_jax, ok_num = diff_jax <= self.tol_jax, diff_num <= self.tol_num  # NaN compares False: fails
        kinks = np.zeros(self.hand.size, bool)
        suspects = np.flatnonzero(~(ok_jax & ok_num))
        if suspects.size:
            far = (values[2][suspects], values[3][suspects]) if len(values) == 4 else self.moved(suspects, (2.0, -2.0))
            kink = _Kink(values[0][suspects], values[1][suspects], *far, ctx.phi0, self.steps[suspects], self.tol_num)
            kinks[suspects] = kink.contains(self.hand[suspects]) & (ok_jax[suspects] | kink.contains(self.oracle[suspects]))
        failing = ~(ok_jax & ok_num) & ~kinks
        violation = np.where(kinks, -1.0, np.maximum(_ratio(diff_jax, self.tol_jax), _ratio(diff_num, self.tol_num)))
        w = int(np.argmax(violation))
        problem = ""
        if failing.any() and not np.isfinite(numerical[w]):
            problem = f"non-finite numerical {_index(w, self.value.shape)} = {numerical[w]}"
        return self.report(float(np.max(np.where(kinks, 0.0, diff_jax))), float(np.max(np.where(kinks, 0.0, diff_num))),
                           self.scale, _index(w, self.value.shape), (self.hand[w], self.oracle[w], numerical[w]),
                           kinks.sum(), not failing.any(), problem)

    def fast(self, directions):
        """``directions`` random unit directions. The leaf passes here only if ``jax.vjp`` agrees
        at every entry and every direction agrees with its central difference, finitely and
        without a jump; otherwise it is checked entry by entry, where kinks can be told from errors."""
        ctx = self.ctx
        diff_jax = np.abs(self.hand - self.oracle)
        if not np.all(diff_jax <= self.tol_jax):
            return self.full()
        v, h = _directions(ctx, self.j, directions)
        if ctx.along is not None:  # computed for every leaf at once
            values = ctx.along[self.j]
        else:
            values = np.asarray(_moved_along(ctx.layer, ctx.bound, ctx.treedef, self.j, ctx.leaves, ctx.dy, jnp.asarray(v), h,
                                             jnp.asarray(_FAST_OFFSETS, jnp.float64)))
        numerical = sum(w * values[:, k] for k, w in enumerate(_STENCILS[ctx.order][1])) / h
        flat_v = v.reshape(directions, -1)
        hand_dir, oracle_dir = flat_v @ self.hand, flat_v @ self.oracle
        scale = max(float(np.linalg.norm(self.hand)), float(np.linalg.norm(self.oracle)))
        tol = ctx.noise * math.sqrt(self.hand.size) + ctx.rtol_num * scale
        diff = np.abs(hand_dir - numerical)
        jump = _Kink(*values.T, ctx.phi0, h, tol).jump
        if not (np.all(diff <= tol) and np.all(np.abs(jump) <= tol)):  # NaN fails both
            return self.full()
        d = int(np.argmax(diff))
        return self.report(float(np.max(diff_jax)), float(np.max(diff)), scale, f"v{d}",
                           (hand_dir[d], oracle_dir[d], numerical[d]), 0, True)


_FAST_OFFSETS = (1.0, -1.0, 2.0, -2.0)  # the order-4 stencil's points; order 2 uses the first two


def _directions(ctx, j, directions):
    """Leaf ``j``'s ``directions`` random unit directions (seeded by ``(seed, j)``) and its step."""
    value = np.asarray(ctx.leaves[j])
    v = np.random.default_rng((ctx.seed, j)).standard_normal((directions, value.size))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape((directions,) + value.shape)
    return v, ctx.step * max(1.0, float(np.max(np.abs(value))))


def _along_every_leaf(ctx, directions):
    """``{j: phi along leaf j's directions at _FAST_OFFSETS}`` for every non-empty leaf, from one program."""
    leaves = [j for j, leaf in enumerate(ctx.leaves) if leaf.size]
    sizes = [int(leaf.size) for leaf in ctx.leaves]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    moves = np.zeros((len(leaves) * directions, starts[-1]))
    for r, j in enumerate(leaves):
        v, h = _directions(ctx, j, directions)
        moves[r * directions:(r + 1) * directions, starts[j]:starts[j + 1]] = h * v.reshape(directions, -1)
    values = np.asarray(_moved_along_every_leaf(ctx.layer, ctx.bound, ctx.treedef, ctx.leaves, ctx.dy, jnp.asarray(moves),
                                                jnp.asarray(np.repeat(leaves, directions)),
                                                jnp.asarray(_FAST_OFFSETS, jnp.float64)))
    return {j: values[r * directions:(r + 1) * directions] for r, j in enumerate(leaves)}


class _Kink:
    """The one-sided difference quotients of ``phi`` at ``+-h`` and ``+-2h`` (for entries, or
    along directions). Where ``phi`` curves, each quotient is off by ``O(h)``: right minus left
    is ``h * phi''`` at ``h`` and twice that at ``2h``; at a kink it is the jump at both. The
    Richardson combinations ``2 q(h) - q(2h)`` remove the ``O(h)`` term, so ``jump`` is
    ``O(h**2)`` on a smooth function and the kink's jump at a kink."""

    def __init__(self, plus, minus, plus2, minus2, phi0, h, tol):
        right, left = (plus - phi0) / h, (phi0 - minus) / h
        right2, left2 = (plus2 - phi0) / (2 * h), (phi0 - minus2) / (2 * h)
        right0, left0 = 2 * right - right2, 2 * left - left2
        self.jump = right0 - left0
        self.lo = np.minimum(np.minimum(right, left), np.minimum(right0, left0))  # NaN propagates
        self.hi = np.maximum(np.maximum(right, left), np.maximum(right0, left0))
        self.tol = tol

    def contains(self, value):
        """A kink (a finite jump of more than 10 tolerances) and ``value`` between the one-sided
        derivatives (a subgradient), within the tolerance plus 5 % of the jump for the quotients'
        own error. An infinite jump would give an infinite margin, excusing any value: not a kink."""
        jump = np.abs(self.jump)
        margin = self.tol + 0.05 * jump
        return (jump > 10 * self.tol) & np.isfinite(jump) & (value >= self.lo - margin) & (value <= self.hi + margin)


def _ratio(diff, tol):
    """``diff / tol``, infinite where ``diff`` is NaN or ``tol`` is 0 and ``diff`` is not."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = diff / tol if tol > 0 else np.where(diff > 0, np.inf, 0.0)
    return np.where(np.isnan(diff), np.inf, ratio)


def _nonfinite(what, array, shape) -> str:
    """'' if ``array`` is finite, else its first non-finite entry and value, and how many there are."""
    bad = np.flatnonzero(~np.isfinite(array))
    if not bad.size:
        return ""
    more = f" ({bad.size} non-finite entries)" if bad.size > 1 else ""
    return f"non-finite {what} {_index(bad[0], shape)} = {array.ravel()[bad[0]]}{more}"


def _failed(path, shape, worst, at, problem):
    return LeafReport(path, shape, math.nan, math.nan, math.nan, math.nan, worst, float(at[0]), float(at[1]),
                      float(at[2]), 0, False, problem)


def _check(layer, params, x, mode, seed, directions, order, step, rtol_jax, rtol_num, atol, memory_mb, name, promoted):
    key_dy = jax.random.PRNGKey(seed)
    leaves, treedef = jax.tree_util.tree_flatten((params, x))
    paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path((params, x))[0]]
    skeleton, bound = _taken_apart(layer)  # bound data (with_targets' targets) enter as inputs
    dy, hand, oracle, phi0, magnitude, y = _base(skeleton, bound, params, x, key_dy)
    hand_leaves, hand_def = jax.tree_util.tree_flatten(hand)
    if hand_def != jax.tree_util.tree_structure(oracle):
        problem = f"backward returned (grads, dx) with structure {hand_def}, expected {treedef}"
        return Report(name, mode, promoted, (), (problem,), directions)
    # a non-finite output leaves nothing to compare against: every leaf fails, naming it
    forward = next((p for p in (_nonfinite("forward y" + jax.tree_util.keystr(k), np.asarray(a), np.shape(a))
                                for k, a in jax.tree_util.tree_flatten_with_path(y)[0]) if p), "")
    noise = atol if atol is not None else 64 * EPS * max(float(magnitude), abs(float(phi0))) / step
    if not forward and not (math.isfinite(float(phi0)) and math.isfinite(noise)):
        forward = f"non-finite <y, dy> = {float(phi0)} or rounding noise = {noise}: the output is too large to check"
    dy_leaves, dy_def = jax.tree_util.tree_flatten(dy)
    ctx = types.SimpleNamespace(
        bytes_per_move=functools.cache(lambda: perturb.dense_bytes(_flat_phi(layer, treedef, len(leaves), dy_def), list(leaves) + dy_leaves)),
        layer=skeleton, bound=bound, treedef=treedef, leaves=leaves, dy=dy, seed=seed, phi0=float(phi0), order=order,
        step=step, rtol_jax=rtol_jax, rtol_num=rtol_num, memory_mb=memory_mb, noise=noise, dense_size=0,
        along=None,
    )
    entries = sum(int(leaf.size) for leaf in leaves)
    if entries <= DENSE_ENTRIES:  # (fast mode's leaves fall back to full when a direction meets a kink)
        largest = max(int(leaf.size) for leaf in leaves) * len(_STENCILS[order][0])
        ctx.dense_size = min(chunk_size(memory_mb, ctx.bytes_per_move()), 1 << max(0, largest - 1).bit_length())
    if mode == "fast" and not forward and entries * directions * sum(1 for leaf in leaves if leaf.size) <= ALONG_ENTRIES:
        ctx.along = _along_every_leaf(ctx, directions)
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
        if forward:
            reports.append(_failed(path, shape, "-", (math.nan,) * 3, forward))
            continue
        problem = _nonfinite("hand", h_leaf, shape) or _nonfinite("jax", o_leaf, shape)
        if problem:
            bad = ~np.isfinite(h_leaf.ravel())
            w = int(np.argmax(bad if bad.any() else ~np.isfinite(o_leaf.ravel())))  # the entry named
            reports.append(_failed(path, shape, _index(w, shape), (h_leaf.ravel()[w], o_leaf.ravel()[w], math.nan), problem))
            continue
        leaf = _Leaf(ctx, j, path, h_leaf, o_leaf)
        reports.append(leaf.full() if mode == "full" else leaf.fast(directions))
    problems = (forward,) if forward else ()
    return Report(name, mode, promoted, tuple(reports), problems, directions)


def chunk_size(memory_mb, bytes_per_move) -> int:
    """How many perturbed evaluations full mode runs in one compiled call: ``memory_mb`` over
    the bytes one evaluation would take if every intermediate were dense and alive."""
    return int(max(1, memory_mb * 2**20 // bytes_per_move))


def _index(flat_index, shape) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat_index, shape))) if shape else "()"


def _path(keypath) -> str:
    head, rest = keypath[0], keypath[1:]
    text = jax.tree_util.keystr(rest)
    return ("params" + text) if head.idx == 0 else ("dx" + text)


def _vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def check_pair(forward, backward, params, x, **kwargs) -> Report:
    """Check a bare ``forward(params, x) -> (y, residuals)`` / ``backward(params, residuals, dy)`` pair."""
    return check(Layer(None, forward, backward), params, x, **kwargs)


def check_loss(network: Layer, loss: Loss, params, x, targets, **kwargs) -> Report:
    """Check a whole network followed by its loss (``dy`` is then a random scalar): the layer
    ``serial(network, with_targets(loss, targets))`` at ``((params, ()), x)``. For a plain
    ``Layer`` network the targets enter the compiled checks as data, so checking the same network
    and loss on other batches compiles nothing new."""
    kwargs.setdefault("name", "network+loss")
    if isinstance(network, StatefulLayer):
        return check(serial(network, with_targets(loss, targets)), (params, ()), x, **kwargs)
    return check(Layer(None, jax.tree_util.Partial(_network_and_loss_forward, network, loss, targets),
                       jax.tree_util.Partial(_network_and_loss_backward, network, loss)),
                 (params, ()), x, **kwargs)


def _network_and_loss_forward(network, loss, targets, params, x):
    return serial(network, with_targets(loss, targets)).forward(params, x)


def _network_and_loss_backward(network, loss, params, residuals, dy):
    # a loss's backward reads its residuals only: the same for any targets bound
    return serial(network, with_targets(loss, None)).backward(params, residuals, dy)


def assert_close(layer: Layer, params, x, **kwargs) -> Report:
    """``check`` for pytest: raises ``AssertionError`` with the report's table when it fails."""
    report = check(layer, params, x, **kwargs)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report


def check_function(f, *args, reference=None, argnums=None, mode: str = "fast", seed: int = 0, directions: int = 3,
                   order: int = 2, step: float | None = None, rtol_jax: float = 1e-10, rtol_num: float = 1e-6,
                   atol: float | None = None, memory_mb: float = 256, name: str | None = None) -> Report:
    """Check the VJP that JAX uses for ``f(*args)`` against finite differences of ``f`` and, given a
    ``reference``, against ``jax.vjp`` of the reference.

    ``f`` is any JAX function, with or without ``jax.custom_vjp`` or ``jax.custom_jvp``: its "hand"
    gradient is what ``jax.vjp(f, ...)`` returns, which applies the custom rule where there is one.
    ``reference`` is a plain function computing the same values (same output structure, shapes and
    dtypes); without one no jax oracle runs, and the report's jax columns read ``-``. ``f``'s output
    may be any pytree of floating arrays; the cotangent ``dy`` is a random pytree like it.

    ``args`` are any pytrees. ``argnums`` selects the arguments differentiated (an index or a tuple
    of indices, negative ones counted from the end; ``None``: every argument): every floating array
    leaf of those (a ``jax.Array``, NumPy array or scalar) is promoted to float64 and checked, its row
    named by its path (``args[0]['W']``). Everything else is passed to ``f`` as it is: integer and
    boolean arrays, strings, Python numbers (a Python float is a constant: pass ``jnp.asarray(v)`` to
    check its gradient). Floating arrays of the other arguments are promoted to float64 too (leave
    out of ``argnums`` a floating array that a ``custom_vjp`` takes in its ``nondiff_argnums``). The
    settings are those of ``check``; ``name`` defaults to ``f.__name__``. Raises ``ValueError`` for a
    setting out of range, an ``f`` or ``reference`` that is not callable, bad ``argnums``, a complex
    leaf to differentiate, nothing to differentiate, an output that is not floating, is not float64
    or is empty, or a reference whose output differs from ``f``'s in structure, shape or dtype.
    """
    _check_settings(mode, seed, directions, order, step, rtol_jax, rtol_num, atol, memory_mb)
    if not callable(f):
        raise ValueError(f"gradcheck: f must be a function, got {type(f).__name__}; pass the function first, "
                         "then its arguments: check_function(f, x)")
    if reference is not None and not callable(reference):
        raise ValueError(f"gradcheck: reference must be a function computing f's values, or None, got "
                         f"{type(reference).__name__}")
    name = getattr(f, "__name__", "function") if name is None else name
    step = EPS ** (1 / (order + 1)) if step is None else float(step)
    with jax.enable_x64(True):
        promoted = set()
        leaves, paths, rebuild = _function_args(args, argnums, promoted)
        _check_function_outputs(f, reference, rebuild, leaves)
        report = _check(_function_layer(f, reference, rebuild), tuple(leaves), (), mode, seed, directions, order, step,
                        rtol_jax, rtol_num, atol, memory_mb, name, tuple(sorted(promoted)))
    names = {_path(keypath): path for (keypath, _), path in
             zip(jax.tree_util.tree_flatten_with_path((tuple(leaves), ()))[0], paths)}
    blank = {} if reference is not None else dict(abs_jax=math.nan, rel_jax=math.nan, jax=math.nan, jax_compared=False)
    rows = tuple(dataclasses.replace(leaf, path=names[leaf.path], **blank) for leaf in report.leaves)
    jax_oracle = ("not compared (no reference given)" if reference is None
                  else f"jax.vjp of the reference {getattr(reference, '__name__', 'function')}")
    return dataclasses.replace(report, leaves=rows, oracles=(
        f"hand: jax.vjp of {name} (its custom rule, if any); jax: {jax_oracle}; numerical: finite differences of {name}"))


def _function_args(args, argnums, promoted):
    """The floating array leaves of the arguments ``argnums`` selects, promoted to float64, their
    paths (``args[0]['W']``) and ``rebuild(leaves)``: ``args`` with those leaves in place and every
    other leaf as given (floating arrays promoted too)."""
    count = len(args)
    numbers = (argnums,) if _integer(argnums) is not None else argnums
    if argnums is None:
        selected = set(range(count))
    elif (not isinstance(numbers, (tuple, list)) or not numbers
          or not all(_integer(i) is not None and -count <= i < count for i in numbers)):
        raise ValueError(f"gradcheck: argnums must be None (every argument), an argument's index or a tuple of "
                         f"them, each in [-{count}, {count}) for {count} arguments, got {argnums!r}")
    else:
        selected = {i % count for i in numbers}
    flat, treedef = jax.tree_util.tree_flatten_with_path(args)
    values = [leaf for _, leaf in flat]
    positions, paths = [], []
    for k, (keypath, leaf) in enumerate(flat):
        dtype = getattr(leaf, "dtype", None)  # a Python number or a string has none: passed as it is
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            continue
        path = "args" + jax.tree_util.keystr(keypath)
        if keypath[0].idx in selected:
            if not jnp.issubdtype(dtype, jnp.floating):
                raise ValueError(f"gradcheck: {path} has dtype {dtype}; gradcheck differentiates real floating values "
                                 "only: leave its argument out of argnums")
            positions.append(k)
            paths.append(path)
        values[k] = _promote(leaf, promoted) if jnp.issubdtype(dtype, jnp.floating) else leaf
    leaves = [values[k] for k in positions]
    if not sum(leaf.size for leaf in leaves):
        raise ValueError(f"gradcheck: the arguments selected (argnums={argnums!r}) hold no floating array entries "
                         "to check; integer arrays, strings, flags and Python numbers are passed unchanged (pass "
                         "jnp.asarray(0.5), not 0.5, to check a scalar's gradient)")

    def rebuild(moved):
        out = list(values)
        for k, leaf in zip(positions, moved):
            out[k] = leaf
        return jax.tree_util.tree_unflatten(treedef, out)

    return leaves, paths, rebuild


def _check_function_outputs(f, reference, rebuild, leaves):
    """Refuse an output that is not floating, not float64 or empty, and a reference unlike ``f``."""
    y = jax.eval_shape(lambda *v: f(*rebuild(v)), *leaves)
    outputs = 0
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(y)[0]:
        what = f"gradcheck: f's output y{jax.tree_util.keystr(keypath)} has dtype {leaf.dtype}"
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"{what}; every output checked must be floating: check a function that returns only "
                             "the floating ones")
        if leaf.dtype != jnp.float64:
            raise ValueError(f"{what} from float64 arguments; gradcheck compares in float64, so f must compute in "
                             "the dtype of its arguments (look for a fixed astype or a float32 constant)")
        outputs += math.prod(leaf.shape)
    if not outputs:
        raise ValueError("gradcheck: f's output has no entries, so there is nothing to check")
    if reference is not None:
        ours = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), y)
        theirs = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), jax.eval_shape(lambda *v: reference(*rebuild(v)), *leaves))
        if ours != theirs:
            raise ValueError(f"gradcheck: the reference returns {theirs} (shapes and dtypes) where f returns {ours}; "
                             "a reference computes the same values as f")


def _function_layer(f, reference, rebuild) -> Layer:
    """``f`` as a ``Layer`` over the leaves checked (``params``; ``x`` is ``()``): forward computes
    ``f``'s values, keeping the leaves as residuals, and backward is ``jax.vjp`` of ``f`` (its custom
    rule). Given a reference, forward's own derivative, the jax oracle, is ``jax.vjp`` of the
    reference (a ``custom_vjp`` whose primal is still ``f``, so finite differences see ``f``)."""

    def values(leaves):
        return f(*rebuild(leaves))

    if reference is None:
        forward_values = values
    else:
        forward_values = jax.custom_vjp(values)
        forward_values.defvjp(lambda leaves: (values(leaves), leaves),
                              lambda leaves, dy: jax.vjp(lambda moved: reference(*rebuild(moved)), leaves)[1](dy))
    return Layer(None, lambda params, x: (forward_values(params), params),
                 lambda params, leaves, dy: (jax.vjp(values, leaves)[1](dy)[0], ()))


def assert_function_close(f, *args, **kwargs) -> Report:
    """``check_function`` for pytest: raises ``AssertionError`` with the report's table when it fails."""
    report = check_function(f, *args, **kwargs)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report


def compare_with_jax(network: Layer, loss: Loss, params, x, targets) -> float:
    """Max relative error, over all parameter leaves, of the hand gradient of ``network + loss``
    against ``jax.grad``, computed in float64 (each leaf's error over its largest entry);
    ``inf`` if either gradient has a non-finite entry, so that no comparison can pass it.
    Both gradients come from one compiled program (eagerly, every small operation of a deep
    network would compile on its own: seconds before the first epoch)."""
    with jax.enable_x64(True):
        errors = [float(e) for e in _gradient_errors(network, loss, params, x, targets)]
    if not all(math.isfinite(e) for e in errors):  # max() would drop a NaN
        return math.inf
    return max(errors, default=0.0)



@functools.partial(jax.jit, static_argnames=("network", "loss"), compiler_options=ONE_OFF)
def _gradient_errors(network, loss, params, x, targets):
    from .core import loss_and_grads

    params, x = _promote(params, set()), _promote(x, set())  # inside the program: no eager casts to compile

    def value(p):
        return loss.forward(network.forward(p, x)[0], targets)[0]

    _, hand = loss_and_grads(network, loss, params, x, targets)
    oracle = jax.grad(value)(params)
    return [jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-300)
            for a, b in zip(jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(oracle))]
