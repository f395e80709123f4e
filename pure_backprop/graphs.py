r"""Chapter 5's two worked graphs, composed from the nodes in ``pure_backprop.nodes``.

They exist to be read and checked: the closed forms in ``layers/sigmoid.py`` and
``layers/softmax_cross_entropy.py`` are what these graphs collapse to, and the tests show
that graph, closed form and ``jax.grad`` agree.

Sigmoid as four nodes, a plain chain, so it is ``serial`` of the nodes::

    x1 = -x,  x2 = exp(x1),  x3 = 1 + x2,  y = 1 / x3

Softmax with cross-entropy as seven nodes (plus the batch mean folded into the last
constant). ``x1 = exp(x)`` feeds two nodes, the sum and the division, so its gradient
is the *sum* of the two that come back, exactly the step the book warns about::

    x1 = exp(x)                        # fan-out: used by the sum and the multiply
    x2 = sum(x1, axis=1)               # (N, 1)
    r  = 1 / x2
    x3 = x1 * r                        # softmax p
    x4 = log(x3)
    x5 = t * x4
    x6 = sum(x5)
    y  = -x6 / N

Walking back: ``dx6 = -1/N``, ``dx5 = dx6``, ``dx4 = t * dx5``, ``dx3 = dx4 / x3``,
``dx1 = dx3 * r`` and ``dr = sum(dx3 * x1)``, ``dx2 = -dr / x2**2``,
``dx1 += broadcast(dx2)``, ``dx = dx1 * exp(x)``, which is ``(p * sum(t, axis=1) - t) / N``:
``(p - t) / N`` when every row of ``t`` sums to 1, and still the exact gradient when a row does
not (an all-zero or multi-hot row), since each node's backward is exact.
The graph is literal: it has no max-shift, so keep logits moderate (``|x| < 700`` in float64).

The sigmoid graph is literal too. Its forward is within 2 ulps everywhere, but walking back
gives ``dx = dy * y**2 * exp(-x)``: for ``x < log(tiny) / 2`` (-354 in float64, -43.7 in
float32) ``y**2`` underflows while the true derivative is still a normal number, so ``dx`` is
0, and below ``-log(max)`` (-709.8, -88.7) ``exp(-x)`` overflows and ``dx = 0 * inf = NaN``.
No node sees both factors; ``layers.sigmoid`` is accurate there (``tests/test_precision.py``).
"""

from __future__ import annotations

from . import nodes
from .checks import require_same_shape
from .core import Loss, serial

sigmoid_graph = serial(nodes.negate, nodes.exp, nodes.add_constant(1.0), nodes.reciprocal)

_row_sum = nodes.sum(axis=1, keepdims=True)
_total = nodes.sum()


def _forward(x, t):
    require_same_shape("softmax_cross_entropy_graph", "targets", t, "scores", x)
    scale = nodes.multiply_constant(-1.0 / x.shape[0])
    x1, r_exp = nodes.exp.forward((), x)
    x2, r_sum = _row_sum.forward((), x1)
    r, r_rec = nodes.reciprocal.forward((), x2)
    x3, r_mul = nodes.multiply.forward((), (x1, r))
    x4, r_log = nodes.log.forward((), x3)
    x5, _ = nodes.multiply_constant(t).forward((), x4)
    x6, r_total = _total.forward((), x5)
    y, _ = scale.forward((), x6)
    return y, (t, r_exp, r_sum, r_rec, r_mul, r_log, r_total)


def _backward(residuals, dy):
    t, r_exp, r_sum, r_rec, r_mul, r_log, r_total = residuals
    n = t.shape[0]
    _, dx6 = nodes.multiply_constant(-1.0 / n).backward((), None, dy)
    _, dx5 = _total.backward((), r_total, dx6)
    _, dx4 = nodes.multiply_constant(t).backward((), None, dx5)
    _, dx3 = nodes.log.backward((), r_log, dx4)
    _, (dx1_direct, dr) = nodes.multiply.backward((), r_mul, dx3)
    _, dx2 = nodes.reciprocal.backward((), r_rec, dr)
    _, dx1_via_sum = _row_sum.backward((), r_sum, dx2)
    _, dx = nodes.exp.backward((), r_exp, dx1_direct + dx1_via_sum)  # fan-out: gradients add
    return dx


softmax_cross_entropy_graph = Loss(_forward, _backward)
