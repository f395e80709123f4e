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

import jax

INITIALIZERS = ("he", "xavier", "book")


def weight_init(name: str, in_axis: int = -2, out_axis: int = -1):
    """The initializer called ``name``; ``in_axis``/``out_axis`` locate the fan-in and fan-out axes."""
    if name == "he":
        return jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=in_axis, out_axis=out_axis)
    if name == "xavier":
        return jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal", in_axis=in_axis, out_axis=out_axis)
    if name == "book":
        return jax.nn.initializers.normal(0.01)
    raise ValueError(f"weight_init: name must be one of {list(INITIALIZERS)}, got {name!r}")
