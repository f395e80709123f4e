"""The randomness of a training run, stated as properties: every draw (shuffle, warp, dropout
mask) is its own across the steps of an epoch and across epochs, the same key gives the same
run, the warps stay inside their documented ranges and fill them, and the shuffle is uniform
where ties between its random sort keys are common. None of these changes a gradient, so the
gradient tests cannot see a bug here; these tests can.

(That a run does not depend on how ``fit`` cuts its epochs into compiled calls is tested in
``test_runs.py``: ``epochs_per_call`` 1, 3 and 7 give the same run bit for bit.)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pure_backprop import augment, train
from pure_backprop.core import serial
from pure_backprop.layers import affine, dropout, mse

N, BATCH, EPOCHS = 48, 8, 4  # 6 steps an epoch


def _recording_epoch(monkeypatch, network, optimizer, augmenter=None, record=None, batch_size=BATCH):
    """``make_train_epoch`` whose steps are the real ones, but whose per-step "loss" output is
    ``record(params_before, params_after, key, batch)``: what a step drew, read out of the scan."""
    real_make_step = train.make_step

    def make_step(*args, **kwargs):
        step = real_make_step(*args, **kwargs)

        def recorded(params, state, opt_state, key, batch):
            new_params, state, opt_state, _ = step(params, state, opt_state, key, batch)
            return new_params, state, opt_state, record(params, new_params, key, batch)

        return recorded

    monkeypatch.setattr(train, "make_step", make_step)
    return train.make_train_epoch(network, mse, optimizer, batch_size, augment=augmenter)


def _epochs(epoch_fn, params, opt_state, x, y, state=None, key=jax.random.PRNGKey(0)):
    """What each step of ``EPOCHS`` epochs recorded, ``(EPOCHS, steps, ...)``, with ``fit``'s keys
    (``state`` for a ``StatefulLayer``'s epoch, ``None`` for a plain one's)."""
    out = []
    for e in range(EPOCHS):
        if state is None:
            params, opt_state, recorded = epoch_fn(params, opt_state, train.epoch_key(key, e), x, y)
        else:
            params, state, opt_state, recorded = epoch_fn(params, state, opt_state, train.epoch_key(key, e), x, y)
        out.append(np.asarray(recorded))
    return np.stack(out)


def test_every_step_of_every_epoch_draws_its_own_dropout_mask_and_the_same_key_the_same_masks(monkeypatch):
    # dropout then a linear map of 32 features, one sample a step, every sample the same x = 1:
    # entry j of the step's dW is nonzero exactly where the mask kept feature j (the mask, read
    # from the real update); only the key can tell two steps apart
    features = 32
    net = serial(dropout(0.5), affine(1, bias=False))
    params, state, _ = net.init(jax.random.PRNGKey(1), (1, features))
    params = (params[0], {"W": jnp.ones((features, 1))})
    optimizer = optax.sgd(1.0)
    x, y = jnp.ones((12, features)), -jnp.ones((12, 1))  # every prediction off its target: kept features move

    def moved(before, after, key, batch):
        return after[1]["W"][:, 0] != before[1]["W"][:, 0]

    epoch_fn = _recording_epoch(monkeypatch, net, optimizer, record=moved, batch_size=1)
    masks = _epochs(epoch_fn, params, optimizer.init(params), x, y, state)  # (epochs, steps, features): kept
    steps = masks.reshape(-1, features)
    assert steps.shape == (EPOCHS * 12, features)
    assert len({s.tobytes() for s in steps}) == len(steps)  # no two steps of the run share a mask
    assert 0.4 < steps.mean() < 0.6  # half the features kept
    np.testing.assert_array_equal(_epochs(epoch_fn, params, optimizer.init(params), x, y, state), masks)


def test_every_step_gets_its_own_batch_and_warp_key_and_each_epoch_its_own_order(monkeypatch):
    # x holds each sample's index; the "warp" adds a uniform draw from its key to every pixel
    x = jnp.arange(N, dtype=jnp.float32)[:, None] * jnp.ones((1, 4))
    y = jnp.zeros((N, 1))
    net = affine(1)
    params, _ = net.init(jax.random.PRNGKey(0), (BATCH, 4))
    optimizer = optax.sgd(0.0)

    def shifted(key, batch):
        return batch + jax.random.uniform(key, (), minval=0.0, maxval=0.5)

    def seen(before, after, key, batch):
        return batch[0][:, 0]  # the (warped) first pixel of each sample of the step's batch

    epoch_fn = _recording_epoch(monkeypatch, net, optimizer, augmenter=shifted, record=seen)
    recorded = _epochs(epoch_fn, params, optimizer.init(params), x, y)  # (epochs, steps, BATCH)
    index, warp = np.floor(recorded).astype(int), recorded - np.floor(recorded)
    for e in range(EPOCHS):
        assert sorted(index[e].reshape(-1).tolist()) == list(range(N))  # each sample once an epoch
        assert np.allclose(warp[e], warp[e][:, :1])  # one warp draw per step (the batch shares it here)
    orders = {index[e].tobytes() for e in range(EPOCHS)}
    assert len(orders) == EPOCHS  # no two epochs share a permutation
    draws = warp[:, :, 0].reshape(-1)
    assert len(np.unique(draws)) == draws.size  # no two steps of the run share a warp key


def _captured_warps(monkeypatch, settings, n=4000, seed=0):
    captured = {}
    real = augment.affine_warp

    def capture(images, shift, angle, scale):
        captured.update(shift=np.asarray(shift), angle=np.asarray(angle), scale=np.asarray(scale))
        return real(images, shift, angle, scale)

    monkeypatch.setattr(augment, "affine_warp", capture)
    augment.random_affine(jax.random.PRNGKey(seed), jnp.zeros((n, 4)), (2, 2), settings)
    return captured


@pytest.mark.parametrize("settings", [augment.Affine(), augment.Affine(max_shift=2.5, max_rotation=30.0,
                                                                       max_scale=0.25, fraction=1.0)])
def test_the_warps_stay_inside_their_documented_ranges_and_fill_them(settings, monkeypatch):
    warps = _captured_warps(monkeypatch, settings)
    n = round(settings.fraction * 4000)
    samples = {
        "shift_row": (warps["shift"][:, 0], settings.max_shift),
        "shift_col": (warps["shift"][:, 1], settings.max_shift),
        "rotation_degrees": (np.degrees(warps["angle"]), settings.max_rotation),
        "scale_minus_1": (warps["scale"] - 1, settings.max_scale),
    }
    for name, (values, bound) in samples.items():
        assert values.shape == (n,), name
        assert np.all(np.abs(values) <= bound * (1 + 1e-6)), name  # inside +-bound
        # uniform on [-bound, bound]: 10 equal bins each hold 10 % (a binomial's 5 sigma: 2.4 %)
        counts = np.histogram(values, bins=10, range=(-bound, bound))[0] / n
        assert np.all(np.abs(counts - 0.1) < 5 * math.sqrt(0.09 / n)), (name, counts)
    # the four draws are independent of one another
    matrix = np.corrcoef(np.stack([v for v, _ in samples.values()]))
    assert np.all(np.abs(matrix - np.eye(4)) < 5 / math.sqrt(n))


def test_the_shuffle_is_uniform_where_its_random_sort_keys_tie_often():
    """At ``n`` just under 2**20 each sort key has 12 random bits: about 256 elements share each
    key value in a round, and a tie keeps the elements' current order. In a uniform permutation
    the number of "successions" (element i directly followed by i + 1) is about Poisson(1); ties
    left from a single round would leave about 256 of them."""
    n = 2**20 - 5
    successions = []
    for seed in range(3):
        order = np.asarray(train.shuffle(jax.random.PRNGKey(seed), n))
        assert np.array_equal(np.sort(order), np.arange(n))
        successions.append(int(np.sum(np.diff(order) == 1)))
    assert max(successions) <= 9, successions  # P(Poisson(1) > 9) < 1e-7



def test_the_shuffle_draws_the_same_permutation_with_float64_on_and_off():
    """A run's order of samples depends on its key alone, not on ``jax_enable_x64`` (under which
    JAX's default integers, and random bits, are 64-bit)."""
    for n in (10, 1150):
        with jax.enable_x64(False):
            off = np.asarray(train.shuffle(jax.random.PRNGKey(3), n))
        with jax.enable_x64(True):
            on = np.asarray(train.shuffle(jax.random.PRNGKey(3), n))
        assert off.dtype == on.dtype == np.int32 and np.array_equal(off, on), n
