"""Strict numerics for the whole suite (after equinox's conftest): float64 on, and rank
promotion raises, so no test passes through a silent broadcast."""

import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="session")
def _session_cache_home(tmp_path_factory):
    """The command line keeps compiled programs under ``$XDG_CACHE_HOME`` by default: in the
    tests, a folder of this session (and of its subprocesses), never the user's own cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before
