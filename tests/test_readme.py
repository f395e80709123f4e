"""The README's code runs as printed, and the gradcheck report it shows is the one it prints."""

import contextlib
import io
import re
from pathlib import Path

import jax

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_python_blocks_run_and_print_what_the_readme_shows():
    blocks = re.findall(r"```(\w*)\n(.*?)```", README, re.S)
    namespace, shown = {}, []
    for i, (lang, code) in enumerate(blocks):
        if lang != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out), jax.enable_x64(False):  # a reader's default, not the suite's
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
        if out.getvalue() and i + 1 < len(blocks) and blocks[i + 1][0] == "":
            shown.append((out.getvalue().strip(), blocks[i + 1][1].strip()))
    assert shown, "the README shows the output of at least one block"
    for printed, expected in shown:
        assert printed == expected
