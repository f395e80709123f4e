"""Strict numerics for the whole suite (after equinox's conftest): float64 on, and rank
promotion raises, so no test passes through a silent broadcast. And one compilation cache for
the session, so that a program built again by another test is not compiled again."""

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


@pytest.fixture(autouse=True, scope="session")
def _session_compiled_programs(tmp_path_factory):
    """JAX's persistent compilation cache in a folder of this session, shared by the xdist
    workers. Most tests build their own layers, so their jitted functions are new objects and
    JAX's in-memory caches miss even where the program is one that another test compiled; this
    cache is keyed by the program itself. A cache set up by the caller (tools/mutation.py keeps
    one between mutants) is left as it is."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cache

    if jax.config.jax_compilation_cache_dir is not None:
        yield
        return
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    options = {"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": 0.0,
               "jax_persistent_cache_min_entry_size_bytes": -1}
    saved = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    cache.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cache.reset_cache()
