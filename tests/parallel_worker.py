"""Runs in a subprocess of ``tests/test_parallel.py`` (JAX fixes its device count when it starts):
small training runs on a mesh of several CPU devices and, in a single process, the same runs
without a mesh; the results go to ``OUT`` as ``.npz`` files and ``report.json`` for the test
to compare.

    python tests/parallel_worker.py OUT DEVICES CASES [COORDINATOR NUM_PROCESSES PROCESS_ID]

``CASES`` is a comma-separated list of names from ``CASES`` below. With a coordinator the
process joins that many processes first, each with ``DEVICES`` devices, and the mesh spans
all of them; process 0 writes the results.
"""

import json
import math
import re
import sys

import jax

OUT, DEVICES, NAMES = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
jax.config.update("jax_num_cpu_devices", DEVICES)
if len(sys.argv) > 4:
    from pure_backprop import parallel

    parallel.initialize(sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), timeout=30)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from pure_backprop import parallel, train  # noqa: E402
from pure_backprop.augment import affine_augmenter  # noqa: E402
from pure_backprop.core import lift  # noqa: E402
from pure_backprop.data import load_digits  # noqa: E402
from pure_backprop.layers import softmax_cross_entropy  # noqa: E402
from pure_backprop.network import mlp, simple_conv_net  # noqa: E402

DATA = load_digits()
CASES = {  # name: (network, input shape, augmented, optimizer)
    "mlp_augment": (mlp((16,), 10), (-1, 64), True, optax.sgd(0.1)),
    "batchnorm_dropout": (mlp((16, 16), 10, batchnorm=True, drop_rate=0.2), (-1, 64), False, optax.adam(1e-2)),
    "convnet": (simple_conv_net(filters=4, kernel_size=3, hidden=16), (-1, 1, 8, 8), True, optax.adam(1e-2)),
}


def run(name, mesh):
    """Three epochs of 8 steps of 32 samples, evaluated after each on 128 test samples."""
    net, shape, augmented, optimizer = CASES[name]
    params, state, _ = lift(net).init(jax.random.PRNGKey(0), shape)
    x, y = DATA.x_train[:256].reshape(shape), DATA.y_train[:256]
    result = train.fit(net, softmax_cross_entropy, optimizer, params, x, y, epochs=3, batch_size=32,
                       key=jax.random.PRNGKey(1), state=state, eval_batch_size=64, mesh=mesh,
                       augment=affine_augmenter((8, 8)) if augmented else None,
                       evaluate_on={"test": (DATA.x_test[:128].reshape(shape), DATA.y_test[:128])})
    arrays = {**train.as_numpy_tree(result.params, "params"), **train.as_numpy_tree(result.state, "state")}
    arrays["history"] = np.array([[r["batch_loss"], r["test_loss"], r["test_accuracy"]] for r in result.history])
    return arrays, sorted({str(getattr(a.sharding, "spec", "one device")) for a in jax.tree_util.tree_leaves(result[:3])})


def split_work(mesh):
    """Per program (step, epoch with augmentation, evaluation, fit's chunk), the elements of the
    distinct float32 shapes that its compiled code's products and gathers make, the parameters'
    (and their gradients') left out: on a mesh of N devices, each device's share of each batch.
    A split of every batch gives 1/N of a one-device mesh's figure; any batch computed whole on
    every device gives more (the values would be the same: only the compiled program shows it)."""
    net, sgd = mlp((16,), 10), optax.sgd(0.1)
    params = net.init(jax.random.PRNGKey(0), (-1, 64))[0]
    x, y, key = DATA.x_train[:224], DATA.y_train[:224], jax.random.PRNGKey(1)  # 7 batches of 32
    run, _, splits = train._fit_program(net, softmax_cross_entropy, sgd, x, y, 1, 32, {"test": (x[:64], y[:64])}, None,
                                        0.0, None, 32, mesh)
    programs = {
        "step": train.make_train_step(net, softmax_cross_entropy, sgd, mesh=mesh).lower(
            params, sgd.init(params), (x[:32], y[:32])),
        "epoch": train.make_train_epoch(net, softmax_cross_entropy, sgd, 32, affine_augmenter((8, 8)), mesh=mesh).lower(
            params, sgd.init(params), key, x, y),
        "evaluate": train.make_evaluate(net, softmax_cross_entropy, 32, mesh=mesh).lower(params, x, y),
        "fit": run.lower(*train._place(mesh, params, (), sgd.init(params), key, x, y, splits, np.int32(1), np.int32(0))),
    }
    own = {(64, 16), (16, 10)}
    work = {}
    for name, lowered in programs.items():
        shapes = set(re.findall(r"f32\[([0-9,]+)\]\{[0-9,]*\} (?:dot|gather)\(", lowered.compile().as_text()))
        shapes = {tuple(map(int, s.split(","))) for s in shapes} - own
        work[name] = sum(math.prod(s) for s in shapes)
    return work


def one_step_program(mesh):
    """The compiled text of one data-parallel step of the batch-norm network."""
    net, shape, _, optimizer = CASES["batchnorm_dropout"]
    params, state, _ = lift(net).init(jax.random.PRNGKey(0), shape)
    step = train.make_train_step(net, softmax_cross_entropy, optimizer, mesh=mesh)
    batch = (DATA.x_train[:32], DATA.y_train[:32])
    return step.lower(params, state, optimizer.init(params), jax.random.PRNGKey(2), batch).compile().as_text()


if __name__ == "__main__":
    mesh = parallel.data_mesh()
    report = {"devices": mesh.size, "processes": jax.process_count(), "layouts": {}}
    for name in NAMES:
        arrays, report["layouts"][name] = run(name, mesh)
        if jax.process_index() == 0:
            np.savez(f"{OUT}/{name}-mesh.npz", **arrays)
        if jax.process_count() == 1:  # the same run on one device, no mesh
            np.savez(f"{OUT}/{name}-single.npz", **run(name, None)[0])
    if jax.process_count() == 1:
        report["all_reduces"] = one_step_program(mesh).count("all-reduce(")
        report["work"] = {"mesh": split_work(mesh), "one": split_work(parallel.data_mesh(1))}
        net, sgd = CASES["mlp_augment"][0], optax.sgd(0.1)
        params = net.init(jax.random.PRNGKey(0), (-1, 64))[0]
        x, y = DATA.x_train[:60], DATA.y_train[:60]
        refused = {  # each call with a size that 4 devices cannot share evenly
            "fit": lambda: train.fit(net, softmax_cross_entropy, sgd, params, x, y, epochs=1, batch_size=30,
                                     key=jax.random.PRNGKey(0), mesh=mesh),
            "fit_eval": lambda: train.fit(net, softmax_cross_entropy, sgd, params, x, y, epochs=1, batch_size=20,
                                          eval_batch_size=30, key=jax.random.PRNGKey(0), mesh=mesh),
            "step": lambda: train.make_train_step(net, softmax_cross_entropy, sgd, mesh=mesh)(
                params, sgd.init(params), (x[:30], y[:30])),
            "make_step": lambda: jax.jit(train.make_step(net, softmax_cross_entropy, sgd, mesh=mesh))(
                params, (), sgd.init(params), None, (x[:30], y[:30])),
            "epoch": lambda: train.make_train_epoch(net, softmax_cross_entropy, sgd, 30, mesh=mesh),
            "evaluate": lambda: train.make_evaluate(net, softmax_cross_entropy, 30, mesh=mesh),
        }
        # arrays committed to one device (as a computation's results are): each entry point
        # moves them onto the mesh, none refuses them, and its results are whole on every device
        one = jax.devices()[0]
        p1, x1, y1 = jax.device_put((params, x, y), one)
        committed = {
            "step": lambda: train.make_train_step(net, softmax_cross_entropy, sgd, mesh=mesh)(
                p1, jax.device_put(sgd.init(params), one), (x1[:32], y1[:32])),
            "epoch": lambda: train.make_train_epoch(net, softmax_cross_entropy, sgd, 20, mesh=mesh)(
                p1, jax.device_put(sgd.init(params), one), jax.device_put(jax.random.PRNGKey(0), one), x1, y1),
            "stateful_epoch": lambda: train.make_train_epoch(lift(net), softmax_cross_entropy, sgd, 20, mesh=mesh)(
                p1, (), jax.device_put(sgd.init(params), one), jax.device_put(jax.random.PRNGKey(0), one), x1, y1),
            "evaluate": lambda: train.make_evaluate(net, softmax_cross_entropy, 20, mesh=mesh)(p1, x1, y1),
            "stateful_evaluate": lambda: train.make_evaluate(lift(net), softmax_cross_entropy, 20, mesh=mesh)(
                p1, (), x1, y1),
            "fit": lambda: train.fit(net, softmax_cross_entropy, sgd, p1, x1, y1, epochs=1, batch_size=20,
                                     eval_batch_size=20, key=jax.random.PRNGKey(0), mesh=mesh),
            "compile_fit": lambda: train.compile_fit(net, softmax_cross_entropy, sgd, p1, x1, y1, epochs=1, batch_size=20,
                                                     eval_batch_size=20, key=jax.random.PRNGKey(0), mesh=mesh),
        }
        report["committed"] = {}
        for name, call in committed.items():
            try:
                out = [a for a in jax.tree_util.tree_leaves(jax.block_until_ready(call())) if hasattr(a, "sharding")]
                elsewhere = [str(a.sharding) for a in out
                             if a.sharding.device_set != set(mesh.devices.flat) or not a.sharding.is_fully_replicated]
                report["committed"][name] = f"results not replicated on the mesh: {elsewhere[0]}" if elsewhere else "ok"
            except Exception as e:  # noqa: BLE001 - the test shows which entry point refused and why
                report["committed"][name] = f"{type(e).__name__}: {e}"[:300]
        report["refused"] = {}
        for name, call in refused.items():
            try:
                call()
            except ValueError as e:
                report["refused"][name] = str(e)
    if jax.process_index() == 0:
        with open(f"{OUT}/report.json", "w") as f:
            json.dump(report, f)
