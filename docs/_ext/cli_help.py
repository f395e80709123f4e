"""A Sphinx directive that prints the command line's help, generated from its argument parser.

::

    ```{cli-help}
    ```

    ```{cli-help} train
    ```

renders ``pure_backprop.cli.build_parser().format_help()`` (no argument) or that of one
subcommand as a literal block, at build time, so the reference cannot drift from the parser.
The help is wrapped at 76 columns whatever the terminal that runs the build.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

WIDTH = "78"  # argparse wraps at $COLUMNS - 2: 76 columns, the width of a code block in the theme


@contextmanager
def _columns(width: str):
    """argparse reads ``$COLUMNS`` (through ``shutil.get_terminal_size``) when it formats help."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser``, by name, in the order they were added."""
    found = {}
    for action in parser._actions:  # argparse keeps no public list of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


class CliHelp(SphinxDirective):
    optional_arguments = 1
    has_content = False

    def run(self):
        from pure_backprop.cli import build_parser

        parser = build_parser()
        if self.arguments:
            name = self.arguments[0]
            commands = subcommands(parser)
            if name not in commands:
                raise self.error(f"cli-help: no subcommand {name!r}; the parser has {sorted(commands)}")
            parser = commands[name]
        with _columns(WIDTH):
            text = parser.format_help()
        block = nodes.literal_block(text, text, language="text")
        self.set_source_info(block)
        return [block]


def setup(app):
    app.add_directive("cli-help", CliHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
