"""Training with the hand-written gradients: a jit-compiled step, an epoch as one compiled
``lax.scan`` over shuffled batches, batched evaluation over every sample, and ``fit``, the
whole training loop (epochs, evaluation, history, stop on divergence or interrupt, checkpoints
and continuing a run where it stopped) that the command line runs.

Any ``optax.GradientTransformation`` drives the update; the gradients come from the
hand-written backward (``loss_and_grads``), never from ``jax.grad``.

Two call signatures, one implementation. A plain ``Layer`` keeps the short ones::

    step(params, opt_state, batch)             -> (params, opt_state, loss)
    epoch(params, opt_state, key, x, targets)  -> (params, opt_state, losses)
    evaluate(params, x, labels)                -> (mean loss, accuracy)

A ``StatefulLayer`` (batch norm, dropout) threads its state and keys through::

    step(params, state, opt_state, key, batch)        -> (params, state, opt_state, loss)
    epoch(params, state, opt_state, key, x, targets)  -> (params, state, opt_state, losses)
    evaluate(params, state, x, labels)                -> (mean loss, accuracy)

Steps run in train mode (batch statistics, dropout masks drawn from ``key``, new running
averages out); evaluation runs in inference mode (running averages, no dropout). Internally
a plain ``Layer`` is lifted to a ``StatefulLayer`` with state ``()``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import parallel
from .core import Layer, Loss, StatefulLayer, lift, loss_and_grads_with_state

OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr: optax.adagrad(lr),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adam": lambda lr: optax.adam(lr),
}
SCHEDULES = ("constant", "cosine")

# ``fit``'s program compiles at LLVM optimization level 2 instead of XLA's default 3: as fast
# to run, and faster to compile (two runs of ``python benchmarks/compile_level.py``: the default
# training program 1.35-1.63 against 1.74-2.20 s, DeepConvNet's step 1.63-1.77 against
# 2.68-2.71 s). Level 1 saves little more and ran the default program 0.96-0.99x as fast. Only there: jax refuses compiler options
# on a jit nested in another, and the steps, epochs and evaluations made below are the
# caller's to compose into their own compiled programs.
TRAINING = {"xla_backend_optimization_level": 2}


def learning_rate(lr: float, schedule: str, steps: int):
    """The learning rate an optimizer of ``OPTIMIZERS`` takes: ``lr`` itself (``"constant"``),
    or ``"cosine"``: ``lr * (1 + cos(pi * t / steps)) / 2`` at step ``t``, from ``lr`` to 0 at
    the last of ``steps`` updates (``optax.cosine_decay_schedule``; the small updates at the
    end average out the noise of the last batches instead of stopping on one of them)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"learning_rate: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"learning_rate: steps must be a positive int, got {steps!r}")
    return lr if schedule == "constant" else optax.cosine_decay_schedule(lr, steps)


def _check_network(where, network):
    if not isinstance(network, (Layer, StatefulLayer)):
        raise TypeError(f"{where}: network must be a Layer or StatefulLayer, got {type(network).__name__}")


def _check_loss(where, loss, optimizer=None, check_optimizer=False):
    if not isinstance(loss, Loss):
        raise TypeError(f"{where}: loss must be a Loss (forward, backward), e.g. pure_backprop.layers."
                        f"softmax_cross_entropy, got {type(loss).__name__}")
    if check_optimizer and not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{where}: optimizer must be an optax.GradientTransformation, e.g. optax.sgd(0.1), "
                        f"got {type(optimizer).__name__}")


def _check_batch_size(where, batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")


def _check_data(where, x, targets, batch_size=None):
    """Same number of samples, at least one, and (for training) at least one whole batch."""
    n, m = jnp.shape(x)[0] if jnp.ndim(x) else None, jnp.shape(targets)[0] if jnp.ndim(targets) else None
    if n is None or m is None:
        raise ValueError(f"{where}: x and targets need a leading sample axis, got shapes {jnp.shape(x)} and {jnp.shape(targets)}")
    if n != m:
        raise ValueError(f"{where}: x holds {n} samples but targets hold {m}; they must match one to one")
    if n == 0:
        raise ValueError(f"{where}: x holds no samples (shape {jnp.shape(x)})")
    if batch_size is not None and n < batch_size:
        raise ValueError(f"{where}: batch_size {batch_size} exceeds the {n} training samples")


def make_step(network: Layer | StatefulLayer, loss: Loss, optimizer: optax.GradientTransformation,
              weight_decay: float = 0.0, mesh=None):
    """The un-jitted stateful step ``(params, state, opt_state, key, batch) -> (params, state, opt_state, loss)``
    (for any network: a plain ``Layer`` has state ``()`` and ignores the key). With a ``mesh``
    (``parallel.data_mesh``) the batch is split over its devices and the gradients, summed over
    the whole batch, are replicated: see ``pure_backprop.parallel``."""
    _check_network("make_step", network)
    _check_loss("make_step", loss, optimizer, check_optimizer=True)
    parallel.check_mesh("make_step", mesh)
    stateful = lift(network)

    def step(params, state, opt_state, key, batch):
        x, targets = batch
        _check_data("train step", x, targets)
        if mesh is not None:
            parallel.check_divides("train step", "a batch of", x.shape[0], mesh)
            x, targets = parallel.constrain((x, targets), parallel.batch_sharded(mesh))
        value, grads, state = loss_and_grads_with_state(stateful, loss, params, state, x, targets, key, True,
                                                        weight_decay)
        if mesh is not None:  # the batch sums of the backward become all-reduces here
            grads = parallel.constrain(grads, parallel.replicated(mesh))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, value

    return step


def make_train_step(network: Layer | StatefulLayer, loss: Loss, optimizer: optax.GradientTransformation,
                    weight_decay: float = 0.0, mesh=None):
    """A jit-compiled step; see the module docstring for its two signatures. With a ``mesh``
    the step is data-parallel over its devices (``pure_backprop.parallel``): the batch is
    split along its first axis (its size must be a multiple of the device count), everything
    else is replicated, and arrays given in another layout are moved to these."""
    step = make_step(network, loss, optimizer, weight_decay, mesh)
    if not isinstance(network, StatefulLayer):
        stateful_step = step

        def step(params, opt_state, batch):
            params, _, opt_state, value = stateful_step(params, (), opt_state, None, batch)
            return params, opt_state, value

    if mesh is None:
        return jax.jit(step)
    rep, dat = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    layouts = (rep,) * (4 if isinstance(network, StatefulLayer) else 2) + (dat,)
    compiled = jax.jit(step, in_shardings=layouts, out_shardings=rep)

    @functools.wraps(step)
    def checked(*args):
        # the rule for batch sizes before JAX places the batch (its message names no rule), and
        # arrays committed elsewhere (a computation's results) moved to the layouts: jit moves
        # them to a replicated layout itself, but refuses them for a split one
        parallel.check_divides("train step", "a batch of", np.shape(args[-1][0])[0], mesh)
        return compiled(*jax.device_put(args, layouts))

    checked.lower = compiled.lower
    return checked


def updates(n: int, batch_size: int, epochs: int) -> int:
    """How many optimizer updates ``fit`` makes: ``n // batch_size`` per epoch (``epoch_batches``
    leaves the remainder out). A schedule (``learning_rate``) spans exactly these."""
    return epochs * (n // batch_size)


def epoch_batches(key, n: int, batch_size: int):
    """The sample indices of each batch of one epoch, ``(n // batch_size, batch_size)``: a
    permutation drawn from ``key`` (``shuffle``); the remainder of fewer than ``batch_size``
    samples sits out this epoch (a different remainder each epoch, since the permutation changes)."""
    return shuffle(key, n)[: (n // batch_size) * batch_size].reshape(-1, batch_size)


def shuffle(key, n: int) -> jax.Array:
    """A uniformly random permutation of ``range(n)`` (int32), drawn as
    ``jax.random.permutation`` draws one: sort by random keys, in rounds.

    Here each key carries its element's current position in its low ``b = bit_length(n - 1)``
    bits and random bits above them, so that XLA sorts one uint32 array instead of
    (key, index) pairs: 5x faster on the CPU (56 against 285 us for n = 1150, measured side by
    side). Two equal random parts keep their elements in their current order, which an
    earlier round made random; the rounds, ``ceil(3 ln n / ((32 - b) ln 2))`` as in jax, make
    a tie repeated in every round improbable. From ``n > 2**20`` (fewer than 12 random bits)
    it is ``jax.random.permutation``."""
    if n <= 1:
        return jnp.arange(n, dtype=jnp.int32)
    b = (n - 1).bit_length()
    if 32 - b < 12:
        return jax.random.permutation(key, n).astype(jnp.int32)
    rounds = max(1, math.ceil(3 * math.log(n) / ((32 - b) * math.log(2))))
    low = jnp.uint32((1 << b) - 1)
    high = jnp.uint32(0xFFFFFFFF ^ ((1 << b) - 1))
    position = jnp.arange(n, dtype=jnp.uint32)
    order = position
    for k in jax.random.split(key, rounds):
        packed = (jax.random.bits(k, (n,), jnp.uint32) & high) | position
        order = order[jnp.sort(packed) & low]
    return order.astype(jnp.int32)


_WARP_AHEAD_BYTES = 64 * 2**20  # an epoch's augmented batches up to this size are computed before its scan


def _epoch_fn(network, loss, optimizer, batch_size, augment, weight_decay, mesh):
    """The un-jitted stateful epoch ``(params, state, opt_state, key, x, targets)``."""
    step = make_step(network, loss, optimizer, weight_decay, mesh)

    def epoch(params, state, opt_state, key, x, targets):
        _check_data("train", x, targets, batch_size)
        key_order, key_augment, key_steps = jax.random.split(key, 3)
        batches = epoch_batches(key_order, x.shape[0], batch_size)
        step_keys = jax.random.split(key_steps, batches.shape[0])
        augment_keys = jax.random.split(key_augment, batches.shape[0])

        warped = None  # a scan input with no leaves: each step then gathers (and augments) its own batch
        if augment is not None and x.dtype.itemsize * math.prod(batches.shape) * math.prod(x.shape[1:]) <= _WARP_AHEAD_BYTES:
            # Every batch of the epoch augmented at once, before the scan, with the same keys:
            # the same values as batch by batch, but one vectorized random draw and warp
            # instead of a small one per step (measured: 2x faster steps on the digits).
            warped = jax.vmap(augment)(augment_keys, x[batches])

        def body(carry, batch):
            params, state, opt_state = carry
            index, key_step, key_aug, xb = batch
            if xb is None:
                xb = x[index] if augment is None else augment(key_aug, x[index])
            params, state, opt_state, value = step(params, state, opt_state, key_step, (xb, targets[index]))
            return (params, state, opt_state), value

        (params, state, opt_state), losses = jax.lax.scan(
            body, (params, state, opt_state), (batches, step_keys, augment_keys, warped))
        return params, state, opt_state, losses

    return epoch


def make_train_epoch(network: Layer | StatefulLayer, loss: Loss, optimizer: optax.GradientTransformation,
                     batch_size: int, augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                     weight_decay: float = 0.0, mesh=None):
    """A jit-compiled epoch: the samples are shuffled with ``key`` and cut into
    ``len(x) // batch_size`` batches (``epoch_batches``) that one ``lax.scan`` runs through.
    ``augment(key, x_batch) -> x_batch`` (e.g. ``augment.affine_augmenter``), if given, is
    applied to each batch with its own key; each step gets its own dropout key.
    With a ``mesh``, data-parallel (``pure_backprop.parallel``): every argument replicated on
    its devices (``x`` and ``targets`` too: each device gathers its share of each batch from
    its own copy), each batch split over them.
    See the module docstring for the two signatures."""
    _check_network("make_train_epoch", network)
    _check_batch_size("make_train_epoch", batch_size)
    parallel.check_mesh("make_train_epoch", mesh)
    parallel.check_divides("make_train_epoch", "batch_size", batch_size, mesh)
    epoch = _epoch_fn(network, loss, optimizer, batch_size, augment, weight_decay, mesh)
    layouts = parallel.whole_layouts(mesh)
    if isinstance(network, StatefulLayer):
        return jax.jit(epoch, **layouts)

    def plain(params, opt_state, key, x, targets):
        params, _, opt_state, losses = epoch(params, (), opt_state, key, x, targets)
        return params, opt_state, losses

    return jax.jit(plain, **layouts)


def _evaluate_fn(network, loss, batch_size, bounds=None, mesh=None):
    """The un-jitted ``(params, state, x, labels) -> (mean loss, accuracy)`` in inference mode.

    With ``bounds`` (``((start, stop), ...)``, static), ``x`` holds several splits one after the
    other and it returns one ``(mean loss, accuracy)`` per split: every split in one pass of
    ``ceil(len(x) / batch_size)`` batches (``fit`` evaluates train, validation and test so: one
    program to compile instead of three, and fewer, fuller batches)."""
    stateful = lift(network)

    def evaluate(params, state, x, labels):
        _check_data("evaluate", x, labels)
        n = x.shape[0]
        pad = (-n) % batch_size
        xs = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((-1, batch_size) + x.shape[1:])
        ys = jnp.concatenate([labels, jnp.zeros((pad,), labels.dtype)]).reshape(-1, batch_size)
        if mesh is not None:  # each device evaluates its share of every batch
            xs, ys = parallel.constrain((xs, ys), parallel.batch_sharded(mesh, 1))

        def body(_, batch):
            xb, yb = batch
            scores = stateful.forward(params, state, xb, None, False)[0]
            per_sample = jax.vmap(lambda s, y: loss.forward(s[None], y[None])[0])(scores, yb)
            return None, (per_sample, jnp.argmax(scores, axis=1) == yb)

        _, (losses, correct) = jax.lax.scan(body, None, (xs, ys))  # (batches, batch_size) each
        row = np.arange(n + pad).reshape(-1, batch_size)  # static: which rows each split owns

        def mean(start, stop):
            mask = (row >= start) & (row < stop)  # the padding rows belong to no split
            total_loss = jnp.sum(jnp.sum(jnp.where(mask, losses, 0), axis=1)).astype(jnp.float32)
            total_correct = jnp.sum(correct & mask).astype(jnp.float32)
            return total_loss / (stop - start), total_correct / (stop - start)

        return mean(0, n) if bounds is None else [mean(start, stop) for start, stop in bounds]

    return evaluate


def make_evaluate(network: Layer | StatefulLayer, loss: Loss, batch_size: int, mesh=None):
    """A jit-compiled ``(mean loss, accuracy)`` over *every* sample, in inference mode.

    The data are padded up to a whole number of batches and the padding is masked out, so
    the last partial batch counts exactly once. ``labels`` are integer class labels. With a
    ``mesh``, every batch is split over its devices (``batch_size`` a multiple of their count).
    See the module docstring for the two signatures."""
    _check_network("make_evaluate", network)
    _check_loss("make_evaluate", loss)
    _check_batch_size("make_evaluate", batch_size)
    parallel.check_mesh("make_evaluate", mesh)
    parallel.check_divides("make_evaluate", "batch_size", batch_size, mesh)
    evaluate = _evaluate_fn(network, loss, batch_size, mesh=mesh)
    layouts = parallel.whole_layouts(mesh)
    if isinstance(network, StatefulLayer):
        return jax.jit(evaluate, **layouts)
    return jax.jit(lambda params, x, labels: evaluate(params, (), x, labels), **layouts)


# --- the training loop -------------------------------------------------------------------


class FitResult(NamedTuple):
    """What ``fit`` returns. ``params``/``state`` are those of the last epoch whose loss and
    parameters were all finite; ``history`` has one dict per finished epoch."""

    params: Any
    state: Any
    opt_state: Any
    history: list
    interrupted: bool
    diverged_epoch: int | None  # the first epoch with a non-finite loss or parameter, if any


def fit(network: Layer | StatefulLayer, loss: Loss, optimizer: optax.GradientTransformation,
        params, x, labels, *, epochs: int, batch_size: int, key, state=(), evaluate_on: dict | None = None,
        augment: Callable | None = None, weight_decay: float = 0.0, epochs_per_call: int | None = None,
        eval_batch_size: int = 500, on_epochs: Callable[[list], None] | None = None,
        should_stop: Callable[[], bool] | None = None, opt_state=None, start_epoch: int = 0,
        checkpoint_every: int | None = None, on_checkpoint: Callable[[FitResult], None] | None = None,
        mesh=None) -> FitResult:
    """Train for ``epochs`` epochs on ``(x, labels)`` and evaluate after each on ``evaluate_on``
    (``{"train": (x, y), "val": (x, y), ...}``), all inside compiled calls.

    Epoch ``e`` (counted from 0) draws its order, augmentation and dropout from
    ``epoch_key(key, e)``, a function of the run's ``key`` and of ``e`` alone: how the epochs are
    cut into compiled calls changes no number. So a run continues exactly where it stopped:
    ``fit(..., params, state=, opt_state=, start_epoch=k)`` with what a run had after ``k`` epochs
    (the ``FitResult`` or a checkpoint, ``pure_backprop.runs``) trains epochs ``k + 1 .. epochs``
    and gives, bit for bit, what the run straight through to ``epochs`` gives (``epochs`` counts
    the whole run; the history holds the new epochs). ``opt_state=None`` starts the optimizer
    afresh (``optimizer.init(params)``).

    With ``checkpoint_every=K`` no compiled call runs past a multiple of ``K`` epochs, and
    ``on_checkpoint(result)`` is called at each multiple before the last epoch with a
    ``FitResult`` of the run so far (its ``history`` the epochs of this call of ``fit``); the
    caller saves the end itself, from what ``fit`` returns.

    Each compiled call runs ``epochs_per_call`` epochs (default: ``epochs / 20``, so progress
    moves 20 times) with their evaluations, and brings their history back in one transfer;
    ``on_epochs(records)`` is called after each with the new records (a progress bar), and
    ``should_stop()`` is polled between calls. A ``KeyboardInterrupt`` (or ``should_stop()``)
    ends the loop after the last finished call with ``interrupted=True``. An epoch with a
    non-finite loss or parameter stops training: its update is discarded, the parameters of
    the epoch before are returned and ``diverged_epoch`` names it.

    History records hold ``epoch``, ``batch_loss`` (mean over the epoch's steps, on the
    training batches as trained, augmented) and ``<name>_loss``/``<name>_accuracy`` per split.

    With a ``mesh`` (``parallel.data_mesh()``) the run is data-parallel over its devices, of
    one process or of several: the data, parameters and states are replicated on every device
    and each batch is split over them (``batch_size`` and ``eval_batch_size`` multiples of the
    device count); the result is the one-device run's up to float32 rounding. See
    ``pure_backprop.parallel``. The returned arrays are replicated on the mesh.
    """
    run, per_call, splits = _fit_program(network, loss, optimizer, x, labels, epochs, batch_size, evaluate_on, augment,
                                         weight_decay, epochs_per_call, eval_batch_size, mesh)
    _check_resume(start_epoch, epochs, checkpoint_every)
    if opt_state is None:
        opt_state = optimizer.init(params)
    params, state, opt_state, key, x, labels, splits = _place(mesh, params, state, opt_state, key, x, labels, splits)
    history, interrupted, diverged = [], False, None
    done = start_epoch
    try:
        while done < epochs and diverged is None:
            if should_stop is not None and should_stop():
                interrupted = True
                break
            active = min(per_call, epochs - done)
            if checkpoint_every is not None:  # end the call at the next multiple of checkpoint_every
                active = min(active, checkpoint_every - done % checkpoint_every)
            (params, state, opt_state), metrics, bad = run(params, state, opt_state, key, x, labels, splits,
                                                           *_place(mesh, np.int32(active), np.int32(done)))
            metrics, bad = jax.device_get((metrics, bad))  # the whole chunk's history in one transfer
            bad = int(bad)
            finished = active if bad < 0 else bad
            records = [{"epoch": done + i + 1, **{k: float(v[i]) for k, v in metrics.items()}} for i in range(finished)]
            history += records
            done += finished
            if bad >= 0:
                diverged = done + 1
            if on_epochs is not None:
                on_epochs(records)
            if (on_checkpoint is not None and checkpoint_every is not None and diverged is None and done < epochs
                    and done % checkpoint_every == 0):
                on_checkpoint(FitResult(params, state, opt_state, list(history), False, None))
    except KeyboardInterrupt:
        interrupted = True
    return FitResult(params, state, opt_state, history, interrupted, diverged)


def _check_resume(start_epoch, epochs, checkpoint_every):
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or not 0 <= start_epoch < epochs:
        raise ValueError(f"fit: start_epoch must be an int in [0, epochs) = [0, {epochs}) (the epochs already "
                         f"trained), got {start_epoch!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"fit: checkpoint_every must be a positive int or None, got {checkpoint_every!r}")


def epoch_key(key, epoch):
    """The key of epoch ``epoch`` (counted from 0) of a run of key ``key``:
    ``jax.random.fold_in(key, epoch)``. Each epoch its own key (no two share an order), and the
    same key whichever compiled call runs the epoch."""
    return jax.random.fold_in(key, epoch)


def compile_fit(network: Layer | StatefulLayer, loss: Loss, optimizer: optax.GradientTransformation,
                params, x, labels, *, epochs: int, batch_size: int, key, state=(), evaluate_on: dict | None = None,
                augment: Callable | None = None, weight_decay: float = 0.0, epochs_per_call: int | None = None,
                eval_batch_size: int = 500, on_epochs: Callable[[list], None] | None = None,
                should_stop: Callable[[], bool] | None = None, mesh=None) -> None:
    """Compile, ahead, the program that ``fit`` with the same arguments runs, so that its first
    call starts training at once. Takes ``fit``'s arguments (the callbacks are not called) and
    trains nothing: the program runs with every epoch slot skipped. Thread-safe: the command
    line compiles it in a second thread while it checks the gradient (XLA compiles without
    holding the GIL, so on two cores both proceed at once)."""
    run, _, splits = _fit_program(network, loss, optimizer, x, labels, epochs, batch_size, evaluate_on, augment,
                                  weight_decay, epochs_per_call, eval_batch_size, mesh)
    jax.block_until_ready(run(*_place(mesh, params, state, optimizer.init(params), key, x, labels, splits,
                                      np.int32(0), np.int32(0))))


def _place(mesh, *args):
    """``fit``'s arguments as its program takes them: as given on one device, replicated on the
    mesh's devices (of every process) with a mesh."""
    return args if mesh is None else parallel.replicate(args, mesh)


def _fit_program(network, loss, optimizer, x, labels, epochs, batch_size, evaluate_on, augment, weight_decay,
                 epochs_per_call, eval_batch_size, mesh=None):
    """Validate ``fit``'s arguments; the compiled chunk program (shared between calls with the
    same network, loss, optimizer and settings), the epochs per call and the evaluation splits."""
    _check_network("fit", network)
    _check_loss("fit", loss, optimizer, check_optimizer=True)
    _check_batch_size("fit", batch_size)
    _check_batch_size("fit (eval_batch_size)", eval_batch_size)
    parallel.check_mesh("fit", mesh)
    parallel.check_divides("fit", "batch_size", batch_size, mesh)
    parallel.check_divides("fit", "eval_batch_size", eval_batch_size, mesh)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs < 2**31:
        raise ValueError(f"fit: epochs must be a positive int below 2**31 (counted in int32), got {epochs!r}")
    _check_data("fit", x, labels, batch_size)
    evaluate_on = dict(evaluate_on or {})
    for name, (ex, ey) in evaluate_on.items():
        _check_data(f"fit (evaluate_on[{name!r}])", ex, ey)
        if jnp.shape(ex)[1:] != jnp.shape(x)[1:]:
            raise ValueError(f"fit (evaluate_on[{name!r}]): samples of shape {jnp.shape(ex)[1:]}, but the training "
                             f"samples have shape {jnp.shape(x)[1:]}")
    if epochs_per_call is not None and (isinstance(epochs_per_call, bool) or not isinstance(epochs_per_call, int)
                                        or epochs_per_call < 1):
        raise ValueError(f"fit: epochs_per_call must be a positive int or None, got {epochs_per_call!r}")
    per_call = min(epochs, epochs_per_call or max(1, math.ceil(epochs / 20)))
    settings = (network, loss, optimizer, batch_size, augment, weight_decay, eval_batch_size, tuple(evaluate_on), per_call,
                mesh)
    try:
        run = _compiled_epochs(*settings)
    except TypeError:  # an unhashable part (say, a callable object without __hash__): not shared
        run = _compiled_epochs.__wrapped__(*settings)
    return run, per_call, tuple(evaluate_on.values())


def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


@functools.lru_cache(maxsize=8)  # fit and compile_fit share the compiled program; a few, not every one ever made
def _compiled_epochs(network, loss, optimizer, batch_size, augment, weight_decay, eval_batch_size, names, per_call,
                     mesh=None):
    """``run(params, state, opt_state, key, x, labels, splits, active, start)``: ``per_call`` epoch
    slots in one ``lax.scan``, of which the first ``active`` train epochs ``start``, ``start + 1``,
    ... (counted from 0; each with ``epoch_key(key, epoch)``) and the others are skipped by
    ``lax.cond``, so one compiled program serves a shorter call. Returns the carry, the
    per-slot metrics and the index of the first slot that went non-finite (-1 if none)."""
    epoch = _epoch_fn(network, loss, optimizer, batch_size, augment, weight_decay, mesh)

    def run(params, state, opt_state, key, x, labels, splits, active, start):
        sizes = [ex.shape[0] for ex, _ in splits]
        bounds = tuple(zip(np.cumsum([0] + sizes[:-1]).tolist(), np.cumsum(sizes).tolist()))
        evaluate = _evaluate_fn(network, loss, eval_batch_size, bounds, mesh)
        if splits:  # once per call, outside the epochs: every split evaluated in one pass
            eval_x = jnp.concatenate([ex for ex, _ in splits])
            eval_y = jnp.concatenate([ey for _, ey in splits])

        def slot(carry, inputs):
            i, key = inputs
            (params, state, opt_state), bad = carry

            def train(_):
                new_params, new_state, new_opt, losses = epoch(params, state, opt_state, key, x, labels)
                metrics = {"batch_loss": jnp.mean(losses).astype(jnp.float32)}
                if splits:
                    for name, (mean_loss, accuracy) in zip(names, evaluate(new_params, new_state, eval_x, eval_y)):
                        metrics[f"{name}_loss"], metrics[f"{name}_accuracy"] = mean_loss, accuracy
                finite = _all_finite((new_params, new_state)) & jnp.isfinite(metrics["batch_loss"])
                keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
                carry = keep((new_params, new_state, new_opt), (params, state, opt_state))
                return (carry, jnp.where(finite, bad, i)), metrics

            def skip(_):
                zero = jnp.zeros((), jnp.float32)
                metrics = {"batch_loss": zero}
                for name in names:
                    metrics[f"{name}_loss"], metrics[f"{name}_accuracy"] = zero, zero
                return ((params, state, opt_state), bad), metrics

            return jax.lax.cond((i < active) & (bad < 0), train, skip, None)

        slots = jnp.arange(per_call)
        keys = jax.vmap(lambda i: epoch_key(key, start + i))(slots)
        (carry, bad), metrics = jax.lax.scan(slot, ((params, state, opt_state), jnp.array(-1)), (slots, keys))
        return carry, metrics, bad

    layouts = {} if mesh is None else dict(out_shardings=parallel.replicated(mesh))  # inputs placed by _place
    return jax.jit(run, compiler_options=TRAINING, **layouts)  # fit's own program: never nested in a caller's jit


def as_numpy_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """``{"prefix/0/W": array, ...}``: a pytree flattened for ``np.savez`` (empty leaves skipped),
    each leaf named by its path of dict keys, sequence indices and attribute names
    (``opt_state/0/mu/0/W``); ``runs`` reads such arrays back into a tree."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        out[f"{prefix}/{name}"] = np.asarray(leaf)
    return out
