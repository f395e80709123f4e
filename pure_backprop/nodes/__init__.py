"""Computational-graph nodes with hand-written backward passes, one family per file."""

from .arithmetic import add, add_constant, multiply, multiply_constant, negate
from .elementwise import exp, log, reciprocal
from .matrix import bias_add, matmul
from .reduction import sum  # noqa: A004

__all__ = [
    "add", "add_constant", "bias_add", "exp", "log", "matmul", "multiply",
    "multiply_constant", "negate", "reciprocal", "sum",
]
