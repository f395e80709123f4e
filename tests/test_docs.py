"""The documentation site stays honest about the code, cheaply (the site itself is built, with its
pages executed, by ``sphinx-build -W --keep-going -b html docs docs/_build/html``, not here)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# modules (and the modules under them) documented elsewhere than by autodoc, with where
NOT_IN_API = {
    "pure_backprop.cli": "the command line: training.md renders its parser's help (cli-help)",
    "pure_backprop.__main__": "python -m pure_backprop: the command line",
    "pure_backprop.cli_sequences": "the command line's sequence models: training.md renders their options",
}


def _modules():
    for path in sorted((ROOT / "pure_backprop").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _documented_elsewhere(module):
    return any(module == name or module.startswith(name + ".") for name in NOT_IN_API)


def _automodules():
    text = "\n".join(page.read_text() for page in sorted((DOCS / "api").glob("*.md")))
    return re.findall(r"^\.\. automodule:: (\S+)$", text, flags=re.MULTILINE)


def test_every_module_is_in_the_api_reference():
    documented = _automodules()
    missing = sorted(m for m in set(_modules()) - set(documented) if not _documented_elsewhere(m))
    assert not missing, f"add these modules to a page of docs/api/ (an automodule block): {missing}"


def test_the_api_reference_names_only_modules_that_exist():
    stale = sorted(set(_automodules()) - set(_modules()))
    assert not stale, f"docs/api/ documents modules that no longer exist: {stale}"


def test_every_subcommand_has_its_help_in_the_command_line_reference():
    import argparse  # the test extra has no docutils, so docs/_ext/cli_help.py is not imported here

    from pure_backprop.cli import build_parser

    subcommands = [name for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
                   for name in action.choices]
    rendered = re.findall(r"^```\{cli-help\} (\S+)$", (DOCS / "training.md").read_text(), flags=re.MULTILINE)
    assert sorted(rendered) == sorted(subcommands) and len(subcommands) >= 4, (
        "docs/training.md needs one cli-help block per subcommand of pure_backprop.cli.build_parser()")
