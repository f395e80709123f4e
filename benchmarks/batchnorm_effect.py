"""The book's point about batch normalization (chapter 6.3, Figure 6-18), on digits with the CLI.

Trains the deep MultiLayerNetExtend of the README (4 hidden layers of 100 ReLU units, dropout
0.1, weight decay 1e-4) four ways: with and without ``--batchnorm``, with He init and with the
book's std 0.01 init, each with ``pure-backprop train`` and otherwise default settings, and
plots the validation accuracy of the first epochs and of the whole run side by side.

Run: ``python benchmarks/batchnorm_effect.py [--epochs 1000] [--out docs/batchnorm_effect.png]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pure_backprop.cli import main as cli

BASE = ["train", "--hidden", "100,100,100,100", "--dropout", "0.1", "--weight-decay", "1e-4", "--no-progress"]
RUNS = {
    "batch norm, He init": ["--batchnorm"],
    "batch norm, book init (std 0.01)": ["--batchnorm", "--init", "book"],
    "no batch norm, He init": [],
    "no batch norm, book init (std 0.01)": ["--init", "book"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/batchnorm_effect.png")
    args = parser.parse_args()
    histories = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(RUNS.items()):
            out = Path(tmp) / str(i)
            code = cli(BASE + flags + ["--epochs", str(args.epochs), "--seed", str(args.seed), "--out", str(out)])
            metrics = json.loads((out / "metrics.json").read_text())
            histories[name] = metrics["history"]
            first = next((h["epoch"] for h in metrics["history"] if h["val_accuracy"] >= 0.9), None)
            print(f"{name}: exit {code}, val {metrics['val_accuracy']:.4f}, test {metrics['test_accuracy']:.4f}, "
                  f"first epoch with val accuracy >= 0.90: {first}, {metrics['seconds']:.1f} s")
    _plot(histories, args.out, args.epochs)
    print(f"wrote {args.out}")


def _plot(histories, path, epochs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (early, whole) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, history in histories.items():
        style = "-" if name.startswith("batch norm") else "--"
        x = [h["epoch"] for h in history]
        y = [h["val_accuracy"] for h in history]
        early.plot(x[:50], y[:50], style, label=name)
        whole.plot(x, y, style, label=name)
    early.set(xlabel="epoch", ylabel="validation accuracy", title="first 50 epochs")
    whole.set(xlabel="epoch", ylabel="validation accuracy", title=f"all {epochs} epochs", ylim=(0.9, 1.0))
    for ax in (early, whole):
        ax.grid(alpha=0.3)
    early.legend(fontsize=8)
    fig.suptitle("digits, 4 x 100 ReLU, dropout 0.1, weight decay 1e-4, SGD lr 0.1, batch 100, affine augmentation")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
