"""Run folders that can be loaded, used and resumed (``pure_backprop.runs``, ``fit``'s key schedule
and ``pure-backprop train --resume|predict|evaluate``).

The first half needs no training: checkpoints of a small network written and read back, the
refusals of damaged, edited and foreign files, and the conversion of input files. The second
half trains small runs through the command line (a few epochs on the digits), shared between
tests by module-scoped fixtures: resuming gives the straight run bit for bit, and a loaded run
reproduces the run's own test accuracy exactly.
"""

import gzip
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from pure_backprop import runs, train
from pure_backprop.augment import affine_augmenter
from pure_backprop.cli import main
from pure_backprop.core import StatefulLayer, lift
from pure_backprop.data import load_digits, split_validation
from pure_backprop.layers import softmax_cross_entropy
from pure_backprop.network import deep_conv_net, mlp, simple_conv_net
from pure_backprop.runs import Checkpoint, RunError

OPTIONS = {"dataset": "digits", "model": "mlp", "hidden": [4], "activation": "relu", "init": "he", "batchnorm": True,
           "dropout": 0.1, "weight_decay": 0.0, "optimizer": "adam", "lr": 0.01, "schedule": "constant",
           "batch_size": 100, "augment": None, "validation": 0.2, "seed": 0, "epochs": 3, "image_shape": [8, 8],
           "num_classes": 10, "train_samples": 1150, "data_dir": None}


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.asarray(u).dtype == np.asarray(v).dtype and np.array_equal(u, v)
                                      for u, v in zip(la, lb))


# --- fit's key schedule ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_fit():
    """fit's arguments for 7 epochs of an MLP with batch norm, dropout and augmentation."""
    data = load_digits()
    x, y = data.x_train[:300], data.y_train[:300]
    net = mlp((8,), 10, batchnorm=True, drop_rate=0.1)
    params, state, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    args = (net, softmax_cross_entropy, optax.adam(1e-2), params, x, y)
    kwargs = dict(epochs=7, batch_size=50, key=jax.random.PRNGKey(1), state=state, augment=affine_augmenter((8, 8)),
                  evaluate_on={"test": (data.x_test[:100], data.y_test[:100])})
    return args, kwargs


def test_fit_gives_the_same_run_bit_for_bit_however_its_epochs_are_cut_into_calls(small_fit):
    args, kwargs = small_fit
    results = [train.fit(*args, **kwargs, epochs_per_call=n) for n in (1, 3, 7)]
    for result in results[1:]:
        assert _leaves_equal((result.params, result.state, result.opt_state),
                             (results[0].params, results[0].state, results[0].opt_state))
        assert result.history == results[0].history
    # stopped after a call and continued from what it returned: the same run again
    calls = iter(range(10))
    first = train.fit(*args, **kwargs, epochs_per_call=3, should_stop=lambda: next(calls) >= 1)
    assert first.interrupted and len(first.history) == 3
    rest = train.fit(*args[:3], first.params, *args[4:], **{**kwargs, "state": first.state}, epochs_per_call=2,
                     opt_state=first.opt_state, start_epoch=3)
    assert [r["epoch"] for r in rest.history] == [4, 5, 6, 7] and first.history + rest.history == results[0].history
    assert _leaves_equal((rest.params, rest.state, rest.opt_state),
                         (results[0].params, results[0].state, results[0].opt_state))


def test_every_epoch_draws_its_own_order_from_the_run_key_and_its_index():
    key = jax.random.PRNGKey(1)
    orders = [np.asarray(train.epoch_batches(jax.random.split(train.epoch_key(key, e), 3)[0], 300, 50)).tobytes()
              for e in range(50)]
    assert len(set(orders)) == 50  # no two epochs share a permutation
    np.testing.assert_array_equal(train.epoch_key(key, 3), jax.random.fold_in(key, 3))
    # fit trains epoch e (from 0) with epoch_key(key, e): one epoch at start_epoch=5 is that epoch
    data = load_digits()
    net = mlp((8,), 10)
    params, _ = net.init(jax.random.PRNGKey(0), (-1, 64))
    optimizer = optax.sgd(0.1)
    x, y = jnp.asarray(data.x_train[:300]), jnp.asarray(data.y_train[:300])
    result = train.fit(net, softmax_cross_entropy, optimizer, params, x, y, epochs=6, batch_size=50, key=key,
                       start_epoch=5)
    expected, _, _ = train.make_train_epoch(net, softmax_cross_entropy, optimizer, 50)(
        params, optimizer.init(params), train.epoch_key(key, 5), x, y)
    for a, b in zip(jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [r["epoch"] for r in result.history] == [6]


def test_fit_checkpoints_at_each_multiple_and_refuses_a_bad_start(small_fit):
    args, kwargs = small_fit
    seen = []
    result = train.fit(*args, **kwargs, epochs_per_call=3, checkpoint_every=2,
                       on_checkpoint=lambda r: seen.append((len(r.history), r)))
    assert [n for n, _ in seen] == [2, 4, 6]  # at each multiple before the last epoch, whatever the call size
    rest = train.fit(*args[:3], seen[1][1].params, *args[4:], **{**kwargs, "state": seen[1][1].state},
                     opt_state=seen[1][1].opt_state, start_epoch=4)
    assert _leaves_equal(rest.params, result.params)
    for start, message in [(7, r"start_epoch must be an int in \[0, epochs\) = \[0, 7\)"), (-1, "start_epoch"),
                           (True, "start_epoch"), (1.0, "start_epoch")]:
        with pytest.raises(ValueError, match=message):
            train.fit(*args, **kwargs, start_epoch=start)
    for every in (0, True, 2.0):
        with pytest.raises(ValueError, match=r"fit: checkpoint_every must be a positive int or None, got"):
            train.fit(*args, **kwargs, checkpoint_every=every)


# --- checkpoints, without training ---------------------------------------------------------


def _checkpoint(options=OPTIONS, epoch=2, seed=0):
    network, in_shape = runs.network_for(options)
    params, state, _ = lift(network).init(jax.random.PRNGKey(seed), in_shape)
    opt_state = runs.optimizer_for(options).init(params)
    history = [{"epoch": e + 1, "batch_loss": 2.0 - e / 3, "test_accuracy": 0.5 + e / 7} for e in range(epoch)]
    return Checkpoint(params, state, opt_state, jax.random.PRNGKey(7), epoch, history, dict(options))


def test_a_checkpoint_reads_back_exactly_what_was_written(tmp_path):
    written = _checkpoint()
    path = runs.save_checkpoint(tmp_path / "checkpoint.npz", written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # no temporary file left
    read, network = runs.load_checkpoint(path)
    assert jax.tree_util.tree_structure(lift(network).init(jax.random.PRNGKey(0), (-1, 64))[:2]) == \
        jax.tree_util.tree_structure((written.params, written.state))
    assert _leaves_equal((read.params, read.state, read.opt_state, read.key),
                         (written.params, written.state, written.opt_state, written.key))
    assert jax.tree_util.tree_structure(read.opt_state) == jax.tree_util.tree_structure(written.opt_state)
    assert read.epoch == 2 and read.history == written.history
    assert {k: v for k, v in read.options.items()} == {**OPTIONS, "image_shape": (8, 8)}
    with zipfile.ZipFile(path) as archive:  # a zip of .npy arrays and a readable manifest
        manifest = json.loads(archive.read("manifest.json"))
        names = archive.namelist()
    assert manifest["format"] == "pure_backprop.checkpoint" and manifest["version"] == 1 and manifest["epoch"] == 2
    assert {"key.npy", "params/0/W.npy", "state/1/mean.npy", "opt_state/0/mu/0/W.npy", "history/epoch.npy",
            "history/batch_loss.npy"} <= set(names)
    assert {"key": "params/0/W", "dtype": "<f4", "shape": [64, 4]} in manifest["arrays"]
    assert manifest["history"] == ["epoch", "batch_loss", "test_accuracy"]
    assert {"key": "history/epoch", "dtype": "<i8", "shape": [2]} in manifest["arrays"]
    assert all(type(r["epoch"]) is int and type(r["batch_loss"]) is float for r in read.history)
    assert set(manifest["trees"]) == {"params", "state", "opt_state"} and len(manifest["sha256"]) == 64
    assert "ScaleByAdamState" in manifest["trees"]["opt_state"] and "'gamma'" in manifest["trees"]["params"]
    assert "'mean'" in manifest["trees"]["state"]
    # a typed key is stored as its data; a run of no epoch has an empty history
    empty = runs.save_checkpoint(tmp_path / "typed.npz", _checkpoint(epoch=0)._replace(key=jax.random.key(7)))
    again = runs.load_checkpoint(empty)[0]
    np.testing.assert_array_equal(again.key, jax.random.key_data(jax.random.key(7)))
    assert again.history == [] and again.epoch == 0
    one = runs.save_checkpoint(tmp_path / "one.npz", _checkpoint(epoch=1))  # the fields of the first epoch's record
    assert runs.load_checkpoint(one)[0].history == [{"epoch": 1, "batch_loss": 2.0, "test_accuracy": 0.5}]


def _rewrite(path, change):
    """Rewrite the zip ``path`` with ``change(name, bytes) -> bytes or None`` (None drops the member)."""
    with zipfile.ZipFile(path) as archive:
        members = [(name, archive.read(name)) for name in archive.namelist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members:
            raw = change(name, raw)
            if raw is not None:
                archive.writestr(name, raw)


def _npy(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _append(path, name, raw):
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, raw)


def _edit_manifest(edit):
    def change(name, raw):
        if name != "manifest.json":
            return raw
        manifest = json.loads(raw)
        edit(manifest)
        return json.dumps(manifest).encode()

    return change


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-300]), r"not a readable checkpoint, truncated or damaged"),
    "empty": (lambda p: p.write_bytes(b""), r"not a readable checkpoint, truncated or damaged"),
    "an edited weight": (lambda p: _rewrite(p, lambda n, r: _npy(np.ones((64, 4), np.float32)) if n == "params/0/W.npy"
                                            else r), r"the arrays do not match the manifest's sha256"),
    "a weight of another dtype, same bytes": (
        lambda p: _rewrite(p, lambda n, r: r.replace(b"'descr': '<f4'", b"'descr': '<i4'") if n == "params/0/W.npy"
                           else r), r"the arrays do not match the manifest's sha256"),
    "an edited epoch": (lambda p: _rewrite(p, _edit_manifest(lambda m: m.update(epoch=1))),
                        r"the arrays do not match the manifest's sha256"),
    "an edited option": (lambda p: _rewrite(p, _edit_manifest(lambda m: m["options"].update(lr=0.5))),
                         r"the arrays do not match the manifest's sha256"),
    "a dropped array": (lambda p: _rewrite(p, lambda n, r: None if n == "state/1/var.npy" else r),
                        r"the arrays do not match the manifest's sha256"),
    "an added array": (lambda p: _append(p, "x.npy", _npy(np.ones(2))), r"the arrays do not match the manifest's sha256"),
    "a manifest without its hash": (lambda p: _rewrite(p, _edit_manifest(lambda m: m.pop("sha256"))),
                                    r"the arrays do not match the manifest's sha256"),
    "a manifest whose arrays are a number": (lambda p: _rewrite(p, _edit_manifest(lambda m: m.update(arrays=5))),
                                              r"the arrays do not match the manifest's sha256"),
    "a weight of another shape, same bytes": (
        lambda p: _rewrite(p, lambda n, r: _npy(np.load(__import__("io").BytesIO(r)).reshape(4, 64))
                           if n == "params/0/W.npy" else r), r"the arrays do not match the manifest's sha256"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), r"not a readable checkpoint, truncated or damaged \(\[Errno 21\]"),
    "a manifest without its arrays": (lambda p: _rewrite(p, _edit_manifest(lambda m: m.pop("arrays"))),
                                      r"the arrays do not match the manifest's sha256"),
    "no manifest": (lambda p: _rewrite(p, lambda n, r: None if n == "manifest.json" else r),
                    r"not a pure_backprop checkpoint \(no manifest.json in it\)"),
    "another format": (lambda p: _rewrite(p, _edit_manifest(lambda m: m.update(format="other"))),
                       r"not a pure_backprop checkpoint \(its manifest names no format 'pure_backprop.checkpoint'\)"),
    "a manifest that is a list": (lambda p: _rewrite(p, lambda n, r: b"[1]" if n == "manifest.json" else r),
                                  r"not a pure_backprop checkpoint \(its manifest names no format"),
    "a later version": (lambda p: _rewrite(p, _edit_manifest(lambda m: m.update(version=2))),
                        r"checkpoint format version 2; this version of pure_backprop reads version 1"),
    "a pickled array": (lambda p: _rewrite(p, lambda n, r: _npy(np.array([{}], object)) if n == "key.npy" else r),
                        r"not a readable checkpoint, truncated or damaged \(Object arrays cannot be loaded"),
    "a missing file": (lambda p: p.unlink(), r"no such checkpoint"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_edited_checkpoint_is_refused_naming_the_file(damage, tmp_path):
    path = runs.save_checkpoint(tmp_path / "checkpoint.npz", _checkpoint())
    make, message = DAMAGE[damage]
    make(path)
    with pytest.raises(RunError, match=rf"^{tmp_path / 'checkpoint.npz'}: {message}"):
        runs.load_checkpoint(path)


def _resigned(path, edit):
    """Edit the manifest and the arrays, then sign them again: a consistent file that lies."""
    with np.load(path, allow_pickle=False) as archive:
        manifest = json.loads(archive["manifest.json"])
        arrays = {k: archive[k] for k in archive.files if k != "manifest.json"}
    edit(manifest, arrays)
    manifest["arrays"] = [{"key": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()]
    manifest["sha256"] = runs._digest(manifest, arrays)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for k, a in arrays.items():
            archive.writestr(k + ".npy", _npy(a))


@pytest.mark.parametrize("edit,message", [
    (lambda m, a: m["options"].update(hidden=[5]),
     r"params/0/W is float32 \(64, 4\), but the network of the run's options needs float32 \(64, 5\)"),
    (lambda m, a: a.update({"params/0/W": a["params/0/W"].astype(np.float64)}),
     r"params/0/W is float64 \(64, 4\), but the network of the run's options needs float32 \(64, 4\)"),
    (lambda m, a: m["options"].update(batchnorm=False),
     r"not the params of this network: missing params/0/b, params/3/W, params/3/b; unexpected params/1/beta, "
     r"params/1/gamma, params/4/W, params/4/b$"),
    (lambda m, a: a.pop("state/1/mean"), r"not the state of this network: missing state/1/mean$"),
    (lambda m, a: a.update({"opt_state/9": np.zeros(1)}), r"not the opt_state of this network: unexpected opt_state/9$"),
    (lambda m, a: m["options"].update(hidden=None), r"options that build no network \('NoneType' object is not "
                                                   r"iterable\)"),
    (lambda m, a: m["options"].update(optimizer="lbfgs"), r"options that build no network \('lbfgs'\)"),
    (lambda m, a: m["options"].update(model="resnet"),
     r"options that build no network \(model must be mlp, convnet or deepconvnet, got 'resnet'\)"),
    (lambda m, a: m["options"].pop("seed"), r"not the options of a run: seed missing"),
    (lambda m, a: m.update(options=[1]), r"not the options of a run: dataset, model, .*, seed, train_samples missing"),
    (lambda m, a: m.update(options=5), r"not the options of a run: dataset, model, .*, seed, train_samples missing"),
    (lambda m, a: a.update({"history/epoch": a["history/epoch"][:1]}), r"the arrays do not match the manifest's sha256"),
])
def test_a_consistent_checkpoint_of_another_network_is_refused(edit, message, tmp_path):
    path = runs.save_checkpoint(tmp_path / "checkpoint.npz", _checkpoint())
    _resigned(path, edit)
    with pytest.raises(RunError, match=rf"^{path}: {message}"):
        runs.load_checkpoint(path)


def test_the_manifest_hash_does_not_depend_on_the_order_of_its_keys(tmp_path):
    path = runs.save_checkpoint(tmp_path / "checkpoint.npz", _checkpoint())
    _rewrite(path, lambda n, r: json.dumps(dict(reversed(json.loads(r).items()))).encode() if n == "manifest.json"
             else r)
    assert runs.load_checkpoint(path)[0].epoch == 2


def test_a_checkpoint_is_written_beside_its_place_and_renamed_into_it(tmp_path, monkeypatch):
    renamed = []
    real = runs.os.replace
    monkeypatch.setattr(runs.os, "replace", lambda a, b: (renamed.append((a, b)), real(a, b)))
    runs.save_checkpoint(tmp_path / "checkpoint.npz", _checkpoint())
    (source, target), = renamed
    assert Path(source).parent == tmp_path and Path(source).name.startswith("checkpoint.npz")
    assert Path(source).name.endswith(".tmp") and Path(target) == tmp_path / "checkpoint.npz"


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path):
    path = runs.save_checkpoint(tmp_path / "checkpoint.npz", _checkpoint(epoch=2))
    broken = _checkpoint(epoch=3)._replace(state=[np.array([{}], dtype=object)])
    with pytest.raises(ValueError, match="Object arrays cannot be saved when allow_pickle=False"):
        runs.save_checkpoint(path, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    assert runs.load_checkpoint(path)[0].epoch == 2


def _legacy_folder(folder, options=OPTIONS, params_of=None, **metrics):
    """A run folder as pure-backprop train wrote it before checkpoints: metrics.json and params.npz."""
    folder.mkdir()
    written = _checkpoint(params_of or options)
    arrays = {**train.as_numpy_tree(written.params, "params"), **train.as_numpy_tree(written.state, "state")}
    np.savez(folder / "params.npz", **arrays)
    old = {k: v for k, v in options.items() if k not in ("validation", "image_shape", "num_classes", "data_dir",
                                                         "epochs")}
    (folder / "metrics.json").write_text(json.dumps({**old, "validation_samples": 287, "epochs": 2,
                                                     "epochs_requested": 3, **metrics}))
    return written


def test_a_run_written_before_checkpoints_loads_from_metrics_and_params(tmp_path):
    written = _legacy_folder(tmp_path / "run", seed=3)
    run = runs.load_run(tmp_path / "run")
    assert _leaves_equal((run.params, run.state), (written.params, written.state)) and run.epoch == 2
    assert run.options["validation"] == 287 / (1150 + 287) and run.options["image_shape"] == (8, 8)
    assert run.options["num_classes"] == 10 and run.options["epochs"] == 3 and run.options["data_dir"] is None
    data = runs.run_dataset(run)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1150, 287, 360)
    split = split_validation(load_digits(seed=3), 287 / 1437, seed=3)  # the run's split again: its seed chose it
    for a, b in zip(data[:4] + data[7:], split[:4] + split[7:]):
        np.testing.assert_array_equal(a, b)
    probabilities = runs.predict(run, data.x_test)
    assert probabilities.shape == (360, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    loss, accuracy = runs.evaluate(run, data.x_test, data.y_test)
    assert round(accuracy * 360) == np.sum(probabilities.argmax(axis=1) == data.y_test)
    np.testing.assert_allclose(loss, -np.mean(np.log(probabilities[np.arange(360), data.y_test])), rtol=1e-4)
    with pytest.raises(ValueError, match=r"the run's network takes samples of 64 values \(8 x 8 images\), got an "
                                         r"array of shape \(2, 63\)"):
        runs.predict(run, np.zeros((2, 63), np.float32))
    # the images may come shaped (N, 8, 8): the same probabilities as the same images flat (the same
    # batch: XLA may pick another kernel, and round otherwise, for 5 rows than for 360)
    np.testing.assert_array_equal(runs.predict(run, data.x_test[:5].reshape(5, 8, 8)), runs.predict(run, data.x_test[:5]))
    np.testing.assert_allclose(runs.predict(run, data.x_test[:5]), probabilities[:5], rtol=1e-5)


def test_a_run_folder_whose_state_is_not_its_networks_is_refused_naming_its_params_file(tmp_path):
    _legacy_folder(tmp_path / "run")
    path = tmp_path / "run" / "params.npz"
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    state_key = next(k for k in arrays if k.startswith("state/"))
    arrays[state_key] = arrays[state_key][:-1]  # one running average too short
    np.savez(path, **arrays)
    with pytest.raises(runs.RunError, match=rf"^{re.escape(str(path))}: {re.escape(state_key)} is float32 "):
        runs.load_run(tmp_path / "run")


def test_a_plain_network_loads_predicts_and_evaluates_from_its_checkpoint(tmp_path):
    options = dict(OPTIONS, batchnorm=False, dropout=0.0, validation=0.0)
    written = _checkpoint(options)
    (tmp_path / "run").mkdir()
    runs.save_checkpoint(tmp_path / "run" / "checkpoint.npz", written)
    run = runs.load_run(tmp_path / "run")
    assert run.state == () and _leaves_equal(run.params, written.params)
    data = runs.run_dataset(run)
    assert data.x_val is None and len(data.x_train) == 1437
    one = runs.predict(run, data.x_test[:1])
    scores = run.network.forward(run.params, jnp.asarray(data.x_test[:1]))[0]
    np.testing.assert_allclose(one, jax.nn.softmax(scores, axis=-1), rtol=1e-6)
    loss, accuracy = runs.evaluate(run, data.x_test, data.y_test)
    assert round(accuracy * 360) == np.sum(runs.predict(run, data.x_test).argmax(axis=1) == data.y_test)
    # as training evaluates: batches of max(batch_size, 500), the last padded
    trained = train.make_evaluate(run.network, softmax_cross_entropy, 500)(run.params, data.x_train, data.y_train)
    assert runs.evaluate(run, data.x_train, data.y_train) == tuple(float(v) for v in trained)
    for x in (np.float32(0), np.zeros(64, np.float32), np.zeros((0, 64), np.float32)):
        with pytest.raises(ValueError, match=r"takes samples of 64 values \(8 x 8 images\), got an array of shape "
                                             + __import__("re").escape(str(np.shape(x))) + "$"):
            runs.predict(run, x)


@pytest.mark.parametrize("model,shape,expected", [
    ("mlp", (8, 8), lambda: (mlp((4,), 7, "tanh", init="book", batchnorm=True, drop_rate=0.3), (-1, 64))),
    ("convnet", (8, 8), lambda: (simple_conv_net(7, init="book", padding=2), (-1, 1, 8, 8))),  # 8x8 kept
    ("convnet", (28, 28), lambda: (simple_conv_net(7, init="book", padding=0), (-1, 1, 28, 28))),  # the book's
    ("deepconvnet", (8, 8), lambda: (deep_conv_net(7, drop_rate=0.3), (-1, 1, 8, 8))),
    ("deepconvnet", (28, 28), lambda: (deep_conv_net(7, paddings=(1, 1, 1, 2, 1, 1), drop_rate=0.3), (-1, 1, 28, 28))),
])
def test_the_network_of_a_runs_options_is_the_one_training_built(model, shape, expected):
    options = dict(OPTIONS, model=model, image_shape=list(shape), activation="tanh", init="book", dropout=0.3,
                   num_classes=7)
    network, in_shape = runs.network_for(options)
    want, want_shape = expected()
    assert in_shape == want_shape
    built = [lift(net).init(jax.random.PRNGKey(0), in_shape)[:2] for net in (network, want)]
    assert _leaves_equal(*built)  # the same layers, shapes and initialization
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, *in_shape[1:]))
    outputs = [lift(net).forward(*init, x, jax.random.PRNGKey(2), True)[0] for net, init in zip((network, want), built)]
    np.testing.assert_array_equal(*outputs)  # the same activation and dropout rate
    with pytest.raises(ValueError, match=r"^deepconvnet needs images of at least 8x8 pixels, got \(4, 7\)$"):
        runs.network_for(dict(options, model="deepconvnet", image_shape=[4, 7]))


def test_mnist_options_fill_their_image_shape_and_data_folder(tmp_path, monkeypatch):
    options = runs.run_options({**OPTIONS, "dataset": "mnist", "image_shape": None, "data_dir": "d/m"}, "here")
    assert options["image_shape"] == (28, 28) and options["data_dir"] == "d/m"
    recorded = runs.run_options({**OPTIONS, "dataset": "mnist", "image_shape": [20, 24], "data_dir": "d/m"}, "here")
    assert recorded["image_shape"] == (20, 24)  # a recorded shape wins over the dataset's usual one
    assert runs.run_options({**OPTIONS, "num_classes": 4}, "here")["num_classes"] == 4  # and recorded classes
    from test_data_cli import write_mnist

    write_mnist(tmp_path / "mnist", n_train=200, n_test=10)
    run = runs.Run(None, None, None, {**options, "validation": 0.25, "data_dir": str(tmp_path / "mnist")}, 0)
    data = runs.run_dataset(run)
    assert (len(data.x_train), len(data.x_val), len(data.x_test), data.image_shape) == (150, 50, 10, (4, 4))
    assert len(runs.run_dataset(run._replace(options={**run.options, "data_dir": None}), tmp_path / "mnist").x_test) == 10
    monkeypatch.chdir(tmp_path)  # with no folder given or recorded: data/mnist
    with pytest.raises(__import__("pure_backprop").data.DataError, match=r"^data/mnist: data folder does not exist"):
        runs.run_dataset(run._replace(options={**run.options, "data_dir": None}))


@pytest.mark.parametrize("setup,message", [
    (lambda f: None, r"{f}: not a run folder \(no such folder\); give the folder that pure-backprop train wrote"),
    (lambda f: f.write_text("x"), r"{f}: not a run folder \(a file\)"),
    (lambda f: f.mkdir(), r"{f}: not a run folder: it holds neither checkpoint.npz nor metrics.json"),
    (lambda f: (f.mkdir(), (f / "metrics.json").write_text("{")),
     r"{f}/metrics.json: not readable as a run's metrics.json \(Expecting property name"),
    (lambda f: (f.mkdir(), (f / "metrics.json").write_text('{"model": "mlp"}')),
     r"{f}/metrics.json: not the options of a run: dataset, hidden, .* missing"),
    (lambda f: (f.mkdir(), (f / "metrics.json").mkdir()),
     r"{f}/metrics.json: not readable as a run's metrics.json \(\[Errno 21\] Is a directory"),
    (lambda f: (f.mkdir(), (f / "metrics.json").write_bytes(b"\xff\xfe{}")),
     r"{f}/metrics.json: not readable as a run's metrics.json \('utf-8' codec can't decode"),
    (lambda f: _legacy_folder(f, model="resnet"),
     r"{f}/metrics.json: options that build no network \(model must be mlp, convnet or deepconvnet, got 'resnet'\)"),
    (lambda f: (_legacy_folder(f), (f / "params.npz").write_bytes(b"")),
     r"{f}/params.npz: not a readable npz, truncated or damaged \(No data left in file\)"),
    (lambda f: (_legacy_folder(f), np.savez(f / "params.npz", **{"params/0/W": np.array([{}], object)})),
     r"{f}/params.npz: not a readable npz, truncated or damaged \(Object arrays cannot be loaded"),
    (lambda f: (_legacy_folder(f), (f / "params.npz").unlink(), (f / "params.npz").mkdir()),
     r"{f}/params.npz: not a readable npz, truncated or damaged \(\[Errno 21\]"),
    (lambda f: (_legacy_folder(f), (f / "params.npz").unlink()),
     r"{f}/params.npz: missing; the run folder holds metrics.json but no parameters"),
    (lambda f: (_legacy_folder(f), (f / "params.npz").write_bytes(b"PK\x03\x04 broken")),
     r"{f}/params.npz: not a readable npz, truncated or damaged"),
    (lambda f: _legacy_folder(f, params_of={**OPTIONS, "hidden": [6]}),
     r"{f}/params.npz: params/0/W is float32 \(64, 6\), but the network of the run's options needs float32 \(64, 4\)"),
    (lambda f: (_legacy_folder(f, validation=0.2), runs.save_checkpoint(f / "checkpoint.npz", _checkpoint({**OPTIONS, "hidden": [6],
                                                                                            "seed": 3}))),
     r"{f}/checkpoint.npz: the checkpoint of another run: its hidden, seed differ from {f}/metrics.json's"),
])
def test_what_is_not_a_run_is_refused_naming_the_file(setup, message, tmp_path):
    folder = tmp_path / "run"
    setup(folder)
    with pytest.raises(RunError, match="^" + message.format(f=folder)):
        runs.load_run(folder)


# --- input files for predict ---------------------------------------------------------------


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


def _ink(counts):
    """The digits' 0..16 counts as a 32x32 8-bit image, each pixel 4x4 (the box filter gives them back)."""
    return (np.kron(counts.astype(np.int64), np.ones((4, 4), np.int64)) * 255 // 16).astype(np.uint8)


def test_images_files_arrays_and_idx_become_the_runs_inputs(tmp_path):
    digits = load_digits()
    image = digits.x_test[0].reshape(8, 8)
    counts = np.rint(image * 16).astype(np.uint8)  # the digits' own 0..16
    ink = _ink(counts)
    options = dict(OPTIONS, image_shape=(8, 8))
    dark_on_white = _png(tmp_path / "dark.png", 255 - ink)
    light_on_dark = _png(tmp_path / "light.png", ink)
    expected = (counts.astype(np.int64) * 255 // 16) / 255
    for path in (dark_on_white, light_on_dark):
        np.testing.assert_allclose(runs.read_images(path, options), expected[None], atol=1e-6)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 3] = ink  # black ink on a transparent ground: white where transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    read = runs.read_images(tmp_path / "rgba.png", options)[0]
    np.testing.assert_allclose(read, expected, atol=1.01 / 255)  # Pillow's compositing rounds
    assert np.all(read[expected == 0] == 0)  # the transparent ground is white: 0 once inverted
    Image.fromarray(255 - ink).save(tmp_path / "dark.jpg", quality=95)
    assert np.abs(runs.read_images(tmp_path / "dark.jpg", options) - expected).max() < 0.05
    assert runs.read_images(tmp_path / "dark.jpg", options).dtype == np.float32
    # arrays: integers in the run's range (0..16 for the digits), floats in [0, 1], one, many or flattened
    for name, array, want in [("counts.npy", counts, image[None]), ("many.npy", np.stack([counts] * 3), [image] * 3),
                              ("flat.npy", digits.x_test[:2], digits.x_test[:2].reshape(2, 8, 8)),
                              ("one.npy", digits.x_test[0], image[None]),
                              ("float.npy", np.kron(image, np.ones((2, 2))), image[None])]:
        np.save(tmp_path / name, array)
        np.testing.assert_allclose(runs.read_images(tmp_path / name, options), want, atol=1e-6, err_msg=name)
    idx = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", 2, 8, 8) + np.stack([counts] * 2).tobytes()
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(idx))
    np.testing.assert_allclose(runs.read_images(tmp_path / "images-idx3-ubyte.gz", options), [image] * 2, atol=1e-6)
    wide = np.kron(np.arange(24, dtype=np.float32).reshape(4, 6) / 24, np.ones((2, 2), np.float32))  # 8x12
    np.save(tmp_path / "wide.npy", wide)  # resized to a run's 4x6: each 2x2 block averaged
    np.testing.assert_allclose(runs.read_images(tmp_path / "wide.npy", dict(options, image_shape=(4, 6))),
                               [np.arange(24).reshape(4, 6) / 24], atol=1e-6)
    mnist = dict(options, dataset="mnist")  # an MNIST run scales integers from 0..255
    np.testing.assert_allclose(runs.read_images(tmp_path / "counts.npy", mnist), counts[None] / 255, atol=1e-7)


def test_a_picture_is_inverted_when_its_outermost_pixels_are_light(tmp_path):
    options = dict(OPTIONS, image_shape=(10, 10))
    ring = np.zeros((10, 10), np.uint8)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = 153, 153, 153, 153  # 0.6 on the border, dark inside
    read = runs.read_images(_png(tmp_path / "ring.png", ring), options)[0]
    np.testing.assert_allclose(read, 1 - ring / 255, atol=1e-6)  # the border alone decides: light, so inverted
    for value, inverted in ((128, True), (127, False)):  # the border's mean against one half
        read = runs.read_images(_png(tmp_path / f"{value}.png", np.full((10, 10), value, np.uint8)), options)[0]
        np.testing.assert_allclose(read, 1 - value / 255 if inverted else value / 255, atol=1e-6)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit level, on a light border
    levels[0], levels[-1], levels[:, 0], levels[:, -1] = 255, 255, 255, 255
    read = runs.read_images(_png(tmp_path / "levels.png", levels), dict(OPTIONS, image_shape=(16, 16)))[0]
    assert read.dtype == np.float32  # each inverted level is the float32 nearest to (255 - k) / 255, not one ulp off
    np.testing.assert_array_equal(read, ((255 - levels.astype(np.float64)) / 255).astype(np.float32))
    checker = np.array([[255, 0], [0, 255]], np.uint8)  # a border of mean exactly 0.5: kept as it is
    np.testing.assert_allclose(runs.read_images(_png(tmp_path / "checker.png", checker),
                                                dict(OPTIONS, image_shape=(2, 2)))[0], checker / 255)


@pytest.mark.parametrize("name,content,message", [
    ("big.npy", np.full((8, 8), 17), r"int64 pixels from 17 to 17, but this digits run takes integers from 0 to 16"),
    ("negative.npy", np.full((8, 8), -1.0), r"float64 pixels from -1.0 to -1.0, but this digits run takes floats in "
                                            r"\[0, 1\]"),
    ("above.npy", np.full((8, 8), 1.5), r"float64 pixels from 1.5 to 1.5, but this digits run takes floats in \[0, 1\]"),
    ("text.npy", np.array(["a"]), r"expected an array of floats in \[0, 1\] or of integer pixels, got <U1"),
    ("cube.npy", np.zeros((2, 2, 8, 8)), r"expected one image \(h, w\), several \(N, h, w\) or flattened ones "
                                         r"\(N, 64\), got an array of shape \(2, 2, 8, 8\)"),
    ("none.npy", np.zeros((0, 8, 8)), r"expected one image .* got an array of shape \(0, 8, 8\)"),
    ("pickle.npy", np.array([{}], dtype=object), r"not a readable .npy array \(Object arrays cannot be loaded"),
    ("cut.npy", b"\x93NUMPY\x01\x00", r"not a readable .npy array"),
    ("notes.txt", b"hello", r"not an IDX file \(wrong magic number 68656c6c\); predict reads PNG, JPEG, .npy and IDX"),
    ("broken.png", b"\x89PNG\r\n\x1a\nbroken", r"not a readable image"),
    ("missing.png", None, r"cannot read \(No such file or directory\)"),
])
def test_a_file_predict_cannot_use_is_refused_naming_it(name, content, message, tmp_path):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(RunError, match=f"^{path}: {message}"):
        runs.read_images(path, dict(OPTIONS, image_shape=(8, 8)))


# --- the command line: small runs, shared --------------------------------------------------

SMALL = ["--hidden", "16", "--no-progress"]


def _run(tmp, name, *argv, code=0):
    assert main(["train", *argv, *SMALL, *([] if "--resume" in argv else ["--out", str(tmp / name)])]) == code
    return tmp / name


def _same_run(a, b):
    """The same parameters, state, optimizer state and history, bit for bit."""
    one, two = runs.load_checkpoint(a / "checkpoint.npz")[0], runs.load_checkpoint(b / "checkpoint.npz")[0]
    assert _leaves_equal((one.params, one.state, one.opt_state, one.key), (two.params, two.state, two.opt_state, two.key))
    assert one.history == two.history and one.epoch == two.epoch
    with np.load(a / "params.npz") as pa, np.load(b / "params.npz") as pb:
        assert pa.files == pb.files and all(np.array_equal(pa[k], pb[k]) for k in pa.files)
    ma, mb = (json.loads((f / "metrics.json").read_text()) for f in (a, b))
    assert ma["history"] == mb["history"] and ma["test_accuracy"] == mb["test_accuracy"]
    return ma, mb


def _stop_after(monkeypatch, epochs, crash=False):
    """Make the command's fit stop (as Ctrl-C does), or crash, once ``epochs`` epochs are done."""
    real = train.fit

    def fit(*args, on_epochs=None, should_stop=None, **kwargs):
        done = []

        def count(records):
            done.extend(records)
            on_epochs(records)
            if crash and len(done) >= epochs:
                raise RuntimeError("simulated crash")

        return real(*args, on_epochs=count, should_stop=lambda: len(done) >= epochs, **kwargs)

    monkeypatch.setattr(train, "fit", fit)


@pytest.fixture(scope="module")
def cli_runs(built_once):
    """Straight runs of 4 epochs and runs of 2 resumed to 4: the MLP with augmentation, with batch
    norm and dropout, and the convnet (its cosine schedule spans 4 epochs: stopped at 2, as by Ctrl-C)."""

    def build(tmp):
        bn = ["--batchnorm", "--dropout", "0.1", "--augment", "none"]
        _run(tmp, "mlp", "--epochs", "4")
        _run(tmp, "mlp_half", "--epochs", "2")
        _run(tmp, "bn", "--epochs", "4", *bn)
        _run(tmp, "bn_half", "--epochs", "2", *bn)
        _run(tmp, "mlp_half", "--resume", str(tmp / "mlp_half"), "--epochs", "4")
        _run(tmp, "bn_half", "--resume", str(tmp / "bn_half"), "--epochs", "4", "--batchnorm")  # as it was: allowed
        conv = ["--model", "convnet", "--no-progress", "--epochs", "4"]
        assert main(["train", *conv, "--out", str(tmp / "conv")]) == 0
        with pytest.MonkeyPatch.context() as patch:
            _stop_after(patch, 2)
            assert main(["train", *conv, "--out", str(tmp / "conv_half")]) == 130
        shutil.copytree(tmp / "conv_half", tmp / "conv_stopped")
        assert main(["train", "--resume", str(tmp / "conv_half"), "--no-progress"]) == 0

    tmp = built_once("runs", build)
    return {name: tmp / name for name in ("mlp", "mlp_half", "bn", "bn_half", "conv", "conv_half", "conv_stopped")}


def test_cli_two_epochs_resumed_to_four_are_four_epochs_straight_bit_for_bit(cli_runs):
    for name in ("mlp", "bn", "conv"):
        straight, resumed = _same_run(cli_runs[name], cli_runs[name + "_half"])
        assert resumed["resumed_from_epoch"] == 2 and straight["resumed_from_epoch"] is None
        assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3, 4] and resumed["epochs"] == 4
    stopped = json.loads((cli_runs["conv_stopped"] / "metrics.json").read_text())
    assert stopped["interrupted"] and stopped["epochs"] == 2 and stopped["epochs_requested"] == 4


def test_cli_a_crashed_run_resumes_from_its_last_periodic_checkpoint(cli_runs, tmp_path, monkeypatch):
    out = tmp_path / "crashed"
    bn = ["--batchnorm", "--dropout", "0.1", "--augment", "none", "--epochs", "4", "--checkpoint-every", "2"]
    with monkeypatch.context() as patch:
        _stop_after(patch, 3, crash=True)
        with pytest.raises(RuntimeError, match="simulated crash"):
            main(["train", *bn, *SMALL, "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz"]  # epoch 2's, whole; nothing else
    assert runs.load_run(out).epoch == 2  # a run folder, from its checkpoint alone
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    _same_run(cli_runs["bn"], out)


def test_cli_a_loaded_run_reproduces_its_own_test_accuracy_exactly(cli_runs, capsys):
    for name in ("mlp", "bn", "conv"):
        folder = cli_runs[name]
        metrics = json.loads((folder / "metrics.json").read_text())
        run = runs.load_run(folder)
        data = runs.run_dataset(run)
        loss, accuracy = runs.evaluate(run, data.x_test, data.y_test)
        assert accuracy == metrics["test_accuracy"], name
        np.testing.assert_allclose(loss, metrics["history"][-1]["test_loss"], rtol=1e-5)
        correct = int(np.sum(runs.predict(run, data.x_test).argmax(axis=1) == data.y_test))
        assert correct == round(accuracy * 360), name  # (XLA's float32 division need not round as NumPy's)
        capsys.readouterr()
        assert main(["evaluate", str(folder)]) == 0
        assert capsys.readouterr().out == (f"{folder}: digits test split, 360 images: loss {loss:.4f}  "
                                           f"accuracy {accuracy:.4f}\n")
    assert main(["evaluate", str(cli_runs["mlp"]), "--split", "val", "--dataset", "digits"]) == 0
    assert "digits val split, 287 images: loss" in capsys.readouterr().out


def test_cli_predict_classifies_png_npy_and_idx_files(cli_runs, tmp_path, capsys):
    folder = cli_runs["mlp"]
    run = runs.load_run(folder)
    data = runs.run_dataset(run)
    expected = runs.predict(run, data.x_test[:3])
    _png(tmp_path / "digit.png", 255 - _ink(np.rint(data.x_test[0].reshape(8, 8) * 16)))
    np.save(tmp_path / "three.npy", data.x_test[:3])
    capsys.readouterr()
    assert main(["predict", str(folder), str(tmp_path / "digit.png"), str(tmp_path / "three.npy"), "--json",
                 "--top", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["file"].rsplit("/", 1)[-1], r["index"]) for r in rows] == [("digit.png", None), ("three.npy", 0),
                                                                         ("three.npy", 1), ("three.npy", 2)]
    np.testing.assert_allclose([r["probabilities"] for r in rows[1:]], expected, rtol=1e-6)
    np.testing.assert_allclose(rows[0]["probabilities"], expected[0], atol=1e-2)  # the PNG holds 8-bit pixels
    for row, p in zip(rows[1:], expected):
        order = np.argsort(-p)
        assert row["class"] == order[0] and [t["class"] for t in row["top"]] == order[:2].tolist()
    assert main(["predict", str(folder), str(tmp_path / "three.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{tmp_path / 'three.npy'}[0]: {int(expected[0].argmax())}  (")
    assert lines[0].count(": ") == 4  # the file, then the top 3 classes


@pytest.mark.parametrize("argv,message", [
    (["--lr", "0.5"], r"--resume {run}: --lr 0.5 would change the run, which trained with --lr 0.1; leave it out"),
    (["--hidden", "32", "--seed", "3", "--augment", "none"],
     r"--hidden 32, --augment none, --seed 3 would change the run, which trained with --hidden 16, --augment affine, "
     r"--seed 0; leave them out to continue the run"),
    (["--batchnorm"], r"--batchnorm on would change the run, which trained with --batchnorm off"),
    (["--model", "convnet"], r"--model convnet would change the run, which trained with --model mlp"),
    (["--epochs", "2"], r"the run has trained 4 epochs; give --epochs above 4 to train it further"),
    (["--out", "{tmp}/elsewhere"], r"--out applies to a new run; --resume {run} continues in the run's own folder"),
])
def test_cli_resuming_with_options_that_change_the_run_is_refused(argv, message, cli_runs, tmp_path, capsys):
    folder = cli_runs["mlp"]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["train", "--resume", str(folder), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pure-backprop: error: ") and __import__("re").search(message.format(run=folder), err), err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


@pytest.mark.parametrize("epochs", ["3", "6"])
def test_cli_a_cosine_run_resumes_only_to_the_epochs_its_schedule_spans(epochs, cli_runs, capsys):
    folder = cli_runs["conv_stopped"]  # 2 of 4 epochs; the schedule decays to 0 over 4
    assert main(["train", "--resume", str(folder), "--epochs", epochs]) == 2
    assert capsys.readouterr().err == (f"pure-backprop: error: --resume {folder}: --epochs {epochs} would change the "
                                       f"run: its cosine schedule spans the 4 epochs it started with; leave --epochs "
                                       f"out to finish them\n")
    finished = cli_runs["conv"]  # 4 of 4 epochs
    assert main(["train", "--resume", str(finished), "--epochs", "6"]) == 2
    assert capsys.readouterr().err.endswith("spans the 4 epochs it started with; train a new run with --epochs 6 "
                                            "instead\n")


@pytest.mark.parametrize("argv,setup,message", [
    (["evaluate", "{tmp}/nothing"], None, r"{tmp}/nothing: not a run folder \(no such folder\)"),
    (["predict", "{tmp}/run", "{tmp}/a.txt"], "text", r"{tmp}/a.txt: not an IDX file"),
    (["evaluate", "{tmp}/run"], "truncated", r"{tmp}/run/checkpoint.npz: not a readable checkpoint, truncated"),
    (["predict", "{tmp}/run", "{tmp}/a.txt"], "truncated", r"{tmp}/run/checkpoint.npz: not a readable checkpoint"),
    (["evaluate", "{tmp}/run", "--dataset", "mnist", "--data-dir", "{tmp}/none"], None,
     r"{tmp}/none: data folder does not exist"),
    (["train", "--resume", "{tmp}/nothing"], None, r"--resume {tmp}/nothing: no such folder; give the folder"),
    (["train", "--resume", "{tmp}/run"], "no checkpoint", r"--resume {tmp}/run: no checkpoint.npz in it"),
    (["train", "--resume", "{tmp}/run"], "truncated",
     r"--resume: {tmp}/run/checkpoint.npz: not a readable checkpoint, truncated or damaged"),
])
def test_cli_a_file_that_is_not_a_run_gives_one_line_and_exit_2(argv, setup, message, cli_runs, tmp_path, capsys):
    shutil.copytree(cli_runs["mlp"], tmp_path / "run")
    (tmp_path / "a.txt").write_text("hello")
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    if setup == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif setup == "no checkpoint":
        checkpoint.unlink()
    capsys.readouterr()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").match("pure-backprop: error: " + message.format(tmp=tmp_path), err), err


def test_cli_evaluate_needs_a_split_the_run_has_and_images_of_its_size(cli_runs, tmp_path, capsys):
    from test_data_cli import write_mnist

    write_mnist(tmp_path / "mnist", n_train=200, n_test=10)
    folder = cli_runs["mlp"]
    assert main(["evaluate", str(folder), "--dataset", "mnist", "--data-dir", str(tmp_path / "mnist")]) == 2
    assert f"{folder} takes 8x8 images; mnist's are 4x4" in capsys.readouterr().err


def test_cli_evaluate_refuses_the_validation_split_of_a_run_that_had_none(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    runs.save_checkpoint(tmp_path / "run" / "checkpoint.npz", _checkpoint(dict(OPTIONS, validation=0.0)))
    assert main(["evaluate", str(tmp_path / "run"), "--split", "val"]) == 2
    assert capsys.readouterr().err == (f"pure-backprop: error: {tmp_path / 'run'} was trained with no validation split "
                                       f"(--validation 0); choose --split train or test\n")
    assert main(["evaluate", str(tmp_path / "run"), "--split", "train"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'run'}: digits train split, 1437 images: loss ")
