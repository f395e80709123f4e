"""Bad inputs, one table each for the Python API and the command line.

API rows: the exception type and a message that names the function and the argument.
CLI rows: exit code 2, exactly one line on stderr (``pure-backprop: error: ...``) that names
the option or file, no traceback, and nothing left behind: no run folder, no data folder,
no temporary file (the folder the test works in is the same before and after).
Last, a diverging run: exit 1, one line naming the epoch, strict JSON and finite parameters.
"""

import gzip
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pure_backprop import gradcheck, loss_and_grads, predict, serial, train
from pure_backprop.cli import main
from pure_backprop.core import freeze, lift, loss_and_grads_with_state
from pure_backprop.data import DataError, Dataset, download_mnist, load_mnist, read_idx, split_validation
from pure_backprop.layers import affine, batch_norm, dropout, relu, softmax_cross_entropy
from pure_backprop.network import mlp

# --- fixtures of the tables ------------------------------------------------------------------

NET = serial(affine(4), relu, affine(3))
PARAMS = NET.init(jax.random.PRNGKey(0), (-1, 5))[0]
X, Y = jnp.ones((6, 5)), jnp.arange(6) % 3
SGD = optax.sgd(0.1)
BN_PARAMS, BN_STATE, _ = batch_norm().init(None, (-1, 4))


def _fit(**changes):
    settings = {"epochs": 1, "batch_size": 2, "key": jax.random.PRNGKey(0), **changes}
    return train.fit(NET, softmax_cross_entropy, SGD, PARAMS, X, Y, **settings)


def _epoch(x, targets, batch_size=2):
    epoch = train.make_train_epoch(NET, softmax_cross_entropy, SGD, batch_size)
    return epoch(PARAMS, SGD.init(PARAMS), jax.random.PRNGKey(0), x, targets)


def _evaluate(x, labels):
    return train.make_evaluate(NET, softmax_cross_entropy, 4)(PARAMS, x, labels)


def _step(x, targets):
    return train.make_train_step(NET, softmax_cross_entropy, SGD)(PARAMS, SGD.init(PARAMS), (x, targets))


def idx_bytes(array, shape=None, code=0x08):
    shape = array.shape if shape is None else shape
    return struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + array.tobytes()


MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def write_mnist(folder: Path, n_train=30, n_test=10, side=4, gz=True, replace=None):
    """The four IDX files; ``replace={name: raw bytes}`` swaps in a bad one."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, side, side)), np.arange(n_train) % 10,
              rng.integers(0, 256, (n_test, side, side)), np.arange(n_test) % 10]
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_NAMES, arrays):
        raw = (replace or {}).get(name, idx_bytes(array.astype(np.uint8)))
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


OVERFLOW_HEADER = idx_bytes(np.zeros(3, np.uint8), shape=(2**32 - 1,) * 3)  # 2**96 bytes; int64 would wrap
OVERFLOW_BYTES = 16 + (2**32 - 1) ** 3  # what the message must say: computed with Python ints


def _split(labels, fraction=0.2):
    x = np.zeros((len(labels), 4), np.float32)
    return split_validation(Dataset(x, np.asarray(labels), x, np.asarray(labels), 3, "t", (2, 2)), fraction)


def _raw(tmp: Path, raw: bytes, name="file-idx"):
    (tmp / name).write_bytes(raw)
    return tmp / name


# Each row: (callable of the test's tmp_path, exception type, regex the message must match).
API_ROWS = [
    # core
    pytest.param(lambda tmp: serial(), ValueError, r"serial: needs at least one layer", id="serial-no-layers"),
    pytest.param(lambda tmp: serial(affine(3), "relu"), TypeError, r"serial: argument 1 is a str, not a Layer",
                 id="serial-not-a-layer"),
    pytest.param(lambda tmp: NET.forward(PARAMS[:2], X), ValueError,
                 r"serial: params must be a tuple of 3 entries, one per layer, got 2", id="serial-params-too-short"),
    pytest.param(lambda tmp: lift(3), TypeError, r"lift: expected a Layer or StatefulLayer, got int", id="lift-int"),
    pytest.param(lambda tmp: freeze(batch_norm(), (), None, 1), TypeError, r"freeze: train must be a Python bool",
                 id="freeze-train-int"),
    pytest.param(lambda tmp: predict(serial(affine(3), batch_norm()), None, X), ValueError,
                 r"predict: a StatefulLayer needs its state", id="predict-no-state"),
    pytest.param(lambda tmp: loss_and_grads(NET, softmax_cross_entropy, PARAMS, X[:0], Y[:0]), ValueError,
                 r"loss_and_grads: x is an empty batch \(shape \(0, 5\)\)", id="loss_and_grads-empty-batch"),
    pytest.param(lambda tmp: loss_and_grads(NET, "cross-entropy", PARAMS, X, Y), TypeError,
                 r"loss_and_grads: loss must be a Loss", id="loss_and_grads-loss-a-str"),
    pytest.param(lambda tmp: loss_and_grads(serial(affine(3), batch_norm()), softmax_cross_entropy, PARAMS, X, Y),
                 TypeError, r"loss_and_grads: network must be a Layer, got StatefulLayer; .*loss_and_grads_with_state",
                 id="loss_and_grads-stateful-network"),
    pytest.param(lambda tmp: loss_and_grads_with_state("net", softmax_cross_entropy, PARAMS, (), X, Y), TypeError,
                 r"loss_and_grads_with_state: network must be a Layer or StatefulLayer, got str",
                 id="loss_and_grads_with_state-not-a-network"),
    pytest.param(lambda tmp: loss_and_grads(NET, softmax_cross_entropy, ({"W": PARAMS[0]["W"]},) + PARAMS[1:], X, Y),
                 ValueError, r"serial layer 0: affine: params must be a dict with keys \['W', 'b'\], got \['W'\]",
                 id="loss_and_grads-missing-key"),
    pytest.param(lambda tmp: loss_and_grads(NET, softmax_cross_entropy, PARAMS, X, [0, 1, 2, 0, 1, 2]), ValueError,
                 r"softmax_cross_entropy: targets .*Python list", id="labels-a-list"),
    pytest.param(lambda tmp: loss_and_grads(NET, softmax_cross_entropy, PARAMS, X, Y.astype(jnp.float32)),
                 ValueError, r"softmax_cross_entropy: labels .*must be integers", id="labels-floats"),
    # layers
    pytest.param(lambda tmp: affine(True), ValueError, r"affine: out_dim must be a positive int, got True",
                 id="affine-True"),
    pytest.param(lambda tmp: affine(2.5), ValueError, r"affine: out_dim must be a positive int, got 2.5",
                 id="affine-float"),
    pytest.param(lambda tmp: affine(3).init(jax.random.PRNGKey(0), (5,)), ValueError,
                 r"affine: in_shape must be \(batch, features...\), got \(5,\)", id="affine-in_shape"),
    pytest.param(lambda tmp: affine(4).forward({**PARAMS[0], "c": 1.0}, X), ValueError,
                 r"affine: params must be a dict with keys \['W', 'b'\], got \['W', 'b', 'c'\]", id="affine-extra-key"),
    pytest.param(lambda tmp: affine(4).forward(PARAMS[0], jnp.ones(5)), ValueError,
                 r"affine: x must have at least 2 axes, got shape \(5,\)", id="affine-rank-1"),
    pytest.param(lambda tmp: affine(4).forward(PARAMS[0], X[:0]), ValueError, r"affine: .*empty",
                 id="affine-empty-batch"),
    pytest.param(lambda tmp: batch_norm(momentum=1.0), ValueError, r"batch_norm: momentum must be a float in \[0, 1\)",
                 id="batch_norm-momentum"),
    pytest.param(lambda tmp: batch_norm(eps=0), ValueError, r"batch_norm: eps must be a positive finite float",
                 id="batch_norm-eps"),
    pytest.param(lambda tmp: batch_norm().forward(BN_PARAMS, BN_STATE, jnp.ones((1, 4)), None, True), ValueError,
                 r"batch_norm: train mode needs at least 2 values per feature", id="batch_norm-batch-of-one"),
    pytest.param(lambda tmp: batch_norm().forward(BN_PARAMS, BN_STATE, jnp.ones((3, 5)), None, True), ValueError,
                 r"batch_norm: params\['gamma'\] has shape \(4,\) but x of shape \(3, 5\) has 5 features",
                 id="batch_norm-features"),
    pytest.param(lambda tmp: dropout(1.0), ValueError, r"dropout: drop_rate must be a float in \[0, 1\)",
                 id="dropout-rate-1"),
    pytest.param(lambda tmp: dropout(0.5).forward((), (), X, None, True), ValueError,
                 r"dropout: train=True needs a PRNG key", id="dropout-no-key"),
    # network
    pytest.param(lambda tmp: mlp((5,), 3, "gelu"), ValueError, r"mlp: activation must be one of", id="mlp-activation"),
    pytest.param(lambda tmp: mlp((0,), 3), ValueError, r"mlp: hidden widths must be positive ints, got \[0\]",
                 id="mlp-hidden-0"),
    pytest.param(lambda tmp: mlp((5,), 0), ValueError, r"mlp: out_dim must be a positive int, got 0", id="mlp-out-0"),
    pytest.param(lambda tmp: mlp((5,), 3, init="glorot"), ValueError, r"mlp: init must be one of", id="mlp-init"),
    # train
    pytest.param(lambda tmp: train.make_train_step("net", softmax_cross_entropy, SGD), TypeError,
                 r"make_step: network must be a Layer or StatefulLayer, got str", id="make_train_step-network"),
    pytest.param(lambda tmp: train.make_train_step(NET, softmax_cross_entropy, "sgd"), TypeError,
                 r"make_step: optimizer must be an optax.GradientTransformation", id="make_train_step-optimizer"),
    pytest.param(lambda tmp: _step(X[:0], Y[:0]), ValueError, r"train step: x holds no samples \(shape \(0, 5\)\)",
                 id="train_step-empty-batch"),
    pytest.param(lambda tmp: _step(X, Y[:3]), ValueError, r"train step: x holds 6 samples but targets hold 3",
                 id="train_step-targets-length"),
    pytest.param(lambda tmp: train.make_train_epoch(NET, softmax_cross_entropy, SGD, 0), ValueError,
                 r"make_train_epoch: batch_size must be a positive int, got 0", id="make_train_epoch-batch_size-0"),
    pytest.param(lambda tmp: train.make_train_epoch(NET, softmax_cross_entropy, SGD, 2.0), ValueError,
                 r"make_train_epoch: batch_size must be a positive int, got 2.0", id="make_train_epoch-batch_size-float"),
    pytest.param(lambda tmp: _epoch(X, Y[:5]), ValueError, r"train: x holds 6 samples but targets hold 5",
                 id="train_epoch-targets-length"),
    pytest.param(lambda tmp: _epoch(X, Y, batch_size=16), ValueError, r"train: batch_size 16 exceeds the 6 training",
                 id="train_epoch-batch-too-large"),
    pytest.param(lambda tmp: train.make_evaluate(NET, softmax_cross_entropy, -1), ValueError,
                 r"make_evaluate: batch_size must be a positive int, got -1", id="make_evaluate-batch_size"),
    pytest.param(lambda tmp: _evaluate(X[:0], Y[:0]), ValueError, r"evaluate: x holds no samples",
                 id="evaluate-empty"),
    pytest.param(lambda tmp: _evaluate(X, Y[:3]), ValueError, r"evaluate: x holds 6 samples but targets hold 3",
                 id="evaluate-labels-length"),
    pytest.param(lambda tmp: _fit(epochs=0), ValueError, r"fit: epochs must be a positive int", id="fit-epochs-0"),
    pytest.param(lambda tmp: _fit(epochs=2**31), ValueError, r"fit: epochs must be a positive int below 2\*\*31",
                 id="fit-epochs-int32"),
    pytest.param(lambda tmp: _fit(eval_batch_size=0), ValueError, r"fit \(eval_batch_size\): batch_size must be",
                 id="fit-eval_batch_size"),
    pytest.param(lambda tmp: _fit(epochs_per_call=0), ValueError, r"fit: epochs_per_call must be a positive int",
                 id="fit-epochs_per_call"),
    pytest.param(lambda tmp: _fit(evaluate_on={"val": (X, Y[:2])}), ValueError,
                 r"fit \(evaluate_on\['val'\]\): x holds 6 samples but targets hold 2", id="fit-evaluate_on"),
    pytest.param(lambda tmp: train.fit(NET, [0.1], SGD, PARAMS, X, Y, epochs=1, batch_size=2, key=None), TypeError,
                 r"fit: loss must be a Loss", id="fit-loss"),
    # data
    pytest.param(lambda tmp: read_idx(tmp / "nope"), DataError, r"nope: cannot read \(No such file", id="idx-missing"),
    pytest.param(lambda tmp: read_idx(tmp), DataError, r"is a folder, not an IDX file", id="idx-a-folder"),
    pytest.param(lambda tmp: read_idx(_raw(tmp, OVERFLOW_HEADER)), DataError,
                 rf"truncated: header says shape \(4294967295, 4294967295, 4294967295\), which needs {OVERFLOW_BYTES} "
                 rf"bytes, file has 19$", id="idx-overflowing-dimensions"),
    pytest.param(lambda tmp: read_idx(_raw(tmp, idx_bytes(np.zeros(1, np.uint8), shape=(0,) * 200))), DataError,
                 r"has trailing bytes: header says shape \(0, 0, \.\.\., 0\) of 200 dimensions, which needs 804 bytes",
                 id="idx-200-dimensions"),
    pytest.param(lambda tmp: read_idx(_raw(tmp, b"\x1f\x8bnot gzip")), DataError, r"corrupt gzip data",
                 id="idx-corrupt-gzip"),
    pytest.param(lambda tmp: load_mnist(write_mnist(tmp / "m", n_train=0)), DataError,
                 r"train-images-idx3-ubyte.gz: holds no images \(shape \(0, 4, 4\)\); the train split",
                 id="mnist-no-training-images"),
    pytest.param(lambda tmp: load_mnist(write_mnist(tmp / "m", n_test=0)), DataError,
                 r"t10k-images-idx3-ubyte.gz: holds no images \(shape \(0, 4, 4\)\); the test split",
                 id="mnist-no-test-images"),
    pytest.param(lambda tmp: load_mnist(write_mnist(tmp / "m", side=0)), DataError,
                 r"train-images-idx3-ubyte.gz: images of 0x0 pixels hold no pixels", id="mnist-0x0-images"),
    pytest.param(lambda tmp: load_mnist(_raw(tmp, b"")), DataError, r"file-idx: is a file, not a folder",
                 id="mnist-data_dir-a-file"),
    pytest.param(lambda tmp: load_mnist(tmp / "m", download=True, mirror="notaurl"), DataError,
                 r"mirror must be an http\(s\) or file URL .*got 'notaurl'", id="mnist-mirror-not-a-url"),
    pytest.param(lambda tmp: download_mnist(_raw(tmp, b"") / "below", mirror="file:///nowhere/"), DataError,
                 r"file-idx/below: cannot create the data folder \(Not a directory\)", id="mnist-data_dir-below-a-file"),
    pytest.param(lambda tmp: split_validation(Dataset(*[np.zeros((4, 2))] * 4, 2, "t", (1, 2)), 1.0), ValueError,
                 r"split_validation: fraction must be in \[0, 1\), got 1.0", id="split_validation-fraction"),
    pytest.param(lambda tmp: _split([0] * 10 + [1] * 10 + [2]), DataError,
                 r"class 2 has only 1 training sample; a stratified validation split needs at least 2",
                 id="split_validation-singleton-class"),
    pytest.param(lambda tmp: _split([], 0.5), DataError, r"split_validation: the dataset holds 0 training images",
                 id="split_validation-empty"),
    # gradcheck settings (already refused)
    pytest.param(lambda tmp: gradcheck.check(affine(4), PARAMS[0], X, mode="slow"), ValueError,
                 r"gradcheck: mode must be 'fast' or 'full', got 'slow'", id="gradcheck-mode"),
    pytest.param(lambda tmp: gradcheck.check(affine(4), PARAMS[0], X, order=3), ValueError,
                 r"gradcheck: order must be 2 or 4, got 3", id="gradcheck-order"),
]


@pytest.mark.parametrize("call,kind,message", API_ROWS)
def test_api_refuses_bad_input_naming_the_argument(call, kind, message, tmp_path):
    with pytest.raises(kind, match=message):
        call(tmp_path)


# --- the command line ----------------------------------------------------------------------


def _mnist(name="mnist", **kwargs):
    return lambda tmp: write_mnist(tmp / name, **kwargs)


def _served(**replace):
    """A mirror folder served as file:// with the given files replaced (None: left out)."""

    def setup(tmp):
        folder = write_mnist(tmp / "served", replace={k: v for k, v in replace.items() if v is not None})
        for name, raw in replace.items():
            if raw is None:
                (folder / (name + ".gz")).unlink()

    return setup


def _file(name):
    return lambda tmp: (tmp / name).write_text("not a folder\n")


def _corrupt_gzip(tmp):
    write_mnist(tmp / "mnist")
    (tmp / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip at all")


def _finished_run(tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.json").write_text("{}")


MIRROR = "file://{tmp}/served/"
MNIST = ["train", "--dataset", "mnist", "--data-dir", "{tmp}/mnist"]
DOWNLOAD = ["train", "--dataset", "mnist", "--download", "--data-dir", "{tmp}/fresh/mnist", "--mirror", MIRROR]

# Each row: (argv with {tmp} for the test folder, regex of the one stderr line after "pure-backprop: error: ",
# setup(tmp) or None). ``train`` rows get ``--out {tmp}/run`` unless they give --out.
CLI_ROWS = [
    pytest.param(["train", "--seed", "-1"], r"argument --seed: expected an int in \[0, 2\*\*32\), got '-1'", None,
                 id="seed-negative"),
    pytest.param(["train", "--seed", "4294967296"], r"argument --seed: expected an int in \[0, 2\*\*32\)", None,
                 id="seed-2**32"),
    pytest.param(["check", "--seed", "-1"], r"argument --seed: expected an int in \[0, 2\*\*32\)", None,
                 id="check-seed-negative"),
    pytest.param(["train", "--lr", "inf"], r"argument --lr: expected a positive finite float", None, id="lr-inf"),
    pytest.param(["train", "--lr", "nan"], r"argument --lr: expected a positive finite float", None, id="lr-nan"),
    pytest.param(["train", "--lr", "0"], r"argument --lr: expected a positive finite float", None, id="lr-0"),
    pytest.param(["train", "--lr", "1e39"], r"argument --lr: expected a positive finite float below 3.4e38", None,
                 id="lr-beyond-float32"),
    pytest.param(["train", "--hidden", "0"], r"argument --hidden: expected comma-separated positive ints", None,
                 id="hidden-0"),
    pytest.param(["train", "--hidden", "10,x"], r"argument --hidden: expected comma-separated positive ints", None,
                 id="hidden-not-ints"),
    pytest.param(["train", "--hidden", "100000000"],
                 r"--hidden 100000000 with --batch-size 100 gives 7,500,000,010 parameters and needs about .* GiB, "
                 r"more than this machine's .* GiB of memory", None, id="hidden-too-large-for-memory"),
    pytest.param(["train", "--epochs", "0"], r"argument --epochs: expected a positive finite int", None,
                 id="epochs-0"),
    pytest.param(["train", "--epochs", str(2**31)], r"argument --epochs: expected a positive finite int below 2\*\*31",
                 None, id="epochs-2**31"),
    pytest.param(["train", "--batch-size", "0"], r"argument --batch-size: expected a positive finite int", None,
                 id="batch-size-0"),
    pytest.param(["train", "--batch-size", "5000"], r"--batch-size 5000 exceeds the 1150 training samples", None,
                 id="batch-size-too-large"),
    pytest.param(["train", "--dropout", "1"], r"argument --dropout: expected a number in \[0, 1\)", None,
                 id="dropout-1"),
    pytest.param(["train", "--weight-decay", "-1"], r"argument --weight-decay: expected a finite number >= 0", None,
                 id="weight-decay-negative"),
    pytest.param(["train", "--validation", "1"], r"argument --validation: expected a number in \[0, 1\)", None,
                 id="validation-1"),
    pytest.param(["train", "--validation", "0.999"], r"a validation fraction of 0.999 of 1437 training samples leaves",
                 None, id="validation-leaves-too-few"),
    pytest.param(["train", "--activation", "gelu"], r"argument --activation: invalid choice: 'gelu'", None,
                 id="activation"),
    pytest.param(["train", "--optimizer", "lbfgs"], r"argument --optimizer: invalid choice: 'lbfgs'", None,
                 id="optimizer"),
    pytest.param(["train", "--frobnicate"], r"unrecognized arguments: --frobnicate", None, id="unknown-option"),
    pytest.param(["train", "--data-dir", "{tmp}/mnist"], r"--data-dir applies to --dataset mnist only", None,
                 id="data-dir-with-digits"),
    pytest.param(["train", "--download"], r"--download applies to --dataset mnist only", None,
                 id="download-with-digits"),
    pytest.param([*MNIST, "--mirror", "https://example.org/"], r"--mirror applies only with --download", _mnist(),
                 id="mirror-without-download"),
    pytest.param([*DOWNLOAD[:-1], "notaurl"],
                 r"argument --mirror: expected an http\(s\) or file URL .* like https://host/mnist/ or "
                 r"file:///path/to/mnist/, got 'notaurl'", None, id="mirror-not-a-url"),
    pytest.param([*DOWNLOAD[:-1], "ftp://example.org/mnist/"], r"argument --mirror: expected an http\(s\) or file URL",
                 None, id="mirror-ftp"),
    pytest.param(["train", "--dataset", "mnist", "--download", "--data-dir", "{tmp}/file/below", "--mirror", MIRROR],
                 r"{tmp}/file/below: cannot create the data folder \(Not a directory\)", _file("file"),
                 id="download-data-dir-below-a-file"),
    pytest.param(["train", "--dataset", "mnist", "--data-dir", "{tmp}/file"],
                 r"{tmp}/file: is a file, not a folder", _file("file"), id="data-dir-a-file"),
    pytest.param(["train", "--dataset", "mnist", "--data-dir", "{tmp}/nowhere"],
                 r"{tmp}/nowhere: data folder does not exist \(pass --download", None, id="data-dir-missing"),
    pytest.param(MNIST, r"{tmp}/mnist/t10k-labels-idx1-ubyte.gz: corrupt gzip data", _corrupt_gzip,
                 id="mnist-corrupt-gzip"),
    pytest.param(MNIST, r"train-images-idx3-ubyte.gz: holds no images \(shape \(0, 4, 4\)\)", _mnist(n_train=0),
                 id="mnist-no-training-images"),
    pytest.param(MNIST, r"t10k-images-idx3-ubyte.gz: holds no images \(shape \(0, 4, 4\)\)", _mnist(n_test=0),
                 id="mnist-no-test-images"),
    pytest.param(MNIST, r"images of 0x0 pixels hold no pixels", _mnist(side=0), id="mnist-0x0-images"),
    pytest.param(MNIST, rf"train-images-idx3-ubyte.gz: truncated: header says shape \(4294967295, 4294967295, "
                        rf"4294967295\), which needs {OVERFLOW_BYTES} bytes, file has 19$",
                 _mnist(replace={"train-images-idx3-ubyte": OVERFLOW_HEADER}), id="mnist-overflowing-dimensions"),
    pytest.param(DOWNLOAD, r"file://{tmp}/served/train-images-idx3-ubyte.gz: download failed \(No such file or "
                           r"directory\); nothing written to {tmp}/fresh/mnist/train-images-idx3-ubyte.gz$",
                 _served(**{"train-images-idx3-ubyte": None}), id="download-missing-on-mirror"),
    pytest.param(DOWNLOAD, r"file://{tmp}/served/train-images-idx3-ubyte.gz: downloaded file is not a valid IDX file, "
                           r"not saved as {tmp}/fresh/mnist/train-images-idx3-ubyte.gz: not an IDX file",
                 _served(**{"train-images-idx3-ubyte": b"garbage"}), id="download-not-idx"),
    pytest.param(["train", "--out", "{tmp}/file"], r"--out {tmp}/file is a file, not a folder", _file("file"),
                 id="out-a-file"),
    pytest.param(["train", "--out", "{tmp}/file/run"], r"--out {tmp}/file/run: {tmp}/file is a file, not a folder",
                 _file("file"), id="out-below-a-file"),
    pytest.param(["train", "--out", ""], r"argument --out: expected a folder path, got ''", None, id="out-empty"),
    pytest.param(["train", "--out", "{tmp}/run"], r"--out {tmp}/run already holds a run \(metrics.json\)",
                 _finished_run, id="out-holds-a-run"),
    pytest.param(["check", "--layer", "nope"], r"--layer 'nope' is not a built-in case", None, id="check-layer"),
    pytest.param(["check", "--mode", "slow"], r"argument --mode: invalid choice: 'slow'", None, id="check-mode"),
]


def _tree(folder: Path):
    return sorted((str(p.relative_to(folder)), p.is_dir()) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv,message,setup", CLI_ROWS)
def test_cli_bad_input_exits_2_with_one_line_and_leaves_nothing(argv, message, setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/<timestamp> would land here too
    if setup is not None:
        setup(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[:1] == ["train"] and "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    before = _tree(tmp_path)
    capsys.readouterr()
    assert main(argv + (["--no-progress"] if argv[:1] == ["train"] else [])) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    pattern = message.replace("{tmp}", re.escape(str(tmp_path)))
    assert err.startswith("pure-backprop: error: ") and re.search(pattern, err.rstrip("\n")), \
        f"{err!r} does not match {pattern!r}"
    assert ".part" not in err
    assert _tree(tmp_path) == before, "the failed run left something behind"


def test_the_installed_entry_point_gives_one_line_and_exit_2(tmp_path):
    """The same through a real process: ``python -m pure_backprop.cli`` exits 2, one line, no traceback."""
    result = subprocess.run([sys.executable, "-m", "pure_backprop.cli", "train", "--dataset", "mnist", "--download",
                             "--mirror", "notaurl", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "argument --mirror" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- divergence ------------------------------------------------------------------------------


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"strict JSON has no {name}")

    return json.loads(text, parse_constant=refuse)


def _cli(*argv):
    """The real command in a subprocess: JAX's defaults (float32), not this suite's float64 conftest."""
    return subprocess.run([sys.executable, "-m", "pure_backprop.cli", *argv], capture_output=True, text=True,
                          timeout=600)


def test_a_run_that_diverges_later_stops_naming_the_epoch_and_keeps_finite_parameters(tmp_path):
    out = tmp_path / "run"
    # SGD with weight decay multiplies each W by (1 - lr * lambda) = -2 per step besides the
    # gradient: the weights double every step whatever the data, so the loss overflows float32
    # after a few epochs, not in the first (a huge --lr alone kills every ReLU instead)
    result = _cli("train", "--weight-decay", "30", "--epochs", "20", "--out", str(out), "--no-progress")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    epoch = int(re.fullmatch(r"pure-backprop: error: training diverged in epoch (\d+) \(a non-finite loss or "
                             r"parameter\); kept the parameters of epoch \d+; try a smaller --lr\n", result.stderr)[1])
    assert epoch >= 2, "this setting diverged in epoch 1; choose a smaller --weight-decay for this test"
    metrics = _strict_json((out / "metrics.json").read_text())
    assert metrics["diverged_epoch"] == epoch and len(metrics["history"]) == metrics["epochs"] == epoch - 1
    assert all(v is None or np.isfinite(v) for record in metrics["history"] for v in record.values())
    with np.load(out / "params.npz") as arrays:
        assert all(np.isfinite(arrays[name]).all() for name in arrays.files)


def test_a_run_that_diverges_in_the_first_epoch_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = _cli("train", "--lr", "1e30", "--epochs", "1", "--hidden", "8", "--augment", "none", "--out", str(out),
                  "--no-progress")
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(r"pure-backprop: error: training diverged in epoch 1 .*nothing written.*\n", result.stderr)
    assert not out.exists()
