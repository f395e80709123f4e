"""The GPT beyond its registry case (which checks its gradient against jax.vjp of the reference
and finite differences): training with the hand gradient follows training with ``jax.grad``
step for step, the optimizer decays only the matrices, the batches are what they claim, and
``train --model gpt`` / ``generate`` work on the command line.

One tiny command-line run (a module fixture) serves every test that needs a run folder."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from messages import raises_exactly
from pure_backprop.cli import main
from pure_backprop.gpt import gpt, parameter_count
from pure_backprop.sequence_runs import generate, load_sequence_run
from pure_backprop.text import make_corpus
from pure_backprop.train_gpt import fit_gpt, gpt_optimizer, make_gpt_chunk, random_windows, validation_windows

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
GPT_OPTIONS = ["--model", "gpt", "--steps", "4", "--layers", "1", "--heads", "2", "--width", "8", "--seq-length", "8",
               "--batch-size", "2", "--warmup", "2", "--no-progress", "--compile-cache", "none"]


def small(layers=2, context=8):
    corpus = make_corpus(TEXT, "cats")
    return corpus, gpt(len(corpus.vocab), context, layers=layers, heads=2, width=8)


@functools.lru_cache(maxsize=None)
def thirty_steps(grads, wrong=False):
    """The losses of 30 AdamW steps of a 2-block GPT from one initialization on one sequence of
    batches, with the hand gradient or ``jax.grad`` (compiled once, shared by the tests below).
    ``wrong``: a hand backward that drops the positions' gradient, a plausible slip."""
    corpus, net = small()
    params, _ = net.init(jax.random.PRNGKey(0), (4, 8))
    if wrong:
        right = net.backward
        net = net._replace(backward=lambda p, r, d: (lambda g: ({**g[0], "pe": {"W": 0 * g[0]["pe"]["W"]}}, g[1]))(
            right(p, r, d)))
    optimizer = gpt_optimizer(1e-2, 30, 5)
    run = make_gpt_chunk(net, optimizer, 30, 4, 8, grads)
    return run(params, optimizer.init(params), jax.random.PRNGKey(1), jnp.asarray(corpus.train), 0)[2]


def test_the_hand_trained_curve_follows_the_jax_grad_trained_one():
    """Same initialization, same batches: the two gradients agree to float32 rounding, and so do
    the 30 losses. (Not every parameter: Adam divides a gradient by its own running size, so an
    entry whose gradient is at the level of rounding, a table row of a rare character, moves by a
    learning-rate-sized step in a direction that rounding decides, in both runs alike.)"""
    hand, oracle = thirty_steps("hand"), thirty_steps("jax")
    assert hand.dtype == jnp.float32
    assert float(hand[-1]) < float(hand[0]) - 0.3  # it learns
    np.testing.assert_allclose(hand, oracle, rtol=2e-5)


def test_a_wrong_hand_gradient_would_leave_the_jax_grad_curve():
    """The comparison above can fail: without the positions' gradient the losses part within the
    same 30 steps by far more than its tolerance."""
    wrong, oracle = thirty_steps("hand", wrong=True), thirty_steps("jax")
    assert np.max(np.abs(wrong - oracle) / np.abs(oracle)) > 1e-3


def test_weight_decay_and_its_mask_touch_the_matrices_only():
    """With zero gradients AdamW's update is the decay alone: ``-lr * wd * W`` for the tables and
    weight matrices, nothing for biases and the layer norms' gamma and beta."""
    _, net = small(layers=1)
    params, _ = net.init(jax.random.PRNGKey(0), (2, 8))
    optimizer = gpt_optimizer(1e-2, 10, 1, weight_decay=0.5)
    state = optimizer.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    update = jax.jit(optimizer.update)  # one compilation, not one per operation and leaf
    _, state = update(zeros, state, params)  # step 0: the warm-up's learning rate is 0
    updates, _ = update(zeros, state, params)
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    decayed = {jax.tree_util.keystr(k) for k, u in flat if bool(jnp.any(u != 0))}
    assert decayed == {jax.tree_util.keystr(k) for k, u in flat if u.ndim >= 2}
    lr = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 1, 10, 1e-3)(1)
    np.testing.assert_allclose(updates["te"]["W"], -lr * 0.5 * params["te"]["W"], rtol=1e-6)


def test_random_windows_are_windows_of_the_text_and_their_next_characters():
    ids = jnp.arange(100, dtype=jnp.int32)
    x, t = random_windows(jax.random.PRNGKey(3), ids, 16, 10)
    assert x.shape == t.shape == (16, 10)
    np.testing.assert_array_equal(t, x + 1)  # the next character of each
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)  # contiguous
    assert int(x.min()) >= 0 and int(t.max()) <= 99
    x2, _ = random_windows(jax.random.PRNGKey(3), ids, 16, 10)
    np.testing.assert_array_equal(x, x2)


def test_validation_reads_consecutive_windows_without_overlap():
    xs, ts = validation_windows(np.arange(25, dtype=np.int32), 8)
    np.testing.assert_array_equal(xs.ravel(), np.arange(24))
    np.testing.assert_array_equal(ts, xs + 1)


def test_fit_gpt_records_the_best_validation_figure_and_its_parameters():
    corpus, net = small(layers=1)
    params, _ = net.init(jax.random.PRNGKey(0), (2, 8))
    result = fit_gpt(net, gpt_optimizer(3e-3, 12, 2), params, corpus.train, corpus.val, steps=12, batch=2, context=8,
                     key=jax.random.PRNGKey(1), eval_every=4)
    assert [h["step"] for h in result.history] == [4, 8, 12]
    best = min(result.history, key=lambda h: h["val_bits_per_char"])
    assert (result.best_step, result.best_val_bits_per_char) == (best["step"], best["val_bits_per_char"])
    assert result.best_val_bits_per_char < result.history[0]["val_bits_per_char"] or best["step"] == 4


def test_the_default_gpt_has_the_reference_parameter_count():
    """4 layers, width 128, context 128 over the default text's characters: 0.82 M parameters, as
    the PyTorch reference (benchmarks/gpt_torch.py) counts them."""
    net = gpt(103, 128)
    params = jax.eval_shape(lambda k: net.init(k, (1, 128))[0], jax.random.PRNGKey(0))
    assert parameter_count(params) == 103 * 128 + 128 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128


def test_gpt_refuses_windows_longer_than_its_context_and_ids_out_of_range():
    _, net = small(layers=1, context=4)
    params, _ = net.init(jax.random.PRNGKey(0), (1, 4))
    with raises_exactly(ValueError, "gpt: ids shape (1, 5) has T = 5 positions; the model reads 1 to context = 4"):
        net.forward(params, jnp.zeros((1, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"gpt: ids must lie in \[0, 14\)"):
        net.forward(params, jnp.full((1, 3), 14, jnp.int32))


# --- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt_run(built_once):
    def build(folder):
        (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
        assert main(["train", *GPT_OPTIONS, "--text", str(folder / "corpus.txt"), "--out", str(folder / "run")]) == 0

    return built_once("gpt", build) / "run"


def test_a_gpt_run_records_its_options_and_figures(gpt_run):
    assert sorted(p.name for p in gpt_run.iterdir()) == ["curves.png", "metrics.json", "params.npz"]
    metrics = json.loads((gpt_run / "metrics.json").read_text())
    o = metrics["options"]
    assert (o["model"], o["layers"], o["heads"], o["width"], o["seq_length"], o["warmup"]) == ("gpt", 1, 2, 8, 8, 2)
    assert [h["step"] for h in metrics["history"]] == [4]
    assert metrics["grad_check_max_rel_error"] < 1e-10
    assert 0 < metrics["val_bits_per_char"] < 8


def test_greedy_generation_is_the_argmax_of_the_text_so_far_past_the_context(gpt_run):
    """12 characters after a 5-character prompt run past the context of 8: the oracle reads the
    last 8 characters of everything so far at every step."""
    run = load_sequence_run(gpt_run)
    vocab, prompt = run.options["vocab"], "the c"
    written = generate(run, prompt, 12, temperature=0)
    assert written == generate(run, prompt, 12, temperature=1.0, top_k=1)  # top-1 sampling is greedy
    forward = jax.jit(run.network.forward)
    text = prompt
    for _ in range(12):
        ids = jnp.array([[vocab.index(c) for c in text[-8:]]], jnp.int32)
        text += vocab[int(jnp.argmax(forward(run.params, ids)[0][0, -1]))]
    assert prompt + written == text


def test_top_k_draws_only_among_the_k_most_likely(gpt_run):
    run = load_sequence_run(gpt_run)
    vocab = run.options["vocab"]
    ids = jnp.array([[vocab.index(c) for c in "the c"]], jnp.int32)
    top2 = {vocab[i] for i in np.argsort(np.asarray(run.network.forward(run.params, ids)[0][0, -1]))[-2:]}
    drawn = {generate(run, "the c", 1, temperature=5.0, seed=s, top_k=2) for s in range(40)}
    assert drawn <= top2 and len(drawn) == 2


def test_the_gpt_command_line_refuses_options_of_other_models(tmp_path, capsys):
    for extra, message in ((["--tie"], "--tie does not apply to --model gpt"),
                           (["--optimizer", "sgd"], "--optimizer does not apply to --model gpt (it trains with AdamW)"),
                           (["--width", "10", "--heads", "4"], "--width 10 must be a multiple of --heads 4"),
                           (["--dataset", "date"], "--dataset date does not suit --model gpt; choose text")):
        assert main(["train", "--model", "gpt", *extra, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--model", "lstm-lm", "--layers", "2", "--out", str(tmp_path / "y")]) == 2
    assert "--layers applies to --model gpt, not lstm-lm" in capsys.readouterr().err
    assert main(["train", "--model", "mlp", "--heads", "2", "--out", str(tmp_path / "z")]) == 2
    assert "--heads applies to the sequence models, not mlp" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
