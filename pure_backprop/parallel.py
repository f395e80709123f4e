"""Data-parallel training on JAX's own engine: a one-axis ``Mesh`` of devices, every batch
split across them, everything else replicated, and the hand gradients summed across devices
inside the compiled step.

How the step is split. ``train.make_train_step(..., mesh=mesh)``, ``make_train_epoch`` and
``fit`` compile the *same* step as on one device, with its layouts declared: each batch is
sharded along its first (sample) axis over the mesh's ``"data"`` axis, and the parameters, the
optimizer state, the layer state (batch norm's running averages) and the keys are replicated.
XLA's SPMD partitioner (sharding propagation under ``jax.jit``) then gives each device its
share of every batch and inserts the all-reduce wherever the hand backward sums over the
batch: ``dW = x.T @ dy``, ``db = sum(dy, axis=0)``, the loss's mean over the batch. We chose
propagation over ``jax.shard_map`` with an explicit ``psum``/``pmean`` because the hand
backward already is a function of the whole batch: under ``shard_map`` every layer that
reduces over the batch (the loss's ``1 / N``, batch norm's mean and variance) would have to
know the mesh axis and divide by the global ``N`` itself, and a layer that forgot would train
silently differently. Under propagation a layer's code is the one-device code, line for line,
and the numbers are the one-device numbers up to the order of float32 additions.

What that gives, by construction and checked in ``tests/test_parallel.py``:

* **The gradient is the global batch's**: the mean over all samples of the batch, not a mean
  of per-device means (equal only for equal shares, which the rule below guarantees anyway).
* **Batch norm uses the global batch's statistics**, as one device computes them, not each
  device's share (as ``torch.nn.DataParallel`` or a per-device ``pmap`` do). A run's result
  does not depend on the device count, up to float32 rounding.
* **Dropout masks and augmentation warps** are drawn from the step's key for the whole batch
  (``jax_threefry_partitionable``, on by default: each device computes its slice of the same
  random bits). So the masks of different devices are independent (different slices of one
  draw), and a run is reproducible from its key whatever the device count.
* **The rule for batch sizes**: every device takes an equal share, so a batch size must be a
  multiple of the device count; ``fit`` and the steps raise a ``ValueError`` that says so,
  nothing is padded or dropped.

Where the data live. ``fit`` replicates the training set (and the evaluation splits) on every
device, so that an epoch's uniform shuffle (``train.shuffle``) over the whole set can hand any
sample to any device without moving data between them: each device gathers its share of each
batch from its own copy. It costs the set's size on every device (MNIST: 188 MB in float32)
and buys a run whose batches are exactly the one-device run's.

Several processes (hosts). ``initialize(coordinator, num_processes, process_id)`` (a thin
wrapper of ``jax.distributed.initialize``) joins the processes; then ``data_mesh()`` spans the
devices of all of them, each process holds (reads) the data for its own devices, and the same
``fit`` call runs in every process. On the CPU the collectives between processes go through
gloo (``jax_cpu_collectives_implementation``, JAX's default).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def data_mesh(devices: int | Sequence | None = None) -> Mesh:
    """A one-axis ``Mesh`` named ``"data"``: over ``jax.devices()`` (every device of every
    process) for ``None``, over its first ``n`` for an int ``n``, or over the given devices."""
    available = jax.devices()
    if devices is None:
        devices = available
    elif _is_int(devices):
        if not 1 <= devices <= len(available):
            raise ValueError(f"data_mesh: devices must be between 1 and the {len(available)} devices JAX sees "
                             f"({available[0].platform}), got {devices}")
        devices = available[:devices]
    else:
        devices = list(devices)
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise TypeError(f"data_mesh: devices must be None, an int or a non-empty sequence of jax.Device, "
                            f"got {devices!r}")
    return Mesh(np.array(devices), (AXIS,))


def check_mesh(where: str, mesh) -> None:
    """``None`` (no mesh: one device) or a data mesh."""
    if mesh is not None and (not isinstance(mesh, Mesh) or mesh.axis_names != (AXIS,)):
        raise TypeError(f"{where}: mesh must be a jax.sharding.Mesh with the one axis {AXIS!r} "
                        f"(pure_backprop.parallel.data_mesh), got {mesh!r}")


def check_divides(where: str, name: str, batch_size: int, mesh) -> None:
    """The rule for batch sizes: an equal share of every batch for every device."""
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(f"{where}: {name} {batch_size} does not split evenly over the mesh's {mesh.size} devices "
                         f"(each device takes an equal share of every batch); choose a multiple of {mesh.size}")


def replicated(mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh, axis: int = 0) -> NamedSharding:
    """Axis ``axis`` (the samples) split over the mesh's devices, the others whole."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), AXIS))


def whole_layouts(mesh) -> dict:
    """``jax.jit``'s keyword arguments for a program whose inputs and outputs are all
    replicated on ``mesh`` (none for ``None``: the one-device program)."""
    return {} if mesh is None else dict(in_shardings=replicated(mesh), out_shardings=replicated(mesh))


def replicate(tree, mesh):
    """Place every leaf of ``tree`` whole on every device of ``mesh``. With several processes
    each gives the same value (its own copy of the parameters, the key, the data), from which
    the global array is assembled without moving data between processes."""
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def constrain(tree, sharding):
    """``jax.lax.with_sharding_constraint`` on every leaf (inside a compiled function)."""
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def initialize(coordinator: str, num_processes: int, process_id: int, timeout: int = 60) -> None:
    """Join ``num_processes`` processes (``jax.distributed.initialize``): ``coordinator`` is the
    ``HOST:PORT`` that process 0 listens on and the others reach; ``timeout`` seconds for all to
    arrive, after which it raises instead of waiting forever. Must run before JAX's first
    computation."""
    if not _is_int(num_processes) or num_processes < 1:
        raise ValueError(f"initialize: num_processes must be a positive int, got {num_processes!r}")
    if not _is_int(process_id) or not 0 <= process_id < num_processes:
        raise ValueError(f"initialize: process_id must be an int in [0, {num_processes}), got {process_id!r}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"initialize: coordinator must be HOST:PORT, got {coordinator!r}")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout)
