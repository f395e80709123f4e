"""The command line and the package as a user would guess them: ``--version``, ``python -m
pure_backprop``, a bare command that says where to start, help that states every default and
shows examples that parse, submodules reachable as attributes without importing JAX, and
training curves readable for runs of any length."""

import argparse
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pure_backprop
from pure_backprop.cli import COMMANDS, HINT, MODELS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


# --- version and entry points ----------------------------------------------------------------


def test_the_package_version_is_the_one_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pure_backprop.__version__ == project["version"]


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
try:
    pb.no_such_module
except AttributeError as e:
    assert 'no_such_module' in str(e)
else:
    raise AssertionError('pb.no_such_module did not raise AttributeError')
"""
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
