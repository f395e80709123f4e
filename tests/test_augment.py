"""The affine augmentation: the warp does what its formula says, the random version is pure and
seeded, warps exactly its fraction of the batch, and rejects images of the wrong size."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pure_backprop.augment import Affine, affine_augmenter, affine_warp, random_affine
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.network import mlp
from pure_backprop.train import make_train_epoch

IMAGES = jax.random.uniform(jax.random.PRNGKey(0), (3, 5, 5))


def _warp(shift=(0.0, 0.0), angle=0.0, scale=1.0):
    n = IMAGES.shape[0]
    return affine_warp(IMAGES, jnp.tile(jnp.asarray(shift), (n, 1)), jnp.full(n, angle), jnp.full(n, scale))


def test_identity_warp_returns_the_images():
    np.testing.assert_allclose(_warp(), IMAGES, atol=1e-12)


def test_whole_pixel_shift_moves_the_content():
    out = _warp(shift=(1.0, 0.0))  # out[r, c] = image[r + 1, c]
    np.testing.assert_allclose(out[:, :-1], IMAGES[:, 1:], atol=1e-12)
    np.testing.assert_array_equal(out[:, -1], 0.0)  # read from outside the image
    out = _warp(shift=(0.0, -2.0))  # out[r, c] = image[r, c - 2]
    np.testing.assert_allclose(out[:, :, 2:], IMAGES[:, :, :-2], atol=1e-12)


def test_half_pixel_shift_interpolates():
    out = _warp(shift=(0.0, 0.5))
    np.testing.assert_allclose(out[:, :, :-1], (IMAGES[:, :, :-1] + IMAGES[:, :, 1:]) / 2, atol=1e-12)


def test_quarter_turn_is_a_clockwise_rot90():
    np.testing.assert_allclose(_warp(angle=np.pi / 2), np.rot90(IMAGES, k=-1, axes=(1, 2)), atol=1e-9)


def test_scale_two_magnifies_the_centre():
    out = _warp(scale=2.0)  # the centre pixel (2, 2) stays, (0, 0) reads (1, 1)
    np.testing.assert_allclose(out[:, 2, 2], IMAGES[:, 2, 2], atol=1e-12)
    np.testing.assert_allclose(out[:, 0, 0], IMAGES[:, 1, 1], atol=1e-12)


def test_random_affine_is_seeded_and_warps_exactly_the_first_fraction():
    x = jax.random.uniform(jax.random.PRNGKey(1), (400, 64))
    a = random_affine(jax.random.PRNGKey(2), x, (8, 8))
    np.testing.assert_array_equal(a, random_affine(jax.random.PRNGKey(2), x, (8, 8)))
    assert not np.array_equal(a, random_affine(jax.random.PRNGKey(3), x, (8, 8)))
    changed = np.any(np.asarray(a) != np.asarray(x), axis=1)
    assert changed[:200].all() and not changed[200:].any()  # fraction 0.5: the first 200
    for fraction, k in ((0.0, 0), (0.3, 120), (1.0, 400)):
        b = random_affine(jax.random.PRNGKey(2), x, (8, 8), Affine(fraction=fraction))
        assert np.any(np.asarray(b) != np.asarray(x), axis=1).sum() == k
        np.testing.assert_array_equal(b[k:], x[k:])
    assert a.dtype == x.dtype and a.shape == x.shape


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True])
def test_random_affine_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="random_affine: fraction must be in"):
        random_affine(jax.random.PRNGKey(0), jnp.zeros((4, 64)), (8, 8), Affine(fraction=fraction))


def test_random_affine_under_jit_and_vmap():
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 6, 64), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    batched = jax.jit(jax.vmap(lambda k, v: random_affine(k, v, (8, 8))))(keys, x)
    np.testing.assert_allclose(batched[1], random_affine(keys[1], x[1], (8, 8)), atol=1e-6)


def test_wrong_image_size_names_the_function_and_shapes():
    with pytest.raises(ValueError, match=r"random_affine: x must have shape \(N, 64\) for images of shape \(8, 8\), got \(4, 63\)"):
        random_affine(jax.random.PRNGKey(0), jnp.zeros((4, 63)), (8, 8))


def test_epoch_with_augmentation_is_seeded_and_differs_from_plain():
    x = jax.random.uniform(jax.random.PRNGKey(1), (48, 64))
    y = jnp.arange(48) % 10
    net = mlp((8,), 10)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    optimizer = optax.sgd(0.1)
    augmented = make_train_epoch(net, softmax_cross_entropy, optimizer, 16, augment=affine_augmenter((8, 8)))
    plain = make_train_epoch(net, softmax_cross_entropy, optimizer, 16)
    state = optimizer.init(params)
    a = augmented(params, state, jax.random.PRNGKey(5), x, y)[0]
    np.testing.assert_array_equal(a[0]["W"], augmented(params, state, jax.random.PRNGKey(5), x, y)[0][0]["W"])
    assert not np.allclose(a[0]["W"], plain(params, state, jax.random.PRNGKey(5), x, y)[0][0]["W"])


@pytest.mark.parametrize("shape", [(8, 8), (7, 5)])
def test_warp_equals_scipy_style_bilinear_interpolation(shape):
    """The warp against an independent vmapped jax.scipy.ndimage.map_coordinates (order 1, zeros
    outside), for random shifts (some reaching past the border), turns and scales."""
    h, w = shape
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    images = jax.random.uniform(k[0], (20, h, w))
    shift = jax.random.uniform(k[1], (20, 2), minval=-2.5, maxval=2.5)
    angle = jax.random.uniform(k[2], (20,), minval=-0.6, maxval=0.6)
    scale = jax.random.uniform(k[3], (20,), minval=0.7, maxval=1.3)
    rows, cols = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")

    def oracle(image, s, a, sc):
        r = (jnp.cos(a) * rows - jnp.sin(a) * cols) / sc + (h - 1) / 2 + s[0]
        c = (jnp.sin(a) * rows + jnp.cos(a) * cols) / sc + (w - 1) / 2 + s[1]
        return jax.scipy.ndimage.map_coordinates(image, [r, c], order=1, mode="constant", cval=0.0)

    expected = jax.vmap(oracle)(images, shift, angle, scale)
    np.testing.assert_allclose(affine_warp(images, shift, angle, scale), expected, rtol=1e-12, atol=1e-14)


def test_augmenter_takes_one_channel_images_for_convolutions():
    augment = affine_augmenter((5, 5))
    x = IMAGES.reshape(3, 1, 5, 5)
    key = jax.random.PRNGKey(1)
    np.testing.assert_array_equal(augment(key, x), augment(key, IMAGES.reshape(3, 25)).reshape(3, 1, 5, 5))
    with pytest.raises(ValueError, match="affine_augmenter: images must have one channel"):
        augment(key, jnp.ones((3, 2, 5, 5)))


def test_epoch_augmented_ahead_equals_batch_by_batch(monkeypatch):
    """Small epochs warp all their batches before the scan, large ones batch by batch in it:
    the same keys, the same warps, the same trained parameters."""
    import pure_backprop.train as train

    x = jax.random.uniform(jax.random.PRNGKey(1), (48, 64))
    y = jnp.arange(48) % 10
    net = mlp((8,), 10)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    optimizer = optax.sgd(0.1)
    results = []
    for limit in (train._WARP_AHEAD_BYTES, 0):
        monkeypatch.setattr(train, "_WARP_AHEAD_BYTES", limit)
        epoch = make_train_epoch(net, softmax_cross_entropy, optimizer, 16, augment=affine_augmenter((8, 8)))
        results.append(epoch(params, optimizer.init(params), jax.random.PRNGKey(5), x, y))
    for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_warp_reads_only_its_own_image():
    """Pixels mapped outside their image read 0, never a neighbour in the batch: finite images
    between images of NaN stay finite under strong warps in every direction."""
    n, h, w = 41, 6, 7
    images = jax.random.uniform(jax.random.PRNGKey(3), (n, h, w)).at[::2].set(jnp.nan)  # NaN, finite, NaN, ...
    u = jax.random.uniform(jax.random.PRNGKey(4), (n, 4), minval=-1.0, maxval=1.0)
    out = affine_warp(images, 3.0 * u[:, :2], jnp.pi * u[:, 2], 1.0 + 0.5 * u[:, 3])
    assert bool(jnp.all(jnp.isfinite(out[1::2])))
    assert bool(jnp.all(jnp.isnan(out[::2]).any(axis=(1, 2))))  # the warps do read their own NaN images


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_warps_keep_the_images_dtype(dtype):
    """Training runs in float32: a warp must not promote a batch (with float64 enabled, as here,
    a stray default dtype would)."""
    images = IMAGES.astype(dtype)
    n = images.shape[0]
    assert affine_warp(images, jnp.zeros((n, 2)), jnp.full(n, 0.3), jnp.ones(n)).dtype == dtype
    assert random_affine(jax.random.PRNGKey(0), images.reshape(n, -1), (5, 5)).dtype == dtype


def test_the_augmenter_warps_with_its_own_settings():
    x = IMAGES.reshape(3, 25)
    key = jax.random.PRNGKey(1)
    np.testing.assert_array_equal(affine_augmenter((5, 5), Affine(fraction=0.0))(key, x), x)
    settings = Affine(max_shift=2.0, fraction=1.0)
    np.testing.assert_array_equal(affine_augmenter((5, 5), settings)(key, x), random_affine(key, x, (5, 5), settings))
