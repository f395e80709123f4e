r"""Dropout (Srivastava et al. 2014; the book's chapter 6.4), inverted: a ``StatefulLayer``
with no state, only randomness.

Train mode (``train=True``) drops each entry with probability ``drop_rate`` and scales the
survivors by ``1 / keep``, ``keep = 1 - drop_rate``, so that the expected output equals the
input and eval mode is the identity::

    mask = bernoulli(key, keep, x.shape)       # 1 keeps, 0 drops; drawn from the explicit key
    y    = x * mask / keep                     # train
    y    = x                                   # eval (train=False)

Backward: ``y`` is ``x`` times a constant (the mask does not depend on ``x``), so::

    dx = dy * mask / keep                      # train;   dx = dy in eval

The book scales at eval time instead (``x * (1 - ratio)``) and draws its mask from the global
``np.random``, so its numerical check drew a new mask at each evaluation and compared
gradients of different functions. Here the mask is a function of ``key`` alone: with the
key held fixed (``core.freeze``) the layer is a fixed linear map, which finite differences
and ``jax.vjp`` can check.

The single parameter is ``drop_rate``, the probability of *dropping* (stax's ``Dropout(rate)``
keeps with probability ``rate``, the opposite; the name here says which).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..checks import require_same_shape
from ..core import StatefulLayer, check_train


def dropout(drop_rate: float) -> StatefulLayer:
    """Inverted dropout dropping each entry with probability ``drop_rate`` in ``[0, 1)``."""
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"dropout: drop_rate must be a float in [0, 1) (the probability of dropping), got {drop_rate!r}")
    keep = 1.0 - float(drop_rate)

    def init(key, in_shape, dtype=jnp.float32):
        del key, dtype  # no params, no state: nothing to set in dtype
        return (), (), in_shape

    def forward(params, state, x, key, train):
        del params
        check_train(train, "dropout")
        if not train or drop_rate == 0:
            return x, state, None
        if key is None:
            raise ValueError("dropout: train=True needs a PRNG key to draw the mask, got key=None "
                             "(pass key=jax.random.PRNGKey(...), or train=False for inference)")
        scale = jax.random.bernoulli(key, keep, jnp.shape(x)).astype(x.dtype) / jnp.asarray(keep, x.dtype)
        return x * scale, state, scale

    def backward(params, scale, dy):
        del params
        if scale is None:
            return (), dy
        require_same_shape("dropout", "dy", dy, "x", scale)
        return (), dy * scale

    return StatefulLayer(init, forward, backward)
