r"""Weight initialization (the book's chapter 6.2), selectable per network by name.

Each is ``init(key, shape, dtype)`` like ``jax.nn.initializers``, drawing from a plain
(untruncated) normal distribution as the book's ``np.random.randn`` does. ``fan_in`` is the
number of inputs feeding one output unit: ``shape[in_axis]`` times the receptive field for
a convolution kernel (``(FN, C, FH, FW)``, OIHW: pass ``in_axis=1, out_axis=0``; jax's own
``he_normal()`` assumes HWIO and would give an OIHW kernel the wrong scale).

* ``"he"``: std ``sqrt(2 / fan_in)``, for ReLU (He et al. 2015): ReLU zeroes half of its
  inputs, so twice the variance keeps the activations' scale from layer to layer.
* ``"xavier"``: Glorot and Bengio's normal, std ``sqrt(2 / (fan_in + fan_out))``, for sigmoid
  and tanh (the book simplifies it to ``sqrt(1 / fan_in)``).
* ``"book"``: the fixed std ``0.01`` of the book's first networks; deep stacks then start
  with vanishing activations, which batch norm repairs (the book's Figure 6-18).
"""

from __future__ import annotations

import functools

import jax

INITIALIZERS = ("he", "xavier", "book")

# A program that runs once (a draw of initial weights, a gradient check): compiled at LLVM
# optimization level 0, which XLA compiles about 3x faster. The numerics differ from the default
# level by a few units in the last place (no fast-math at any level; instruction choices such as
# fused multiply-adds differ): of 3,000 normal draws, 4-7 % of the entries differ, by at most 3 ulp.
ONE_OFF = {"xla_backend_optimization_level": 0}


def one_off(init):
    """``init(key, shape, dtype)`` that, called eagerly, runs as one program per shape and dtype
    compiled at LLVM -O0 (``ONE_OFF``). Eagerly, each ``jax.random`` call of an initializer is
    compiled at the default level on its first use of a shape, most of a network's first
    ``init``: nine draws (three initializers, three shapes) took 3.0-3.4 s eagerly against
    1.6-1.7 s so (two runs each, one after the other). Under a trace (``jit``, ``vmap``) it is
    ``init`` itself, part of the caller's program."""
    compiled = jax.jit(init, static_argnums=(1, 2), compiler_options=ONE_OFF)

    @functools.wraps(init)
    def draw(key, shape, dtype=None):
        if dtype is None or isinstance(key, jax.core.Tracer):
            return init(key, shape) if dtype is None else init(key, shape, dtype)
        return compiled(key, tuple(shape), dtype)

    return draw


HE_NORMAL = one_off(jax.nn.initializers.he_normal())  # affine's default (truncated normal, as jax's)


@functools.lru_cache(maxsize=None)  # the same function for the same arguments: its compiled draws are shared
def weight_init(name: str, in_axis: int = -2, out_axis: int = -1):
    """The initializer called ``name``; ``in_axis``/``out_axis`` locate the fan-in and fan-out axes."""
    if name == "he":
        return one_off(jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=in_axis, out_axis=out_axis))
    if name == "xavier":
        return one_off(jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal", in_axis=in_axis, out_axis=out_axis))
    if name == "book":
        return one_off(jax.nn.initializers.normal(0.01))
    raise ValueError(f"weight_init: name must be one of {list(INITIALIZERS)}, got {name!r}")
