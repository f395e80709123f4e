"""MNIST IDX files (made here), the download path against a local HTTP server on 127.0.0.1,
the digits set, and the command line's behaviour on good and bad input."""

import functools
import gzip
import http.server
import json
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from pure_backprop import data
from pure_backprop.cli import main


def idx_bytes(array, code=0x08):
    return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=30, n_test=10, gz=True, side=4):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        raw = idx_bytes(array)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loader_reads_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    ds = data.load_mnist(tmp_path)
    assert ds.x_train.shape == (30, 16) and ds.x_test.shape == (10, 16) and ds.x_train.dtype == np.float32
    assert ds.image_shape == (4, 4)
    np.testing.assert_allclose(ds.x_train * 255, arrays["train-images-idx3-ubyte"].reshape(30, 16), atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte: truncated"):
        data.load_mnist(tmp_path)
    path.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte: not an IDX file \(wrong magic number 1234"):
        data.load_mnist(tmp_path)
    path.write_bytes(idx_bytes(np.zeros((29, 4, 4))))
    with pytest.raises(data.DataError, match=r"holds 29 images but .*train-labels-idx1-ubyte holds 30 labels"):
        data.load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x1f\x8bnot gzip at all")
    path.write_bytes(raw)
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte: corrupt gzip"):
        data.load_mnist(tmp_path)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_mnist(tmp_path / "nope")
    with pytest.raises(data.DataError, match="missing MNIST files train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)


@pytest.fixture
def mirror(tmp_path):
    served = tmp_path / "served"
    write_mnist(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


def test_download_from_a_local_mirror(tmp_path, mirror):
    url, served = mirror
    target = tmp_path / "mnist"
    ds = data.load_mnist(target, download=True, mirror=url)
    assert ds.x_train.shape == (30, 16)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in served.iterdir())
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    (target / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte.gz: downloaded file is not a valid IDX file"):
        data.download_mnist(target, url)
    assert not any(p.suffix == ".part" for p in target.iterdir())
    (served / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="download failed"):
        data.download_mnist(target, url)


def test_bundled_digits_are_the_1797_uci_images():
    with np.load(Path(data.__file__).with_name("digits.npz")) as bundled:
        images, labels = bundled["images"], bundled["labels"]
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert int(images.astype(np.int64).sum()) == 561718  # the pixel total of the UCI test set


@pytest.mark.parametrize("n,held,seed", [(1797, 360, 0), (1437, 287, 3), (23, 7, 1), (10, 0, 0), (10, 10, 0)])
def test_stratified_split_holds_out_exactly_the_count_each_class_within_one_of_its_share(n, held, seed):
    if n == 1797:
        digits = data.load_digits(seed=0)
        labels = np.concatenate([digits.y_train, digits.y_test])
    else:
        labels = np.random.default_rng(n).integers(0, 4, n)
    kept, held_out = data.stratified_split(labels, held, seed)
    assert len(held_out) == held and len(kept) == n - held
    assert sorted(np.concatenate([kept, held_out]).tolist()) == list(range(n))  # disjoint, nothing lost
    for c in np.unique(labels):
        share = held * np.sum(labels == c) / n
        assert abs(np.sum(labels[held_out] == c) - share) < 1
    again = data.stratified_split(labels, held, seed)
    np.testing.assert_array_equal(again[1], held_out)
    if 0 < held < n:
        other = data.stratified_split(labels, held, seed + 1)
        assert set(other[1].tolist()) != set(held_out.tolist())


@pytest.mark.parametrize("held", [-1, 11, 2.0, True])
def test_stratified_split_refuses_an_impossible_count(held):
    with pytest.raises(ValueError, match="stratified_split: cannot hold out"):
        data.stratified_split(np.arange(10) % 2, held, 0)


def test_digits_split_is_stratified_and_seeded():
    a, b = data.load_digits(seed=0), data.load_digits(seed=0)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64) and a.image_shape == (8, 8)
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_train_command_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--epochs", "3", "--hidden", "16", "--optimizer", "adam", "--lr", "0.01", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_accuracy", "test_accuracy", "grad_check_max_rel_error", "seconds", "history"):
        assert key in metrics
    assert len(metrics["history"]) == 3 and metrics["grad_check_max_rel_error"] < 1e-10
    assert metrics["augment"] == {"max_shift": 1.0, "max_rotation": 10.0, "max_scale": 0.1, "fraction": 0.5}
    assert (metrics["lr"], metrics["schedule"], metrics["weight_decay"]) == (0.01, "constant", 0.0)
    assert metrics["test_accuracy"] > 0.5
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(np.load(out / "params.npz").files) == ["params/0/W", "params/0/b", "params/2/W", "params/2/b"]
    assert metrics["train_samples"] == 1150 and metrics["validation_samples"] == 287 and metrics["test_samples"] == 360
    assert 0 < metrics["val_accuracy"] <= 1 and "val_accuracy" in metrics["history"][-1]
    assert "gradient check" in capsys.readouterr().out
    assert main(["train", "--epochs", "1", "--out", str(out)]) == 2  # never overwrite a finished run
    assert "already holds a run" in capsys.readouterr().err


def test_train_on_mnist_files(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=200, n_test=20)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"), "--epochs", "1",
                 "--batch-size", "50", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["dataset"] == "mnist"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"), "--epochs", "1",
                 "--batch-size", "50", "--augment", "none", "--out", str(tmp_path / "plain"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["augment"] is None


@pytest.mark.parametrize("argv,message", [
    (["train", "--lr", "-1"], "expected a positive finite float"),
    (["train", "--hidden", "10,x"], "comma-separated positive ints"),
    (["train", "--optimizer", "lbfgs"], "invalid choice"),
    (["train", "--augment", "elastic"], "invalid choice"),
    (["train", "--schedule", "linear"], "invalid choice"),
    (["train", "--batch-size", "5000"], "exceeds the 1150 training samples"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "does not exist"),
    (["train", "--out", "/proc/forbidden/run"], "cannot write to output folder"),
    (["check", "--layer", "nope"], "is not a built-in case"),
    (["train", "--compile-cache", ""], "--compile-cache: give a folder, or 'none' to keep no compiled programs"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_options_give_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_train_command_with_batch_norm_dropout_weight_decay_and_no_validation(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--hidden", "16,16", "--batchnorm", "--dropout", "0.1", "--weight-decay",
                 "1e-4", "--init", "book", "--validation", "0", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["batchnorm"], metrics["dropout"], metrics["weight_decay"], metrics["init"]) == (True, 0.1, 1e-4, "book")
    assert metrics["val_accuracy"] is None and metrics["train_samples"] == 1437 and metrics["grad_check_max_rel_error"] < 1e-10
    files = np.load(out / "params.npz").files
    assert "state/1/mean" in files and "state/5/var" in files and "params/1/gamma" in files and "params/0/b" not in files


def test_train_command_trains_the_convnets_on_digits_as_images(tmp_path):
    out = tmp_path / "cnn"
    assert main(["train", "--model", "convnet", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "convnet" and metrics["hidden"] is None and metrics["grad_check_max_rel_error"] < 1e-10
    params = np.load(out / "params.npz")
    assert params["params/0/W"].shape == (30, 1, 5, 5)  # OIHW filters on 1x8x8 images
    assert params["params/4/W"].shape == (30 * 4 * 4, 100)  # padding 2 keeps 8x8, pooled to 4x4
    # convnet's defaults, chosen on validation (README); mlp keeps the book's plain SGD
    assert (metrics["lr"], metrics["schedule"], metrics["weight_decay"]) == (0.2, "cosine", 1e-3)


@pytest.mark.parametrize("argv,message", [
    (["--model", "convnet", "--hidden", "10"], "--hidden applies to --model mlp only"),
    (["--model", "deepconvnet", "--batchnorm"], "--batchnorm applies to --model mlp only"),
    (["--model", "convnet", "--dropout", "0.2"], "--dropout applies to --model mlp or deepconvnet"),
    (["--model", "deepconvnet", "--init", "book"], "--init applies to --model mlp or convnet"),
])
def test_options_that_do_not_apply_to_the_model_are_refused(argv, message, capsys, tmp_path):
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_model_defaults_fill_only_what_the_user_left_out():
    from pure_backprop.cli import _model_options, build_parser

    def options(*argv):
        args = build_parser().parse_args(["train", *argv])
        _model_options(args)
        return args.epochs, args.lr, args.schedule, args.weight_decay, args.dropout

    assert options() == (1000, 0.1, "constant", 0.0, 0.0)
    assert options("--model", "convnet") == (300, 0.2, "cosine", 1e-3, 0.0)
    assert options("--model", "deepconvnet") == (50, 0.1, "constant", 0.0, 0.5)
    assert options("--model", "convnet", "--lr", "0.05", "--schedule", "constant", "--weight-decay", "0",
                   "--epochs", "7") == (7, 0.05, "constant", 0.0, 0.0)
    assert options("--schedule", "cosine", "--weight-decay", "1e-4") == (1000, 0.1, "cosine", 1e-4, 0.0)


# --- the compilation cache -------------------------------------------------------------------

SMALL_RUN = ["train", "--epochs", "2", "--hidden", "8", "--augment", "none", "--no-progress"]


def test_a_second_run_takes_its_programs_from_the_compile_cache(tmp_path):
    import jax

    cache = tmp_path / "cache"
    before = jax.config.jax_compilation_cache_dir
    assert main([*SMALL_RUN, "--out", str(tmp_path / "one"), "--compile-cache", str(cache)]) == 0
    assert jax.config.jax_compilation_cache_dir == before  # JAX's settings as they were
    first = sorted(p.name for p in cache.iterdir())
    assert first, "the first run keeps its compiled programs"
    assert main([*SMALL_RUN, "--out", str(tmp_path / "two"), "--compile-cache", str(cache)]) == 0
    assert sorted(p.name for p in cache.iterdir()) == first  # nothing compiled anew
    one, two = (json.loads((tmp_path / k / "metrics.json").read_text()) for k in ("one", "two"))
    assert one["history"] == two["history"]  # the same programs: the same numbers


def test_the_training_program_compiles_once_though_compiled_ahead_on_placeholders(tmp_path, monkeypatch):
    """The command line compiles the training program on zeros shaped like the initial
    parameters, state and key, while it initializes; the run must then find that program
    (a placeholder of another dtype, say, would compile a second one, silently)."""
    from pure_backprop import train

    made, original = [], train._compiled_epochs

    def recording(*settings):
        made.append(original(*settings))
        return made[-1]

    monkeypatch.setattr(train, "_compiled_epochs", recording)
    argv = [*SMALL_RUN, "--batchnorm", "--dropout", "0.1", "--compile-cache", "none"]  # with state and keys
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert made and all(run._cache_size() == 1 for run in made), [run._cache_size() for run in made]


def test_the_compile_cache_defaults_to_the_users_cache_folder_and_none_keeps_nothing(tmp_path, monkeypatch):
    from pure_backprop.cli import build_parser, default_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache() == str(tmp_path / "xdg" / "pure_backprop" / "xla")
    assert build_parser().parse_args(["check"]).compile_cache == default_cache()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache() == str(tmp_path / "home" / ".cache" / "pure_backprop" / "xla")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main([*SMALL_RUN, "--out", str(tmp_path / "run"), "--compile-cache", "none"]) == 0
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
    assert build_parser().parse_args(["train", "--compile-cache", "none"]).compile_cache is None


def test_none_keeps_nothing_even_inside_a_program_that_keeps_a_cache(tmp_path):
    import jax
    from pure_backprop.cli import compilation_cache

    outer = tmp_path / "outer"
    with compilation_cache(str(outer)):  # as the surrounding program (the tests, a notebook) may
        # hidden 13: programs of shapes no other test compiles, so this run must compile them
        assert main([*SMALL_RUN, "--hidden", "13", "--out", str(tmp_path / "run"), "--compile-cache", "none"]) == 0
        assert jax.config.jax_compilation_cache_dir == str(outer) and jax.config.jax_enable_compilation_cache
    assert (tmp_path / "run" / "metrics.json").exists() and not any(outer.iterdir())


def test_a_cache_folder_that_cannot_be_made_warns_and_the_run_goes_on(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main([*SMALL_RUN, "--out", str(tmp_path / "run"), "--compile-cache", str(tmp_path / "file" / "cache")]) == 0
    err = capsys.readouterr().err
    assert f"pure-backprop: warning: --compile-cache {tmp_path / 'file' / 'cache'}: " in err
    assert "compiling without a cache" in err and (tmp_path / "run" / "metrics.json").exists()
