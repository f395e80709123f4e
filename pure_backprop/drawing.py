r"""Pictures of computational graphs, computed by the library's own nodes.

The book draws every computational graph the same way: each node a circle labelled by its
operation, the forward value written above each edge and the backward value (the gradient
flowing back) below it, in red. This module draws those pictures from the code, so a figure
always shows what the nodes compute.

A graph is a small, pure description: named inputs with their values, and steps, each
applying one node of ``pure_backprop.nodes`` to named values and naming its output::

    from pure_backprop import drawing, nodes

    g = drawing.Graph(inputs={"apple": 100.0, "count": 2.0, "tax": 1.1},
                      steps=[drawing.step("price", nodes.multiply, "apple", "count"),
                             drawing.step("total", nodes.multiply, "price", "tax")])
    values = drawing.evaluate(g)
    values.forward["total"]       # 220.0
    values.backward["apple"]      # 2.2  (d total / d apple = count * tax)
    fig = drawing.draw(g, values) # a matplotlib Figure; drawing.draw(g) evaluates g itself

``evaluate`` runs each node's ``forward`` in dependency order, then walks back from
``dy = 1`` at the output, calling each node's hand-written ``backward`` in reverse order.
A step with one input passes that value as ``x``; a step with two (``nodes.multiply``,
``nodes.add``, ``nodes.matmul``, ``nodes.bias_add``) passes the pair ``(a, b)`` and gets
``(da, db)`` back. Where a value feeds several steps (a fan-out), the gradients coming back
along its edges are added: ``values.edges`` keeps each edge's share, ``values.backward``
their sum. The graph's output is the one step output that no step uses.

``draw`` lays the graph out left to right, each node in the column of its depth. Inputs are
written at the left end of their edges, the output at the right end of its edge with its
``dy = 1`` below it. A value that fans out goes through a small dot: the edge before the
dot carries the summed gradient, each edge after it carries its own share (red, below).
Edges that skip columns are routed around the nodes between. Values are written compactly:
``220``, ``2.2``, ``0.269``, small arrays as ``[0.09 0.24 0.67]``, larger ones as their shape.

Ready-made graphs of chapter 5's worked examples: ``apple_graph()`` (the book's figure
5-16), ``apple_orange_graph()`` (figure 5-17), ``sigmoid_graph(x)`` (figures 5-19 and 5-20:
``-x``, ``exp``, ``+1``, ``1/x``), ``affine_graph(x, W, b)`` (``dot`` then ``+``, figure 5-25)
and ``softmax_cross_entropy_graph(scores, target)`` (the nodes of
``pure_backprop.graphs.softmax_cross_entropy_graph`` on one row, appendix A).

Node labels are derived from the node (``x`` for ``nodes.multiply``, ``+1`` for
``nodes.add_constant(1.0)``, ``sum`` for ``nodes.sum(...)``); ``step(..., label="x t")``
overrides them, and a node this module does not know is labelled by its forward function's
name (or, where that is just ``forward``, its module's: ``sigmoid`` for ``layers.sigmoid``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np

from . import nodes
from .core import Layer

__all__ = [
    "Graph", "Step", "Values", "affine_graph", "apple_graph", "apple_orange_graph", "draw", "evaluate",
    "format_value", "sigmoid_graph", "softmax_cross_entropy_graph", "step",
]

# ---------------------------------------------------------------------------------------------
# The description of a graph
# ---------------------------------------------------------------------------------------------

_NAMED_NODES = (
    (nodes.add, "+"), (nodes.multiply, "\u00d7"), (nodes.negate, "\u2212x"), (nodes.exp, "exp"),
    (nodes.log, "log"), (nodes.reciprocal, "1/x"), (nodes.matmul, "dot"), (nodes.bias_add, "+"),
)


class Step(NamedTuple):
    """One node application: ``output = node(inputs)``, drawn as a circle labelled ``label``."""

    output: str
    node: Layer
    inputs: tuple[str, ...]
    label: str


def step(output: str, node: Layer, *inputs: str, label: str | None = None) -> Step:
    """``output = node(*inputs)``: one input is passed to ``node.forward`` as ``x``, several as a tuple.

    ``node`` is a parameter-free ``Layer`` (its params are ``()``): a node of
    ``pure_backprop.nodes``, or a layer such as ``layers.sigmoid`` drawn as a single node.

    ``label`` (the text in the node's circle) defaults to the node's operation: ``x``, ``+``,
    ``exp``, ``+1`` for ``nodes.add_constant(1.0)``, ``sum``, ...
    """
    if not isinstance(output, str) or not output:
        raise ValueError(f"step: the output name must be a non-empty string, got {output!r}")
    if not isinstance(node, Layer):
        raise TypeError(f"step {output!r}: node must be a Layer (e.g. pure_backprop.nodes.multiply), "
                        f"got {type(node).__name__}")
    if not inputs:
        raise ValueError(f"step {output!r}: needs at least one input name")
    for name in inputs:
        if not isinstance(name, str):
            raise ValueError(f"step {output!r}: input names must be strings, got {name!r}")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"step {output!r}: label must be a string, got {label!r}")
    return Step(output, node, tuple(inputs), _label_of(node) if label is None else label)


def _label_of(node: Layer) -> str:
    for known, label in _NAMED_NODES:
        if node is known:
            return label
    forward = node.forward
    factory = getattr(forward, "__qualname__", "").split(".<locals>")[0]
    free = inspect.getclosurevars(forward).nonlocals if inspect.isfunction(forward) else {}
    if factory in ("add_constant", "multiply_constant") and "c" in free:
        c = free["c"]
        sign = "+" if factory == "add_constant" else "\u00d7"
        return sign + (format_value(c) if np.ndim(c) == 0 else "c")
    if factory == "sum":
        return "sum"
    name = getattr(forward, "__name__", "").strip("_").removesuffix("_forward")
    if name in ("", "forward", "<lambda>"):
        name = getattr(forward, "__module__", None) or "node"
    return name.rsplit(".", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Graph:
    """Named ``inputs`` (name -> value) and ``steps`` (made by ``step``), in any order.

    Checked when built: every name a step uses is an input or another step's output, no name
    is defined twice, the steps form no cycle, and exactly one step output is used by no step
    (the graph's output). ``steps`` are kept in dependency order.
    """

    inputs: Mapping[str, Any]
    steps: tuple[Step, ...]

    def __post_init__(self):
        inputs = dict(self.inputs)
        steps = tuple(self.steps)
        for s in steps:
            if not isinstance(s, Step):
                raise TypeError(f"Graph: steps must be made by drawing.step(...), got {type(s).__name__}")
        object.__setattr__(self, "inputs", types.MappingProxyType(inputs))
        object.__setattr__(self, "steps", _ordered(inputs, steps))

    @property
    def output(self) -> str:
        """The name of the step output that no step uses."""
        return self.steps[-1].output

    def producer(self, name: str) -> Step | None:
        """The step that defines ``name``, or ``None`` for an input."""
        return next((s for s in self.steps if s.output == name), None)

    def consumers(self, name: str) -> tuple[Step, ...]:
        """The steps that use ``name``, each once, in dependency order."""
        return tuple(s for s in self.steps if name in s.inputs)


def _ordered(inputs: dict, steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """The steps in dependency order (stable), after the checks of ``Graph``."""
    if not steps:
        raise ValueError("Graph: needs at least one step")
    for name in inputs:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Graph: input names must be non-empty strings, got {name!r}")
    defined = {name: "an input" for name in inputs}
    for s in steps:
        if s.output in defined:
            raise ValueError(f"Graph: step {s.output!r} defines {s.output!r}, which is already {defined[s.output]}; "
                             f"give one of them another name")
        defined[s.output] = "the output of an earlier step"
    for s in steps:
        for name in s.inputs:
            if name not in defined:
                raise ValueError(f"Graph: step {s.output!r} uses {name!r}, which is neither an input nor a step's "
                                 f"output (inputs: {', '.join(inputs) or 'none'}; steps: "
                                 f"{', '.join(t.output for t in steps)})")
    done, order, waiting = set(inputs), [], list(steps)
    while waiting:
        ready = [s for s in waiting if all(name in done for name in s.inputs)]
        if not ready:
            raise ValueError(f"Graph: the steps form a cycle: {_cycle(waiting, done)}; a step may only use inputs "
                             f"and the outputs of steps that do not depend on it")
        for s in ready:
            done.add(s.output)
        order += ready
        waiting = [s for s in waiting if s not in ready]
    used = {name for s in order for name in s.inputs}
    ends = [s.output for s in order if s.output not in used]
    if len(ends) != 1:
        raise ValueError(f"Graph: needs exactly one output, a step output that no step uses; found "
                         f"{len(ends)}: {', '.join(map(repr, ends))}")
    return tuple(s for s in order if s.output != ends[0]) + tuple(s for s in order if s.output == ends[0])


def _cycle(waiting: list[Step], done: set) -> str:
    by_output = {s.output: s for s in waiting}
    s, path = waiting[0], []
    while s.output not in path:
        path.append(s.output)
        s = by_output[next(name for name in s.inputs if name not in done)]
    path = path[path.index(s.output):] + [s.output]
    return ", ".join(f"step {a!r} uses {b!r}" for a, b in zip(path[:-1], path[1:]))


# ---------------------------------------------------------------------------------------------
# Forward and backward through the graph, node by node
# ---------------------------------------------------------------------------------------------


class Values(NamedTuple):
    """What ``evaluate`` computed: every name's forward value and its gradient ``d output / d name``.

    ``edges[(name, consumer)]`` is the gradient that came back along the edge from ``name`` into
    step ``consumer`` (before the fan-out sum); ``backward[name]`` sums them over the consumers.
    """

    forward: Mapping[str, Any]
    backward: Mapping[str, Any]
    edges: Mapping[tuple[str, str], Any]


def evaluate(graph: Graph, dy=None) -> Values:
    """Forward through each node in order, then each node's hand ``backward`` in reverse order.

    ``dy`` (default: ones shaped like the output, i.e. ``1``) starts the backward walk; where a
    value feeds several steps, the gradients coming back along its edges are added.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"evaluate: expected a drawing.Graph, got {type(graph).__name__}")
    forward = {name: jnp.asarray(value) for name, value in graph.inputs.items()}
    residuals = {}
    for s in graph.steps:
        x = tuple(forward[name] for name in s.inputs)
        with _in_step(s, "forward"):
            forward[s.output], residuals[s.output] = s.node.forward((), x[0] if len(x) == 1 else x)
    out = forward[graph.output]
    backward = {graph.output: jnp.ones_like(out) if dy is None else jnp.asarray(dy)}
    edges = {}
    for s in reversed(graph.steps):
        with _in_step(s, "backward"):
            _, dx = s.node.backward((), residuals[s.output], backward[s.output])
        dxs = (dx,) if len(s.inputs) == 1 else tuple(dx)
        if len(dxs) != len(s.inputs):
            raise ValueError(f"evaluate: step {s.output!r} ({s.label}) has {len(s.inputs)} inputs but its node's "
                             f"backward returned {len(dxs)} gradients")
        for name, d in zip(s.inputs, dxs):
            key = (name, s.output)
            edges[key] = edges[key] + d if key in edges else d
            backward[name] = backward[name] + d if name in backward else d  # fan-out: gradients add
    for name, value in forward.items():
        backward.setdefault(name, jnp.zeros_like(value))  # a value the output does not depend on
    return Values(types.MappingProxyType(forward), types.MappingProxyType(backward), types.MappingProxyType(edges))


class _in_step:
    """Prefix an error raised by a node with the step it belongs to."""

    def __init__(self, s: Step, phase: str):
        self.s, self.phase = s, phase

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind in (ValueError, TypeError):
            raise kind(f"evaluate: step {self.s.output!r} ({self.s.label}, inputs "
                       f"{', '.join(self.s.inputs)}), {self.phase}: {error}") from error
        return False


# ---------------------------------------------------------------------------------------------
# Chapter 5's worked examples
# ---------------------------------------------------------------------------------------------


def apple_graph(apple=100.0, count=2.0, tax=1.1) -> Graph:
    """Buying 2 apples at 100 each with 10 % tax (the book's figure 5-16): total 220.

    Backward: ``d total/d apple = count * tax = 2.2``, ``d/d count = 110``, ``d/d tax = 200``.
    """
    return Graph(inputs={"apple": apple, "count": count, "tax": tax},
                 steps=(step("price", nodes.multiply, "apple", "count"),
                        step("total", nodes.multiply, "price", "tax")))


def apple_orange_graph(apple=100.0, apple_count=2.0, orange=150.0, orange_count=3.0, tax=1.1) -> Graph:
    """2 apples at 100 and 3 oranges at 150, added, then 10 % tax (figure 5-17): total 715.

    The add node passes its gradient through unchanged, so both prices get ``tax = 1.1``:
    ``d/d apple = 2.2``, ``d/d orange = 3.3``, ``d/d apple_count = 110``, ``d/d orange_count = 165``,
    ``d/d tax = 650``.
    """
    return Graph(inputs={"apple": apple, "apple_count": apple_count, "orange": orange,
                         "orange_count": orange_count, "tax": tax},
                 steps=(step("apple_price", nodes.multiply, "apple", "apple_count"),
                        step("orange_price", nodes.multiply, "orange", "orange_count"),
                        step("price", nodes.add, "apple_price", "orange_price"),
                        step("total", nodes.multiply, "price", "tax")))


def sigmoid_graph(x=1.0) -> Graph:
    """The sigmoid ``y = 1 / (1 + exp(-x))`` as four nodes (figures 5-19 and 5-20), as in
    ``pure_backprop.graphs.sigmoid_graph``: ``x1 = -x``, ``x2 = exp(x1)``, ``x3 = x2 + 1``, ``y = 1/x3``.

    Walking back gives ``dx = y**2 * exp(-x) = y * (1 - y)``.
    """
    return Graph(inputs={"x": x},
                 steps=(step("x1", nodes.negate, "x"),
                        step("x2", nodes.exp, "x1"),
                        step("x3", nodes.add_constant(1.0), "x2"),
                        step("y", nodes.reciprocal, "x3")))


def affine_graph(x, W, b) -> Graph:
    """The affine layer ``y = x @ W + b`` as its two nodes (figure 5-25): ``dot``, then the broadcast ``+``.

    Walking back: ``db = sum(dy, axis=0)``, ``dW = x.T @ dy``, ``dx = dy @ W.T``.
    """
    return Graph(inputs={"x": x, "W": W, "b": b},
                 steps=(step("xW", nodes.matmul, "x", "W"),
                        step("y", nodes.bias_add, "xW", "b")))


def softmax_cross_entropy_graph(scores=(0.3, 2.9, 4.0), target=2) -> Graph:
    """Softmax with cross-entropy on one row, as the nodes of
    ``pure_backprop.graphs.softmax_cross_entropy_graph`` (the book's appendix A).

    ``scores`` is one row of ``C`` class scores (shape ``(C,)`` or ``(1, C)``); ``target`` is
    the index of the correct class or a row of ``C`` target probabilities. The value
    ``x1 = exp(x)`` feeds both the row sum and the division, so its gradient is the sum of
    the two that come back; the walk ends at ``dx = p - t`` (``N = 1``)::

        x1 = exp(x);  x2 = sum(x1);  r = 1/x2;  p = x1 * r;  x4 = log(p);
        x5 = t * x4;  x6 = sum(x5);  loss = -x6
    """
    x = jnp.asarray(scores, dtype=jnp.result_type(float))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] != 1:
        raise ValueError(f"softmax_cross_entropy_graph: scores must be one row of class scores, shape (C,) or "
                         f"(1, C), got {x.shape}")
    classes = x.shape[1]
    if np.ndim(target) == 0:
        if not isinstance(target, (int, np.integer)) or not 0 <= target < classes:
            raise ValueError(f"softmax_cross_entropy_graph: target must be a class index in [0, {classes}) "
                             f"or a row of {classes} probabilities, got {target!r}")
        t = jnp.zeros_like(x).at[0, target].set(1.0)
    else:
        t = jnp.asarray(target, dtype=x.dtype).reshape(x.shape) if np.size(target) == classes else None
        if t is None:
            raise ValueError(f"softmax_cross_entropy_graph: target must be a class index or a row of {classes} "
                             f"probabilities, got shape {np.shape(target)}")
    return Graph(inputs={"x": x},
                 steps=(step("x1", nodes.exp, "x"),
                        step("x2", nodes.sum(axis=1, keepdims=True), "x1"),
                        step("r", nodes.reciprocal, "x2"),
                        step("p", nodes.multiply, "x1", "r"),
                        step("x4", nodes.log, "p"),
                        step("x5", nodes.multiply_constant(t), "x4", label="\u00d7t"),
                        step("x6", nodes.sum(), "x5"),
                        step("loss", nodes.multiply_constant(-1.0 / x.shape[0]), "x6")))


# ---------------------------------------------------------------------------------------------
# Formatting values
# ---------------------------------------------------------------------------------------------


def format_value(value, digits: int = 3, max_entries: int = 4) -> str:
    """A compact text for a value: ``220``, ``2.2``, ``0.269``; arrays of up to ``max_entries``
    entries as ``[0.09 0.24 0.67]`` (two significant digits; axes of size 1 are dropped, so one
    row of shape ``(1, 3)`` is written like a vector), larger ones as their shape, ``(2, 5) array``."""
    a = np.asarray(value)
    if a.ndim == 0:
        return _number(a.item(), digits)
    if a.size > max_entries:
        return "(" + ", ".join(map(str, a.shape)) + ") array"
    squeezed = a.reshape([n for n in a.shape if n != 1] or [1])
    return _nested(squeezed, max(digits - 1, 1))


def _nested(a, digits):
    if a.ndim == 1:
        return "[" + " ".join(_number(v, digits) for v in a.tolist()) + "]"
    return "[" + " ".join(_nested(row, digits) for row in a) + "]"


def _number(v, digits: int) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    magnitude = abs(v)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{v:.{digits}g}"
    decimals = max(digits - (math.floor(math.log10(magnitude)) + 1), 0)
    text = f"{v:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# ---------------------------------------------------------------------------------------------
# Drawing: a layered layout, left to right
# ---------------------------------------------------------------------------------------------
# Lengths are in inches: the figure is sized to the layout, so text keeps its size on the page.

_RADIUS = 0.25        # a node's circle
_DOT = 0.045          # a fan-out point
_PAD = 0.07           # between a text and what it labels
_ROW = 1.0            # the least vertical distance between a node and its neighbour in a column
_ROW_TEXT = 0.75      # ... between two names, dots or bends (no circle)
_MIN_GAP = 1.0        # the least distance between two columns
_NODE_FONT = 12
_VALUE_FONT = 9.5
_NAME_FONT = 11
FORWARD_COLOR = "black"
BACKWARD_COLOR = "#d62728"


class _Edge(NamedTuple):
    path: tuple           # layout node ids, from the source to the target
    forward: str | None   # the text above (None: not written, on the branches after a fan-out dot)
    backward: str         # the text below
    arrow: bool           # an arrowhead at the target (not into a fan-out dot)


def draw(graph: Graph, values: Values | None = None, *, max_width: float | None = 10.0, dpi: float = 100):
    """A matplotlib ``Figure`` of ``graph``: nodes as labelled circles, each edge with its
    forward value above (black) and its backward value below (red).

    ``values`` defaults to ``evaluate(graph)``. The figure is sized to the graph (lengths in
    inches, text in points), for a documentation page; a graph wider than ``max_width`` inches
    is cut into bands, one below the other, the edges between them running back underneath
    (``None``: one band). Save it with ``fig.savefig(path)``. It is made without pyplot (no
    global figure is kept, and ``plt.show()`` does not show it); a notebook shows it when a cell
    returns it, or with ``display(fig)``.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"draw: expected a drawing.Graph, got {type(graph).__name__}")
    if values is None:
        values = evaluate(graph)
    kinds, edges = _layout_graph(graph, values)
    col, columns, edges = _columns(kinds, edges)
    y = _rows(columns, edges, kinds)
    sizes = {e: (_text_size(e.forward, _VALUE_FONT) if e.forward else (0.0, 0.0),
                 _text_size(e.backward, _VALUE_FONT)) for e in edges}
    x = _column_x(columns, edges, kinds, col, y, sizes)
    pos, lanes = _bands(kinds, edges, col, x, y, max_width)

    artists = []
    for n, kind in kinds.items():
        px, py = pos[n]
        if kind == "step":
            label = graph.producer(n[1]).label
            artists.append(("circle", (px, py, _RADIUS)))
            size = _NODE_FONT * min(1.0, 1.6 * _RADIUS / max(_text_size(label, _NODE_FONT)[0], 1e-9))
            artists.append(("text", (px, py, label, dict(fontsize=size, ha="center", va="center"))))
        elif kind == "dot":
            artists.append(("dot", (px, py)))
        elif kind in ("input", "output"):
            align = "right" if kind == "input" else "left"
            artists.append(("text", (px, py, n[1], dict(fontsize=_NAME_FONT, ha=align, va="center", style="italic"))))
    for e in edges:
        points = _route(e, kinds, pos, lanes)
        artists.append(("path", (points, e.arrow)))
        (x0, y0), (x1, y1) = _label_segment(points)
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        slope = abs(y1 - y0) / max(abs(x1 - x0), 1e-9)
        (wf, hf), (wb, hb) = sizes[e]
        if e.forward:
            artists.append(("text", (mx, my + hf / 2 + _PAD + slope * wf / 2, e.forward,
                                     dict(fontsize=_VALUE_FONT, ha="center", va="center", color=FORWARD_COLOR))))
        artists.append(("text", (mx, my - hb / 2 - _PAD - slope * wb / 2, e.backward,
                                 dict(fontsize=_VALUE_FONT, ha="center", va="center", color=BACKWARD_COLOR))))

    x_lo, x_hi, y_lo, y_hi = _extent(artists)
    margin = 0.1
    fig = _figure_class()(figsize=(x_hi - x_lo + 2 * margin, y_hi - y_lo + 2 * margin), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(x_lo - margin, x_hi + margin)
    ax.set_ylim(y_lo - margin, y_hi + margin)
    ax.set_axis_off()
    _render(ax, artists)
    return fig


def _figure_class():
    """A matplotlib ``Figure`` that a notebook displays as a PNG (sharp on high-resolution
    screens), whether or not pyplot's inline backend is set up."""
    import io

    from matplotlib.figure import Figure

    class GraphFigure(Figure):
        def _repr_png_(self):
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=2 * self.dpi)
            width, height = self.get_size_inches() * self.dpi
            return buffer.getvalue(), {"width": round(width), "height": round(height)}

    return GraphFigure


def _layout_graph(graph: Graph, values: Values):
    """The layout's nodes (id -> kind) and edges: one per value and consumer, through a dot where
    a value fans out."""
    kinds = {("input", name): "input" for name in graph.inputs}
    kinds.update({("step", s.output): "step" for s in graph.steps})
    edges = []
    names = list(graph.inputs) + [s.output for s in graph.steps]
    for name in names:
        source = ("input", name) if name in graph.inputs else ("step", name)
        forward = format_value(values.forward[name])
        backward = format_value(values.backward[name])
        targets = [("step", c.output) for c in graph.consumers(name)]
        if name == graph.output:
            kinds[("output", name)] = "output"
            edges.append(_Edge((source, ("output", name)), forward, backward, True))
        elif len(targets) == 1:
            edges.append(_Edge((source, targets[0]), forward, backward, True))
        elif len(targets) > 1:
            dot = ("dot", name)
            kinds[dot] = "dot"
            edges.append(_Edge((source, dot), forward, backward, False))
            edges += [_Edge((dot, t), None, format_value(values.edges[(name, t[1])]), True) for t in targets]
    return kinds, edges


def _columns(kinds, edges):
    """Each node's column (its depth; an input and a fan-out dot of an input sit just before
    their first use), and the edges with a bend point in every column they skip."""
    col = {n: 0 for n in kinds}
    for _ in range(len(kinds)):
        for e in edges:
            col[e.path[1]] = max(col[e.path[1]], col[e.path[0]] + 1)
    succ = {n: [e.path[-1] for e in edges if e.path[0] == n] for n in kinds}
    for kind in ("dot", "input"):
        for n in kinds:
            if kinds[n] == kind and succ[n] and (kind == "input" or n[1] in [m[1] for m in kinds if m[0] == "input"]):
                col[n] = min(col[t] for t in succ[n]) - 1
    routed, count = [], 0
    for e in edges:
        a, b = e.path
        bends = []
        for c in range(col[a] + 1, col[b]):
            bend = ("bend", count)
            count += 1
            kinds[bend] = "bend"
            col[bend] = c
            bends.append(bend)
        routed.append(e._replace(path=(a, *bends, b)))
    columns = [[] for _ in range(max(col.values()) + 1)]
    for n in kinds:
        columns[col[n]].append(n)
    return col, columns, routed


def _links(edges):
    return [(p[i], p[i + 1]) for e in edges for p in [e.path] for i in range(len(p) - 1)]


def _rows(columns, edges, kinds):
    """Vertical positions. Nodes are ordered in each column by the mean position of their
    neighbours; each node then shares its row with one predecessor (the main flow before
    inputs and bends), so chains run straight; each row is finally moved towards the median of
    its neighbours, at least a row away from the nodes above and below it."""
    links = _links(edges)
    before = {n: [a for a, b in links if b == n] for n in kinds}
    after = {n: [b for a, b in links if a == n] for n in kinds}
    order = {n: i for column in columns for i, n in enumerate(column)}
    for sweep in range(8):
        span = range(1, len(columns)) if sweep % 2 == 0 else range(len(columns) - 2, -1, -1)
        near = before if sweep % 2 == 0 else after
        for c in span:
            columns[c].sort(key=lambda n: (sum(order[m] for m in near[n]) / len(near[n]) if near[n] else order[n],
                                           order[n]))
            for i, n in enumerate(columns[c]):
                order[n] = i
    row = {n: n for n in kinds}  # the node whose row each node shares
    taken = set()
    rank = {"step": 0, "dot": 0, "bend": 1, "input": 2, "output": 2}
    for column in columns[1:]:
        last = -1
        for n in column:
            if not before[n]:
                continue
            best = min(rank[kinds[m]] for m in before[n])
            preds = sorted((m for m in before[n] if rank[kinds[m]] == best), key=order.get)
            m = preds[(len(preds) - 1) // 2]
            if m not in taken and order[m] > last:
                row[n], last = row[m], order[m]
                taken.add(m)
    gaps = [(row[a], row[b], _ROW if "step" in (kinds[a], kinds[b]) else _ROW_TEXT)
            for column in columns for a, b in zip(column, column[1:])]
    rows = set(row.values())
    y = dict.fromkeys(rows, 0.0)
    for _ in range(len(rows)):
        for a, b, gap in gaps:
            y[b] = min(y[b], y[a] - gap)
    others = {r: [m for n in kinds if row[n] == r for m in before[n] + after[n] if row[m] != r] for r in rows}
    for _ in range(40):
        for r in rows:
            if others[r]:
                low = max([y[b] + gap for a, b, gap in gaps if a == r], default=-math.inf)
                high = min([y[a] - gap for a, b, gap in gaps if b == r], default=math.inf)
                y[r] = min(max(float(np.median([y[m] for m in [row[o] for o in others[r]]])), low), high)
    return {n: y[row[n]] for n in kinds}


def _column_x(columns, edges, kinds, col, y, sizes):
    """Column positions: each gap wide enough for the values written in it (beside the bend of
    an edge that changes rows) and for the names of the inputs that start in the next column."""
    gaps = [_MIN_GAP] * max(len(columns) - 1, 0)
    links = _links(edges)
    turn = {n: max([_bend(y[b] - y[a]) for a, b in links if a == n], default=0.0) for n in kinds}
    for e in edges:
        (wf, _), (wb, _) = sizes[e]
        for a, b in zip(e.path, e.path[1:]):
            bend = turn[a] if kinds[a] == "dot" else _bend(y[b] - y[a])  # a dot's branches turn beside it
            needed = max(wf, wb) + 4 * _PAD + _clearance(kinds[a]) + _clearance(kinds[b]) + bend
            gaps[col[a]] = max(gaps[col[a]], needed)
    for n, kind in kinds.items():
        if kind == "input" and col[n] > 0:
            gaps[col[n] - 1] = max(gaps[col[n] - 1], _text_size(n[1], _NAME_FONT)[0] + _RADIUS + 3 * _PAD)
    return np.concatenate([[0.0], np.cumsum(gaps)]).tolist()


def _bend(dy):
    """How far an edge that changes rows travels sideways while it does."""
    return 0.0 if abs(dy) < 1e-9 else min(max(0.45 * abs(dy), 0.3), 0.7)


def _bands(kinds, edges, col, x, y, max_width):
    """Positions, the graph cut into bands no wider than ``max_width`` (cut where fewest edges
    cross), each band below the previous one; and, for each link that crosses a cut, the lane
    it runs back along: ``{(a, b): (lane_y, x_out, x_back)}``."""
    starts = _cuts(x, [sum(1 for a, b in _links(edges) if col[a] == c) for c in range(len(x) - 1)],
                   None if max_width is None else max_width - 1.0)
    last = len(x) - 1
    band = {c: sum(1 for s in starts if s <= c) - 1 for c in range(last + 1)}
    pos = {n: (x[col[n]] - x[starts[band[col[n]]]], y[n]) for n in kinds}
    lanes, shift = {}, 0.0
    for b in range(1, len(starts)):
        above = [pos[n][1] for n in kinds if band[col[n]] == b - 1]
        here = [n for n in kinds if band[col[n]] == b]
        crossing = [(p, q) for p, q in _links(edges) if band[col[p]] == b - 1 and band[col[q]] == b]
        lane_top = min(above) - 0.6
        shift = lane_top - 0.5 * len(crossing) - 0.25 - (max(y[n] for n in here) + 0.35)
        for n in here:
            pos[n] = (pos[n][0], y[n] + shift)
        crossing.sort(key=lambda link: -pos[link[0]][1])  # the upper source outside, on the lower lane
        k = len(crossing)
        for i, (p, q) in enumerate(crossing):
            gap = x[col[q]] - x[col[p]]
            lanes[(p, q)] = (lane_top - 0.5 * (k - 1 - i), pos[p][0] + gap / 2 + 0.15 * (k - 1 - i), -0.45 - 0.15 * i)
    return pos, lanes


def _cuts(x, crossing, width):
    """The first column of each band: the fewest bands no wider than ``width`` (a column wider
    alone is a band of its own), then the fewest edges crossing the cuts, then the narrowest
    widest band. ``crossing[c]`` counts the edges between columns ``c`` and ``c + 1``."""
    n = len(x)
    if width is None or x[-1] - x[0] <= width:
        return [0]
    best = {n: (0, 0, 0.0, [])}  # first column -> (bands, crossings, widest, starts) for the rest
    for s in range(n - 1, -1, -1):
        options = []
        for e in range(s, n):
            if e > s and x[e] - x[s] > width:
                break
            bands, crossings, widest, starts = best[e + 1]
            options.append((bands + 1, crossings + (crossing[e] if e + 1 < n else 0), max(widest, x[e] - x[s]),
                            [s] + starts))
        best[s] = min(options, key=lambda o: o[:3])
    return best[0][3]


def _route(e, kinds, pos, lanes):
    """The points of an edge: along its row, then a bend to the next row (a bend first, out of a
    fan-out dot), or out to the right, down along its lane and back to the next band."""
    points = [pos[e.path[0]]]
    for a, b in zip(e.path, e.path[1:]):
        (xa, ya), (xb, yb) = pos[a], pos[b]
        if (a, b) in lanes:
            lane, x_out, x_back = lanes[(a, b)]
            points += [(x_out, ya), (x_out, lane), (x_back, lane), (x_back, yb)]
        elif abs(yb - ya) > 1e-9:
            points.append((xa + _bend(yb - ya), yb) if kinds[a] == "dot" else (xb - _bend(yb - ya), ya))
        points.append((xb, yb))
    straight = [points[0]]
    for p, q in zip(points[1:], points[2:]):
        o = straight[-1]
        if abs((p[0] - o[0]) * (q[1] - o[1]) - (p[1] - o[1]) * (q[0] - o[0])) > 1e-9:
            straight.append(p)
    straight.append(points[-1])
    straight[0] = _trim(straight[0], straight[1], _clearance(kinds[e.path[0]]))
    straight[-1] = _trim(straight[-1], straight[-2], _clearance(kinds[e.path[-1]]))
    return straight


def _clearance(kind):
    return {"step": _RADIUS, "dot": 0.0, "bend": 0.0}.get(kind, _PAD)


def _trim(point, toward, distance):
    (x0, y0), (x1, y1) = point, toward
    length = math.hypot(x1 - x0, y1 - y0)
    if length == 0 or distance == 0:
        return point
    return (x0 + (x1 - x0) * distance / length, y0 + (y1 - y0) * distance / length)


def _label_segment(points):
    """The segment of an edge where its values go: the longest of its flattest segments."""
    segments = list(zip(points, points[1:]))
    slopes = [abs(b[1] - a[1]) / max(abs(b[0] - a[0]), 1e-9) for a, b in segments]
    flattest = [seg for seg, s in zip(segments, slopes) if s <= min(slopes) + 1e-6]
    return max(flattest, key=lambda seg: abs(seg[1][0] - seg[0][0]))


def _text_size(text, fontsize):
    """Width and height in inches of ``text`` at ``fontsize`` points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    extent = TextPath((0, 0), text, size=fontsize, prop=FontProperties()).get_extents()
    return extent.width / 72, fontsize * 1.1 / 72


def _extent(artists):
    xs, ys = [], []
    for kind, args in artists:
        if kind == "circle":
            px, py, r = args
            xs += [px - r, px + r]
            ys += [py - r, py + r]
        elif kind == "dot":
            xs.append(args[0])
            ys.append(args[1])
        elif kind == "path":
            xs += [p[0] for p in args[0]]
            ys += [p[1] for p in args[0]]
        elif kind == "text":
            px, py, text, style = args
            w, h = _text_size(text, style["fontsize"])
            left = {"left": px, "center": px - w / 2, "right": px - w}[style["ha"]]
            xs += [left, left + w]
            ys += [py - h / 2, py + h / 2]
    return min(xs), max(xs), min(ys), max(ys)


def _render(ax, artists):
    from matplotlib.patches import Circle, FancyArrowPatch
    from matplotlib.path import Path

    for kind, args in artists:
        if kind == "circle":
            px, py, r = args
            ax.add_patch(Circle((px, py), r, facecolor="white", edgecolor="black", linewidth=1.4, zorder=3))
        elif kind == "dot":
            ax.add_patch(Circle(args, _DOT, facecolor="black", edgecolor="none", zorder=3))
        elif kind == "path":
            points, arrow = args
            ax.add_patch(FancyArrowPatch(path=Path(points), arrowstyle="-|>" if arrow else "-", mutation_scale=12,
                                         linewidth=1.2, color="black", shrinkA=0, shrinkB=0, zorder=2))
        elif kind == "text":
            px, py, text, style = args
            ax.text(px, py, text, zorder=4, **style)
