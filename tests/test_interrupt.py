"""Ctrl-C at any moment of ``pure-backprop train``: during start-up (the import of JAX),
between the gradient check and training, while the first compiled call compiles, during
training, and twice or three times in a row. Every run must end with exit code 130 (never a
negative code: no crash, no death by the signal), print no traceback, and list honestly
what it wrote: each file it names exists and parses (strict JSON, a loadable ``.npz`` of
finite arrays, a PNG), and when it names none the run folder is gone.

Five runs; each is a real subprocess (``sys.executable -m pure_backprop.cli``), so each pays the
import of JAX; the runs are small (``--hidden 8``, no augmentation, no validation split) and
the moments are found by waiting for the process's own output, not by fixed sleeps, except
for start-up, where nothing is printed yet.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

EPOCHS = 2000  # many short compiled calls (100 epochs each): training outlasts the moments below
ARGS = ["train", "--epochs", str(EPOCHS), "--hidden", "8", "--augment", "none", "--validation", "0",
        "--compile-cache", "none"]  # every run compiles: the moment "while the first call compiles" exists
DEADLINE = 240.0  # seconds for any one wait; generous for a loaded 2-core machine
GRAD_LINE = "gradient check"
PROGRESS = re.compile(rf"\b([1-9]\d*)/{EPOCHS}\b")  # the progress bar after a finished compiled call
REPO = Path(__file__).resolve().parents[1]


class Run:
    """A training subprocess whose stdout and stderr are collected by two threads, so the
    test can wait for a line (with a deadline) and send signals meanwhile."""

    def __init__(self, out: Path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "pure_backprop.cli", *ARGS, "--out", str(out)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=out.parent, env=env)
        self.text = {"out": "", "err": ""}
        self.changed = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(stream, name), daemon=True)
                        for stream, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, name):
        while chunk := os.read(stream.fileno(), 4096):
            with self.changed:
                self.text[name] += chunk.decode(errors="replace")
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, name, predicate, what):
        """Block until ``predicate(text so far)`` holds for stream ``name``; fail on exit or deadline."""
        deadline = time.monotonic() + DEADLINE
        with self.changed:
            while not predicate(self.text[name]):
                if self.proc.poll() is not None and not any(r.is_alive() for r in self.readers):
                    pytest.fail(f"the run ended (code {self.proc.returncode}) before {what}:\n{self.output()}")
                if time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"no {what} within {DEADLINE} s:\n{self.output()}")
                self.changed.wait(0.05)

    def sleep_from_start(self, seconds):
        time.sleep(max(0.0, self.start + seconds - time.monotonic()))

    def interrupt(self):
        assert self.proc.poll() is None, f"the run had already ended:\n{self.output()}"
        self.proc.send_signal(signal.SIGINT)

    def interrupt_again(self):
        """A further Ctrl-C, sent only while the run is still alive: after the first one the
        run may finish stopping at once (on a quiet machine it had ended 0.5 s later, before
        the third), and a user cannot press Ctrl-C on a process that has exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self):
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the run did not end within {DEADLINE} s of Ctrl-C:\n{self.output()}")
        for reader in self.readers:
            reader.join(10)
        return self.proc.returncode

    def output(self):
        return f"--- stdout\n{self.text['out']}\n--- stderr\n{self.text['err']}"


def _jax_loading(run):
    """Wait until the child maps JAX's native library: it is importing JAX, which ``main`` does
    after installing its Ctrl-C handler. (Before that, Python itself is starting, and no
    program can catch a signal before its first line runs: a fixed 0.3 s sleep hit that window
    on a machine at load 8.) Without /proc, fall back to a fixed sleep."""
    maps = Path(f"/proc/{run.proc.pid}/maps")
    if not maps.parent.exists():
        run.sleep_from_start(0.5)
        return
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and run.proc.poll() is None:
        try:
            if "jaxlib" in maps.read_text() or "xla_extension" in maps.read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    pytest.fail(f"JAX never loaded in the child:\n{run.output()}")


def _startup(run):
    _jax_loading(run)  # JAX is being imported: nothing printed yet
    assert GRAD_LINE not in run.text["out"]
    run.interrupt()


def _startup_twice(run):
    _jax_loading(run)
    run.interrupt()
    time.sleep(0.1)
    run.interrupt_again()


def _compilation(run):
    run.wait_for("out", lambda text: GRAD_LINE in text, "gradient check line")
    time.sleep(1.0)  # the first compiled call of fit is compiling (or, on a fast machine, running)
    run.interrupt()


def _from_gradient_check_three_times(run):
    run.wait_for("out", lambda text: GRAD_LINE in text, "gradient check line")
    run.interrupt()  # between the check and training
    for pause in (0.05, 0.3):  # then while the run is stopping (or the first call compiles)
        time.sleep(pause)
        run.interrupt_again()


def _training(run):
    run.wait_for("err", PROGRESS.search, "progress after the first compiled call")
    run.interrupt()


MOMENTS = {
    "start-up": _startup,
    "start-up, twice": _startup_twice,
    "compilation": _compilation,
    "after the gradient check, three times": _from_gradient_check_three_times,
    "training": _training,
}
MUST_WRITE = {"training"}  # an epoch has certainly finished
MUST_NOT_WRITE = {"start-up", "start-up, twice"}  # no epoch can have finished


def _check_written(run, out: Path):
    """The last stderr line lists what was written; each file exists and parses. Returns the names."""
    lines = [line for line in run.text["err"].replace("\r", "\n").splitlines() if line.startswith("pure-backprop:")]
    report = re.fullmatch(r"pure-backprop: interrupted; wrote (.*)", lines[-1] if lines else "")
    assert report, f"no 'interrupted; wrote ...' line last:\n{run.output()}"
    if report[1].startswith("nothing"):
        assert not out.exists(), f"said nothing was written, but {out} exists: {list(out.iterdir())}"
        return set()
    written = [Path(p) for p in report[1].split(", ")]
    assert {p.name for p in written} == {"params.npz", "curves.png", "metrics.json", "checkpoint.npz"}, report[1]
    for path in written:
        assert path.parent == out and path.is_file(), f"said it wrote {path}, which does not exist"

    def no_constants(name):
        raise ValueError(f"metrics.json holds {name}, which strict JSON does not allow")

    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=no_constants)
    assert metrics["interrupted"] is True and 1 <= metrics["epochs"] == len(metrics["history"]) < EPOCHS
    with np.load(out / "params.npz") as arrays:
        assert arrays.files and all(np.isfinite(arrays[name]).all() for name in arrays.files)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"], "a temporary file was left behind"
    from pure_backprop.runs import load_checkpoint

    checkpoint = load_checkpoint(out / "checkpoint.npz")[0]  # whole, and where the run stopped: it resumes from there
    assert checkpoint.epoch == metrics["epochs"] and checkpoint.history == metrics["history"]
    return {p.name for p in written}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_always_exits_130_with_an_honest_list_of_files(moment, tmp_path):
    out = tmp_path / "run"
    run = Run(out)
    try:
        MOMENTS[moment](run)
        code = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    everything = run.text["out"] + run.text["err"]
    assert code == 130, f"exit code {code} (negative: killed by a signal, a crash)\n{run.output()}"
    assert "Traceback" not in everything and "Fatal Python error" not in everything, run.output()
    written = _check_written(run, out)
    if moment in MUST_WRITE:
        assert written, f"an epoch had finished but nothing was written:\n{run.output()}"
    if moment in MUST_NOT_WRITE:
        assert not written, f"interrupted during start-up, yet files were written:\n{run.output()}"
