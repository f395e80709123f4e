"""Whole-message assertions shared by the tests: a refusal is checked by all of its text, so a
renamed layer, argument or shape in the message is caught."""

import re

import pytest


def raises_exactly(kind, message):
    """``pytest.raises`` on the whole message."""
    return pytest.raises(kind, match="^" + re.escape(message) + "$")


def raises_exactly_under_jit(kind, message):
    """The same for an error raised inside a ``jax.jit`` function: JAX appends its own note on a
    new line (the traceback filtering), so the message must end at a line end."""
    return pytest.raises(kind, match="^" + re.escape(message) + "(\n|$)")
