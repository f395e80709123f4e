"""Strict numerics for the whole suite (after equinox's conftest): float64 on, and rank
promotion raises, so no test passes through a silent broadcast."""

import os
import shutil

import jax
import pytest
from filelock import FileLock

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="session")
def _session_cache_home(tmp_path_factory):
    """The command line keeps compiled programs under ``$XDG_CACHE_HOME`` by default: in the
    tests, a folder of this pytest run (and of its subprocesses), never the user's own cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def built_once(tmp_path_factory):
    """``built_once(name, build)`` returns a folder that ``build(folder)`` filled, built once per
    pytest run even when both of xdist's workers run tests that need it (pytest-xdist's recipe: a
    file lock in the folder that the workers' temporary folders share). For the module fixtures
    that train or start processes: their tests are spread over the workers, and each worker
    would otherwise build the same folder again. A build that raised is retried by the next user."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")

    def build_once(name, build):
        if worker is None:  # one process: the basetemp's parent would be shared with other runs
            folder = tmp_path_factory.mktemp(name)
            build(folder)
            return folder
        folder = tmp_path_factory.getbasetemp().parent / name
        built = folder.with_name(name + ".built")
        with FileLock(str(folder.with_name(name + ".lock"))):
            if not built.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                build(folder)
                built.touch()
        return folder

    return build_once


def pytest_collection_modifyitems(items):
    """The tests of ``test_layers`` for one registry case and shape one after the other (the
    order is otherwise kept): they share compiled programs, and xdist's load scheduling sends
    runs of consecutive tests to one worker. (Its ``--dist loadgroup`` would say so outright,
    but under pytest 9.2 it silently stops grouping: pytest-xdist's tracker, #1386.)"""
    def case_of(item):
        spec = getattr(item, "callspec", None)
        return spec.id if spec is not None and item.module.__name__ == "test_layers" else None

    first, keys = {}, []
    for i, item in enumerate(items):
        case = case_of(item)
        keys.append(i if case is None else first.setdefault(case, i))
    items[:] = [item for _, _, item in sorted(zip(keys, range(len(items)), items), key=lambda k: k[:2])]
