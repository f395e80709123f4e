"""The command line: ``pure-backprop train``, ``predict``, ``evaluate``, ``generate`` and ``check``.

The CLI only parses options, loads data and writes files; the training loop is
``pure_backprop.train.fit``, run folders are ``pure_backprop.runs`` and the checker
``pure_backprop.gradcheck``. The sequence models' half (language models and seq2seq) is
``pure_backprop.cli_sequences``.
Every user mistake (a bad option, a missing data folder, an unwritable output folder)
ends with one line on stderr and exit code 2, never a traceback; a bare ``pure-backprop``
lists the commands and says where to start, also with exit code 2. Ctrl-C ends with exit
130 and a list of the files actually written; a diverging run stops with exit 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import io
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

EXIT_USAGE = 2
# --model: the default epochs and dropout of each, and the options that apply to the MLP only
# (convnet's lr, schedule and weight decay were chosen on the validation split: README, "Training results")
_PLAIN = {"lr": 0.1, "schedule": "constant", "weight_decay": 0.0}
MODELS = {"mlp": {"epochs": 1000, "dropout": 0.0, **_PLAIN},
          "convnet": {"epochs": 300, "dropout": 0.0, "lr": 0.2, "schedule": "cosine", "weight_decay": 1e-3},
          "deepconvnet": {"epochs": 50, "dropout": 0.5, **_PLAIN}}
MLP_ONLY = ("hidden", "activation", "batchnorm")
IMAGE_DEFAULTS = {"dataset": "digits", "validation": 0.2, "optimizer": "sgd", "batch_size": 100, "augment": "affine"}
SEQUENCE_ONLY = ("text", "steps", "embed", "seq_length", "clip", "tie", "no_reverse", "layers", "heads", "width",
                 "warmup")
FLOAT32_MAX = 3.4028234663852886e38  # training runs in float32: larger option values would become inf


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise UsageError(message)


def _number(kind, low, what, high=None, low_open=True):
    """A parser of finite numbers in ``(low, high)`` (``[low, ...)`` when ``low_open`` is False)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        above = value > low if low_open else value >= low
        if not (above and math.isfinite(value) and (high is None or value < high)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _positive(kind, high=None, what=""):
    return _number(kind, 0, f"a positive finite {kind.__name__}{what}", high=high)


def _folder(text):
    if not text:
        raise argparse.ArgumentTypeError("expected a folder path, got ''")
    return text


def _mirror(text):
    from .data import DataError, check_mirror

    try:
        return check_mirror(text)
    except DataError:
        raise argparse.ArgumentTypeError(f"expected an http(s) or file URL of the folder holding the MNIST .gz files, "
                                         f"like https://host/mnist/ or file:///path/to/mnist/, got {text!r}") from None


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints like 100,50, got {text!r}") from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints like 100,50, got {text!r}")
    return widths


_SEED = _number(int, 0, "an int in [0, 2**32)", high=2**32, low_open=False)
_FRACTION = _number(float, 0, "a number in [0, 1)", high=1, low_open=False)
_NON_NEGATIVE = _number(float, 0, "a finite number >= 0 and below 3.4e38 (float32)", high=FLOAT32_MAX,
                        low_open=False)
MAX_EPOCHS = 2**31  # the compiled loop counts epochs in int32
JOIN_TIMEOUT = 60  # seconds for the processes of a run to join (--coordinator)


COMMANDS = {  # each command's line in the list of commands
    "train": "train a network (mlp, convnet, deepconvnet, a language model or seq2seq) with the hand-written "
             "gradients",
    "predict": "classify images (PNG, JPEG, .npy, IDX), or answer questions with a seq2seq run",
    "evaluate": "the loss and accuracy of a trained image run on a dataset",
    "generate": "write text with a trained language model",
    "check": "check every built-in backward pass against jax.vjp and finite differences",
}
HINT = ("run 'pure-backprop train' to train the default network on the bundled digits,\n"
        "or 'pure-backprop COMMAND --help'")
_TRAIN_EXAMPLES = """\
  pure-backprop train                            # mlp on the bundled digits
  pure-backprop train --epochs 1 --out runs/one  # one epoch: see the files
  pure-backprop train --model convnet            # SimpleConvNet
  pure-backprop train --dataset mnist --data-dir data/mnist --epochs 20
  pure-backprop train --resume runs/one --epochs 3  # two more epochs
  pure-backprop train --model lstm-lm --out runs/lm     # character LSTM on Python's help text
  pure-backprop train --model lstm-lm --text my.txt     # on a UTF-8 file of your own
  pure-backprop train --model gpt --out runs/gpt        # a 4-layer character GPT, the same text
  pure-backprop train --model attention-seq2seq --out runs/add   # 16+75 -> 91
  pure-backprop train --model attention-seq2seq --dataset date   # september 27, 1994 -> 1994-09-27"""
_PREDICT_EXAMPLES = """\
  pure-backprop predict runs/one digit.png       # the class and top 3
  pure-backprop predict runs/one a.png b.npy --json
  pure-backprop predict runs/date "september 27, 1994" "1/2/03"  # a seq2seq run"""
_GENERATE_EXAMPLES = """\
  pure-backprop generate runs/lm --prompt "The " --length 200
  pure-backprop generate runs/lm --prompt "def " --temperature 0.5 --seed 3
  pure-backprop generate runs/gpt --prompt "The " --temperature 0.8 --top-k 10"""
_EVALUATE_EXAMPLES = """\
  pure-backprop evaluate runs/one                # its own test split
  pure-backprop evaluate runs/one --split val    # its validation split"""
_CHECK_EXAMPLES = """\
  pure-backprop check                            # every built-in case
  pure-backprop check --layer affine             # one layer
  pure-backprop check --layer affine --mode full # every entry
  pure-backprop check --list                     # the names --layer takes"""


def _train_description() -> str:
    from .cli_sequences import GPT_DEFAULTS as g, LM_DEFAULTS as lm, SEQ2SEQ_DEFAULTS as s2s, SEQ2SEQ_EPOCHS

    mlp, conv, deep = MODELS["mlp"], MODELS["convnet"], MODELS["deepconvnet"]
    return f"""\
Train a network with the hand-written gradients (checked once against jax.grad
first) and write params.npz, curves.png and metrics.json to the run folder.

models (--model):
  mlp          the book's MultiLayerNetExtend: affine -> [batchnorm] ->
               activation -> [dropout] for each hidden width, then affine;
               by default one hidden layer of 50 ReLU units (the shape of the
               book's TwoLayerNet); {mlp['epochs']} epochs, lr {mlp['lr']}
  convnet      the book's SimpleConvNet: conv 30 5x5 -> ReLU -> max pool 2x2 ->
               affine 100 -> ReLU -> affine (padded to keep the 8x8 digits'
               size, unpadded on MNIST as in the book), He init; {conv['epochs']} epochs,
               lr {conv['lr']} with {conv['schedule']} decay, weight decay {conv['weight_decay']:g}
  deepconvnet  the book's DeepConvNet: conv 3x3 -> ReLU at widths 16,16 | 32,32 |
               64,64 with a max pool 2x2 after each pair, then affine 50 ->
               ReLU -> dropout -> affine -> dropout, He init; {deep['epochs']} epochs,
               dropout {deep['dropout']}, lr {deep['lr']}
  rnn-lm, lstm-lm, gru-lm
               character language models (the sequel's Rnnlm) on --dataset text:
               embedding {lm['embed']} -> RNN/LSTM/GRU {lm['hidden']} -> affine, windows of
               {lm['seq_length']} characters (truncated backprop through time), batch {lm['batch_size']},
               {lm['optimizer']} {lm['lr']} with {lm['schedule']} decay over {lm['steps']} steps,
               gradients clipped to norm {lm['clip']}; reports validation bits per character
  gpt          a character GPT on --dataset text: {g['layers']} pre-norm transformer blocks
               ({g['heads']} heads, width {g['width']}, tanh GELU), learned positions, tied
               embeddings, context {g['seq_length']}, random windows, batch {g['batch_size']}, AdamW {g['lr']:g} (weight
               decay {g['weight_decay']:g} on the matrices), {g['warmup']} warm-up steps then cosine decay to
               lr / 10 over {g['steps']} steps, clipping {g['clip']}; reports validation bits per character
  seq2seq, peeky-seq2seq, attention-seq2seq
               the sequel's encoder-decoder LSTMs on --dataset addition or date:
               embedding {s2s['embed']}, LSTMs of {s2s['hidden']}, reversed questions, batch
               {s2s['batch_size']}, {s2s['optimizer']} {s2s['lr']}, clipping {s2s['clip']}; {SEQ2SEQ_EPOCHS['addition']} epochs on
               addition, {SEQ2SEQ_EPOCHS['date']} on date; reports the exact match of greedy answers

datasets (--dataset): digits (bundled) and mnist for the image models; text (the
help topics of the running Python, or --text FILE) for the language models;
addition and date (50,000 examples generated from --seed) for seq2seq"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each option's help states its default."""
    from . import __version__
    from .cli_sequences import LM_DEFAULTS as lm, SEQ2SEQ_DEFAULTS as s2s, SEQ2SEQ_EPOCHS
    from .sequence_runs import SEQUENCE_MODELS
    from .train import OPTIMIZERS, SCHEDULES

    raw = argparse.RawDescriptionHelpFormatter  # keeps the line breaks of descriptions and examples
    parser = _Parser(prog="pure-backprop", description="Hand-derived backpropagation in pure JAX.",
                     epilog=f"examples:\n{_TRAIN_EXAMPLES}\n{_PREDICT_EXAMPLES}\n{_EVALUATE_EXAMPLES}\n{_GENERATE_EXAMPLES}\n"
                            f"{_CHECK_EXAMPLES}\n\n{HINT}",
                     formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND", parser_class=_Parser)

    t = commands.add_parser("train", help=COMMANDS["train"], description=_train_description(),
                            epilog=f"examples:\n{_TRAIN_EXAMPLES}", formatter_class=raw)
    t.add_argument("--dataset", choices=["digits", "mnist", "text", "addition", "date"], default=None,
                   help="digits: the 1797 8x8 images bundled with pure_backprop; mnist: the four IDX files "
                        "in --data-dir; text, addition, date: for the sequence models, described above "
                        "(default digits, text for a language model, addition for seq2seq)")
    t.add_argument("--data-dir", type=_folder, default=None, metavar="DIR",
                   help="folder of the four MNIST IDX files (default data/mnist)")
    t.add_argument("--download", action="store_true", help="fetch missing MNIST files from --mirror")
    t.add_argument("--mirror", type=_mirror, default=None, metavar="URL",
                   help="http(s) or file URL of the folder of MNIST .gz files (default: the standard mirror)")
    t.add_argument("--model", choices=[*MODELS, *SEQUENCE_MODELS], default="mlp", metavar="MODEL",
                   help="mlp, convnet, deepconvnet, rnn-lm, lstm-lm, gru-lm, gpt, seq2seq, peeky-seq2seq or "
                        "attention-seq2seq, described above (default %(default)s)")
    t.add_argument("--hidden", type=_widths, default=None, metavar="WIDTHS",
                   help="mlp hidden widths, e.g. 100,50 (default 50); one width for a sequence model's "
                        f"recurrent layers (default {lm['hidden']} for a language model, {s2s['hidden']} for seq2seq)")
    t.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default=None, help="mlp activation (default relu)")
    t.add_argument("--init", choices=["he", "xavier", "book"], default=None,
                   help="weight init: he (default for relu), xavier (default for sigmoid/tanh), book (std 0.01)")
    t.add_argument("--batchnorm", action="store_true", help="mlp: batch normalization after each hidden affine layer")
    t.add_argument("--dropout", type=_FRACTION, default=None, metavar="RATE",
                   help="dropout after each hidden activation (a language model: on the embedding's and the "
                        "recurrent layer's outputs), dropping with probability RATE "
                        f"(default {MODELS['mlp']['dropout']:g} for mlp, {MODELS['deepconvnet']['dropout']} "
                        f"for deepconvnet as in the book, {lm['dropout']:g} for a language model)")
    t.add_argument("--weight-decay", type=_NON_NEGATIVE, default=None, metavar="LAMBDA",
                   help="L2 penalty 0.5*LAMBDA*sum(W**2) on the weights "
                        f"(default {MODELS['mlp']['weight_decay']:g}; {MODELS['convnet']['weight_decay']:g} for convnet); "
                        "gpt: AdamW's decoupled decay of the matrices (default 0.1)")
    t.add_argument("--validation", type=_FRACTION, default=None, metavar="FRACTION",
                   help="fraction of the training data held out for validation (default 0.2; 0 trains on all; "
                        "0.1 for the sequence models: the end of the text, or 5,000 of the 50,000 examples)")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help="the optax optimizer; momentum and nesterov with momentum 0.9 (default sgd; adam for "
                        "the sequence models)")
    t.add_argument("--lr", type=_positive(float, FLOAT32_MAX, " below 3.4e38 (float32)"), default=None,
                   help=f"learning rate (default {MODELS['mlp']['lr']}; {MODELS['convnet']['lr']} for convnet; "
                        f"{lm['lr']:g} for a language model, 0.001 for gpt, {s2s['lr']:g} for seq2seq)")
    t.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning rate over the run: constant, or cosine decay from --lr to 0 over all steps "
                        "(gpt: to --lr / 10, after its warm-up) "
                        f"(default {MODELS['mlp']['schedule']}; {MODELS['convnet']['schedule']} for convnet and "
                        "a language model)")
    t.add_argument("--batch-size", type=_positive(int), default=None, metavar="N",
                   help=f"training samples per update (default {IMAGE_DEFAULTS['batch_size']}; {lm['batch_size']} text "
                        f"streams for a language model or windows for gpt, {s2s['batch_size']} questions for seq2seq)")
    t.add_argument("--epochs", type=_positive(int, MAX_EPOCHS, " below 2**31"), default=None, metavar="N",
                   help="passes over the training data (default "
                        + ", ".join(f"{m['epochs']} for {name}" for name, m in MODELS.items())
                        + f"; {SEQ2SEQ_EPOCHS['addition']} for seq2seq on addition, {SEQ2SEQ_EPOCHS['date']} on date)")
    t.add_argument("--augment", choices=["affine", "none"], default=None,
                   help="random affine warps of half of each training batch (default affine)")
    t.add_argument("--text", type=_folder, default=None, metavar="FILE",
                   help="a language model: train on this UTF-8 file (default: the help topics of the running Python, "
                        "pydoc_data.topics)")
    t.add_argument("--steps", type=_positive(int, MAX_EPOCHS, " below 2**31"), default=None, metavar="N",
                   help=f"a language model: training steps, one window of every stream each (default {lm['steps']}; "
                        "1500 for gpt, batch-size random windows each)")
    t.add_argument("--embed", type=_positive(int), default=None, metavar="N",
                   help=f"a sequence model: embedding size (default {lm['embed']} for a language model, {s2s['embed']} "
                        "for seq2seq)")
    t.add_argument("--seq-length", type=_positive(int), default=None, metavar="T",
                   help="a language model: characters per window, the span of backprop through time "
                        f"(default {lm['seq_length']}); gpt: its context, the longest window it reads (default 128)")
    t.add_argument("--clip", type=_positive(float, FLOAT32_MAX, " below 3.4e38 (float32)"), default=None,
                   metavar="NORM", help="a sequence model: clip the gradient's global norm to NORM (optax; default "
                                        f"{lm['clip']} for a language model and gpt, {s2s['clip']} for seq2seq)")
    t.add_argument("--layers", type=_positive(int), default=None, metavar="N",
                   help="gpt: transformer blocks (default 4)")
    t.add_argument("--heads", type=_positive(int), default=None, metavar="N",
                   help="gpt: attention heads per block; --width must be a multiple (default 4)")
    t.add_argument("--width", type=_positive(int), default=None, metavar="D",
                   help="gpt: the width of the embeddings and of every block (default 128)")
    t.add_argument("--warmup", type=_positive(int, MAX_EPOCHS, " below 2**31"), default=None, metavar="N",
                   help="gpt: steps of linear learning-rate warm-up from 0 (default 100)")
    t.add_argument("--tie", action="store_true",
                   help="a language model: the output layer reuses the embedding's table (needs --embed = --hidden)")
    t.add_argument("--no-reverse", action="store_true",
                   help="seq2seq: read the questions as written (default: reversed, as in the sequel)")
    t.add_argument("--seed", type=_SEED, default=0, metavar="N",
                   help="the splits, the initialisation and the shuffling (default %(default)s)")
    t.add_argument("--out", type=_folder, default=None, metavar="DIR", help="run folder (default runs/<timestamp>)")
    t.add_argument("--resume", type=_folder, default=None, metavar="RUN",
                   help="continue the run in folder RUN from its last checkpoint, with its own options; "
                        "--epochs may grow (default: start a new run)")
    t.add_argument("--checkpoint-every", type=_positive(int, MAX_EPOCHS, " below 2**31"), default=None, metavar="K",
                   help="write checkpoint.npz every K epochs, and at the end (default: after every compiled "
                        "call, every ceil(epochs / 20) epochs)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--devices", type=_positive(int), default=None, metavar="N",
                   help="image models: train data-parallel on N devices of this process, each batch split "
                        "evenly over them (--batch-size a multiple of N); on a CPU, N > 1 splits the CPU "
                        "into N devices (default: every device JAX sees, one on a CPU)")
    t.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="image models, several processes: the address that process 0 listens on and the "
                        "others reach; give it, --num-processes and --process-id to every process "
                        "(default: one process)")
    t.add_argument("--num-processes", type=_positive(int), default=None, metavar="N",
                   help="with --coordinator: how many processes train the run together (default: one, no coordinator)")
    t.add_argument("--process-id", type=_number(int, 0, "an int >= 0", low_open=False), default=None,
                   metavar="I", help="with --coordinator: this process's number, 0 to N-1; process 0 writes "
                                     "the run folder (default: none, one process)")

    p = commands.add_parser("predict", help=COMMANDS["predict"], formatter_class=raw,
                            description="Classify images with a trained run: PNG or JPEG files (made grayscale, "
                                        "resized to the\nrun's image size, inverted when dark ink on a light "
                                        "ground), .npy arrays and IDX\nfiles (pixels scaled as the run's data: "
                                        "see pure_backprop.runs.read_images).\nPrints each image's class and "
                                        "its top probabilities.\nWith a seq2seq run, the arguments are questions "
                                        "(\"16+75\", \"september 27, 1994\"),\nwritten as its task writes them; "
                                        "prints each question and the run's answer.",
                            epilog=f"examples:\n{_PREDICT_EXAMPLES}")
    p.add_argument("run", type=_folder, metavar="RUN", help="a run folder written by pure-backprop train")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="images: .png, .jpg, .npy or IDX files; questions for a seq2seq run")
    p.add_argument("--top", type=_positive(int), default=None, metavar="K",
                   help="how many of the most probable classes to print (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of lines")

    e = commands.add_parser("evaluate", help=COMMANDS["evaluate"], formatter_class=raw,
                            description="The mean loss and the accuracy of a trained run on a split of a "
                                        "dataset, split\nas the run's own data were (the same seed).",
                            epilog=f"examples:\n{_EVALUATE_EXAMPLES}")
    e.add_argument("run", type=_folder, metavar="RUN", help="a run folder written by pure-backprop train")
    e.add_argument("--dataset", choices=["digits", "mnist"], default=None,
                   help="the dataset (default: the run's own)")
    e.add_argument("--data-dir", type=_folder, default=None, metavar="DIR",
                   help="folder of the four MNIST IDX files (default: the run's, else data/mnist)")
    e.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="which split (default %(default)s)")

    g = commands.add_parser("generate", help=COMMANDS["generate"], formatter_class=raw,
                            description="Write text with a trained language model (--model rnn-lm, lstm-lm, "
                                        "gru-lm or gpt):\nthe prompt is read from a zero state (a gpt: its last "
                                        "context characters), then each next character "
                                        "is drawn from\nsoftmax(scores / temperature) and fed back. Prints the "
                                        "prompt and what follows.",
                            epilog=f"examples:\n{_GENERATE_EXAMPLES}")
    g.add_argument("run", type=_folder, metavar="RUN", help="a language model's run folder written by pure-backprop train")
    g.add_argument("--prompt", required=True, metavar="TEXT",
                   help="the text to continue, of the characters of the run's text (no default: required)")
    g.add_argument("--length", type=_number(int, 0, "an int in [0, 1000000]", high=1_000_001, low_open=False),
                   default=200, metavar="N", help="characters to write after the prompt (default %(default)s)")
    g.add_argument("--temperature", type=_number(float, 0, "a finite number >= 0", low_open=False), default=1.0,
                   metavar="T", help="1 samples from the model's distribution; below 1 more likely characters, "
                                     "0 always the most likely one (default %(default)s)")
    g.add_argument("--top-k", type=_positive(int), default=None, metavar="K",
                   help="draw only among the K most likely characters (default: among all)")
    g.add_argument("--seed", type=_SEED, default=0, metavar="N", help="the sampling (default %(default)s)")

    c = commands.add_parser("check", help=COMMANDS["check"], formatter_class=raw,
                            description="Check the hand-written backward pass of every built-in node, layer and "
                                        "network\n(or of --layer) in float64 against jax.vjp and finite "
                                        "differences;\nexit 1 on a failure.",
                            epilog=f"examples:\n{_CHECK_EXAMPLES}")
    c.add_argument("--layer", default=None, metavar="NAME",
                   help="check only this node, layer or network (see --list; default: every one)")
    c.add_argument("--mode", choices=["fast", "full"], default="fast",
                   help="fast: finite differences along a few random directions of each parameter and of the "
                        "input; full: at every entry (default %(default)s)")
    c.add_argument("--seed", type=_SEED, default=0, metavar="N",
                   help="the parameters, inputs and directions (default %(default)s)")
    c.add_argument("--list", action="store_true", help="list the names that --layer accepts")
    for command in (t, p, e, g, c):
        command.add_argument("--compile-cache", type=_cache_folder, default=default_cache(), metavar="DIR",
                             help="keep XLA's compiled programs in DIR, so that a later run with the same "
                                  "settings skips compiling them; 'none' to keep nothing "
                                  "(default $XDG_CACHE_HOME/pure_backprop/xla or ~/.cache/pure_backprop/xla)")
    return parser


def _no_command(parser: argparse.ArgumentParser) -> str:
    """What a bare ``pure-backprop`` prints: the usage, one line per command and where to start."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join([parser.format_usage().rstrip(), "", "commands:", *lines, "", HINT])


def default_cache() -> str:
    """Where the command line keeps compiled programs unless told otherwise: a folder of the
    user's own cache (JAX runs what it finds there: never a folder others can write to)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pure_backprop", "xla")


def _cache_folder(text: str) -> str | None:
    if text == "none":
        return None
    if not text:
        raise argparse.ArgumentTypeError("give a folder, or 'none' to keep no compiled programs")
    return text


CACHE_MAX_BYTES = 256 * 2**20  # least recently used programs are dropped beyond this
_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size",
                  "jax_enable_compilation_cache")


@contextlib.contextmanager
def compilation_cache(folder: str | None):
    """JAX's persistent compilation cache in ``folder`` (every program, however quick to compile)
    for the duration of one command, and JAX's settings as they were afterwards (the command may
    run inside another program, such as the tests). ``None``, or a folder that cannot be made:
    no cache, not even one the surrounding program set up (the latter with a warning; a run never
    fails for want of a cache)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cache

    if folder is not None:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"pure-backprop: warning: --compile-cache {folder}: {e.strerror or e}; compiling without a cache",
                  file=sys.stderr)
            folder = None
    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
    else:
        for name, value in zip(_CACHE_OPTIONS, (str(folder), 0.0, -1, CACHE_MAX_BYTES, True)):
            jax.config.update(name, value)
    cache.reset_cache()  # read the folder afresh: JAX sets its cache up once, at the first compile
    try:
        yield folder
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        cache.reset_cache()


def main(argv=None) -> int:
    """Run one command. Ctrl-C is caught from the first line on (the parser imports JAX),
    as a flag polled between compiled calls; see ``_StopRequest``. Called with ``argv=None``
    it owns the process: Ctrl-C stays caught (ignored) after it returns, while the
    interpreter shuts JAX down, so a late Ctrl-C cannot turn exit 130 into a traceback."""
    with _StopRequest(restore=argv is not None) as stop:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            stop.check()
            if args.command is None:
                print(_no_command(parser), file=sys.stderr)
                return EXIT_USAGE
            with compilation_cache(args.compile_cache):
                if args.command == "train":
                    _start_devices(args, owns_process=argv is None)
                    if args.resume is not None:
                        args.explicit = _explicit(sys.argv[1:] if argv is None else argv)
                    return train_command(args, stop)
                if args.command == "predict":
                    return predict_command(args)
                if args.command == "evaluate":
                    return evaluate_command(args)
                if args.command == "generate":
                    from .cli_sequences import generate_command

                    return generate_command(args)
                return check_command(args, stop)
        except UsageError as e:
            print(f"pure-backprop: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("pure-backprop: interrupted; wrote nothing", file=sys.stderr)
            return 130


# --- train ---------------------------------------------------------------------------------


def _start_devices(args, owns_process: bool) -> None:
    """Before JAX's first computation: join the run's processes (``--coordinator``) and, when
    the command owns the process (not ``main(argv)`` called within a program, whose JAX keeps
    its devices), split a CPU into ``--devices`` devices (``jax_num_cpu_devices``; harmless on
    an accelerator)."""
    group = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
             "--process-id": args.process_id}
    if None in group.values() and any(v is not None for v in group.values()):
        missing = ", ".join(k for k, v in group.items() if v is None)
        raise UsageError(f"--coordinator, --num-processes and --process-id go together (every process of the run "
                         f"gets all three); missing {missing}")
    if args.model not in MODELS:
        if args.devices not in (None, 1) or args.coordinator is not None:
            raise UsageError(f"--devices and --coordinator apply to the image models (mlp, convnet, deepconvnet); "
                             f"{args.model} trains on one device")
        return
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id {args.process_id} must be below --num-processes {args.num_processes}")
    import jax

    if owns_process and args.devices is not None and args.devices > 1:
        jax.config.update("jax_num_cpu_devices", args.devices)
    if args.coordinator is not None:
        from .parallel import initialize

        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--coordinator {args.coordinator}: expected HOST:PORT, e.g. 10.0.0.1:8476")
        print(f"process {args.process_id} of {args.num_processes}: joining at {args.coordinator} (JAX aborts the "
              f"process if not all have joined within {JOIN_TIMEOUT} s)", file=sys.stderr, flush=True)
        initialize(args.coordinator, args.num_processes, args.process_id, timeout=JOIN_TIMEOUT)


def _mesh(args):
    """The run's devices: ``None`` (the plain one-device program) for one device of one process,
    else a data mesh over the first ``--devices`` devices of every process."""
    import jax

    from .parallel import data_mesh

    local = jax.local_devices()
    n = args.devices or len(local)
    if n > len(local):
        raise UsageError(f"--devices {n}: JAX sees {len(local)} {local[0].platform} device"
                         f"{'s' if len(local) > 1 else ''} in this process")
    if n == 1 and jax.process_count() == 1:
        return None
    chosen = [d for p in range(jax.process_count())
              for d in sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)[:n]]
    mesh = data_mesh(chosen)
    if args.batch_size % mesh.size:
        raise UsageError(f"--batch-size {args.batch_size} does not split evenly over {mesh.size} devices (each "
                         f"takes an equal share of every batch); choose a multiple of {mesh.size}")
    return mesh


def _prepare_out(out: str | None) -> tuple[Path, list[Path]]:
    """Check that the run folder can be written; returns it and the folders this call
    created, deepest first (so that a run that writes nothing removes them again)."""
    path = Path(out) if out else Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                if folder == path:
                    raise UsageError(f"--out {path} is a file, not a folder; give a folder for the run")
                raise UsageError(f"--out {path}: {folder} is a file, not a folder; give a path of folders")
            break
    if (path / "metrics.json").exists():
        raise UsageError(f"--out {path} already holds a run (metrics.json); choose another folder")
    created = [f for f in (path, *path.parents) if not f.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        _remove_empty(created)
        raise UsageError(f"cannot write to output folder {path}: {e.strerror or e}") from None
    return path, created


def _remove_empty(folders):
    for folder in folders:  # deepest first; a folder that is not empty stays
        try:
            folder.rmdir()
        except OSError:
            return


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


def _load(args, stop):
    from . import data

    if args.dataset == "digits":
        for flag, value in (("--data-dir", args.data_dir), ("--mirror", args.mirror), ("--download", args.download)):
            if value:
                raise UsageError(f"{flag} applies to --dataset mnist only; the digits come with pure_backprop")
    elif args.mirror and not args.download:
        raise UsageError("--mirror applies only with --download")
    try:
        if args.dataset == "digits":
            dataset = data.load_digits(seed=args.seed)
        else:
            data_dir = args.data_dir or "data/mnist"
            if args.download:
                with stop.immediate():  # plain Python I/O: Ctrl-C may stop it at once
                    data.download_mnist(data_dir, args.mirror or data.MNIST_MIRROR)
            dataset = data.load_mnist(data_dir)
        return data.split_validation(dataset, args.validation, seed=args.seed)
    except data.DataError as e:
        raise UsageError(str(e)) from None


class _StopRequest:
    """SIGINT sets a flag instead of raising inside an import of JAX or inside its compiler or
    runtime (where a ``KeyboardInterrupt`` can crash the process or break the import); the
    commands poll it between compiled calls. Every Ctrl-C, the first or a later one, ends
    the same clean way. Inside ``immediate()`` (plain Python I/O such as a download) it
    raises ``KeyboardInterrupt`` at once instead. Outside the main thread it does nothing
    (only the main thread may set signal handlers)."""

    def __init__(self, restore: bool = True):
        self.requested = False
        self.raising = False
        self.restore = restore
        self.previous = None
        self.installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous if self.restore else signal.SIG_IGN)
        return False

    def _handle(self, signum, frame):
        if not self.requested:
            print("\npure-backprop: interrupted; stopping as soon as the running step ends", file=sys.stderr, flush=True)
        self.requested = True
        if self.raising:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def immediate(self):
        self.check()
        self.raising = True
        try:
            yield
        finally:
            self.raising = False

    def check(self):
        if self.requested:
            raise KeyboardInterrupt


def _finite_or_none(value):
    """Strict JSON has no NaN or Infinity: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def train_command(args, stop: _StopRequest | None = None) -> int:
    if getattr(args, "resume", None) is not None:
        if args.out is not None:
            raise UsageError(f"--out applies to a new run; --resume {args.resume} continues in the run's own folder")
        out, created = Path(args.resume), []
    elif getattr(args, "process_id", None):  # process 0 writes the run folder; the others write nothing
        out, created = Path(args.out or "runs"), []
    else:
        out, created = _prepare_out(args.out)
    written: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            stop = stop or stack.enter_context(_StopRequest())
            code = _train(args, out, stop, written)
    except KeyboardInterrupt:
        code = 130
    except MemoryError:
        raise UsageError("out of memory; choose smaller --hidden widths or a smaller --batch-size") from None
    except RuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        raise UsageError("out of memory (the accelerator's or the host's); choose smaller --hidden widths or a "
                         "smaller --batch-size") from None
    finally:
        if not written:
            _remove_empty(created)  # leave no empty run folder behind
    if code == 130:
        what = ", ".join(str(p) for p in written) if written else "nothing (no epoch had finished)"
        print(f"pure-backprop: interrupted; wrote {what}", file=sys.stderr)
    return code


def _model_options(args):
    """Fill the per-model defaults and refuse options that do nothing for the chosen model."""
    for name in SEQUENCE_ONLY:
        if getattr(args, name, None):
            raise UsageError(f"--{name.replace('_', '-')} applies to the sequence models, not {args.model}")
    if getattr(args, "dataset", None) not in (None, "digits", "mnist"):
        raise UsageError(f"--dataset {args.dataset} is for the sequence models; --model {args.model} trains on "
                         "digits or mnist")
    for name, default in IMAGE_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    if args.model != "mlp":
        for name in MLP_ONLY:
            if getattr(args, name):
                raise UsageError(f"--{name} applies to --model mlp only, not {args.model}")
        if args.dropout is not None and args.model == "convnet":
            raise UsageError("--dropout applies to --model mlp or deepconvnet, not convnet")
        if args.init is not None and args.model == "deepconvnet":
            raise UsageError("--init applies to --model mlp or convnet; deepconvnet uses He init")
    args.hidden = args.hidden or (50,)
    args.activation = args.activation or "relu"
    args.epochs = args.epochs or MODELS[args.model]["epochs"]
    for name in ("dropout", "lr", "schedule", "weight_decay"):
        if getattr(args, name) is None:
            setattr(args, name, MODELS[args.model][name])


def _run_options(args, dataset=None) -> dict:
    """The options a run records (``runs.RUN_OPTIONS``, and with ``dataset`` what it gives:
    ``runs.network_for`` builds the network from them)."""
    from .augment import Affine
    from .network import DEFAULT_INIT

    mlp = args.model == "mlp"
    options = {
        "dataset": args.dataset, "model": args.model, "hidden": list(args.hidden) if mlp else None,
        "activation": args.activation if mlp else "relu",
        "init": args.init or (DEFAULT_INIT[args.activation] if mlp else "he"), "batchnorm": args.batchnorm,
        "dropout": args.dropout, "weight_decay": args.weight_decay, "optimizer": args.optimizer, "lr": args.lr,
        "schedule": args.schedule, "batch_size": args.batch_size,
        "augment": Affine()._asdict() if args.augment == "affine" else None, "validation": args.validation,
        "seed": args.seed, "epochs": args.epochs,
    }
    if dataset is not None:
        options.update(image_shape=list(dataset.image_shape), num_classes=dataset.num_classes,
                       train_samples=len(dataset.x_train),
                       data_dir=(args.data_dir or "data/mnist") if args.dataset == "mnist" else None)
    return options


def _network(options):
    """The network of the options and its input shape (images as ``(-1, 1, H, W)`` for CNNs)."""
    from .runs import network_for

    try:
        return network_for(options)
    except ValueError as e:
        raise UsageError(f"--model {e}") from None


def _explicit(argv) -> set[str]:
    """The names of the options given on the command line ``argv`` (not left to their defaults)."""
    parser = build_parser()
    for action in parser._actions:  # argparse keeps no public list of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                for option in command._actions:
                    option.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _flag_text(name, value) -> str:
    """``--name value`` as the command line spells the option."""
    if value is None or isinstance(value, bool):
        value = {None: "none", True: "on", False: "off"}[value]
    elif name == "hidden":
        value = ",".join(map(str, value))
    elif name == "augment":
        value = "affine"
    return f"--{name.replace('_', '-')} {value}"


def _resume(args):
    """Load the checkpoint of ``--resume`` and set the run's options on ``args``; refuse the
    options given that would change the run, and an --epochs the run cannot take."""
    from .runs import CHECKPOINT, RUN_OPTIONS, RunError, different_options, load_checkpoint

    folder = Path(args.resume)
    if not (folder / CHECKPOINT).is_file():
        what = "no such folder" if not folder.exists() else f"no {CHECKPOINT} in it"
        raise UsageError(f"--resume {folder}: {what}; give the folder of a run written by pure-backprop train")
    try:
        checkpoint, _ = load_checkpoint(folder / CHECKPOINT)
    except RunError as e:
        raise UsageError(f"--resume: {e}") from None
    run = checkpoint.options
    given = argparse.Namespace(**vars(args))
    _model_options(given)
    mine = _run_options(given)
    changed = [name for name in different_options(mine, run) if name in getattr(args, "explicit", ())]
    if changed:
        def flags(options):
            return ", ".join(_flag_text(n, options[n]) for n in changed)

        raise UsageError(f"--resume {folder}: {flags(mine)} would change the run, which trained with {flags(run)}; "
                         f"leave {'it' if len(changed) == 1 else 'them'} out to continue the run")
    epochs = args.epochs or run["epochs"]
    if epochs <= checkpoint.epoch:
        raise UsageError(f"--resume {folder}: the run has trained {checkpoint.epoch} epochs; give --epochs above "
                         f"{checkpoint.epoch} to train it further")
    if run["schedule"] == "cosine" and epochs != run["epochs"]:
        fix = ("leave --epochs out to finish them" if checkpoint.epoch < run["epochs"] else
               f"train a new run with --epochs {epochs} instead")
        raise UsageError(f"--resume {folder}: --epochs {epochs} would change the run: its cosine schedule spans "
                         f"the {run['epochs']} epochs it started with; {fix}")
    mlp, deep = run["model"] == "mlp", run["model"] == "deepconvnet"
    for name in RUN_OPTIONS:
        setattr(args, name, run[name])
    args.hidden = tuple(run["hidden"]) if mlp else None
    args.activation = run["activation"] if mlp else None
    args.init = None if deep else run["init"]
    args.dropout = run["dropout"] if run["model"] != "convnet" else None
    args.augment = "affine" if run["augment"] else "none"
    args.epochs = epochs
    if run["dataset"] == "mnist":
        args.data_dir = args.data_dir or run["data_dir"]
    return checkpoint


def _train(args, out: Path, stop: _StopRequest, written: list) -> int:
    if args.model not in MODELS:
        from .cli_sequences import train_sequence

        return train_sequence(args, out, stop, written)
    resumed = _resume(args) if getattr(args, "resume", None) is not None else None
    _model_options(args)
    dataset = _load(args, stop)
    if args.batch_size > len(dataset.x_train):
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {len(dataset.x_train)} training samples")
    options = _run_options(args, dataset)
    if resumed is not None and (options["train_samples"], options["image_shape"]) != (
            resumed.options["train_samples"], list(resumed.options["image_shape"])):
        raise UsageError(f"--resume {args.resume}: the data differ from the run's: {options['train_samples']} "
                         f"training images of {options['image_shape']} pixels, the run trained on "
                         f"{resumed.options['train_samples']} of {list(resumed.options['image_shape'])}")
    if args.model == "mlp":
        _check_memory(args, math.prod(dataset.x_train.shape[1:]), dataset.num_classes)
    stop.check()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    from .augment import Affine, affine_augmenter
    from .core import freeze, lift
    from .gradcheck import ONE_OFF, compare_with_jax
    from .layers import softmax_cross_entropy
    from .runs import CHECKPOINT, Checkpoint, optimizer_for, save_checkpoint
    from .train import as_numpy_tree, compile_fit, fit

    start = time.perf_counter()
    mesh = _mesh(args)
    writer = jax.process_index() == 0  # of several processes, process 0 writes the run folder
    network, in_shape = _network(options)
    if in_shape[1:] != dataset.x_train.shape[1:]:
        dataset = dataset._replace(**{k: getattr(dataset, k).reshape(in_shape)
                                      for k in ("x_train", "x_val", "x_test") if getattr(dataset, k) is not None})
    def init(seed):  # one compiled program, not one per eager random draw (seconds: threefry compiles slowly)
        key_init, key_check, key_train = jax.random.split(jax.random.PRNGKey(seed), 3)
        params, state, _ = lift(network).init(key_init, in_shape)
        return params, state, key_check, key_train

    init = jax.jit(init, compiler_options=ONE_OFF)
    # Zeros shaped like init's outputs stand in for them while the training program compiles:
    # its compilation starts before init runs (the same shapes and dtypes, the same program).
    placeholders = jax.tree_util.tree_map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)),
                                          jax.eval_shape(init, args.seed))
    optimizer = optimizer_for(options)
    augment = Affine() if args.augment == "affine" else None
    splits = {"train": (dataset.x_train, dataset.y_train)}
    if dataset.x_val is not None:
        splits["val"] = (dataset.x_val, dataset.y_val)
    splits["test"] = (dataset.x_test, dataset.y_test)
    splits = {k: (jnp.asarray(x), jnp.asarray(y)) for k, (x, y) in splits.items()}
    devices = 1 if mesh is None else mesh.size
    settings = dict(epochs=args.epochs, batch_size=args.batch_size, evaluate_on=splits,
                    augment=augment and affine_augmenter(dataset.image_shape, augment),
                    weight_decay=args.weight_decay, mesh=mesh,
                    eval_batch_size=math.ceil(max(args.batch_size, 500) / devices) * devices,
                    epochs_per_call=min(max(1, math.ceil(args.epochs / 20)), 10_000))
    checkpoint_every = args.checkpoint_every or settings["epochs_per_call"]

    # The training program compiles in a second thread while this one initializes and checks
    # the gradient.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        params, state, _, key = placeholders
        compiled = pool.submit(compile_fit, network, softmax_cross_entropy, optimizer, params, *splits["train"],
                               key=key, state=state, **settings)
        params, state, key_check, key_train = init(args.seed)
        prior, resume = [], {}
        if resumed is not None:  # the run's own key and where it stopped
            params, state, key_train, prior = resumed.params, resumed.state, resumed.key, resumed.history
            resume = dict(opt_state=resumed.opt_state, start_epoch=resumed.epoch)
        fit_args = (network, softmax_cross_entropy, optimizer, params, *splits["train"])
        fit_kwargs = dict(key=key_train, state=state, checkpoint_every=checkpoint_every, **resume, **settings)
        batch = (dataset.x_train[: args.batch_size], dataset.y_train[: args.batch_size])
        grad_error = compare_with_jax(freeze(network, state, key_check, True), softmax_cross_entropy, params, *batch)
        print(f"gradient check (float64, one batch of {len(batch[0])}, train mode): "
              f"hand vs jax.grad max relative error {grad_error:.2e}", flush=True)
        compiled.result()
    stop.check()

    bar = tqdm(total=args.epochs, desc="train", unit="epoch", disable=args.no_progress or not writer, file=sys.stderr)

    def progress(records):
        bar.update(len(records))
        if records:
            last = records[-1]
            bar.set_postfix({k.replace("_accuracy", "_acc"): f"{last[k]:.4f}" for k in last if k.endswith("accuracy")})

    # matplotlib (0.4-0.7 s to import, 0.25 s more for its first figure) warms up in a thread
    # while training runs in XLA, without the GIL
    def checkpoint(result):
        if not writer:
            return
        history = prior + result.history
        save_checkpoint(out / CHECKPOINT, Checkpoint(result.params, result.state, result.opt_state, key_train,
                                                     len(history), history, options))
        if out / CHECKPOINT not in written:
            written.append(out / CHECKPOINT)

    warm = threading.Thread(target=_warm_plotting, name="warm-plotting")
    warm.start()
    if resumed is not None:
        bar.update(resumed.epoch)
    result = fit(*fit_args, **fit_kwargs, on_epochs=progress, should_stop=lambda: stop.requested,
                 on_checkpoint=checkpoint)
    bar.close()
    history = prior + result.history
    interrupted = result.interrupted or stop.requested
    if not result.history:  # no epoch finished: the run folder stays as it was
        if result.diverged_epoch is not None:
            print(f"pure-backprop: error: training diverged in epoch {result.diverged_epoch} (a non-finite loss or "
                  f"parameter); nothing written; try a smaller --lr", file=sys.stderr)
            return 1
        return 130

    last = history[-1]
    init = options["init"]
    metrics = {
        **{k: options[k] for k in ("dataset", "model", "hidden", "activation", "init", "batchnorm", "dropout",
                                   "weight_decay", "optimizer", "lr", "schedule", "batch_size", "augment",
                                   "validation", "image_shape", "num_classes", "data_dir")},
        "train_samples": len(dataset.x_train),
        "validation_samples": 0 if dataset.x_val is None else len(dataset.x_val),
        "test_samples": len(dataset.x_test),
        "epochs": len(history), "epochs_requested": args.epochs, "seed": args.seed, "interrupted": interrupted,
        "diverged_epoch": result.diverged_epoch, "resumed_from_epoch": resumed and resumed.epoch,
        "checkpoint_every": checkpoint_every,
        "train_accuracy": last["train_accuracy"], "val_accuracy": last.get("val_accuracy"),
        "test_accuracy": last["test_accuracy"],
        "grad_check_max_rel_error": grad_error, "devices": devices, "processes": jax.process_count(),
        "seconds": time.perf_counter() - start, "jax_version": jax.__version__, "history": history,
    }
    if not writer:
        print(f"process {jax.process_index()} of {jax.process_count()}: trained {len(history)} epochs; process 0 "
              f"wrote the run folder")
        return 1 if result.diverged_epoch is not None else 130 if interrupted else 0
    arrays = {**as_numpy_tree(result.params, "params"), **as_numpy_tree(result.state, "state")}
    _write_atomic(out / "params.npz", lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    written.append(out / "params.npz")
    checkpoint(result)
    what = f"hidden {list(args.hidden)} {args.activation}" if args.model == "mlp" else args.model
    title = (f"{dataset.name}: {what}, init {init}"
             f"{', batchnorm' if args.batchnorm else ''}{f', dropout {args.dropout}' if args.dropout else ''}"
             f"{f', weight decay {args.weight_decay}' if args.weight_decay else ''}\n{args.optimizer} lr {args.lr}{' cosine' if args.schedule == 'cosine' else ''}, "
             f"batch {args.batch_size}, augment {args.augment}")
    warm.join()  # done by now unless the run was short: one figure drawn at a time
    _write_atomic(out / "curves.png", lambda tmp: _plot(history, tmp, title))
    written.append(out / "curves.png")
    text = json.dumps(_finite_or_none(metrics), indent=2, allow_nan=False)
    _write_atomic(out / "metrics.json", lambda tmp: Path(tmp).write_text(text))
    written.append(out / "metrics.json")
    val = f"  val accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    print(f"train accuracy {last['train_accuracy']:.4f}{val}  test accuracy {last['test_accuracy']:.4f}  "
          f"({metrics['seconds']:.1f} s)")
    print(f"wrote {', '.join(str(p) for p in written)}")
    if result.diverged_epoch is not None:
        print(f"pure-backprop: error: training diverged in epoch {result.diverged_epoch} (a non-finite loss or "
              f"parameter); kept the parameters of epoch {result.diverged_epoch - 1}; try a smaller --lr",
              file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def _check_memory(args, features: int, classes: int):
    """Refuse a network that cannot fit in this machine's memory before JAX tries (and
    hangs, swaps or fails deep inside XLA). Python ints throughout: no overflow. The
    estimate counts the float64 gradient check (params, two gradients, promoted copies)
    and float32 training (params, gradients, optimizer state, the kept finite copy), plus
    the activations of the largest batch."""
    widths = [features, *args.hidden, classes]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    batch = max(args.batch_size, 500)
    need = 40 * params + 32 * batch * sum(widths)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total:
        hidden = ",".join(str(w) for w in args.hidden)
        raise UsageError(f"--hidden {hidden} with --batch-size {args.batch_size} gives {params:,} parameters and "
                         f"needs about {need / 2**30:.3g} GiB, more than this machine's {total / 2**30:.3g} GiB "
                         f"of memory; choose smaller widths")


def _warm_plotting():
    """Import matplotlib and draw a small figure like ``_plot``'s into memory: a first figure
    loads fonts and builds caches (0.46 s for the default run's plot, against 0.22 s for the
    next), which this moves off the end of the run."""
    with contextlib.suppress(Exception):  # a warm-up only: the real plot reports its own errors
        _plot([{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}, {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.9}],
              io.BytesIO(), "warm-up")


MARKED_EPOCHS = 20  # curves of at most this many epochs mark each epoch (a single epoch is a point)


def _plot(history, path, title):
    """Draw the loss (log scale) and the accuracy of each split per epoch into the PNG ``path``;
    returns the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no GUI backend to import, no global figure state
    from matplotlib.ticker import LogFormatter, MaxNLocator

    class _PlainLog(LogFormatter):
        """LogFormatter's choice of the ticks to label, written 0.01 or 2.17, not 10^-2 or
        2.17x10^0 (a loss spanning less than a decade gets the latter, which ran off the figure)."""

        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    splits = [s for s in ("train", "val", "test") if f"{s}_accuracy" in history[0]]
    epochs = [h["epoch"] for h in history]
    style = {"marker": "o", "markersize": 4} if len(epochs) <= MARKED_EPOCHS else {}
    fig = Figure(figsize=(10, 4.4))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in splits:
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], label=split, **style)
        values = [h[f"{split}_accuracy"] for h in history]
        ax_acc.plot(epochs, values, label=f"{split} (last {values[-1]:.4f})", **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    ax_loss.yaxis.set_major_formatter(_PlainLog())
    ax_loss.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    # zoom on where the accuracies settle: the first tenth of the epochs may run off the bottom
    settled = [h[f"{s}_accuracy"] for h in history[len(history) // 10:] for s in splits]
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(max(0.0, min(settled) - 0.01), 1.0025))
    for ax in (ax_loss, ax_acc):
        # whole epochs, even in a run of one; otherwise the ticks of matplotlib's default (AutoLocator)
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    # fixed margins (tight_layout drew twice); the left one fits a loss label as wide as 0.0001
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.84, wspace=0.22)
    fig.savefig(path, format="png", dpi=100)
    return fig


# --- predict and evaluate ------------------------------------------------------------------


def _load_run(folder):
    from .runs import RunError, load_run

    try:
        return load_run(folder)
    except RunError as e:
        raise UsageError(str(e)) from None


def predict_command(args) -> int:
    """``pure-backprop predict RUN FILE...``: every file read first (a bad one stops the command
    before any output), then one line per image, or one JSON list with ``--json``."""
    import numpy as np

    from .runs import RunError, predict, read_images
    from .sequence_runs import is_sequence_run

    if is_sequence_run(args.run):
        from .cli_sequences import predict_questions

        return predict_questions(args)
    args.top = args.top or 3
    run = _load_run(args.run)
    try:
        files = [(name, read_images(name, run.options)) for name in args.files]
    except RunError as e:
        raise UsageError(str(e)) from None
    rows = []
    for name, images in files:
        for i, p in enumerate(predict(run, images)):
            top = np.argsort(-p, kind="stable")[: args.top]
            rows.append({"file": name, "index": i if len(images) > 1 else None, "class": int(top[0]),
                         "top": [{"class": int(c), "probability": float(p[c])} for c in top],
                         "probabilities": [float(v) for v in p]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        where = row["file"] if row["index"] is None else f"{row['file']}[{row['index']}]"
        top = ", ".join(f"{t['class']}: {t['probability']:.3f}" for t in row["top"])
        print(f"{where}: {row['class']}  ({top})")
    return 0


def evaluate_command(args) -> int:
    """``pure-backprop evaluate RUN``: the loss and accuracy on a split, the run's test split by default."""
    from .data import DataError
    from .runs import evaluate, run_dataset
    from .sequence_runs import is_sequence_run

    if is_sequence_run(args.run):
        raise UsageError(f"{args.run} is a sequence run: its validation and test figures are in its metrics.json; "
                         "evaluate scores image runs")
    run = _load_run(args.run)
    name = args.dataset or run.options["dataset"]
    try:
        dataset = run_dataset(run._replace(options={**run.options, "dataset": name}), args.data_dir)
    except DataError as e:
        raise UsageError(str(e)) from None
    if tuple(dataset.image_shape) != tuple(run.options["image_shape"]):
        raise UsageError(f"{args.run} takes {run.options['image_shape'][0]}x{run.options['image_shape'][1]} images; "
                         f"{name}'s are {dataset.image_shape[0]}x{dataset.image_shape[1]}")
    x, y = {"train": (dataset.x_train, dataset.y_train), "val": (dataset.x_val, dataset.y_val),
            "test": (dataset.x_test, dataset.y_test)}[args.split]
    if x is None:
        raise UsageError(f"{args.run} was trained with no validation split (--validation 0); choose --split "
                         f"train or test")
    loss, accuracy = evaluate(run, x, y)
    print(f"{args.run}: {name} {args.split} split, {len(y)} images: loss {loss:.4f}  accuracy {accuracy:.4f}")
    return 0


# --- check ---------------------------------------------------------------------------------


def check_command(args, stop: _StopRequest | None = None) -> int:
    """``pure-backprop check``: every registry case at its largest shape, a progress line per
    case on stderr, then one table; exit 1 on failure. Ctrl-C stops after the running case."""
    import jax

    from .gradcheck import check, format_rows, rows_legend
    from .registry import CASES

    if args.list:
        for case in CASES:
            print(f"{case.name:32s} {case.kind}")
        return 0
    cases = [c for c in CASES if args.layer in (None, c.name)]
    if not cases:
        raise UsageError(f"--layer {args.layer!r} is not a built-in case; see 'pure-backprop check --list'")
    rows, failed, problems = [], [], []
    for i, case in enumerate(cases, 1):
        if stop is not None:
            stop.check()
        start = time.perf_counter()
        with jax.enable_x64(True):
            layer, params, x, _ = case.build(jax.random.PRNGKey(args.seed), case.shapes[-1])
        report = check(layer, params, x, mode=args.mode, seed=args.seed, name=case.name)
        rows += [(case.name, leaf) for leaf in report.leaves]
        problems += [f"{case.name}: {p}" for p in report.problems]
        if not report.ok:
            failed.append(case.name)
        print(f"[{i}/{len(cases)}] {case.name}: {'ok' if report.ok else 'FAILED'} ({time.perf_counter() - start:.1f} s)",
              file=sys.stderr, flush=True)
    print(f"pure-backprop check: mode={args.mode}, float64, seed {args.seed}; oracles: jax.vjp and finite differences")
    print(rows_legend(args.mode))
    print(format_rows(rows))
    for p in problems:
        print("problem:", p)
    print(f"{len(cases) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
