"""The command line and the package as a user would guess them: ``--version``, ``python -m
pure_backprop``, a bare command that says where to start, help that states every default and
shows examples that parse, submodules reachable as attributes without importing JAX, and
training curves readable for runs of any length."""

import argparse
import io
import math
import shlex
import subprocess
import sys
import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import pure_backprop
from pure_backprop.cli import COMMANDS, HINT, MODELS, _plot, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


# --- version and entry points ----------------------------------------------------------------


def test_the_installed_version_is_the_package_version():
    """pyproject.toml reads the version from ``pure_backprop.__version__`` (one place)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in config["project"]["dynamic"] and "version" not in config["project"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pure_backprop.__version__"}
    assert importlib.metadata.version("pure-backprop") == pure_backprop.__version__


def test_version_option_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pure-backprop {pure_backprop.__version__}\n"


def test_python_dash_m_runs_the_command_line():
    result = _run("-m", "pure_backprop", "--version")
    assert (result.returncode, result.stdout) == (0, f"pure-backprop {pure_backprop.__version__}\n"), result.stderr
    bare = _run("-m", "pure_backprop")
    assert bare.returncode == 2 and "usage: pure-backprop" in bare.stderr and "Traceback" not in bare.stderr


# --- a bare command --------------------------------------------------------------------------


def test_a_bare_command_lists_the_commands_and_where_to_start(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith("usage: pure-backprop")
    for name, text in COMMANDS.items():
        assert sum(line.split() == [name, *text.split()] for line in lines) == 1, captured.err
    assert captured.err.rstrip("\n").endswith(HINT) and "'pure-backprop train'" in HINT
    assert "Traceback" not in captured.err


# --- help ------------------------------------------------------------------------------------


def _parsers():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, commands.choices


def test_every_option_states_its_default():
    parser, commands = _parsers()
    for name, command in {"": parser, **commands}.items():
        for action in command._actions:
            if not action.option_strings or isinstance(
                    action, (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction)):
                continue  # no value to default: the command itself, or a flag, off unless given
            assert action.help, f"{name} {action.option_strings} has no help"
            assert "default" in action.help, f"{name} {action.option_strings}: {action.help!r} gives no default"
        command.format_help()  # every %(default)s expands


def test_train_help_describes_every_model_and_its_defaults():
    _, commands = _parsers()
    text = commands["train"].format_help()
    assert "multi-layer perceptron" not in text
    for model, book in (("mlp", "MultiLayerNetExtend"), ("convnet", "SimpleConvNet"), ("deepconvnet", "DeepConvNet")):
        line = next(line for line in text.splitlines() if line.startswith(f"  {model} "))
        assert book in line, line
        assert f"{MODELS[model]['epochs']} epochs" in text
    assert "TwoLayerNet" in text
    assert all(model in COMMANDS["train"] for model in MODELS)


def test_the_examples_keep_their_lines_and_parse():
    parser, commands = _parsers()
    examples = set()
    for command in (parser, *commands.values()):
        text = command.format_help()
        assert "\nexamples:\n" in text
        examples |= {line.split("#")[0].strip() for line in text.splitlines() if line.startswith("  pure-backprop ")}
    for wanted in ("pure-backprop train", "pure-backprop train --model convnet", "pure-backprop check --layer affine"):
        assert wanted in examples
    assert any("--dataset mnist --data-dir" in line for line in examples)
    for line in examples:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command in COMMANDS, line


# --- the package -----------------------------------------------------------------------------


def test_submodules_are_attributes_of_the_package_without_importing_jax_up_front():
    code = """
import sys, types
import pure_backprop as pb
from pure_backprop import cli
names = dir(pb)
assert 'jax' not in sys.modules, 'importing the package imported JAX'
wanted = {'augment', 'cli', 'core', 'data', 'gradcheck', 'graphs', 'initializers', 'layers', 'network', 'nodes',
          'perturb', 'registry', 'train'}
assert wanted <= set(names), sorted(wanted - set(names))
assert callable(pb.gradcheck.check) and callable(pb.network.mlp)
for name in names:
    if not name.startswith('_') and name not in pb.__all__:
        assert isinstance(getattr(pb, name), types.ModuleType), name
assert pb.Layer is pb.core.Layer
assert pb.as_jax_function is pb.bridge.as_jax_function and pb.load_run is pb.runs.load_run
assert pb.predict is pb.core.predict and pb.StatefulLayer is pb.core.StatefulLayer
try:
    pb.no_such_module
except AttributeError as e:
    assert 'no_such_module' in str(e)
else:
    raise AssertionError('pb.no_such_module did not raise AttributeError')
"""
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr


# --- curves ----------------------------------------------------------------------------------


def _history(epochs, low=0.01):
    return [{"epoch": e, **{f"{s}_loss": 2.2 * (low / 2.2) ** (e / epochs) * (1 + k / 10) for k, s in
                            enumerate(("train", "val", "test"))},
             **{f"{s}_accuracy": 0.9 - k / 50 - 0.5 * math.exp(-5 * e / epochs) for k, s in
                enumerate(("train", "val", "test"))}} for e in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs,marked", [(1, True), (3, True), (20, True), (21, False), (1000, False)])
def test_curves_of_few_epochs_mark_each_epoch(epochs, marked):
    fig = _plot(_history(epochs), io.BytesIO(), "title")
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert len(lines) == 6
    assert all((line.get_marker() not in (None, "None", "")) == marked for line in lines)


@pytest.mark.parametrize("epochs,low", [(1, 0.01), (2, 0.9), (7, 0.01), (300, 1e-5), (1000, 0.01)])
def test_curves_have_whole_epoch_ticks_and_labels_inside_the_figure(epochs, low):
    fig = _plot(_history(epochs, low), io.BytesIO(), "title")
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        drawn = ax.get_tightbbox(renderer)  # the axes with its tick labels, axis labels and title
        assert fig.bbox.x0 <= drawn.x0 and drawn.x1 <= fig.bbox.x1 and fig.bbox.y0 <= drawn.y0, \
            f"{ax.get_title()}: {drawn} is cut off by the figure's edge {fig.bbox}"
    ax_loss = fig.axes[0]
    lo, hi = ax_loss.get_ylim()
    labels = [t.get_text() for t in ax_loss.get_yticklabels(which="both") if lo <= t.get_position()[1] <= hi]
    labels = [t for t in labels if t]
    assert labels and all(float(t.replace("\N{MINUS SIGN}", "-")) > 0 for t in labels), labels  # 0.01, not 10^-2
