r"""Data augmentation: small random affine warps of the training images, as a pure function.

The digits images are 8x8: a network with one hidden layer of 50 units learns the 1437
training images by heart (train accuracy 100 %) and then stops improving on the test set.
Showing it, each step, some images moved by a fraction of a pixel, turned by a few degrees
or scaled by a few percent keeps the task from being memorized; see the README for the
measured effect. Nothing here touches the gradients: the hand-written backward still
computes them, on the warped batch.

For each image, with probability ``probability``, output pixel ``p`` (centred coordinates)
takes the bilinear interpolation of the input at ``R(-a) p / s + c + t``, with rotation
``a`` uniform in ``+-max_rotation`` degrees, scale ``s`` uniform in ``1 +- max_scale``,
translation ``t`` uniform in ``+-max_shift`` pixels per axis; outside the image reads 0.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Affine(NamedTuple):
    """Settings of ``random_affine``; ``Affine()`` is the default used by ``pure-backprop train``."""

    max_shift: float = 1.0  # pixels, per axis
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.1  # relative
    probability: float = 0.5  # of warping each image; the rest are seen unchanged


def random_affine(key: jax.Array, x: jax.Array, image_shape: tuple[int, int], settings: Affine = Affine()) -> jax.Array:
    """Warp each flattened image of ``x`` (shape ``(N, H * W)``) with its own random affine map.

    Pure: the same ``key`` gives the same warps; works under ``jax.jit`` and ``jax.vmap``.
    """
    height, width = image_shape
    if x.ndim != 2 or x.shape[1] != height * width:
        raise ValueError(f"random_affine: x must have shape (N, {height * width}) for images of shape "
                         f"{tuple(image_shape)}, got {tuple(x.shape)}")
    n = x.shape[0]
    k_use, k_shift, k_angle, k_scale = jax.random.split(key, 4)
    use = jax.random.bernoulli(k_use, settings.probability, (n,))
    shift = settings.max_shift * jax.random.uniform(k_shift, (n, 2), minval=-1.0, maxval=1.0)
    angle = math.radians(settings.max_rotation) * jax.random.uniform(k_angle, (n,), minval=-1.0, maxval=1.0)
    scale = 1.0 + settings.max_scale * jax.random.uniform(k_scale, (n,), minval=-1.0, maxval=1.0)
    warped = affine_warp(x.reshape(n, height, width), shift, angle, scale).astype(x.dtype).reshape(n, height * width)
    return jnp.where(use[:, None], warped, x)


def affine_warp(images: jax.Array, shift: jax.Array, angle: jax.Array, scale: jax.Array) -> jax.Array:
    """Warp ``images`` (``(N, H, W)``) by per-image ``shift`` (``(N, 2)``, pixels), ``angle``
    (``(N,)``, radians) and ``scale`` (``(N,)``), bilinear, reading 0 outside the image:
    ``out[p] = image[R(-angle) p / scale + centre + shift]`` with ``p`` centred (row 0 at the
    top, a positive angle turns the content clockwise)."""
    _, height, width = images.shape
    centre_r, centre_c = (height - 1) / 2, (width - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(height) - centre_r, jnp.arange(width) - centre_c, indexing="ij")

    def warp(image, shift, angle, scale):
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        r = (cos * rows - sin * cols) / scale + centre_r + shift[0]
        c = (sin * rows + cos * cols) / scale + centre_c + shift[1]
        return jax.scipy.ndimage.map_coordinates(image, [r, c], order=1, mode="constant", cval=0.0)

    # A gather of four neighbours per pixel. Writing the warp as two small matrix products per
    # image (tent weights) was measured 2.5x slower on the CPU (batched 8x8 products), so it is not used.
    return jax.vmap(warp)(images, shift, angle, scale)


def affine_augmenter(image_shape: tuple[int, int], settings: Affine = Affine()) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``augment(key, x_batch) -> x_batch`` for ``make_train_epoch(..., augment=...)``; the batch
    is ``(N, H * W)`` or one-channel images ``(N, 1, H, W)`` (for convolutions)."""

    def augment(key, x):
        if x.ndim == 4 and x.shape[1] != 1:
            raise ValueError(f"affine_augmenter: images must have one channel, got x of shape {tuple(x.shape)}")
        return random_affine(key, x.reshape(x.shape[0], -1), image_shape, settings).reshape(x.shape)

    return augment
