"""The command line: ``pure-backprop train`` and ``pure-backprop check``.

Every user mistake (a bad option, a missing data folder, an unwritable output folder)
ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise UsageError(message)


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints like 100,50, got {text!r}") from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints like 100,50, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    from .train import OPTIMIZERS

    parser = _Parser(prog="pure-backprop", description="Hand-derived backpropagation in pure JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = commands.add_parser("train", help="train a multi-layer perceptron with the hand-written gradients")
    t.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    t.add_argument("--data-dir", default="data/mnist", help="folder of the four MNIST IDX files")
    t.add_argument("--download", action="store_true", help="fetch missing MNIST files from --mirror")
    t.add_argument("--mirror", default=None, help="base URL of the MNIST files (default: the standard mirror)")
    t.add_argument("--hidden", type=_widths, default=(50,), help="hidden widths, e.g. 100,50 (default 50)")
    t.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default="relu")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd")
    t.add_argument("--lr", type=_positive(float), default=0.1)
    t.add_argument("--batch-size", type=_positive(int), default=100)
    t.add_argument("--epochs", type=_positive(int), default=1000)
    t.add_argument("--augment", choices=["affine", "none"], default="affine",
                   help="random affine warps of half of each training batch (default affine)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run folder (default runs/<timestamp>)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    c = commands.add_parser("check", help="check every built-in backward pass against jax.vjp and finite differences")
    c.add_argument("--layer", default=None, help="check only this node, layer or network (see --list)")
    c.add_argument("--mode", choices=["fast", "full"], default="fast")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--list", action="store_true", help="list the names that --layer accepts")
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return train_command(args)
        return check_command(args)
    except UsageError as e:
        print(f"pure-backprop: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pure-backprop: interrupted", file=sys.stderr)
        return 130


def _prepare_out(out: str | None) -> Path:
    path = Path(out) if out else Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if (path / "metrics.json").exists():
        raise UsageError(f"--out {path} already holds a run (metrics.json); choose another folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to output folder {path}: {e.strerror or e}") from None
    return path


def _write_atomic(path: Path, write):
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(args):
    from . import data

    try:
        if args.dataset == "digits":
            return data.load_digits(seed=args.seed)
        return data.load_mnist(args.data_dir, download=args.download, mirror=args.mirror or data.MNIST_MIRROR)
    except data.DataError as e:
        raise UsageError(str(e)) from None


def train_command(args) -> int:
    out = _prepare_out(args.out)
    dataset = _load(args)
    if args.batch_size > len(dataset.x_train):
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {len(dataset.x_train)} training samples")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    from .augment import Affine, affine_augmenter
    from .gradcheck import compare_with_jax
    from .layers import softmax_cross_entropy
    from .network import mlp
    from .train import OPTIMIZERS, make_evaluate, make_train_epoch

    start = time.perf_counter()
    network = mlp(args.hidden, dataset.num_classes, args.activation)
    key_init, key_shuffle = jax.random.split(jax.random.PRNGKey(args.seed))
    params, _ = network.init(key_init, (-1,) + dataset.x_train.shape[1:])

    batch = (dataset.x_train[: args.batch_size], dataset.y_train[: args.batch_size])
    grad_error = compare_with_jax(network, softmax_cross_entropy, params, *batch)
    print(f"gradient check (float64, one batch of {len(batch[0])}): hand vs jax.grad max relative error {grad_error:.2e}")

    optimizer = OPTIMIZERS[args.optimizer](args.lr)
    opt_state = optimizer.init(params)
    augment = Affine() if args.augment == "affine" else None
    epoch = make_train_epoch(network, softmax_cross_entropy, optimizer, args.batch_size,
                             augment=augment and affine_augmenter(dataset.image_shape, augment))
    evaluate = make_evaluate(network, softmax_cross_entropy, max(args.batch_size, 500))
    x_train, y_train, x_test, y_test = (jnp.asarray(a) for a in dataset[:4])

    history = []
    bar = tqdm(range(1, args.epochs + 1), desc="train", unit="epoch", disable=args.no_progress, file=sys.stderr)
    interrupted = False
    try:
        for n in bar:
            key_shuffle, key = jax.random.split(key_shuffle)
            params, opt_state, losses = epoch(params, opt_state, key, x_train, y_train)
            train_loss, train_acc = (float(v) for v in evaluate(params, x_train, y_train))
            test_loss, test_acc = (float(v) for v in evaluate(params, x_test, y_test))
            history.append({"epoch": n, "batch_loss": float(jnp.mean(losses)), "train_loss": train_loss,
                            "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc})
            bar.set_postfix(loss=f"{train_loss:.4f}", train_acc=f"{train_acc:.4f}", test_acc=f"{test_acc:.4f}")
    except KeyboardInterrupt:
        interrupted = True  # keep what was trained: write the run below, then report
    bar.close()

    last = history[-1] if history else {"train_accuracy": None, "test_accuracy": None}
    metrics = {
        "dataset": dataset.name, "hidden": list(args.hidden), "activation": args.activation,
        "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size,
        "augment": augment._asdict() if augment else None,
        "epochs": len(history), "epochs_requested": args.epochs, "seed": args.seed, "interrupted": interrupted,
        "train_accuracy": last["train_accuracy"], "test_accuracy": last["test_accuracy"],
        "grad_check_max_rel_error": grad_error, "seconds": time.perf_counter() - start,
        "jax_version": jax.__version__, "history": history,
    }
    flat = {f"layer{i}/{k}": np.asarray(v) for i, p in enumerate(params) if p for k, v in p.items()}
    _write_atomic(out / "params.npz", lambda tmp: np.savez(open(tmp, "wb"), **flat))
    if history:
        title = (f"{dataset.name}: hidden {list(args.hidden)} {args.activation}, {args.optimizer} lr {args.lr}, "
                 f"batch {args.batch_size}, augment {args.augment}")
        _write_atomic(out / "curves.png", lambda tmp: _plot(history, tmp, title))
    _write_atomic(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
    if history:
        print(f"train accuracy {last['train_accuracy']:.4f}  test accuracy {last['test_accuracy']:.4f}  "
              f"({metrics['seconds']:.1f} s)")
    print(f"wrote {out}/metrics.json, {out}/curves.png, {out}/params.npz")
    if interrupted:
        print("pure-backprop: interrupted; the run folder holds the epochs finished so far", file=sys.stderr)
        return 130
    return 0


def _plot(history, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    for split in ("train", "test"):
        values = [h[f"{split}_accuracy"] for h in history]
        ax_acc.plot(epochs, values, label=f"{split} (last {values[-1]:.4f})")
    # zoom on where the accuracies settle: the first tenth of the epochs may run off the bottom
    settled = [h[k] for h in history[len(history) // 10:] for k in ("train_accuracy", "test_accuracy")]
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(max(0.0, min(settled) - 0.01), 1.0025))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def check_command(args) -> int:
    """``pure-backprop check``: every registry case at its first shape, one table, exit 1 on failure."""
    import jax

    from .gradcheck import check, format_rows
    from .registry import CASES

    if args.list:
        for case in CASES:
            print(f"{case.name:32s} {case.kind}")
        return 0
    cases = [c for c in CASES if args.layer in (None, c.name)]
    if not cases:
        raise UsageError(f"--layer {args.layer!r} is not a built-in case; see 'pure-backprop check --list'")
    rows, failed, problems = [], [], []
    for case in cases:
        with jax.enable_x64(True):
            layer, params, x, _ = case.build(jax.random.PRNGKey(args.seed), case.shapes[-1])
        report = check(layer, params, x, mode=args.mode, seed=args.seed, name=case.name)
        rows += [(case.name, leaf) for leaf in report.leaves]
        problems += [f"{case.name}: {p}" for p in report.problems]
        if not report.ok:
            failed.append(case.name)
    print(f"pure-backprop check: mode={args.mode}, float64, seed {args.seed}; oracles: jax.vjp and finite differences")
    print(format_rows(rows))
    for p in problems:
        print("problem:", p)
    print(f"{len(cases) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
