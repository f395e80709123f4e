"""``pure-backprop train`` for the sequence models, and ``generate``: the command line's half that
trains language models (``--model rnn-lm|lstm-lm|gru-lm|gpt``, ``--dataset text``) and seq2seq models
(``--model seq2seq|peeky-seq2seq|attention-seq2seq``, ``--dataset addition|date``).

The training loops are ``train_text.fit_language_model``, ``train_gpt.fit_gpt`` and
``train_seq2seq.fit_seq2seq``; the
run folder's layout is ``sequence_runs``. Every default below was chosen on the validation split
(``docs/sequences.md`` gives the figures and the commands that reproduce them).
"""

from __future__ import annotations

import json
import platform
import sys
import threading
import time
from pathlib import Path

from .cli import UsageError, _finite_or_none, _warm_plotting, _write_atomic
from .sequence_runs import GPT_MODELS, LANGUAGE_MODELS, SEQ2SEQ_MODELS, SequenceRunError

# the defaults of each kind of model (an option missing from one does not apply to it)
LM_DEFAULTS = {"dataset": "text", "embed": 64, "hidden": 256, "seq_length": 64, "batch_size": 32, "optimizer": "adam",
               "lr": 3e-3, "schedule": "cosine", "clip": 1.0, "steps": 2000, "dropout": 0.0, "validation": 0.1}
# the GPT's: the configuration of the PyTorch reference (benchmarks/gpt_torch.py), AdamW with
# betas (0.9, 0.99) and weight decay on the matrices, a warm-up and a cosine decay to lr / 10
GPT_DEFAULTS = {"dataset": "text", "layers": 4, "heads": 4, "width": 128, "seq_length": 128, "batch_size": 32,
                "lr": 1e-3, "schedule": "cosine", "warmup": 100, "clip": 1.0, "weight_decay": 0.1, "steps": 1500,
                "validation": 0.1}
SEQ2SEQ_DEFAULTS = {"dataset": "addition", "embed": 16, "hidden": 128, "batch_size": 128, "optimizer": "adam",
                    "lr": 1e-3, "schedule": "constant", "clip": 5.0, "validation": 0.1}
SEQ2SEQ_EPOCHS = {"addition": 70, "date": 10}
TASK_EXAMPLES, TASK_TEST = 50_000, 0.1
EVAL_EVERY = 200  # language models: validation every this many steps
IMAGE_ONLY = ("data_dir", "download", "mirror", "activation", "init", "batchnorm", "weight_decay", "augment",
              "resume", "checkpoint_every")
LM_ONLY = ("text", "steps", "seq_length", "tie", "dropout")
SEQ2SEQ_ONLY = ("epochs", "no_reverse")
GPT_ONLY = ("layers", "heads", "width", "warmup")
NOT_GPT = ("tie", "dropout", "embed", "hidden", "optimizer", "epochs", "no_reverse")  # the GPT has its own
GPT_EVAL_EVERY = 250
ATTENTION_EXAMPLES = 3  # validation examples drawn in attention.png


def _flag(name):
    return "--" + name.replace("_", "-")


def sequence_options(args) -> dict:
    """Check the options given for a sequence model and fill in its defaults; the options a run
    records (``sequence_runs``), without the data's own (``vocab``, sizes)."""
    if args.model in GPT_MODELS:
        return _gpt_options(args)
    for name in GPT_ONLY:
        if getattr(args, name, None):
            raise UsageError(f"{_flag(name)} applies to --model gpt, not {args.model}")
    lm = args.model in LANGUAGE_MODELS
    for name in IMAGE_ONLY:
        if getattr(args, name, None):
            raise UsageError(f"{_flag(name)} applies to the image models (mlp, convnet, deepconvnet), not {args.model}")
    for name in (SEQ2SEQ_ONLY if lm else LM_ONLY):
        if getattr(args, name, None):
            kind = "the seq2seq models" if lm else "the language models (rnn-lm, lstm-lm, gru-lm)"
            raise UsageError(f"{_flag(name)} applies to {kind}, not {args.model}")
    defaults = LM_DEFAULTS if lm else SEQ2SEQ_DEFAULTS
    dataset = args.dataset or defaults["dataset"]
    allowed = ("text",) if lm else ("addition", "date")
    if dataset not in allowed:
        raise UsageError(f"--dataset {dataset} does not suit --model {args.model}; choose "
                         f"{' or '.join(allowed)}")
    if args.hidden is not None and len(args.hidden) != 1:
        raise UsageError(f"--hidden takes one width for {args.model} (its recurrent layers' size), got "
                         f"{','.join(map(str, args.hidden))}")
    options = {"model": args.model, "dataset": dataset}
    for name, default in defaults.items():
        if name == "dataset":
            continue
        value = getattr(args, name, None)
        options[name] = default if value is None else value
    options["hidden"] = args.hidden[0] if args.hidden is not None else defaults["hidden"]
    if not 0 < options["validation"] < 1:
        raise UsageError(f"--validation {options['validation']}: {args.model} needs a validation split, a "
                         "fraction in (0, 1)")
    if lm:
        options["tie"] = bool(args.tie)
        options["text"] = args.text
        if options["tie"] and options["embed"] != options["hidden"]:
            raise UsageError(f"--tie shares the embedding with the output layer, so --embed ({options['embed']}) "
                             f"must equal --hidden ({options['hidden']})")
    else:
        options["epochs"] = args.epochs or SEQ2SEQ_EPOCHS[dataset]
        options["reverse"] = not args.no_reverse
    options["seed"] = args.seed
    return options


def _gpt_options(args) -> dict:
    for name in (*IMAGE_ONLY, *NOT_GPT):
        if name != "weight_decay" and getattr(args, name, None):
            also = " (it trains with AdamW)" if name == "optimizer" else ""
            raise UsageError(f"{_flag(name)} does not apply to --model gpt{also}")
    dataset = args.dataset or GPT_DEFAULTS["dataset"]
    if dataset != "text":
        raise UsageError(f"--dataset {dataset} does not suit --model gpt; choose text")
    options = {"model": args.model, "dataset": dataset}
    for name, default in GPT_DEFAULTS.items():
        if name != "dataset":
            value = getattr(args, name, None)
            options[name] = default if value is None else value
    if options["width"] % options["heads"]:
        raise UsageError(f"--width {options['width']} must be a multiple of --heads {options['heads']} (each head "
                         "reads width / heads features)")
    if not 0 < options["validation"] < 1:
        raise UsageError(f"--validation {options['validation']}: gpt needs a validation split, a fraction in (0, 1)")
    options["text"] = args.text
    options["seed"] = args.seed
    return options


def train_sequence(args, out: Path, stop, written: list) -> int:
    """Train the sequence model of ``args`` into the run folder ``out``; the exit code."""
    options = sequence_options(args)
    trainer = _Trainer(options, out, stop, written, args.no_progress)
    if options["model"] in GPT_MODELS:
        return trainer.gpt()
    return trainer.language_model() if options["model"] in LANGUAGE_MODELS else trainer.seq2seq()


class _Trainer:
    def __init__(self, options, out, stop, written, no_progress):
        self.options, self.out, self.stop, self.written, self.no_progress = options, out, stop, written, no_progress
        self.start = time.perf_counter()

    # --- the two kinds --------------------------------------------------------------------

    def language_model(self) -> int:
        from . import text

        o = self.options
        try:
            corpus = text.load_text(o["text"], o["validation"])
            train = text.windows(corpus.train, o["batch_size"], o["seq_length"], f"{corpus.name}: its training part")
            val = text.windows(corpus.val, o["batch_size"], o["seq_length"],
                               f"{corpus.name}: its validation part (the last {o['validation']:g})")
        except text.TextError as e:
            raise UsageError(str(e)) from None
        o.update(vocab=corpus.vocab)
        self.data = {"text": corpus.name, "text_characters": corpus.characters, "text_sha256": corpus.sha256,
                     "train_characters": int(train[0].size), "val_characters": int(val[0].size),
                     "python_version": platform.python_version()}
        steps = o["steps"]
        network, params, state, key_check, key_train = self._init()
        self._check_gradient(network, state, key_check, params, train[0][0], train[1][0])
        optimizer = self._optimizer(steps)
        self.stop.check()

        from .train_text import fit_language_model

        bar, on_eval = self._step_bar(steps)
        warm = _warm()
        result = fit_language_model(network, optimizer, params, state, train, val, steps=steps, key=key_train,
                                    eval_every=min(EVAL_EVERY, steps), on_eval=on_eval,
                                    should_stop=lambda: self.stop.requested)
        bar.close()
        return self._finish_text(result, warm)

    def gpt(self) -> int:
        from . import text
        from .train_gpt import fit_gpt, gpt_optimizer, random_windows, validation_windows

        o = self.options
        try:
            corpus = text.load_text(o["text"], o["validation"])
            validation_windows(corpus.val, o["seq_length"], f"{corpus.name}: its validation part (the last "
                                                             f"{o['validation']:g})")
            if len(corpus.train) < o["seq_length"] + 1:
                raise text.TextError(f"{corpus.name}: its training part has {len(corpus.train)} characters, too few "
                                     f"for one window of {o['seq_length']} and its next; use a shorter --seq-length")
        except text.TextError as e:
            raise UsageError(str(e)) from None
        o.update(vocab=corpus.vocab)
        self.data = {"text": corpus.name, "text_characters": corpus.characters, "text_sha256": corpus.sha256,
                     "train_characters": int(len(corpus.train)), "val_characters": int(len(corpus.val)),
                     "python_version": platform.python_version()}
        steps = o["steps"]
        network, params, _, key_check, key_train = self._init()
        import jax.numpy as jnp

        x, t = random_windows(key_check, jnp.asarray(corpus.train), o["batch_size"], o["seq_length"])
        self._check_gradient(network, (), key_check, params, x, t)
        optimizer = gpt_optimizer(o["lr"], steps, o["warmup"], o["lr"] / 10 if o["schedule"] == "cosine" else o["lr"],
                                  o["weight_decay"], o["clip"])
        self.stop.check()

        bar, on_eval = self._step_bar(steps)
        warm = _warm()
        result = fit_gpt(network, optimizer, params, corpus.train, corpus.val, steps=steps, batch=o["batch_size"],
                         context=o["seq_length"], key=key_train, eval_every=min(GPT_EVAL_EVERY, steps), on_eval=on_eval,
                         should_stop=lambda: self.stop.requested)
        bar.close()
        last = result.history[-1] if result.history else None
        return self._finish_text(result, warm, last and {"ms_per_step": 1e3 * last["seconds"] / last["step"]})

    def seq2seq(self) -> int:
        from .tasks import decoder_io, make_task
        from .train import updates
        from .train_seq2seq import exact_match, fit_seq2seq

        o = self.options
        task = make_task(o["dataset"], TASK_EXAMPLES, o["seed"], o["validation"], TASK_TEST, o["reverse"])
        o.update(vocab=task.vocab)
        self.data = {"examples": TASK_EXAMPLES, "train_examples": len(task.x_train), "val_examples": len(task.x_val),
                     "test_examples": len(task.x_test)}
        if o["batch_size"] > len(task.x_train):
            raise UsageError(f"--batch-size {o['batch_size']} exceeds the {len(task.x_train)} training examples")
        steps = updates(len(task.x_train), o["batch_size"], o["epochs"])
        network, params, _, key_check, key_train = self._init()
        inputs, targets = decoder_io(task.t_train[:o["batch_size"]])
        self._check_gradient(network, (), key_check, params, (task.x_train[:o["batch_size"]], inputs), targets)
        optimizer = self._optimizer(steps)
        self.stop.check()

        bar = self._bar(o["epochs"], "epoch")

        def on_epoch(record):
            bar.update(1)
            bar.set_postfix(val_exact=f"{record['val_exact_match']:.4f}")

        warm = _warm()
        result = fit_seq2seq(network, optimizer, params, task, epochs=o["epochs"], batch_size=o["batch_size"],
                             key=key_train, on_epoch=on_epoch, should_stop=lambda: self.stop.requested)
        bar.close()
        if not result.history:
            return 130
        test = exact_match(network, result.best_params, task.x_test, task.t_test, task.vocab)
        figures = {"val_exact_match": result.best_val_exact_match, "best_epoch": result.best_epoch,
                   "test_exact_match": test, "epochs_trained": len(result.history),
                   "last_val_exact_match": result.history[-1]["val_exact_match"]}
        warm.join()
        pictures = {}
        if o["model"] == "attention-seq2seq":
            pictures["attention.png"] = lambda path: _plot_attention(network, result.best_params, task, path)
        interrupted = result.interrupted or self.stop.requested
        self._write(result.best_params, figures, result.history, interrupted,
                    lambda path: _plot_seq2seq(result.history, path, self._title()), pictures)
        print(f"validation exact match {figures['val_exact_match']:.4f} (best, epoch {result.best_epoch})  "
              f"test exact match {test:.4f}  ({self.seconds:.1f} s)")
        return self._done(interrupted)

    # --- shared steps ---------------------------------------------------------------------

    def _init(self):
        import jax

        from .gradcheck import ONE_OFF
        from .sequence_runs import init_shape, sequence_network

        network = sequence_network(self.options)
        shape = init_shape(self.options, self.options["batch_size"])

        def init(seed):
            key_init, key_check, key_train = jax.random.split(jax.random.PRNGKey(seed), 3)
            out = network.init(key_init, shape)
            state = out[1] if len(out) == 3 else ()
            return out[0], state, key_check, key_train

        params, state, key_check, key_train = jax.jit(init, compiler_options=ONE_OFF)(self.options["seed"])
        return network, params, state, key_check, key_train

    def _check_gradient(self, network, state, key, params, ids, targets):
        """The hand gradient against ``jax.grad`` in float64 on one batch (the ids bound into the
        network: they are not a variable)."""
        import jax
        import jax.numpy as jnp

        from .core import Layer, freeze
        from .gradcheck import compare_with_jax
        from .layers.time_softmax_cross_entropy import time_softmax_cross_entropy

        frozen = freeze(network, state, key, True)
        ids = jax.tree_util.tree_map(jnp.asarray, ids)
        bound = Layer(frozen.init, lambda p, _: frozen.forward(p, ids),
                      lambda p, residuals, dy: (frozen.backward(p, residuals, dy)[0], None))
        self.grad_error = compare_with_jax(bound, time_softmax_cross_entropy, params, jnp.zeros(()),
                                           jnp.asarray(targets))
        print(f"gradient check (float64, one batch, train mode): hand vs jax.grad max relative error "
              f"{self.grad_error:.2e}", flush=True)

    def _optimizer(self, steps):
        import optax

        from .train import OPTIMIZERS, learning_rate

        o = self.options
        return optax.chain(optax.clip_by_global_norm(o["clip"]),
                           OPTIMIZERS[o["optimizer"]](learning_rate(o["lr"], o["schedule"], steps)))

    def _finish_text(self, result, warm, extra=None) -> int:
        """Write a text model's run (its best params, its figures with ``extra``, its curves) and
        report its best validation figure; the exit code (130 when nothing was trained)."""
        from . import text

        if not result.history:
            return 130
        history = [{**h, "train_bits_per_char": text.bits_per_char(h["train_loss"])} for h in result.history]
        figures = {"val_bits_per_char": result.best_val_bits_per_char, "best_step": result.best_step,
                   "steps": history[-1]["step"], "last_val_bits_per_char": history[-1]["val_bits_per_char"],
                   **(extra or {})}
        warm.join()
        interrupted = result.interrupted or self.stop.requested
        self._write(result.best_params, figures, history, interrupted,
                    lambda path: _plot_language_model(history, path, self._title()))
        print(f"validation bits per character {figures['val_bits_per_char']:.3f} (best, at step {result.best_step} "
              f"of {figures['steps']})  ({self.seconds:.1f} s)")
        return self._done(interrupted)

    def _step_bar(self, steps):
        """A progress bar over the steps and the ``on_eval`` that moves it to each evaluation's step."""
        bar = self._bar(steps, "step")
        last = [0]

        def on_eval(record):
            bar.update(record["step"] - last[0])
            last[0] = record["step"]
            bar.set_postfix(val_bpc=f"{record['val_bits_per_char']:.3f}")

        return bar, on_eval

    def _bar(self, total, unit):
        from tqdm import tqdm

        return tqdm(total=total, desc="train", unit=unit, disable=self.no_progress, file=sys.stderr)

    @property
    def seconds(self):
        return time.perf_counter() - self.start

    def _title(self):
        o = self.options
        if o["model"] in GPT_MODELS:
            return (f"{self.data['text']}: gpt, {o['layers']} layers, {o['heads']} heads, width {o['width']}, context "
                    f"{o['seq_length']}\nadamw lr {o['lr']}, warm-up {o['warmup']}"
                    f"{', cosine' if o['schedule'] == 'cosine' else ''}, weight decay {o['weight_decay']:g}, "
                    f"clip {o['clip']}, batch {o['batch_size']}, seed {o['seed']}")
        what = (f"{o['model']}: embed {o['embed']}, hidden {o['hidden']}" + (", tied" if o.get("tie") else "")
                + (f", dropout {o['dropout']}" if o.get("dropout") else ""))
        data = (self.data.get("text") if "text" in self.data else
                f"{o['dataset']}{' (reversed questions)' if o['reverse'] else ''}")
        return (f"{data}: {what}\n{o['optimizer']} lr {o['lr']}{' cosine' if o['schedule'] == 'cosine' else ''}, "
                f"clip {o['clip']}, batch {o['batch_size']}, seed {o['seed']}")

    def _write(self, params, figures, history, interrupted, curves, pictures=None):
        import jax
        import numpy as np

        from .train import as_numpy_tree

        arrays = as_numpy_tree(params, "params")
        _write_atomic(self.out / "params.npz", lambda tmp: np.savez(open(tmp, "wb"), **arrays))
        self.written.append(self.out / "params.npz")
        for name, draw in {"curves.png": curves, **(pictures or {})}.items():
            _write_atomic(self.out / name, draw)
            self.written.append(self.out / name)
        metrics = {**figures, "interrupted": bool(interrupted), **self.data,
                   "grad_check_max_rel_error": self.grad_error, "seconds": self.seconds,
                   "jax_version": jax.__version__, "options": self.options, "history": history}
        text = json.dumps(_finite_or_none(metrics), indent=2, allow_nan=False)
        _write_atomic(self.out / "metrics.json", lambda tmp: Path(tmp).write_text(text))
        self.written.append(self.out / "metrics.json")

    def _done(self, interrupted):
        print(f"wrote {', '.join(str(p) for p in self.written)}")
        return 130 if interrupted else 0


# --- pictures -----------------------------------------------------------------------------


def _warm():
    """``cli._warm_plotting`` in a thread, started: matplotlib warms up while XLA trains."""
    thread = threading.Thread(target=_warm_plotting, name="warm-plotting")
    thread.start()
    return thread


def _figure(width, height, columns=1, rows=1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, columns, squeeze=False)[0]


def _plot_language_model(history, path, title):
    """Training and validation bits per character against the step."""
    fig, (ax,) = _figure(7, 4.4)
    steps = [h["step"] for h in history]
    style = {"marker": "o", "markersize": 4} if len(steps) <= 20 else {}
    ax.plot(steps, [h["train_bits_per_char"] for h in history], label="train (mean since the last point)", **style)
    val = [h["val_bits_per_char"] for h in history]
    best = min(range(len(val)), key=val.__getitem__)
    ax.plot(steps, val, label=f"validation (best {val[best]:.3f} at step {steps[best]})", **style)
    ax.set(xlabel="step", ylabel="bits per character", title="cross entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.82)
    fig.savefig(path, format="png", dpi=100)
    return fig


def _plot_seq2seq(history, path, title):
    """The training loss and the validation exact match against the epoch."""
    fig, (ax_loss, ax_acc) = _figure(10, 4.4, columns=2)
    epochs = [h["epoch"] for h in history]
    style = {"marker": "o", "markersize": 4} if len(epochs) <= 20 else {}
    ax_loss.plot(epochs, [h["train_loss"] for h in history], **style)
    ax_loss.set(xlabel="epoch", ylabel="cross entropy per character (nats)", yscale="log", title="training loss")
    values = [h["val_exact_match"] for h in history]
    best = max(range(len(values)), key=values.__getitem__)
    ax_acc.plot(epochs, values, label=f"validation (best {values[best]:.4f}, epoch {epochs[best]})", **style)
    ax_acc.set(xlabel="epoch", ylabel="exact match", title="greedy answers exactly right", ylim=(0, 1.005))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.82, wspace=0.25)
    fig.savefig(path, format="png", dpi=100)
    return fig


def _plot_attention(network, params, task, path, examples=ATTENTION_EXAMPLES):
    """The attention weights of the first ``examples`` validation questions as heat maps: the
    question's characters (in the order the encoder read them) across, the characters the model
    wrote (greedy) down, as the sequel's figure."""
    import jax.numpy as jnp
    import numpy as np

    from .seq2seq import attention_map
    from .tasks import START
    from .train_seq2seq import decode_answers

    questions = task.x_val[:examples]
    answers = decode_answers(network, params, questions, task.vocab, task.t_val.shape[1] - 1, batch=len(questions))
    inputs = np.concatenate([np.full((len(questions), 1), task.vocab.index(START), np.int32), answers[:, :-1]], 1)
    weights = np.asarray(attention_map(network, params, jnp.asarray(questions), jnp.asarray(inputs)))
    fig, axes = _figure(4.2 * len(questions), 4.6, columns=len(questions))
    for ax, q, a, w in zip(axes, questions, answers, weights):
        ax.imshow(w, cmap="gray", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(q)), [task.vocab[i] for i in q], fontsize=8)
        ax.set_yticks(range(len(a)), [task.vocab[i] for i in a], fontsize=8)
        read = "".join(task.vocab[i] for i in (q[::-1] if task.reversed else q)).strip()
        ax.set_xlabel("question, as the encoder read it" + (" (reversed)" if task.reversed else ""), fontsize=8)
        ax.set_title(f"{read!r} -> {''.join(task.vocab[i] for i in a).strip()!r}", fontsize=9)
    axes[0].set_ylabel("answer, as the decoder wrote it")
    fig.suptitle("attention weights (white: 1, black: 0)", fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.86, wspace=0.3)
    fig.savefig(path, format="png", dpi=100)
    return fig


# --- generate and predict -----------------------------------------------------------------


def _load(folder):
    from .sequence_runs import load_sequence_run

    try:
        return load_sequence_run(folder)
    except SequenceRunError as e:
        raise UsageError(str(e)) from None


def generate_command(args) -> int:
    """``pure-backprop generate RUN --prompt TEXT``: the prompt, then the sampled characters."""
    from .sequence_runs import generate

    run = _load(args.run)
    try:
        text = generate(run, args.prompt, args.length, args.temperature, args.seed, args.top_k)
    except SequenceRunError as e:
        raise UsageError(str(e)) from None
    print(args.prompt + text)
    return 0


def predict_questions(args) -> int:
    """``pure-backprop predict RUN QUESTION...`` for a seq2seq run: one answer per question."""
    from .sequence_runs import answer

    run = _load(args.run)
    if args.top is not None:
        raise UsageError("--top applies to image runs; a seq2seq run answers with one string per question")
    try:
        answers = answer(run, args.files)
    except SequenceRunError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps([{"question": q, "answer": a} for q, a in zip(args.files, answers)], indent=1))
        return 0
    for q, a in zip(args.files, answers):
        print(f"{q} -> {a}")
    return 0

