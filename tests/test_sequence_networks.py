"""The sequence networks and their training: the hand backward's training curve equals
``jax.grad``'s over 100 steps (float32, the same initialization and batches) for the LSTM
language model and the attention seq2seq; a language model's run does not depend on how its steps
are cut into compiled chunks; greedy decoding feeds back its own characters; a tied model's
table gets both of its gradients.

(The gradients themselves, in float64, against ``jax.vjp`` of the references and finite
differences: the registry's network cases, ``test_layers.py``.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from messages import raises_exactly
from pure_backprop import tasks, text, train_seq2seq, train_text
from pure_backprop.core import loss_and_grads, loss_and_grads_with_state
from pure_backprop.language_model import language_model
from pure_backprop.layers.time_softmax_cross_entropy import time_softmax_cross_entropy as xent
from pure_backprop.seq2seq import attention_map, greedy_decode, seq2seq
from pure_backprop.train_seq2seq import exact_match, fit_seq2seq
from pure_backprop.train_text import fit_language_model

STEPS = 100


def _curves(hand_step, auto_step, params, opt_state, batches):
    """The two runs' losses, step by step, from the same start over the same batches."""
    def run(step):
        def body(carry, batch):
            p, s, o = carry
            p, s, o, value = step(p, s, o, batch)
            return (p, s, o), value

        return jax.jit(lambda p, o, b: jax.lax.scan(body, (p, state0, o), b)[1])(params, opt_state, batches)

    state0 = hand_step.state0
    return np.asarray(run(hand_step)), np.asarray(run(auto_step))


class _Step:
    def __init__(self, fn, state0):
        self.fn, self.state0 = fn, state0

    def __call__(self, *args):
        return self.fn(*args)


@pytest.fixture(scope="module")
def small_text():
    corpus = text.load_text()
    xs, ts = text.windows(corpus.train[:20_000], batch=4, length=12)
    return corpus, jnp.asarray(xs[:STEPS]), jnp.asarray(ts[:STEPS])


def test_the_lstm_language_models_curve_with_the_hand_backward_is_jax_grads_over_100_steps(small_text):
    corpus, xs, ts = small_text
    net = language_model(len(corpus.vocab), embed=8, hidden=16, cell="lstm", drop_rate=0.2, tie=False)
    params, state, _ = net.init(jax.random.PRNGKey(0), (4, 12))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    key = jax.random.PRNGKey(1)

    def hand(p, s, o, batch):
        (x, t), k = batch
        value, grads, s = loss_and_grads_with_state(net, xent, p, s, x, t, k, True)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, value

    def auto(p, s, o, batch):
        (x, t), k = batch

        def loss(p):
            scores, new_s, _ = net.forward(p, s, x, k, True)
            return xent.forward(scores, t)[0], new_s

        (value, s), grads = jax.value_and_grad(loss, has_aux=True)(p)
        s = jax.lax.stop_gradient(s)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, value

    keys = jax.random.split(key, STEPS)
    ours, theirs = _curves(_Step(hand, state), _Step(auto, state), params, optimizer.init(params), ((xs, ts), keys))
    assert ours.dtype == np.float32 and ours[-1] < 0.8 * ours[0]  # it learns
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)  # float32 rounding, grown over 100 steps


def test_the_attention_seq2seqs_curve_with_the_hand_backward_is_jax_grads_over_100_steps():
    task = tasks.make_task("addition", n=900, seed=0, reverse=True)
    net = seq2seq(len(task.vocab), embed=8, hidden=16, decoder="attention")
    params, _ = net.init(jax.random.PRNGKey(0), ((8, 7), (8, 4)))
    optimizer = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(1e-2))
    order = np.random.default_rng(0).integers(0, len(task.x_train), size=(STEPS, 8))
    q = jnp.asarray(task.x_train[order])
    d_in, d_out = tasks.decoder_io(task.t_train[order].reshape(-1, 5))
    batches = (q, jnp.asarray(d_in.reshape(STEPS, 8, 4)), jnp.asarray(d_out.reshape(STEPS, 8, 4)))

    def hand(p, s, o, batch):
        x, d, t = batch
        value, grads = loss_and_grads(net, xent, p, (x, d), t)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, value

    def auto(p, s, o, batch):
        x, d, t = batch
        value, grads = jax.value_and_grad(lambda p: xent.forward(net.forward(p, (x, d))[0], t)[0])(p)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, value

    ours, theirs = _curves(_Step(hand, ()), _Step(auto, ()), params, optimizer.init(params), batches)
    assert ours[-10:].mean() < 0.7 * ours[:10].mean()
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)


def test_a_language_model_run_is_the_same_however_its_steps_are_cut_into_chunks(small_text):
    corpus, xs, ts = small_text
    net = language_model(len(corpus.vocab), embed=6, hidden=8, cell="gru", drop_rate=0.1)
    params, state, _ = net.init(jax.random.PRNGKey(2), (4, 12))
    optimizer = optax.adam(1e-2)
    windows, val = (xs[:7], ts[:7]), (xs[90:93], ts[90:93])  # 7 windows: steps 7, 14 restart at window 0
    fit = functools.partial(fit_language_model, net, optimizer, params, state, windows, val, steps=18,
                            key=jax.random.PRNGKey(3))
    a, b = fit(eval_every=18), fit(eval_every=6)  # chunks of 18 steps, or of 6 (one program each)
    for x, y in zip(jax.tree_util.tree_leaves((a.params, a.state)), jax.tree_util.tree_leaves((b.params, b.state))):
        np.testing.assert_array_equal(x, y)
    assert [r["step"] for r in b.history] == [6, 12, 18]
    assert a.history[-1]["val_bits_per_char"] == b.history[-1]["val_bits_per_char"]
    assert b.best_val_bits_per_char == min(r["val_bits_per_char"] for r in b.history)
    # resumed from step 12 with what the run had there: the same end
    first = fit(eval_every=6, steps=12)
    rest = fit_language_model(net, optimizer, first.params, first.state, windows, val, steps=18, key=jax.random.PRNGKey(3),
                              eval_every=6, opt_state=first.opt_state, start_step=12)
    for x, y in zip(jax.tree_util.tree_leaves(rest.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_greedy_decoding_feeds_back_its_own_most_likely_character():
    task = tasks.make_task("date", n=40, seed=4)
    net = seq2seq(len(task.vocab), embed=4, hidden=6, decoder="peeky")
    params, _ = net.init(jax.random.PRNGKey(5), ((3, 29), (3, 10)))
    params = jax.tree_util.tree_map(lambda p: 3 * p, params)  # sharper scores: no ties in the argmax
    q = jnp.asarray(task.x_val[:3])
    decoded = np.asarray(greedy_decode(net, params, q, task.vocab.index("_"), 10))
    # teacher forcing on the decoded answer gives back the decoded answer, character by character
    inputs = np.concatenate([np.full((3, 1), task.vocab.index("_")), decoded[:, :-1]], axis=1)
    scores, _ = net.forward(params, (q, jnp.asarray(inputs)))
    np.testing.assert_array_equal(np.argmax(np.asarray(scores), axis=-1), decoded)
    attending = seq2seq(len(task.vocab), 4, 6, "attention")
    weights = attention_map(attending, attending.init(jax.random.PRNGKey(0), ((3, 29), (3, 10)))[0], q,
                            jnp.asarray(inputs))
    assert weights.shape == (3, 10, 29)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    with raises_exactly(ValueError, "attention_map: the network has no attention (decoder 'plain' or 'peeky')"):
        attention_map(net, params, q, jnp.asarray(inputs))


def test_fit_seq2seq_learns_and_scores_exact_matches_of_whole_answers(monkeypatch):
    task = tasks.make_task("addition", n=1200, seed=1, reverse=True)
    net = seq2seq(len(task.vocab), embed=8, hidden=24, decoder="attention")
    params, _ = net.init(jax.random.PRNGKey(0), ((32, 7), (32, 4)))
    result = fit_seq2seq(net, optax.adam(1e-2), params, task, epochs=3, batch_size=32, key=jax.random.PRNGKey(1))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] and [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.best_val_exact_match == max(r["val_exact_match"] for r in result.history)
    # exact match counts whole answers: a decoder that writes the true answers scores 1; one
    # character off in one of four answers, 0.75
    answers = task.t_val[:4]
    monkeypatch.setattr(train_seq2seq, "decode_answers", lambda *args, **kwargs: answers[:, 1:])
    assert exact_match(net, params, task.x_val[:4], answers, task.vocab) == 1.0
    wrong = answers.copy()
    wrong[0, 2] = (wrong[0, 2] + 1) % len(task.vocab)
    assert exact_match(net, params, task.x_val[:4], wrong, task.vocab) == 0.75


def test_fit_seq2seq_breaks_ties_of_exact_match_with_the_validation_loss(monkeypatch):
    """Near 100 % several epochs tie on exact match; the one kept has the lowest validation loss
    (teacher forced), and its params are the ones that loss was measured on."""
    task = tasks.make_task("addition", n=1200, seed=1, reverse=True)
    net = seq2seq(len(task.vocab), embed=8, hidden=24, decoder="attention")
    params, _ = net.init(jax.random.PRNGKey(0), ((32, 7), (32, 4)))
    monkeypatch.setattr(train_seq2seq, "exact_match", lambda *args, **kwargs: 0.5)
    result = fit_seq2seq(net, optax.adam(1e-2), params, task, epochs=3, batch_size=32, key=jax.random.PRNGKey(1))
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses)) and result.best_epoch != 1  # not the earliest tie
    again = train_seq2seq.make_seq2seq_loss(net)(result.best_params, jnp.asarray(task.x_val), jnp.asarray(task.t_val))
    assert float(again) == min(losses)


# --- fit_language_model's loop: evaluations, the best, patience, stops -------------------------


@pytest.fixture(scope="module")
def tiny_language_model(small_text):
    corpus, xs, ts = small_text
    net = language_model(len(corpus.vocab), embed=4, hidden=4, cell="rnn")
    params, state, _ = net.init(jax.random.PRNGKey(0), (4, 12))
    fit = functools.partial(fit_language_model, net, optax.sgd(0.1), params, state, (xs[:5], ts[:5]),
                            (xs[90:91], ts[90:91]), key=jax.random.PRNGKey(1))
    return fit, params


def test_fit_language_model_evaluates_every_eval_every_steps_from_its_start_and_keeps_the_best(
        tiny_language_model, monkeypatch):
    fit, _ = tiny_language_model
    figures = iter([3.0, 2.0, 2.0, 1.5])
    monkeypatch.setattr(train_text, "bits_per_char", lambda nats: next(figures))
    seen = []
    result = fit(steps=7, eval_every=2, start_step=1, on_eval=seen.append)
    assert [r["step"] for r in result.history] == [2, 4, 6, 7] and seen == result.history
    assert set(result.history[0]) == {"step", "train_loss", "val_bits_per_char"}
    assert (result.best_step, result.best_val_bits_per_char) == (7, 1.5)
    assert not result.stopped_early and not result.interrupted
    for a, b in zip(jax.tree_util.tree_leaves(result.best_params), jax.tree_util.tree_leaves(result.params)):
        np.testing.assert_array_equal(a, b)  # the best is the last evaluation here


def test_fit_language_model_stops_after_patience_evaluations_without_a_strictly_better_one(
        tiny_language_model, monkeypatch):
    fit, params = tiny_language_model
    figures = iter([3.0, 2.0, 2.0, 2.5, 1.0, 1.0])
    monkeypatch.setattr(train_text, "bits_per_char", lambda nats: next(figures))
    result = fit(steps=12, eval_every=2, patience=2)
    assert [r["step"] for r in result.history] == [2, 4, 6, 8]  # a tie is not a new best
    assert result.stopped_early and not result.interrupted
    assert (result.best_step, result.best_val_bits_per_char) == (4, 2.0)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(result.best_params),
                                                         jax.tree_util.tree_leaves(result.params))]
    assert any(changed)  # the best params are step 4's, not the last


def test_fit_language_model_stops_when_asked_or_interrupted_and_returns_what_it_has(tiny_language_model):
    fit, params = tiny_language_model
    asked = fit(steps=6, eval_every=2, should_stop=lambda: True)
    assert asked.interrupted and asked.history == [] and asked.best_step == 0 and asked.best_params is params
    calls = []

    def interrupt(record):
        calls.append(record)
        raise KeyboardInterrupt

    result = fit(steps=6, eval_every=2, on_eval=interrupt)
    assert result.interrupted and not result.stopped_early and len(calls) == 1


@pytest.mark.parametrize("arg, value", [("steps", 0), ("steps", True), ("eval_every", 0), ("eval_every", 2.0)])
def test_fit_language_model_refuses_steps_and_eval_every_that_are_not_positive_ints(tiny_language_model, arg, value):
    fit, _ = tiny_language_model
    kwargs = {"steps": 4, "eval_every": 2, arg: value}
    with pytest.raises(ValueError, match=rf"^fit_language_model: {arg} must be a positive int, got {value!r}$"):
        fit(**kwargs)


# --- fit_seq2seq's loop and the batched decoding ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_seq2seq():
    task = tasks.make_task("addition", n=60, seed=3, validation=0.2, test=0.2, reverse=True)
    net = seq2seq(len(task.vocab), embed=4, hidden=6, decoder="attention")
    params, _ = net.init(jax.random.PRNGKey(0), ((4, 7), (4, 4)))
    fit = functools.partial(fit_seq2seq, net, optax.adam(1e-2), params, task, batch_size=12, key=jax.random.PRNGKey(1))
    return task, net, params, fit


def test_seq2seq_answers_decoded_in_batches_with_a_padded_last_one_are_decoded_all_at_once(tiny_seq2seq):
    task, net, params, _ = tiny_seq2seq
    questions = task.x_val[:5]
    whole = np.asarray(greedy_decode(net, params, jnp.asarray(questions), task.vocab.index("_"), 4))
    for batch in (2, 3, 5, 7):
        np.testing.assert_array_equal(train_seq2seq.decode_answers(net, params, questions, task.vocab, 4, batch), whole)
    empty = train_seq2seq.decode_answers(net, params, questions[:0], task.vocab, 4)
    assert empty.shape == (0, 4) and empty.dtype == np.int32
    assert 0 <= exact_match(net, params, questions[:1], task.t_val[:1], task.vocab) <= 1  # one example is enough
    with pytest.raises(ValueError, match=r"^exact_match: no examples to score$"):
        exact_match(net, params, questions[:0], task.t_val[:0], task.vocab)


def test_fit_seq2seq_resumes_from_start_epoch_and_stops_when_asked_or_interrupted(tiny_seq2seq):
    task, net, params, fit = tiny_seq2seq
    full = fit(epochs=2)
    assert [r["epoch"] for r in full.history] == [1, 2] and full.opt_state is not None
    resumed = fit(epochs=3, start_epoch=2)
    assert [r["epoch"] for r in resumed.history] == [3] and not resumed.interrupted
    assert len(jax.tree_util.tree_leaves(resumed.params)) == len(jax.tree_util.tree_leaves(params))
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(resumed.params),
                                                          jax.tree_util.tree_leaves(params)))
    asked = fit(epochs=2, should_stop=lambda: True)
    assert asked.interrupted and asked.history == [] and asked.best_params is params
    assert asked.best_val_exact_match == -np.inf and asked.best_epoch == 0
    calls = []

    def interrupt(record):
        calls.append(record)
        raise KeyboardInterrupt

    result = fit(epochs=3, on_epoch=interrupt)
    assert result.interrupted and len(calls) == 1 and set(calls[0]) == {"epoch", "train_loss", "val_exact_match",
                                                                          "val_loss"}


def test_fit_seq2seq_keeps_the_first_of_epochs_tied_on_both_figures(tiny_seq2seq, monkeypatch):
    task, net, params, fit = tiny_seq2seq
    monkeypatch.setattr(train_seq2seq, "exact_match", lambda *args, **kwargs: 0.5)
    monkeypatch.setattr(train_seq2seq, "make_seq2seq_loss", lambda network: lambda *args: jnp.float32(1.0))
    assert fit(epochs=2).best_epoch == 1


@pytest.mark.parametrize("arg, value", [("epochs", 0), ("epochs", True), ("batch_size", 0), ("batch_size", 2.0)])
def test_fit_seq2seq_refuses_epochs_and_batch_sizes_that_are_not_positive_ints(tiny_seq2seq, arg, value):
    task, net, params, _ = tiny_seq2seq
    kwargs = {"epochs": 1, "batch_size": 12, arg: value}
    with pytest.raises(ValueError, match=rf"^fit_seq2seq: {arg} must be a positive int, got {value!r}$"):
        fit_seq2seq(net, optax.adam(1e-2), params, task, key=jax.random.PRNGKey(1), **kwargs)


def test_fit_seq2seq_takes_a_batch_of_every_training_example_and_refuses_a_larger_one(tiny_seq2seq):
    task, net, params, _ = tiny_seq2seq
    n = len(task.x_train)
    assert len(fit_seq2seq(net, optax.adam(1e-2), params, task, epochs=1, batch_size=n,
                           key=jax.random.PRNGKey(1)).history) == 1
    with pytest.raises(ValueError, match=rf"^fit_seq2seq: batch_size {n + 1} is larger than the {n} training examples$"):
        fit_seq2seq(net, optax.adam(1e-2), params, task, epochs=1, batch_size=n + 1, key=jax.random.PRNGKey(1))


def test_fit_language_model_evaluates_every_200_steps_by_default_and_takes_a_single_step(tiny_language_model):
    fit, _ = tiny_language_model
    assert [r["step"] for r in fit(steps=201).history] == [200, 201]
    assert [r["step"] for r in fit(steps=1, eval_every=1).history] == [1]


def test_fit_language_model_counts_a_first_evaluation_that_is_not_a_number_toward_its_patience(
        tiny_language_model, monkeypatch):
    fit, _ = tiny_language_model
    monkeypatch.setattr(train_text, "bits_per_char", lambda nats: float("nan"))
    result = fit(steps=8, eval_every=2, patience=2)
    assert [r["step"] for r in result.history] == [2, 4] and result.stopped_early


def test_seq2seq_decoding_in_batches_compiles_one_program_of_the_batch_asked_for(tiny_seq2seq):
    """The last batch is padded to the size of the others, so one compiled program serves every
    batch; ``exact_match`` passes its batch on."""
    task, _, params, _ = tiny_seq2seq
    net = seq2seq(len(task.vocab), embed=4, hidden=6, decoder="attention")  # its own compiled programs
    run = train_seq2seq._decoder(net, task.vocab.index("_"), 4)
    train_seq2seq.decode_answers(net, params, task.x_val[:5], task.vocab, 4, batch=2)
    assert run._cache_size() == 1
    exact_match(net, params, task.x_val[:5], task.t_val[:5], task.vocab, batch=2)
    assert run._cache_size() == 1  # the same program: batch 2 again
    train_seq2seq.decode_answers(net, params, task.x_val[:5], task.vocab, 4, batch=3)  # a last batch of 2 rows
    assert run._cache_size() == 2


def test_language_model_refuses_an_unknown_cell_and_a_tie_of_unequal_sizes():
    with raises_exactly(ValueError, "language_model: cell must be one of ['gru', 'lstm', 'rnn'], got 'lsmt'"):
        language_model(10, cell="lsmt")
    with raises_exactly(ValueError, "language_model: tie=True shares the embedding table with the output layer, "
                                    "so embed must equal hidden, got embed=8, hidden=16"):
        language_model(10, 8, 16, tie=True)
    assert language_model(10, 16, 16, tie=True) is not None


def test_seq2seq_refuses_an_unknown_decoder_and_batches_of_two_sizes():
    with raises_exactly(ValueError, "seq2seq: decoder must be one of ['plain', 'peeky', 'attention'], got 'attn'"):
        seq2seq(10, decoder="attn")
    with raises_exactly(ValueError, "seq2seq: questions and decoder inputs must have the same batch, "
                                    "got shapes (2, 3) and (3, 4)"):
        seq2seq(10).init(jax.random.PRNGKey(0), ((2, 3), (3, 4)))


@pytest.mark.parametrize("in_shape", [(2, 3), ((2, 3), (2, 4, 1)), ((2, 3),), "ab"])
def test_seq2seq_refuses_in_shapes_that_are_not_two_batches_of_ids(in_shape):
    with raises_exactly(ValueError, f"seq2seq: in_shape must be ((N, S), (N, T)), the questions' and the decoder "
                                    f"inputs' shapes, got {in_shape!r}"):
        seq2seq(10).init(jax.random.PRNGKey(0), in_shape)


def test_language_model_defaults_and_its_initialization():
    """Embedding 64 and hidden 256 by default, the table a standard normal (``EMBED_INIT``, not
    the book's 0.01) unless ``embed_init`` is given, every parameter in the dtype asked for."""
    shapes = jax.eval_shape(lambda k: language_model(10).init(k, (2, 3))[0], jax.random.PRNGKey(0))
    assert shapes["embed"]["W"].shape == (10, 64) and shapes["cell"]["Wh"].shape == (256, 1024)
    params, _, _ = language_model(100, 32, 8).init(jax.random.PRNGKey(0), (2, 3), jnp.float64)
    assert abs(float(jnp.std(params["embed"]["W"])) - 1) < 0.1  # 3,200 draws of a standard normal
    assert {a.dtype for a in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
    given = language_model(10, 4, 8, embed_init=jax.nn.initializers.constant(0.5))
    np.testing.assert_array_equal(given.init(jax.random.PRNGKey(0), (2, 3))[0]["embed"]["W"], 0.5)


def test_language_model_refuses_a_train_flag_that_is_not_a_python_bool():
    net = language_model(10, 4, 4)
    params, state, _ = net.init(jax.random.PRNGKey(0), (2, 3))
    with pytest.raises(TypeError) as e:
        net.forward(params, state, jnp.zeros((2, 3), jnp.int32), None, 1)
    assert str(e.value) == ("language_model: train must be a Python bool (True for batch statistics and dropout, False "
                            "for inference), got int; under jax.jit mark it static")


def test_seq2seq_defaults_and_its_initialization():
    """Embedding 16 and LSTMs of 128 by default; both tables standard normals unless
    ``embed_init`` is given, both LSTMs from ``w_init`` when it is, every part from its own key
    (the plain decoder's LSTM has the encoder's shapes, not its weights), in the dtype asked for."""
    shapes = jax.eval_shape(lambda k: seq2seq(10).init(k, ((2, 3), (2, 4)))[0], jax.random.PRNGKey(0))
    assert shapes["enc_embed"]["W"].shape == (10, 16) and shapes["encoder"]["Wh"].shape == (128, 512)
    params, _ = seq2seq(100, 32, 8, "plain").init(jax.random.PRNGKey(0), ((2, 3), (2, 4)), jnp.float64)
    assert {a.dtype for a in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
    for table in ("enc_embed", "dec_embed"):
        assert abs(float(jnp.std(params[table]["W"])) - 1) < 0.1  # 3,200 draws of a standard normal
    assert not np.array_equal(params["encoder"]["Wx"], params["decoder"]["Wx"])
    given = seq2seq(10, 4, 8, "plain", embed_init=jax.nn.initializers.constant(0.5),
                    w_init=jax.nn.initializers.constant(0.25)).init(jax.random.PRNGKey(0), ((2, 3), (2, 4)))[0]
    for table in ("enc_embed", "dec_embed"):
        np.testing.assert_array_equal(given[table]["W"], 0.5)
    for cell in ("encoder", "decoder"):
        np.testing.assert_array_equal(given[cell]["Wx"], 0.25)


def test_seq2seq_refuses_an_input_that_is_not_a_pair():
    net = seq2seq(10, 4, 8)
    params, _ = net.init(jax.random.PRNGKey(0), ((2, 3), (2, 4)))
    with raises_exactly(ValueError, "seq2seq: x must be a pair (a, b) of arrays, got ArrayImpl"):
        net.forward(params, jnp.zeros((2, 3), jnp.int32))


@pytest.mark.parametrize("decoder", ["plain", "attention"])
def test_seq2seq_keeps_float32_gradients_in_float32_with_x64_on(decoder):
    net = seq2seq(10, 4, 8, decoder)
    params, _ = net.init(jax.random.PRNGKey(0), ((2, 3), (2, 4)))
    ids = jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 4), jnp.int32)
    _, grads = loss_and_grads(net, xent, params, ids, jnp.ones((2, 4), jnp.int32))
    assert {a.dtype for a in jax.tree_util.tree_leaves(grads)} == {jnp.dtype("float32")}


def _share_a_draw(a, b):
    """Whether ``a`` and ``b`` start with the same random draws, each through its own
    initializer (two initializers handed one key: JAX's partitionable threefry makes entry j a
    function of the key and j alone, so ``split(k, 2)[0] == split(k, 3)[0]``, and a normal and
    a truncated normal of one key are then nearly the same numbers, each at its own scale).
    Independent draws of 16 or more entries are never this correlated."""
    m = min(a.size, b.size, 64)
    u, v = np.asarray(a, np.float64).ravel()[:m], np.asarray(b, np.float64).ravel()[:m]
    return m >= 16 and bool(np.corrcoef(u, v)[0, 1] > 0.9)


@pytest.mark.parametrize("decoder", ["plain", "peeky", "attention"])
def test_seq2seq_draws_no_two_parameters_from_one_key(decoder):
    params, _ = seq2seq(10, 4, 8, decoder).init(jax.random.PRNGKey(0), ((2, 3), (2, 4)))
    leaves = [(jax.tree_util.keystr(path), a) for path, a in jax.tree_util.tree_flatten_with_path(params)[0]
              if np.any(np.asarray(a) != 0)]  # the biases start at 0
    shared = [(n, m) for i, (n, a) in enumerate(leaves) for m, b in leaves[i + 1:] if _share_a_draw(a, b)]
    assert shared == []


@pytest.mark.parametrize("decoder", ["plain", "attention"])
def test_the_reference_seq2seq_and_its_loss_keep_float32_in_float32_with_x64_on(decoder):
    """The references are the oracles in float64, but nothing in them may widen float32."""
    import reference.sequence_networks as ref_networks

    params, _ = seq2seq(10, 4, 8, decoder).init(jax.random.PRNGKey(0), ((2, 3), (2, 4)))
    loss = ref_networks.seq2seq(decoder)(params, jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 4), jnp.int32),
                                         jnp.ones((2, 4), jnp.int32))
    assert loss.dtype == jnp.float32
