"""Data-parallel training (``pure_backprop.parallel``, ``fit(..., mesh=)``, ``train --devices``).

JAX fixes its device count when it starts, and the suite runs on one CPU device, so the runs on
several devices happen in subprocesses (``tests/parallel_worker.py``), each shared by the tests
that read it: one process of 4 CPU devices, and two processes of 2 devices each that join on
127.0.0.1. A run on 4 devices must give the parameters, the batch-norm averages and the
history of the same run on one device up to float32 rounding: not the same bits (the sums over
the batch are added in another order), but far closer than a run with any other batch, mask,
warp or batch statistics would be.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pure_backprop import parallel
from pure_backprop.cli import main

WORKER = Path(__file__).with_name("parallel_worker.py")
CASES = ("mlp_augment", "batchnorm_dropout", "convnet")
TIMEOUT = 240  # seconds for a worker; the runs take about 20 s on two cores
# float32 rounding of a few dozen steps: observed up to 5e-7 of a leaf's largest entry. A run
# with another batch, dropout mask, warp or batch statistics differs by 1e-2 and more.
TOLERANCE = 1e-5


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    return {**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path(__file__).parents[1])}


def _worker(out, devices, cases, *join):
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(devices), ",".join(cases), *map(str, join)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(processes, what):
    """Wait for the workers; kill them all and fail, naming ``what``, past ``TIMEOUT``."""
    outputs = []
    try:
        for p in processes:
            outputs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        pytest.fail(f"{what}: no result within {TIMEOUT} s (a process that never joined?); killed")
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, f"{what}: exit {p.returncode}\n{output[-3000:]}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def four_devices(built_once):
    """Each case trained by one process on a mesh of 4 CPU devices, and without a mesh."""
    out = built_once("four_devices", lambda out: _finish([_worker(out, 4, CASES)], "one process of 4 devices"))
    return out, json.loads((out / "report.json").read_text())


def _assert_close(got, want):
    assert sorted(got.files) == sorted(want.files)
    for name in want.files:
        scale = np.abs(want[name]).max()
        error = np.abs(got[name] - want[name]).max()
        assert error <= TOLERANCE * scale, f"{name}: differs by {error:.2e}, {error / scale:.2e} of its scale {scale:.2e}"


@pytest.mark.parametrize("case", CASES)
def test_four_devices_train_as_one_device_does(four_devices, case):
    """The MLP with augmentation, batch norm with dropout, the convnet: the same parameters,
    running averages and per-epoch losses and accuracies, with everything replicated."""
    out, report = four_devices
    assert report["devices"] == 4 and report["layouts"][case] == ["P()"]
    _assert_close(np.load(out / f"{case}-mesh.npz"), np.load(out / f"{case}-single.npz"))


def test_the_step_sums_the_gradient_across_devices_inside_the_compiled_program(four_devices):
    """The agreement above is not the trivial one of a program that ran whole on one device:
    the compiled step of the mesh holds the all-reduces of the batch sums."""
    assert four_devices[1]["all_reduces"] >= 1


def test_each_device_computes_a_quarter_of_every_batch_in_every_program(four_devices):
    """The step, the epoch (its shuffle's gather and its warps), the evaluation and ``fit``'s
    chunk: in each compiled program the products and gathers over the batch are a quarter of
    those of a one-device mesh (``split_work`` in the worker), none left whole on every device."""
    work = four_devices[1]["work"]
    assert set(work["mesh"]) == {"step", "epoch", "evaluate", "fit"}
    for program, quarter in work["mesh"].items():
        assert quarter > 0 and quarter * 4 == work["one"][program], (program, quarter, work["one"][program])


def test_arrays_committed_to_one_device_are_moved_onto_the_mesh_and_the_results_replicated(four_devices):
    assert four_devices[1]["committed"] == {"step": "ok", "epoch": "ok", "stateful_epoch": "ok", "evaluate": "ok",
                                          "stateful_evaluate": "ok", "fit": "ok", "compile_fit": "ok"}


def test_a_batch_that_does_not_split_evenly_is_refused_with_the_rule(four_devices):
    rule = "does not split evenly over the mesh's 4 devices (each device takes an equal share of every batch); " \
           "choose a multiple of 4"
    assert four_devices[1]["refused"] == {
        "fit": f"fit: batch_size 30 {rule}", "fit_eval": f"fit: eval_batch_size 30 {rule}",
        "step": f"train step: a batch of 30 {rule}", "make_step": f"train step: a batch of 30 {rule}", "epoch": f"make_train_epoch: batch_size 30 {rule}",
        "evaluate": f"make_evaluate: batch_size 30 {rule}"}


def test_two_processes_of_two_devices_train_as_one_process_of_four(four_devices, tmp_path):
    """``jax.distributed`` over 127.0.0.1 (gloo collectives): the same run as the one process
    of 4 devices, for the network with batch norm and dropout and for the convnet."""
    cases = ("batchnorm_dropout", "convnet")
    address = f"127.0.0.1:{_free_port()}"
    _finish([_worker(tmp_path, 2, cases, address, 2, i) for i in range(2)], "two processes of 2 devices")
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["devices"], report["processes"]) == (4, 2)
    for case in cases:
        _assert_close(np.load(tmp_path / f"{case}-mesh.npz"), np.load(four_devices[0] / f"{case}-mesh.npz"))


def test_data_mesh_takes_the_devices_asked_and_refuses_others():
    import jax

    assert parallel.data_mesh().devices.tolist() == jax.devices()
    assert parallel.data_mesh(1).axis_names == ("data",)
    with pytest.raises(ValueError, match=r"data_mesh: devices must be between 1 and the 1 devices JAX sees \(cpu\), got 2"):
        parallel.data_mesh(2)
    with pytest.raises(TypeError, match=r"data_mesh: devices must be None, an int or a non-empty sequence"):
        parallel.data_mesh([])


def test_whole_layouts_replicate_every_input_and_output_and_are_none_without_a_mesh():
    from jax.sharding import PartitionSpec

    mesh = parallel.data_mesh(1)
    assert parallel.whole_layouts(None) == {}
    assert parallel.whole_layouts(mesh) == {"in_shardings": parallel.replicated(mesh),
                                            "out_shardings": parallel.replicated(mesh)}
    assert parallel.replicated(mesh).spec == PartitionSpec() and parallel.replicated(mesh).mesh == mesh


@pytest.mark.parametrize("args, message", [
    (("127.0.0.1:8476", 0, 0), "num_processes must be a positive int, got 0"),
    (("127.0.0.1:8476", 2.0, 0), "num_processes must be a positive int, got 2.0"),
    (("127.0.0.1:8476", True, 0), "num_processes must be a positive int, got True"),
    (("127.0.0.1:8476", 2, 2), "process_id must be an int in [0, 2), got 2"),
    (("127.0.0.1:8476", 2, -1), "process_id must be an int in [0, 2), got -1"),
    (("127.0.0.1:8476", 2, "0"), "process_id must be an int in [0, 2), got '0'"),
    (("127.0.0.1:8476", 2, False), "process_id must be an int in [0, 2), got False"),
    (("localhost", 2, 0), "coordinator must be HOST:PORT, got 'localhost'"),
    ((":8476", 2, 0), "coordinator must be HOST:PORT, got ':8476'"),
    (("localhost:port", 2, 0), "coordinator must be HOST:PORT, got 'localhost:port'"),
])
def test_initialize_refuses_bad_arguments_before_joining(args, message, monkeypatch):
    import jax

    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: pytest.fail("joined with bad arguments"))
    with pytest.raises(ValueError) as e:
        parallel.initialize(*args)
    assert str(e.value) == f"initialize: {message}"


def test_initialize_joins_with_its_arguments_and_a_60_s_default_timeout(monkeypatch):
    """One process is a run too; an IPv6 coordinator's port is what follows its last colon."""
    import jax

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    parallel.initialize("[::1]:8476", 1, 0)
    parallel.initialize("10.0.0.1:8476", 3, 2, timeout=5)
    assert calls == [(("[::1]:8476",), {"num_processes": 1, "process_id": 0, "initialization_timeout": 60}),
                     (("10.0.0.1:8476",), {"num_processes": 3, "process_id": 2, "initialization_timeout": 5})]


@pytest.mark.parametrize("where", ["fit", "make_step", "make_train_epoch", "make_evaluate"])
@pytest.mark.parametrize("mesh", ["batch axis", "not a mesh"])
def test_training_refuses_a_mesh_that_is_not_a_data_mesh(where, mesh):
    import jax
    import optax
    from jax.sharding import Mesh

    from pure_backprop import train
    from pure_backprop.layers import softmax_cross_entropy
    from pure_backprop.network import mlp

    mesh = Mesh(np.array(jax.devices()), ("batch",)) if mesh == "batch axis" else "data"
    net, sgd = mlp((4,), 3), optax.sgd(0.1)
    calls = {
        "fit": lambda: train.fit(net, softmax_cross_entropy, sgd, {}, np.zeros((4, 2)), np.zeros(4, int), epochs=1,
                                 batch_size=2, key=jax.random.PRNGKey(0), mesh=mesh),
        "make_step": lambda: train.make_train_step(net, softmax_cross_entropy, sgd, mesh=mesh),
        "make_train_epoch": lambda: train.make_train_epoch(net, softmax_cross_entropy, sgd, 2, mesh=mesh),
        "make_evaluate": lambda: train.make_evaluate(net, softmax_cross_entropy, 2, mesh=mesh),
    }
    with pytest.raises(TypeError) as e:
        calls[where]()
    assert str(e.value) == (f"{where}: mesh must be a jax.sharding.Mesh with the one axis 'data' "
                            f"(pure_backprop.parallel.data_mesh), got {mesh!r}")


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "127.0.0.1:1"], "--coordinator, --num-processes and --process-id go together (every process "
                                       "of the run gets all three); missing --num-processes, --process-id"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator localhost: expected HOST:PORT, e.g. 10.0.0.1:8476"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 must be below --num-processes 2"),
    (["--devices", "2", "--model", "lstm-lm"], "--devices and --coordinator apply to the image models (mlp, convnet, "
                                                "deepconvnet); lstm-lm trains on one device"),
    (["--devices", "3"], "--devices 3: JAX sees 1 cpu device in this process"),
])
def test_the_command_line_refuses_bad_device_options_in_one_line(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err == f"pure-backprop: error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_the_command_line_trains_on_two_devices_as_on_one(tmp_path):
    """``pure-backprop train --devices 2`` against ``--devices 1``, each in a fresh process (JAX
    splits the CPU in two when it starts; this process runs with float64 on): the same losses
    up to float32 rounding, the same accuracies up to a prediction that rounding may flip, and
    each run records its devices."""
    runs = []
    for devices in (1, 2):
        out = tmp_path / str(devices)
        p = subprocess.run([sys.executable, "-m", "pure_backprop", "train", "--epochs", "3", "--no-progress",
                            "--devices", str(devices), "--out", str(out)],
                           env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0, p.stderr[-3000:]
        runs.append(json.loads((out / "metrics.json").read_text()))
    one, two = runs
    assert (one["devices"], two["devices"], two["processes"]) == (1, 2, 1)
    for split in ("train", "validation", "test"):
        name = "val" if split == "validation" else split
        assert abs(two[f"{name}_accuracy"] - one[f"{name}_accuracy"]) <= 1.01 / one[f"{split}_samples"]
    losses = [[r["batch_loss"] for r in run["history"]] for run in runs]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    # its checkpoint holds plain arrays: the run continues here, on one device
    assert main(["train", "--resume", str(tmp_path / "2"), "--epochs", "4", "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "2" / "metrics.json").read_text())
    assert (resumed["epochs"], resumed["resumed_from_epoch"], resumed["devices"]) == (4, 3, 1)
