"""Sphinx configuration of the pure_backprop documentation.

Build from the repository root, with the ``docs`` extra installed::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Warnings are errors (``-W``), so a broken reference or a docstring that does not parse fails the
build. The pages with code are MyST-NB text notebooks, executed at every build
(``nb_execution_mode = "force"``): a tutorial whose code stops working fails the build too.
Nothing is fetched from the network at build time (no intersphinx).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))  # cli_help: the command-line reference, from the parser

project = "pure_backprop"
author = "the pure_backprop authors"
copyright = "the pure_backprop authors"
try:
    from pure_backprop import __version__ as release
except ImportError:  # the package is not installed: autodoc will say so
    release = ""
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and executed text notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into the site: formulas render with no network
    "cli_help",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", ".venv", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# MyST: $...$ and $$...$$ math, amsmath environments, ::: fences.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# MyST-NB: run every notebook page at every build, and fail the build on any error in a cell.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 300  # seconds per cell; the slowest cells compile a few small programs
nb_execution_show_tb = True  # a failing cell's traceback goes to the build log
nb_merge_streams = True  # one output block per cell, not one per write to stdout

# autodoc: the docstrings are reStructuredText; members in the order of the source.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "sphinx_book_theme"
html_title = "pure_backprop"
html_static_path = []
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
}
