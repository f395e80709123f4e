"""The sequence data: the generated addition and date tasks, and the text corpora with their
windows for truncated backprop through time."""

import datetime
import hashlib

import re

import numpy as np
import pytest

from pure_backprop import tasks, text


# --- generated tasks --------------------------------------------------------------------------


def test_addition_questions_are_distinct_sums_with_operands_of_one_to_three_digits():
    pairs = tasks.addition_pairs(3000, seed=5)
    assert len({q for q, _ in pairs}) == 3000
    lengths = []
    for question, answer in pairs:
        a, b = question.split("+")
        assert int(a) + int(b) == int(answer) and str(int(a)) == a and str(int(b)) == b
        lengths += [len(a), len(b)]
    counts = np.bincount(lengths, minlength=4)[1:]
    assert counts.min() > 0.24 * len(lengths)  # each about a third; the 100 pairs of 1-digit operands run out
    assert pairs == tasks.addition_pairs(3000, seed=5) and pairs != tasks.addition_pairs(3000, seed=6)


def test_addition_takes_every_one_digit_pair_when_asked_for_most_questions():
    # 100 distinct 1-digit + 1-digit questions exist; with repeats redrawn, many draws find them all
    pairs = tasks.addition_pairs(60_000, seed=0)
    small = {q for q, _ in pairs if len(q) == 3}
    assert small == {f"{a}+{b}" for a in range(10) for b in range(10)}


def test_dates_are_written_in_the_books_four_formats_and_three_cases_and_answer_iso():
    day = datetime.date(1994, 9, 27)  # a Tuesday
    assert [tasks.write_date(day, form, 0) for form in range(4)] == [
        "9/27/94", "September 27, 1994", "Sep 27, 1994", "Tuesday, September 27, 1994"]
    assert tasks.write_date(day, 3, 1) == "TUESDAY, SEPTEMBER 27, 1994"
    assert tasks.write_date(datetime.date(2001, 1, 5), 0, 2) == "1/5/01"
    pairs = tasks.date_pairs(4000, seed=3)
    seen_forms = set()
    for question, answer in pairs:
        day = datetime.date.fromisoformat(answer)
        assert tasks.FIRST_DAY <= day <= tasks.LAST_DAY
        matches = [(f, c) for f in range(4) for c in range(3) if tasks.write_date(day, f, c) == question]
        assert matches, (question, answer)  # the question is the answer's own day, weekday included
        seen_forms |= set(matches)
    assert len(seen_forms) >= 10  # every format and case turns up (m/d/yy has no letters to case)
    years = [int(a[:4]) for _, a in pairs]
    assert min(years) == 1970 and max(years) == 2017


def test_a_task_splits_contiguously_pads_with_spaces_and_reverses_on_request():
    task = tasks.make_task("addition", n=100, seed=1, validation=0.2, test=0.1)
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (70, 20, 10)
    assert task.x_train.shape[1:] == (7,) and task.t_train.shape[1:] == (5,) and task.x_train.dtype == np.int32
    pairs = tasks.addition_pairs(100, seed=1)
    assert tasks.decode(task.vocab, task.x_val[0]) == pairs[70][0]
    assert tasks.decode(task.vocab, task.t_test[-1]) == "_" + pairs[-1][1]
    reversed_task = tasks.make_task("addition", n=100, seed=1, validation=0.2, test=0.1, reverse=True)
    for q, r in zip(pairs, reversed_task.x_train):  # the question reversed, then padded: its end comes first
        assert "".join(task.vocab[i] for i in r) == q[0][::-1].ljust(7)
    np.testing.assert_array_equal(reversed_task.t_train, task.t_train)  # answers are never reversed
    inputs, targets = tasks.decoder_io(task.t_train)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    assert (inputs[:, 0] == task.vocab.index("_")).all()


def test_the_vocabulary_is_fixed_by_the_task_so_a_model_reads_any_seeds_questions():
    assert tasks.VOCABULARIES["addition"] == " +0123456789_"
    date = tasks.make_task("date", n=50, seed=9)
    assert date.vocab == tasks.VOCABULARIES["date"]
    assert tasks.encode_questions("date", ["TUESDAY, SEPTEMBER 27, 1994"]).shape == (1, 29)


@pytest.mark.parametrize("call,message", [
    (lambda: tasks.make_task("subtraction"), r"unknown sequence task 'subtraction'; choose one of \['addition', 'date'\]"),
    (lambda: tasks.make_task("addition", n=2), r"n must be an int >= 3"),
    (lambda: tasks.make_task("addition", n=10, validation=0.5, test=0.5), r"leave no training example"),
    (lambda: tasks.make_task("date", validation=0), r"validation must be a fraction in \(0, 1\), got 0"),
    (lambda: tasks.addition_pairs(300_000), r"n must be an int from 0 to 200,000"),
    (lambda: tasks.encode_questions("addition", ["1234+5678"]), r"'1234\+5678' has 9 characters, more than the task's 7"),
    (lambda: tasks.encode_questions("addition", ["1-2"]), r"characters outside the task's vocabulary: '-'"),
])
def test_bad_task_requests_are_refused_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- text ----------------------------------------------------------------------------------------


def test_the_default_text_is_the_pythons_help_topics_in_key_order_split_contiguously():
    from pydoc_data.topics import topics

    corpus = text.load_text()
    whole = "".join(topics[k] for k in sorted(topics))
    assert corpus.characters == len(whole) and corpus.name == "python-help"
    assert corpus.sha256 == hashlib.sha256(whole.encode()).hexdigest()
    assert corpus.vocab == "".join(sorted(set(whole)))
    assert len(corpus.val) == round(0.1 * len(whole)) and len(corpus.train) + len(corpus.val) == len(whole)
    assert text.decode(corpus.vocab, corpus.train[:22]) == whole[:22]
    assert text.decode(corpus.vocab, corpus.val) == whole[len(corpus.train):]


def test_a_users_file_becomes_ids_of_its_own_characters(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("naïve café\n" * 30, encoding="utf-8")
    corpus = text.load_text(path, validation=0.25)
    assert corpus.vocab == "".join(sorted(set("naïve café\n")))
    assert text.decode(corpus.vocab, np.concatenate([corpus.train, corpus.val])) == "naïve café\n" * 30
    np.testing.assert_array_equal(text.encode(corpus.vocab, "café"), corpus.train[6:10])
    with pytest.raises(ValueError, match=r"characters not in the model's vocabulary: 'xz'"):
        text.encode(corpus.vocab, "zax")


@pytest.mark.parametrize("content,message", [
    (b"", r"the file is empty"),
    (b"abc\xff def", r"not UTF-8 text \(byte 3: b'\\xff'"),
    (None, r"cannot read"),
])
def test_a_text_file_that_cannot_be_used_is_refused_naming_it(content, message, tmp_path):
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(text.TextError, match=rf"^{path}: {message}"):
        text.load_text(path)


def test_windows_read_each_stream_in_order_so_the_state_can_flow_from_one_window_to_the_next():
    ids = np.arange(52, dtype=np.int32)  # 3 streams of 17, the 52nd character in none
    xs, ts = text.windows(ids, batch=3, length=4)
    assert xs.shape == ts.shape == (4, 3, 4)  # streams of 16 + 1 characters: 4 windows of 4
    np.testing.assert_array_equal(xs[:, 1].reshape(-1), np.arange(17, 33))  # stream 1, in order
    np.testing.assert_array_equal(ts, xs + 1)  # every target is the next character
    np.testing.assert_array_equal(xs[:, 2, 0], [34, 38, 42, 46])
    with pytest.raises(text.TextError, match=r"^tiny: 9 characters are too short for 3 streams of one window of 4 .* "
                                             r"at least 15"):
        text.windows(ids[:9], batch=3, length=4, what="tiny")
    with pytest.raises(ValueError, match=r"windows: length must be a positive int, got 0"):
        text.windows(ids, batch=3, length=0)


def test_bits_per_char_is_nats_over_ln_2():
    assert text.bits_per_char(np.log(2.0) * 1.79) == pytest.approx(1.79, rel=1e-15)


# --- the text's edges, named exactly (gaps the mutation run showed) -----------------------------


def test_read_text_names_a_missing_file_with_the_systems_reason_and_a_bad_byte_with_the_fix(tmp_path):
    missing = tmp_path / "none.txt"
    with pytest.raises(text.TextError, match=rf"^{re.escape(str(missing))}: cannot read \(No such file or directory\)$"):
        text.read_text(missing)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab\xff")
    with pytest.raises(text.TextError, match=r"invalid start byte\); save it as UTF-8$"):
        text.read_text(bad)


def test_make_corpus_holds_out_its_fraction_at_least_one_character_and_leaves_one_to_train_on():
    assert len(text.make_corpus("abcdefghij" * 10, "t").val) == 10  # the default fraction, 0.1
    assert len(text.make_corpus("abcdefghij", "t", validation=0.01).val) == 1
    corpus = text.make_corpus("abc", "t", validation=0.99)
    assert (len(corpus.train), len(corpus.val)) == (1, 2)
    corpus = text.make_corpus("ab", "t")
    assert (corpus.train.tolist(), corpus.val.tolist(), corpus.train.dtype) == ([0], [1], np.int32)
    with pytest.raises(text.TextError, match=r"^t: 1 characters; a language model needs at least 2 \(an input and "
                                             r"its next\)$"):
        text.make_corpus("a", "t")
    for bad in (0, 1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match=rf"^make_corpus: validation must be a fraction in \(0, 1\), got "
                                             rf"{re.escape(repr(bad))}$"):
            text.make_corpus("abc", "t", validation=bad)


def test_load_text_passes_its_fraction_and_names_the_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("0123456789" * 10, encoding="utf-8")
    corpus = text.load_text(path, validation=0.3)
    assert corpus.name == str(path) and len(corpus.val) == 30
    default = text.load_text(validation=0.2)
    assert len(default.val) == round(0.2 * default.characters)


def test_encode_and_decode_keep_int32_ids_and_read_ids_of_any_shape():
    ids = text.encode("abc", "cab")
    assert ids.dtype == np.int32 and ids.tolist() == [2, 0, 1]
    assert text.decode("abc", [[2, 0], [1, 1]]) == "cabb"


def test_windows_of_one_character_and_exactly_one_window_per_stream_as_int32():
    ids = np.arange(2 * (3 + 1), dtype=np.int64)  # two streams of one window of 3 and its next character
    xs, ts = text.windows(ids, batch=2, length=3)
    assert xs.shape == ts.shape == (1, 2, 3) and xs.dtype == ts.dtype == np.int32
    xs, ts = text.windows(np.arange(6), batch=3, length=1)
    assert xs.shape == (1, 3, 1)
    with pytest.raises(text.TextError, match=r"^text: 7 characters are too short for 2 streams of one window of 3 "
                                             r"\(and its next character\): it needs at least 8; use a shorter "
                                             r"sequence length or a smaller batch$"):
        text.windows(np.arange(7), batch=2, length=3)
    for arg in ("batch", "length"):
        for bad in (0, True, 2.0):
            kwargs = {"batch": 2, "length": 3, arg: bad}
            with pytest.raises(ValueError, match=rf"^windows: {arg} must be a positive int, got {bad!r}$"):
                text.windows(np.arange(20), **kwargs)
    with pytest.raises(ValueError, match=r"^windows: ids must be one sequence \(1 axis\), got shape \(2, 10\)$"):
        text.windows(np.zeros((2, 10), np.int32), batch=2, length=3)


# --- the generators pinned, and their edges named exactly ---------------------------------------


def test_the_generated_examples_are_pinned_so_a_seed_gives_the_same_task_on_every_machine():
    """A seed's examples are part of a run's record: the first eight of each task, as generated."""
    assert tasks.addition_pairs(8) == tasks.addition_pairs(8, seed=0) == [
        ("6+0", "6"), ("861+258", "1119"), ("59+130", "189"), ("3+871", "874"), ("669+58", "727"), ("60+9", "69"),
        ("2+8", "10"), ("78+75", "153")]
    assert tasks.date_pairs(8) == tasks.date_pairs(8, seed=0) == [
        ("TUESDAY, JANUARY 24, 1995", "1995-01-24"), ("9/15/12", "2012-09-15"), ("8/30/17", "2017-08-30"),
        ("9/28/96", "1996-09-28"), ("July 17, 1984", "1984-07-17"), ("wednesday, june 11, 2008", "2008-06-11"),
        ("december 23, 1980", "1980-12-23"), ("11/30/15", "2015-11-30")]
    assert tasks.VOCABULARIES == {"addition": " +0123456789_",
                                  "date": " ,-/0123456789ABCDEFGHIJLMNOPRSTUVWY_abcdefghijlmnoprstuvwy"}


def test_the_task_defaults_are_50000_examples_of_seed_0_split_80_10_10_and_questions_as_written():
    task = tasks.make_task("addition")
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (40_000, 5_000, 5_000)
    assert tasks.decode(task.vocab, task.x_train[0]) == tasks.addition_pairs(50_000, seed=0)[0][0]
    assert not task.reversed
    assert tasks.decode(task.vocab, tasks.encode_questions("addition", ["1+2"])[0]) == "1+2"
    small = tasks.make_task("addition", n=3)  # the smallest task: one example in each split
    assert (len(small.x_train), len(small.x_val), len(small.x_test)) == (1, 1, 1)


def test_addition_sizes_from_none_to_the_limit_and_exactly_n_distinct_questions():
    assert tasks.addition_pairs(0) == [] and len(tasks.addition_pairs(7)) == 7
    assert len(tasks.addition_pairs(tasks.ADDITION_LIMIT, seed=1)) == tasks.ADDITION_LIMIT
    for bad in (tasks.ADDITION_LIMIT + 1, True, -1):
        with pytest.raises(ValueError, match=rf"^addition_pairs: n must be an int from 0 to 200,000 \(there are "
                                             rf"1,000,000 distinct questions; .*\), got {bad!r}$"):
            tasks.addition_pairs(bad)


def test_empty_lists_encode_to_no_rows_of_the_tasks_width_and_bad_answers_are_named():
    for encode, width in ((tasks.encode_questions, 7), (tasks.encode_answers, 5)):
        empty = encode("addition", [])
        assert empty.shape == (0, width) and empty.dtype == np.int32
    with pytest.raises(ValueError, match=r"^addition: answer '_12345' has 6 characters, more than the task's 5$"):
        tasks.encode_answers("addition", ["12345"])
    with pytest.raises(ValueError, match=r"^addition: question '1\+2\+3\+45' has 8 characters, more than the task's 7$"):
        tasks.encode_questions("addition", ["1+2+3+45"])
    assert tasks.decode("X ", [0, 1, 1]) == "X"  # only the padding spaces go


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 3.0}, r"^make_task: n must be an int >= 3 \(train, validation and test need an example each\), got 3.0$"),
    ({"n": True}, r"^make_task: n must be an int >= 3 \(train, validation and test need an example each\), got True$"),
    ({"test": 1}, r"^make_task: test must be a fraction in \(0, 1\), got 1$"),
    ({"test": True}, r"^make_task: test must be a fraction in \(0, 1\), got True$"),
    ({"validation": 1.0}, r"^make_task: validation must be a fraction in \(0, 1\), got 1.0$"),
])
def test_make_task_names_the_argument_it_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tasks.make_task("addition", **kwargs)


def test_a_task_records_its_name_its_splits_and_whether_it_is_reversed():
    for reverse in (False, True):
        task = tasks.make_task("date", n=10, validation=0.2, test=0.2, reverse=reverse)
        assert task.name == "date" and task.reversed is reverse and task.vocab == tasks.VOCABULARIES["date"]
        assert [len(a) for a in task[:6]] == [6, 6, 2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"^make_task: test must be a fraction in \(0, 1\), got '0.1'$"):
        tasks.make_task("addition", test="0.1")
    with pytest.raises(ValueError, match=r"^addition: question '1-2\*3' has characters outside the task's "
                                         r"vocabulary: '\*-'$"):
        tasks.encode_questions("addition", ["1-2*3"])
    assert tasks.decode("a\t ", [0, 1, 2, 2]) == "a\t"  # spaces go, other blanks stay
