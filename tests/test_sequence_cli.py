"""The sequence models on the command line: ``train --model lstm-lm`` on a text file and
``--model attention-seq2seq`` on a generated task write a run folder that ``generate`` and
``predict`` use; options that do not apply, and bad text files, stop with one line and exit 2.

Two tiny runs (module fixtures) serve every test that needs one."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from messages import raises_exactly
from pure_backprop.cli import main
from pure_backprop.seq2seq import greedy_decode
from pure_backprop.sequence_runs import (SequenceRunError, answer, generate, is_sequence_run, load_sequence_run,
                                         sequence_network)
from pure_backprop.tasks import VOCABULARIES, decode, encode_questions

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
LM_OPTIONS = ["--model", "lstm-lm", "--steps", "6", "--hidden", "8", "--embed", "4", "--seq-length", "8",
              "--batch-size", "2", "--no-progress", "--compile-cache", "none"]
S2S_OPTIONS = ["--model", "attention-seq2seq", "--epochs", "1", "--hidden", "8", "--embed", "4", "--batch-size", "500",
               "--no-progress", "--compile-cache", "none"]


@pytest.fixture(scope="module")
def lm_run(built_once):
    def build(folder):
        (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
        assert main(["train", *LM_OPTIONS, "--text", str(folder / "corpus.txt"), "--out", str(folder / "run")]) == 0

    folder = built_once("lm", build)
    return folder / "run", folder / "corpus.txt"


@pytest.fixture(scope="module")
def s2s_run(built_once):
    def build(folder):
        assert main(["train", *S2S_OPTIONS, "--out", str(folder / "run")]) == 0

    return built_once("s2s", build) / "run"


# --- the language model's run ----------------------------------------------------------------


def test_a_language_model_run_records_its_figure_its_options_and_its_text(lm_run):
    folder, text = lm_run
    assert sorted(p.name for p in folder.iterdir()) == ["curves.png", "metrics.json", "params.npz"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["text_sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    assert metrics["text_characters"] == len(TEXT) and metrics["text"] == str(text)
    options = metrics["options"]
    assert options["vocab"] == "".join(sorted(set(TEXT)))
    assert (options["model"], options["hidden"], options["embed"], options["seq_length"]) == ("lstm-lm", 8, 4, 8)
    history = metrics["history"]
    assert [h["step"] for h in history] == [6]
    assert metrics["val_bits_per_char"] == min(h["val_bits_per_char"] for h in history)
    assert 0 < metrics["val_bits_per_char"] < 8
    assert metrics["grad_check_max_rel_error"] < 1e-10
    assert is_sequence_run(folder) and not is_sequence_run(folder / "nowhere")


def test_greedy_generation_is_the_argmax_of_the_whole_text_read_again(lm_run):
    """The oracle re-reads the prompt and everything written so far from a zero state at every
    step: generation must carry the recurrent state from step to step to agree."""
    run = load_sequence_run(lm_run[0])
    vocab, prompt = run.options["vocab"], "the c"
    written = generate(run, prompt, 3, temperature=0)
    text = prompt
    for _ in range(3):
        ids = jnp.array([[vocab.index(c) for c in text]], jnp.int32)
        state = jax.tree_util.tree_map(jnp.zeros_like, run.network.init(jax.random.PRNGKey(0), ids.shape)[1])
        scores = run.network.forward(run.params, state, ids, None, False)[0]
        text += vocab[int(jnp.argmax(scores[0, -1]))]
    assert prompt + written == text


def test_sampling_follows_the_seed_and_the_temperature(lm_run, capsys):
    folder = str(lm_run[0])
    run = load_sequence_run(folder)
    one, again, other = (generate(run, "the", 40, 1.0, seed) for seed in (1, 1, 2))
    assert one == again and one != other and len(one) == 40
    assert generate(run, "the", 40, 1e-6, 5) == generate(run, "the", 40, 0, 0)  # the limit of a cold sample
    assert main(["generate", folder, "--prompt", "the", "--length", "40", "--seed", "1"]) == 0
    assert capsys.readouterr().out == "the" + one + "\n"


def test_generate_refuses_characters_the_text_never_had(lm_run, capsys):
    assert main(["generate", str(lm_run[0]), "--prompt", "the €"]) == 2
    assert "'€'" in capsys.readouterr().err
    with pytest.raises(SequenceRunError, match="empty"):
        generate(load_sequence_run(lm_run[0]), "", 3)


def test_a_damaged_params_file_is_named(lm_run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "metrics.json").write_text((lm_run[0] / "metrics.json").read_text())
    (folder / "params.npz").write_bytes((lm_run[0] / "params.npz").read_bytes()[:100])
    with pytest.raises(SequenceRunError, match="params.npz"):
        load_sequence_run(folder)


MODELS = "rnn-lm, lstm-lm, gru-lm, gpt, seq2seq, peeky-seq2seq, attention-seq2seq"


def test_loading_refuses_what_is_not_a_sequence_run_naming_the_file(lm_run, tmp_path):
    with raises_exactly(SequenceRunError, f"model 'mlp' is not a sequence model; choose one of {MODELS}"):
        sequence_network({"model": "mlp"})
    with raises_exactly(SequenceRunError, f"{tmp_path / 'nowhere'}: no such folder; give a run folder written by "
                                          "pure-backprop train"):
        load_sequence_run(tmp_path / "nowhere")
    folders = {name: tmp_path / name for name in ("empty", "image", "not_json", "no_params")}
    for folder in folders.values():
        folder.mkdir()
    (folders["image"] / "metrics.json").write_text(json.dumps({"options": {"model": "mlp"}}))
    (folders["not_json"] / "metrics.json").write_text("{")
    (folders["no_params"] / "metrics.json").write_text((lm_run[0] / "metrics.json").read_text())
    with raises_exactly(SequenceRunError, f"{folders['empty'] / 'metrics.json'}: cannot read "
                                          "(No such file or directory)"):
        load_sequence_run(folders["empty"])
    with raises_exactly(SequenceRunError, f"{folders['image'] / 'metrics.json'}: not the metrics of a sequence run "
                                          f"(SequenceRunError: model 'mlp' is not a sequence model; choose one of "
                                          f"{MODELS})"):
        load_sequence_run(folders["image"])
    with pytest.raises(SequenceRunError) as e:
        load_sequence_run(folders["not_json"])
    assert str(e.value).startswith(f"{folders['not_json'] / 'metrics.json'}: not the metrics of a sequence run "
                                   "(JSONDecodeError: ")
    with raises_exactly(SequenceRunError, f"{folders['no_params'] / 'params.npz'}: cannot read "
                                          "(No such file or directory)"):
        load_sequence_run(folders["no_params"])
    assert not any(is_sequence_run(folder) for folder in folders.values() if folder.name != "no_params")


@pytest.mark.parametrize("call, message", [
    (lambda run: generate(run, "the", -1), "generate: length must be an int >= 0, got -1"),
    (lambda run: generate(run, "the", True), "generate: length must be an int >= 0, got True"),
    (lambda run: generate(run, "the", 1.5), "generate: length must be an int >= 0, got 1.5"),
    (lambda run: generate(run, "the", 3, -1.0), "generate: temperature must be a finite number >= 0, got -1.0"),
    (lambda run: generate(run, "the", 3, float("nan")), "generate: temperature must be a finite number >= 0, got nan"),
    (lambda run: generate(run, "the", 3, float("inf")), "generate: temperature must be a finite number >= 0, got inf"),
    (lambda run: generate(run, "the", 3, "1"), "generate: temperature must be a finite number >= 0, got '1'"),
    (lambda run: generate(run, "", 3), "generate: the prompt is empty; give at least one character to start from"),
    (lambda run: generate(run, "th€Z", 3), "generate: the prompt has characters the run's text never had: 'Z€'"),
], ids=lambda v: "" if callable(v) else v[10:40])
def test_generate_refuses_what_it_cannot_use_by_the_whole_rule(lm_run, call, message):
    with raises_exactly(SequenceRunError, message):
        call(load_sequence_run(lm_run[0]))


def test_generation_starts_from_a_zero_state_in_the_parameters_dtype_with_x64_on(lm_run, monkeypatch):
    from pure_backprop import sequence_runs

    seen, real = [], sequence_runs._sampler
    monkeypatch.setattr(sequence_runs, "_sampler", lambda *a: (lambda *args: seen.append(args) or real(*a)(*args)))
    generate(load_sequence_run(lm_run[0]), "the", 2)
    params, state, prompt, _ = seen[0]
    assert {a.dtype for a in jax.tree_util.tree_leaves(state)} == {jnp.dtype("float32")}
    assert not any(np.any(np.asarray(a)) for a in jax.tree_util.tree_leaves(state))
    assert prompt.dtype == jnp.int32


def test_loading_names_a_parameter_whose_shape_the_options_do_not_build(lm_run, tmp_path):
    (tmp_path / "metrics.json").write_text((lm_run[0] / "metrics.json").read_text())
    with np.load(lm_run[0] / "params.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["params/cell/Wh"] = arrays["params/cell/Wh"][:, :-1]
    np.savez(tmp_path / "params.npz", **arrays)
    with raises_exactly(SequenceRunError, f"{tmp_path / 'params.npz'}: params/cell/Wh is float32 (8, 31), but the network "
                                          "of the run's options needs float32 (8, 32)"):
        load_sequence_run(tmp_path)


def test_loading_refuses_a_params_file_that_holds_pickled_objects(lm_run, tmp_path):
    """``params.npz`` is read with ``allow_pickle=False``: a pickled array could run code."""
    (tmp_path / "metrics.json").write_text((lm_run[0] / "metrics.json").read_text())
    with np.load(lm_run[0] / "params.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["params/cell/Wh"] = np.array([None, 1], dtype=object)
    np.savez(tmp_path / "params.npz", **arrays)
    with raises_exactly(SequenceRunError, f"{tmp_path / 'params.npz'}: not a readable npz, truncated or damaged "
                                          "(Object arrays cannot be loaded when allow_pickle=False)"):
        load_sequence_run(tmp_path)


def test_generation_defaults_to_temperature_1_and_seed_0(lm_run):
    run = load_sequence_run(lm_run[0])
    assert generate(run, "the", 30) == generate(run, "the", 30, 1.0, 0)


def test_each_seq2seq_model_is_rebuilt_with_its_own_decoder():
    """The plain decoder's output layer reads H features; peeky and attention read 2H."""
    for model, features in (("seq2seq", 8), ("peeky-seq2seq", 16), ("attention-seq2seq", 16)):
        options = {"model": model, "vocab": VOCABULARIES["addition"], "embed": 4, "hidden": 8, "dataset": "addition"}
        params = sequence_network(options).init(jax.random.PRNGKey(0), ((1, 7), (1, 4)))[0]
        assert params["out"]["W"].shape == (features, len(VOCABULARIES["addition"])), model


def test_predict_decodes_at_most_1000_questions_at_once(s2s_run, monkeypatch):
    from pure_backprop import train_seq2seq

    seen = []
    monkeypatch.setattr(train_seq2seq, "decode_answers",
                        lambda *a, **k: seen.append(k) or np.zeros((len(a[2]), a[4]), np.int32))
    assert len(answer(load_sequence_run(s2s_run), ["1+1"] * 1001)) == 1001
    assert seen == [{"batch": 1000}]


def test_a_tied_language_models_run_is_rebuilt_tied():
    options = {"model": "gru-lm", "vocab": "abc", "embed": 4, "hidden": 4, "dropout": 0.0, "tie": True}
    params = sequence_network(options).init(jax.random.PRNGKey(0), (1, 5))[0]
    assert set(params["out"]) == {"b"}


def test_generate_writes_nothing_for_length_zero_and_each_run_refuses_the_other_command(lm_run, s2s_run):
    lm, s2s = load_sequence_run(lm_run[0]), load_sequence_run(s2s_run)
    assert generate(lm, "the", 0) == ""
    with raises_exactly(SequenceRunError, f"{lm_run[0]}: predict needs a seq2seq run; this run is lstm-lm; "
                                          "use 'pure-backprop generate'"):
        answer(lm, ["1+1"])
    with raises_exactly(SequenceRunError, f"{s2s_run}: generate needs a language model run; this run is "
                                          "attention-seq2seq; use 'pure-backprop predict'"):
        generate(s2s, "1", 3)


# --- the seq2seq run -------------------------------------------------------------------------


def test_a_seq2seq_run_records_validation_and_test_exact_match_and_draws_its_attention(s2s_run):
    assert sorted(p.name for p in s2s_run.iterdir()) == ["attention.png", "curves.png", "metrics.json", "params.npz"]
    metrics = json.loads((s2s_run / "metrics.json").read_text())
    assert set(metrics) >= {"val_exact_match", "test_exact_match", "best_epoch"}
    assert (metrics["train_examples"], metrics["val_examples"], metrics["test_examples"]) == (40_000, 5_000, 5_000)
    assert metrics["options"]["reverse"] is True and metrics["options"]["vocab"] == VOCABULARIES["addition"]
    assert all(0 <= metrics[k] <= 1 for k in ("val_exact_match", "test_exact_match"))


def test_predict_answers_questions_as_written_reversing_them_for_a_reversed_run(s2s_run, capsys):
    run = load_sequence_run(s2s_run)
    questions = ["16+75", "1+2", "999+999"]
    expected = [decode(run.options["vocab"], row) for row in np.asarray(greedy_decode(
        run.network, run.params, jnp.asarray(encode_questions("addition", [q[::-1] for q in questions])),
        run.options["vocab"].index("_"), 4))]
    assert answer(run, questions) == expected
    assert main(["predict", str(s2s_run), *questions]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{q} -> {a}" for q, a in zip(questions, expected)]
    assert main(["predict", str(s2s_run), "16+75", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"question": "16+75", "answer": expected[0]}]


def test_predict_hands_the_decoder_the_questions_reversed_in_one_batch_of_their_number(s2s_run, monkeypatch):
    """A reversed run reads each question reversed, and a handful of questions are decoded in
    one batch of their own size, not padded to the default 1,000."""
    from pure_backprop import sequence_runs, train_seq2seq

    run = load_sequence_run(s2s_run)
    seen = []
    real = train_seq2seq.decode_answers
    monkeypatch.setattr(train_seq2seq, "decode_answers", lambda *a, **k: seen.append((a[2], k)) or real(*a, **k))
    questions = ["16+75", "1+2", "999+999"]
    answer(run, questions)
    ids, kwargs = seen[0]
    np.testing.assert_array_equal(ids, encode_questions("addition", [q[::-1] for q in questions]))
    assert kwargs == {"batch": 3}
    answer(run, ["1+1"])
    assert seen[1][1] == {"batch": 1}
    assert sequence_runs.init_shape(run.options) == ((1, 7), (1, 4))  # the question, the answer after "_"
    assert sequence_runs.init_shape({"model": "lstm-lm", "seq_length": 8}, batch=2) == (2, 8)


@pytest.mark.parametrize("question, message", [("1234+5678", "more than the task's 7"), ("1-2", "'-'")])
def test_predict_refuses_a_question_the_task_cannot_hold(s2s_run, capsys, question, message):
    assert main(["predict", str(s2s_run), question]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_each_command_refuses_the_other_kind_of_run(lm_run, s2s_run, capsys):
    assert main(["generate", str(s2s_run), "--prompt", "1"]) == 2
    assert "use 'pure-backprop predict'" in capsys.readouterr().err
    assert main(["predict", str(lm_run[0]), "the"]) == 2
    assert "use 'pure-backprop generate'" in capsys.readouterr().err
    assert main(["predict", str(s2s_run), "1+1", "--top", "2"]) == 2
    assert "--top applies to image runs" in capsys.readouterr().err
    assert main(["evaluate", str(s2s_run)]) == 2
    assert "metrics.json" in capsys.readouterr().err


# --- options that do not apply, and bad text -------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--model", "mlp", "--text", "a.txt"], "--text applies to the sequence models"),
    (["--model", "convnet", "--dataset", "addition"], "--dataset addition is for the sequence models"),
    (["--model", "lstm-lm", "--dataset", "date"], "does not suit --model lstm-lm"),
    (["--model", "seq2seq", "--dataset", "text"], "does not suit --model seq2seq"),
    (["--model", "lstm-lm", "--epochs", "3"], "--epochs applies to the seq2seq models"),
    (["--model", "seq2seq", "--steps", "3"], "--steps applies to the language models"),
    (["--model", "peeky-seq2seq", "--tie"], "--tie applies to the language models"),
    (["--model", "gru-lm", "--batchnorm"], "--batchnorm applies to the image models"),
    (["--model", "gru-lm", "--augment", "none"], "--augment applies to the image models"),
    (["--model", "rnn-lm", "--hidden", "8,8"], "--hidden takes one width"),
    (["--model", "lstm-lm", "--tie", "--embed", "8", "--hidden", "16"], "must equal --hidden (16)"),
    (["--model", "lstm-lm", "--validation", "0"], "needs a validation split"),
])
def test_options_that_do_not_apply_to_the_model_stop_with_one_line(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"abc\xff\xfe", "not UTF-8 text (byte 3"),
    ("short text".encode(), "too short for 2 streams"),
])
def test_a_text_file_that_cannot_serve_stops_with_its_name(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    argv = ["train", *LM_OPTIONS, "--text", str(path), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "bad.txt" in err, err
    assert not (tmp_path / "run").exists()


def test_a_run_interrupted_inside_training_says_so_in_its_metrics_and_exits_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C while a compiled chunk runs reaches the loop as a KeyboardInterrupt: the evaluations
    done are written, and metrics.json records the interruption."""
    from pure_backprop import train_text

    text = tmp_path / "corpus.txt"
    text.write_text(TEXT, encoding="utf-8")
    calls = []

    def figure_then_interrupt(nats):
        calls.append(nats)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return 5.0

    monkeypatch.setattr(train_text, "bits_per_char", figure_then_interrupt)
    options = [o if o != "6" else "400" for o in LM_OPTIONS]  # --steps 400: evaluations at 200 and 400
    assert main(["train", *options, "--text", str(text), "--out", str(tmp_path / "run")]) == 130
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["interrupted"] is True and [h["step"] for h in metrics["history"]] == [200]
