"""Every Python block of the README runs alone, in a fresh process as a reader would paste it,
and prints what the ``text`` block right after it shows.

Numbers are compared to a relative 1e-3 (or 1e-6 absolute): float32 sums may round their last
digit differently on another CPU, and a relative error of 3e-16 is round-off wherever it is
printed; every word, shape, index and status must match exactly."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", README, re.S | re.M)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _examples():
    pairs = []
    for i, (lang, code) in enumerate(BLOCKS):
        if lang == "python":
            following = BLOCKS[i + 1] if i + 1 < len(BLOCKS) else ("", "")
            pairs.append(pytest.param(code, following[1] if following[0] == "text" else None, id=f"block{len(pairs)}"))
    return pairs


def _words(line: str) -> list[str]:
    """The line's words with each number as ``#`` and brackets apart: numpy pads ``-0.0417694 ]``
    where the last digit of a float32 is 0, and ``-0.04176938]`` where it is not."""
    return NUMBER.sub("#", line).replace("[", " [ ").replace("]", " ] ").split()


def same_output(printed: str, shown: str, rtol=1e-3, atol=1e-6) -> bool:
    """The same text with the same numbers, up to ``rtol``/``atol``."""
    printed_lines = [line.rstrip() for line in printed.strip().splitlines()]
    shown_lines = [line.rstrip() for line in shown.strip().splitlines()]
    if len(printed_lines) != len(shown_lines):
        return False
    for a, b in zip(printed_lines, shown_lines):
        if _words(a) != _words(b):
            return False
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
            if abs(float(x) - float(y)) > atol + rtol * abs(float(y)):
                return False
    return True


def test_same_output_tells_numbers_and_words_apart():
    assert same_output("loss 0.123456  ok", "loss 0.1234561 ok")
    assert same_output("err 3.1e-16", "err 0.0e+00")
    assert not same_output("loss 0.1235 ok", "loss 0.1245 ok")
    assert not same_output("loss 0.1235 ok", "loss 0.1235 FAIL")
    assert not same_output("(0, 2)", "(0, 3)")
    assert not same_output("a\nb", "a")
    assert same_output("[-0.04786783 -0.04176938]", "[-0.04786784 -0.0417694 ]")
    assert not same_output("[0.1] [0.2]", "[0.1 0.2]")


def test_the_readme_has_python_blocks_each_followed_by_its_output():
    examples = _examples()
    assert len(examples) >= 4
    assert all(param.values[1] is not None for param in examples), "a python block without a text block after it"


@pytest.mark.parametrize("code, shown", _examples())
def test_readme_block_runs_alone_and_prints_what_the_readme_shows(code, shown, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # a reader's defaults: float32
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert shown is not None
    assert same_output(done.stdout, shown), f"printed:\n{done.stdout}\nthe README shows:\n{shown}"
