"""Strict numerics for the whole suite (after equinox's conftest): float64 on, and rank
promotion raises, so no test passes through a silent broadcast."""

import gc
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


def _mapped_regions():
    """The number of memory regions this process maps (Linux), or None where it cannot tell."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return None


def _map_limit():
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return None


MAP_LIMIT = _map_limit()


def release_compiled_programs(limit):
    """Drop every compiled program (``jax.clear_caches``) once this process maps more than
    ``limit`` memory regions; returns whether it did. Each program XLA compiles for the CPU maps
    about six regions of machine code that stay until its cache lets go of it, and a worker
    that runs half of the suite compiles thousands: measured, ``test_layers`` alone reaches
    46,000 regions, and past the kernel's ``vm.max_map_count`` (65,530 by default) the next
    compilation cannot map its code and the worker dies with a segmentation fault, in
    whichever test comes next. A program dropped is compiled again when next called."""
    regions = _mapped_regions()
    if limit is None or regions is None or regions <= limit:
        return False
    jax.clear_caches()
    gc.collect()
    return True


@pytest.fixture(autouse=True)
def _bounded_compiled_programs():
    """After each test, the compiled programs dropped when they map a third of the regions the
    kernel allows: rarely (every few hundred tests), so the programs a case's tests share are
    still compiled once."""
    yield
    if MAP_LIMIT is not None:
        release_compiled_programs(MAP_LIMIT // 3)
