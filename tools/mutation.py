"""Mutation testing of the backward passes and the checker; see docs/mutation.md.

    python tools/mutation.py [FILE ...]        # default: every file of [tool.mutmut.tests]
    python tools/mutation.py --list            # the files and the tests each one runs
    python tools/mutation.py --report          # the table of the last results, running nothing

mutmut 3 writes the mutants: a copy of the sources in ``mutants/`` in which every function
of a mutated file is a trampoline that calls the original or mutant number N, chosen by the
environment variable ``MUTANT_UNDER_TEST`` (``pure_backprop.layers.relu.x_backward__mutmut_3``).
This script runs them, not ``mutmut run``, for two reasons:

* mutmut picks a mutant's tests by recording which tests called its function. Here layers are
  built when ``pure_backprop.registry`` is imported (``affine(3)`` at collection time), so the
  calls that build a layer's closures belong to no test, and mutmut would give those mutants
  no tests, or one arbitrary test. Each file gets its tests from ``[tool.mutmut.tests]`` instead.
* mutmut forks every worker from a process that has imported pytest (and JAX, once a test
  module is loaded); XLA's thread pools do not survive a fork. ``process_isolation =
  "forkserver"`` avoids that, but then every mutant pays a cold JAX start and all its compiles.

So: a worker process (``--jobs N``: N of them, side by side), started with ``spawn`` (no fork),
imports JAX once and runs mutant after mutant with ``pytest.main`` against the file's tests
(``-x``, one process, ``-p no:randomly``), each time after dropping ``pure_backprop``,
``reference``, the test modules and the conftest from ``sys.modules``: the registry and every layer are rebuilt under the new mutant,
and jitted functions, being new function objects, are traced again. XLA's compiled programs stay
warm: the workers share JAX's persistent compilation cache (``--xla-cache``), keyed by the HLO, so
only the programs a mutant changed are compiled again. Every ``--restart-every`` mutants the worker
is replaced and the clean tests must pass again; a mutant that runs past its timeout is killed
with its worker. ``--fresh`` starts a new worker for every mutant (slower; for checking).

Results go into mutmut's own files (``mutants/<file>.meta``), so ``mutmut results``,
``mutmut show NAME`` and ``mutmut browse`` work on them. Surviving mutants listed in the table
of docs/mutation.md as equivalent are counted apart; the score is (killed + timeout) / (total -
equivalent).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
DOC = ROOT / "docs" / "mutation.md"
PURGE = ("pure_backprop", "reference", "tests", "conftest")

# mutmut's exit codes (mutmut.stats.status_by_exit_code)
KILLED, SURVIVED, TIMEOUT, NO_TESTS, SUSPICIOUS = 1, 0, 36, 33, 35


# --- the worker: a spawned process, JAX imported once --------------------------------------------

def _purge():
    for name in list(sys.modules):
        if name.split(".")[0] in PURGE or name.startswith("test_"):
            del sys.modules[name]


XLA_CACHE = MUTANTS / "xla-cache"
XLA_CACHE_BYTES = 4 << 30


def _xla_cache(args):
    return None if args.xla_cache == "none" else str(Path(args.xla_cache).resolve())


def _keep_compiled_programs(folder):
    """JAX's persistent compilation cache, shared by the workers and kept between runs: a program
    whose HLO a mutant did not change (most of them: the tests' oracles, every other layer) is
    loaded instead of compiled again. Keyed by the HLO, so a changed program is compiled anew."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_BYTES)


class _Collector:
    """The ids of the collected tests, and the first test (or module) that failed: the killer."""

    def __init__(self):
        self.ids, self.killer, self.seconds = [], None, {}

    def pytest_collection_finish(self, session):
        self.ids.extend(item.nodeid for item in session.items)

    def pytest_collectreport(self, report):
        if report.failed and self.killer is None:
            self.killer = f"{report.nodeid} (collection)"

    def pytest_runtest_logreport(self, report):
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        if report.failed and self.killer is None:
            self.killer = report.nodeid


def _worker(conn, mutants_dir, log_path, xla_cache=None):
    os.chdir(mutants_dir)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.path.insert(0, mutants_dir)
    sys.dont_write_bytecode = False  # mutants/ files are large (every mutant of every function): keep their .pyc
    if xla_cache:
        _keep_compiled_programs(xla_cache)
    import pytest

    while True:
        message = conn.recv()
        if message is None:
            return
        kind, mutant, args = message
        _purge()
        os.environ["MUTANT_UNDER_TEST"] = mutant
        shown = " ".join(a for a in args if "::" not in a)
        print(f"\n=== {kind} {mutant or '(no mutant)'}: pytest {shown} [{sum('::' in a for a in args)} test ids]", flush=True)
        start = time.monotonic()
        collector = _Collector()
        import jax
        from jax.experimental.compilation_cache import compilation_cache

        cached = jax.config.jax_enable_compilation_cache
        # "uncached": every program compiled anew, as for a mutant that changes them all. JAX
        # decides once per process whether it uses the cache (a program compiled at collection
        # settles it): reset_cache makes it read the setting again, before the run and after.
        jax.config.update("jax_enable_compilation_cache", cached and kind != "uncached")
        compilation_cache.reset_cache()
        try:
            rc = int(pytest.main(list(args), plugins=[collector]))
        finally:
            jax.config.update("jax_enable_compilation_cache", cached)
            compilation_cache.reset_cache()
        sys.stdout.flush()
        where = {name: getattr(sys.modules.get(name), "__file__", None) for name in ("pure_backprop", "reference")}
        conn.send({"rc": rc, "seconds": time.monotonic() - start, "ids": collector.ids if kind == "collect" else [],
                   "killer": collector.killer, "where": where,
                   "test_seconds": collector.seconds if kind in ("clean", "uncached") else {}})


class Worker:
    """The spawned worker and the pipe to it; ``run`` returns ``None`` on a timeout or a crash."""

    def __init__(self, log_path, xla_cache=None):
        self.log_path, self.xla_cache = log_path, xla_cache
        self.process, self.count, self.exitcode = None, 0, None
        self.test_seconds = {}  # test id -> seconds, from the last clean run

    def start(self):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, daemon=True,
                                       args=(child, str(MUTANTS), str(self.log_path), self.xla_cache))
        self.process.start()
        child.close()
        self.count = 0

    def run(self, kind, mutant, args, timeout):
        self.send(kind, mutant, args)
        if not self.conn.poll(timeout):
            self.stop(kill=True)
            return None
        return self.receive()

    def send(self, kind, mutant, args):
        if self.process is None:
            self.start()
        self.count += 1
        self.conn.send((kind, mutant, list(args)))

    def receive(self):
        """The answer to the last ``send`` (waits for it); ``None`` if the worker died."""
        try:
            result = self.conn.recv()
        except EOFError:
            self.stop(kill=True)
            return None
        for name, path in result["where"].items():
            if path is not None and not Path(path).resolve().is_relative_to(MUTANTS):
                sys.exit(f"mutation: {name} was imported from {path}, not from {MUTANTS}: the mutants were not tested")
        return result

    def stop(self, kill=False):
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.exitcode = self.process.exitcode
        self.process = None


# --- configuration and mutant generation (mutmut) -------------------------------------------------

def _settings():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    tests = config.get("tests", {})
    if not tests:
        sys.exit("mutation: pyproject.toml has no [tool.mutmut.tests] table (file -> pytest arguments)")
    return config, tests


def _generate(files):
    """Refresh mutants/: mutmut mutates ``files``; every other source file, the tests and
    pyproject.toml are copied as they are now (the trampolines of a file not asked for are
    left from an earlier run only when its source has not changed since)."""
    from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_file_mutants
    from mutmut.configuration import config
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import walk_source_files

    set_mutant_under_test("mutant_generation")
    MUTANTS.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    wanted = {Path(f) for f in files}
    for path in walk_source_files():
        target = Path("mutants") / path
        if path in wanted:
            result = create_file_mutants(path)
            if result.error:
                raise result.error
        elif config().should_mutate(path) and target.exists() and target.stat().st_mtime >= path.stat().st_mtime:
            continue  # trampolines from an earlier run, still current
        elif not target.exists() or target.read_bytes() != path.read_bytes():
            shutil.copy2(path, target)


def _mutants_of(path):
    from mutmut.mutation.data import SourceFileMutationData

    data = SourceFileMutationData(path=Path(path))
    data.load()
    return data


def _equivalent():
    """Mutant names in the table of docs/mutation.md: ``| `name` | reason |``."""
    if not DOC.exists():
        return {}
    rows = re.findall(r"^\|\s*`([\w.]+__mutmut_\d+)`\s*\|(.*)\|\s*$", DOC.read_text(), flags=re.M)
    return {name: reason.strip() for name, reason in rows}


def _diff(name, path):
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        lines = get_diff_for_mutant(name, path=path).splitlines()
        return [line for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    except Exception as error:  # a report line, not a reason to stop
        return [f"(no diff: {error})"]


# --- the run --------------------------------------------------------------------------------------

def _common_args(config):
    return ["-x", "-q", "-p", "no:randomly", "--rootdir=.", *config.get("pytest_add_cli_args", [])]


def _collect(worker, config, selections):
    ids = []
    for selection in selections:
        args = ["--collect-only", "-q", *config.get("pytest_add_cli_args", []), "--rootdir=.", *shlex.split(selection)]
        result = worker.run("collect", "", args, timeout=600)
        if result is None or result["rc"] not in (0, 5):
            sys.exit(f"mutation: collecting `{selection}` failed; see {worker.log_path}")
        if not result["ids"]:
            print(f"    warning: `{selection}` selects no test", flush=True)
        ids += [i for i in result["ids"] if i not in ids]
    return ids


def _clean(worker, config, ids, what, kind="clean"):
    result = worker.run(kind, "", _common_args(config) + ids, timeout=1800)
    if result is None and _crashed(worker):  # as in _dispatch: once more
        print(f"\n    {what}: the worker died ({worker.exitcode}); the clean tests once more on a new worker", flush=True)
        result = worker.run(kind, "", _common_args(config) + ids, timeout=1800)
    if result is None or result["rc"] != 0:
        sys.exit(f"mutation: the tests fail without any mutant ({what}); see {worker.log_path}")
    worker.test_seconds = result["test_seconds"]
    return result["seconds"]


def _crashed(worker):
    """The worker died on its own (a segfault, an abort), not killed by us past a timeout (-9)."""
    return worker.exitcode not in (-9, None)


def _function_of(name):
    """``pure_backprop.perturb.x__bind__mutmut_7`` -> ``pure_backprop.perturb.x__bind``."""
    return name.rpartition("__mutmut_")[0]


def _test_order(ids, killers, seconds):
    """``name -> ids`` reordered for that mutant: first the tests that killed other mutants of
    the same function, the most frequent killer first; then those that killed mutants elsewhere
    in the file; then the rest, the fastest first. A killed mutant usually stops at its first
    test instead of after most of the file's tests (gradcheck.py: 54 s for all 166). The result
    does not depend on the order: the suite runs in random order (pytest-randomly) and must pass
    so; only the time to the first failure does."""
    from collections import Counter

    known = set(ids)
    by_function, overall = {}, Counter()
    for mutant, killer in killers.items():
        if killer in known:
            by_function.setdefault(_function_of(mutant), Counter())[killer] += 1
            overall[killer] += 1

    def order(name):
        local = by_function.get(_function_of(name), Counter())
        return sorted(ids, key=lambda t: (-local[t], -overall[t], seconds.get(t, 0.0)))

    return order


def run_file(path, config, selections, args, log_path, shared=None):
    data = _mutants_of(path)
    names = sorted(data.exit_code_by_key, key=lambda n: (_function_of(n), int(n.rpartition("_")[2])))
    if args.match:
        import fnmatch

        names = [n for n in names if any(fnmatch.fnmatchcase(n, pattern) for pattern in args.match)]
    if args.only:
        from mutmut.stats import status_by_exit_code

        names = [n for n in names if status_by_exit_code[data.exit_code_by_key[n]] in args.only]
    elif args.resume:
        names = [n for n in names if data.exit_code_by_key[n] is None]
    if args.shuffle is not None:  # a run stopped midway has then tested a uniform sample of the file
        import random

        random.Random(args.shuffle).shuffle(names)
    print(f"\n{path}: {len(names)} mutants", flush=True)
    if not names:
        return 0.0
    start = time.monotonic()
    worker = shared or Worker(log_path, _xla_cache(args))
    try:
        return _run_mutants(path, config, selections, args, log_path, data, names, worker, start)
    finally:
        if shared is None:
            worker.stop()


def _run_mutants(path, config, selections, args, log_path, data, names, worker, start):
    ids = _collect(worker, config, selections)
    print(f"    {len(ids)} tests: {' + '.join(selections)}", flush=True)
    # the timeout: from a run that compiles every program (a mutant of a function that every
    # program calls misses the compilation cache for all of them), not from one the cache speeds up
    cold = _clean(worker, config, ids, "first run", kind="uncached")
    warm = _clean(worker, config, ids, "second run")
    if args.estimate:
        timing = json.loads(TIMES.read_text()) if TIMES.exists() else {}
        timing.setdefault(str(path), {}).update(
            {"mutants": len(names), "tests": len(ids), "clean_cold_s": round(cold, 1), "clean_warm_s": round(warm, 1)})
        TIMES.write_text(json.dumps(timing, indent=2))
        print(f"    clean run {cold:.1f} s compiling every program, {warm:.1f} s with the compilation cache",
              flush=True)
        return time.monotonic() - start
    fail = worker.run("forced-fail", "fail", _common_args(config) + ids, timeout=cold * 4 + 60)
    if fail is None or fail["rc"] == 0:
        sys.exit(f"mutation: with MUTANT_UNDER_TEST=fail the tests pass: they do not import mutants/; see {log_path}")
    timeout = config.get("timeout_constant", 20.0) + config.get("timeout_multiplier", 4.0) * cold
    print(f"    clean run {cold:.1f} s compiling every program, {warm:.1f} s with the compilation cache; "
          f"timeout per mutant {timeout:.0f} s", flush=True)
    killers = json.loads(KILLERS.read_text()) if KILLERS.exists() else {}
    workers = [worker]
    for k in range(2, min(args.jobs, len(names)) + 1):  # each extra worker must pass the clean tests too
        workers.append(Worker(log_path.with_suffix(f".{k}.log"), worker.xla_cache))
        workers[-1].log_path.write_text("")
        _clean(workers[-1], config, ids, f"worker {k}'s first run")
    done = 0

    def record(name, result, worker):
        nonlocal done
        killers.pop(name, None)
        if result is None:  # killed past its timeout, or crashed twice (see _dispatch): not a kill
            code, seconds = (SUSPICIOUS, 0.0) if _crashed(worker) else (TIMEOUT, timeout)
        else:
            if result["killer"]:
                killers[name] = result["killer"]
            rc, seconds = result["rc"], result["seconds"]
            # 2: a collection error, 4: "found no collectors" (a test module failed to import): the
            # arguments are those of the clean run, which collected and passed, so the mutant did it
            code = {0: SURVIVED, 1: KILLED, 2: KILLED, 3: KILLED, 4: KILLED, 5: NO_TESTS}.get(rc, SUSPICIOUS)
        data.exit_code_by_key[name] = code
        data.durations_by_key[name] = seconds
        data.save()
        KILLERS.write_text(json.dumps(killers, indent=0, sort_keys=True))
        done += 1
        mark = {KILLED: ".", SURVIVED: "S", TIMEOUT: "T"}.get(code, "?")
        print(mark, end="" if done % 60 else f" {done}/{len(names)}\n", flush=True)

    file_killers = {n: k for n, k in killers.items() if n in data.exit_code_by_key}
    order = _test_order(ids, file_killers, worker.test_seconds)
    _dispatch(workers, names, lambda w, i: _replace_worker(w, config, ids, args, i),
              lambda name: _common_args(config) + order(name), timeout, record)
    for extra in workers[1:]:
        _clean(extra, config, ids, f"{extra.log_path.name}: after the last mutant")
        extra.stop()
    _clean(worker, config, ids, "after the last mutant")
    worker.stop()
    elapsed = time.monotonic() - start
    print(f"\n    {elapsed / 60:.1f} min", flush=True)
    timing = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    entry = timing.setdefault(str(path), {})
    entry.update({"tests": len(ids), "clean_cold_s": round(cold, 1), "clean_warm_s": round(warm, 1)})
    if len(names) == len(data.exit_code_by_key):  # a full run; a rerun of some mutants keeps the full run's time
        entry.update({"seconds": round(elapsed, 1), "mutants": len(names)})
    TIMES.write_text(json.dumps(timing, indent=2))
    return elapsed


def _replace_worker(worker, config, ids, args, i):
    """Before mutant ``i``: a new worker every ``--restart-every`` mutants (or every one with ``--fresh``)."""
    if args.fresh or worker.count >= args.restart_every:
        worker.stop()
        if not args.fresh:
            _clean(worker, config, ids, f"fresh worker before mutant {i + 1}")


def _dispatch(workers, names, before, test_args, timeout, record):
    """Run the mutants ``names`` on ``workers`` (one at a time each, with the pytest arguments
    ``test_args(name)``), ``record(name, result, worker)`` as each ends; ``result`` is ``None``
    when its worker ran past ``timeout`` (killed) or died twice. A worker that dies on its own (a
    segfault or abort) is no verdict on the mutant: XLA has crashed loading a program from the
    persistent cache (``compilation_cache.get_executable_and_time``) under mutants that change
    nothing such a crash could depend on (``<=`` for ``<``), so the mutant runs once more on a new
    worker, and a second crash is recorded as suspicious, not killed."""
    from multiprocessing.connection import wait

    pending, busy, crashed = list(enumerate(names)), {}, set()  # busy: worker -> (name, deadline)
    while pending or busy:
        for worker in workers:
            if worker not in busy and pending:
                i, name = pending.pop(0)
                before(worker, i)
                worker.send("mutant", name, test_args(name))
                busy[worker] = (name, time.monotonic() + timeout)
        first_deadline = min(deadline for _, deadline in busy.values())
        wait([w.conn for w in busy], timeout=max(0.0, first_deadline - time.monotonic()))
        for worker, (name, deadline) in list(busy.items()):
            if worker.conn.poll():  # an answer, or the end of a worker that died
                result = worker.receive()
            elif time.monotonic() >= deadline:
                worker.stop(kill=True)
                result = None
            else:
                continue
            del busy[worker]
            if result is None and _crashed(worker) and name not in crashed:
                crashed.add(name)
                print(f"\n    {name}: the worker died ({worker.exitcode}); once more on a new worker", flush=True)
                pending.insert(0, (names.index(name), name))
                continue
            record(name, result, worker)


TIMES = MUTANTS / "mutation-times.json"
KILLERS = MUTANTS / "mutation-killers.json"  # mutant -> the first test that failed


def _wilson(k, n, z=1.96):
    """Wilson's 95 % interval for a proportion ``k / n``."""
    p = k / n
    centre, half = p + z * z / (2 * n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def _require_mutmut():
    try:
        import mutmut  # noqa: F401
    except ImportError:
        sys.exit('mutation: mutmut is not installed: pip install -e ".[mutation]"')


def report(files, show_diffs=True):
    _require_mutmut()
    from mutmut.stats import status_by_exit_code

    if not any(MUTANTS.glob("**/*.meta")):
        sys.exit("mutation: no results here yet (mutants/ holds none): run `python tools/mutation.py FILE` first; "
                 "docs/mutation.md gives the table of the last full run")

    equivalent = _equivalent()
    timing = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    killers = json.loads(KILLERS.read_text()) if KILLERS.exists() else {}
    rows, survivors, stale, crashed = [], [], [], []
    for path in files:
        data = _mutants_of(path)
        status = {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}
        killed = sum(s == "killed" for s in status.values())  # a crash ("segfault") is no kill: other
        timeouts = sum(s == "timeout" for s in status.values())
        alive = [n for n, s in status.items() if s == "survived"]
        equiv = [n for n in alive if n in equivalent]
        other = len(status) - killed - timeouts - len(alive)
        counted = len(status) - len(equiv)
        score = 100.0 * (killed + timeouts) / counted if counted else float("nan")
        minutes = timing.get(str(path), {}).get("seconds", float("nan")) / 60
        aimed = sum(killers.get(n, "").startswith("tests/test_mutants.py") for n, s in status.items() if s == "killed")
        rows.append((str(path), killed, aimed, len(alive) - len(equiv), timeouts, len(equiv), other, len(status), score,
                     minutes))
        survivors += [(path, n) for n in alive if n not in equivalent]
        crashed += [n for n, s in status.items() if s in ("segfault", "suspicious")]
        stale += [n for n in equivalent if n in status and status[n] != "survived"]
    head = ("file", "killed", "by_mutants", "survived", "timeout", "equivalent", "other", "total", "score %", "minutes")
    print()
    print(f"{head[0]:<40} " + " ".join(f"{h:>10}" for h in head[1:]))
    for row in rows:
        print(f"{row[0]:<40} " + " ".join(f"{v:>10}" for v in row[1:8]) + f" {row[8]:>10.1f} {row[9]:>10.1f}")
    print("score = (killed + timeout) / (total - equivalent); by_mutants = killed first by tests/test_mutants.py;\n"
          "other = not run yet, no tests, or suspicious; minutes = the last run over the file")
    for path, killed, _, alive, timeouts, _, other, total, _, _ in rows:
        tested = killed + timeouts + alive
        if other and tested:  # a run cut short (--shuffle: a uniform sample): the score of what was tested
            low, high = _wilson(killed + timeouts, tested)
            print(f"{path}: {tested} of {total} mutants tested; {100.0 * (killed + timeouts) / tested:.1f} % of the "
                  f"non-equivalent ones killed (95 % interval {100 * low:.1f}-{100 * high:.1f} % if they are a uniform sample)")
    if survivors:
        print("\nsurviving mutants (not listed as equivalent in docs/mutation.md); `mutmut show NAME` for the diff:")
        for path, name in survivors:
            print(f"  {name}")
            if show_diffs:
                for line in _diff(name, path):
                    print(f"      {line.strip()}")
    for name in stale:
        print(f"  note: {name} is listed as equivalent in docs/mutation.md but did not survive: a stale entry")
    if crashed:
        print("\nno verdict (the worker crashed or the result was odd; `--only suspicious --only segfault` reruns them):")
        for name in crashed:
            print(f"  {name}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="source files (default: every file in [tool.mutmut.tests])")
    parser.add_argument("--list", action="store_true", help="print the files and their tests, run nothing")
    parser.add_argument("--report", action="store_true", help="print the table of the last results, run nothing")
    parser.add_argument("--resume", action="store_true", help="run only the mutants without a result")
    parser.add_argument("--only", action="append", choices=["survived", "suspicious", "segfault", "timeout", "killed", "not checked"],
                        help="rerun only the mutants whose last result is this (repeatable)")
    parser.add_argument("--match", action="append", metavar="GLOB",
                        help="run only the mutants whose name matches (repeatable), e.g. '*x_backward__mutmut_3'")
    parser.add_argument("--fresh", action="store_true", help="a new worker process for every mutant")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N workers side by side (each one core; default 1)")
    parser.add_argument("--xla-cache", default=str(XLA_CACHE.relative_to(ROOT)), metavar="DIR|none",
                        help="JAX's persistent compilation cache for the workers (default %(default)s)")
    parser.add_argument("--restart-every", type=int, default=100, help="replace the worker after this many mutants")
    parser.add_argument("--shuffle", type=int, metavar="SEED",
                        help="run the mutants in a seeded random order (a run cut short is a uniform sample; "
                             "--report gives the score of the sample)")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors without their diffs")
    parser.add_argument("--estimate", action="store_true",
                        help="run no mutant: time each file's clean tests and estimate the time of a full run")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    config, tests = _settings()
    files = [str(Path(f).resolve().relative_to(ROOT)) if Path(f).exists() else f for f in args.files] or list(tests)
    unknown = [f for f in files if f not in tests]
    if unknown:
        sys.exit(f"mutation: no tests listed in [tool.mutmut.tests] of pyproject.toml for {', '.join(unknown)}")
    if args.list:
        for f in files:
            print(f"{f}:\n" + "".join(f"    {s}\n" for s in tests[f]))
        return 0
    _require_mutmut()
    if not args.report:
        print(f"generating mutants for {len(files)} file(s) with mutmut", flush=True)
        _generate(files)
        MUTANTS.joinpath("logs").mkdir(exist_ok=True)
        total = 0.0
        # --estimate: one worker for every file, as XLA's compiled programs carry over between them
        shared = Worker(MUTANTS / "logs" / "estimate.log", _xla_cache(args)) if args.estimate else None
        for f in files:
            log = MUTANTS / "logs" / (f.replace("/", ".") + ".log")
            log.write_text("")
            try:
                total += run_file(Path(f), config, tests[f], args, log, shared)
            except SystemExit as error:
                if not args.estimate:
                    raise
                print(f"    {error}", flush=True)
        if shared is not None:
            shared.stop()
        print(f"\ntotal {total / 60:.1f} min")
    if args.estimate:
        estimate(files)
        return 0
    report([Path(f) for f in files], show_diffs=not args.no_diffs)
    return 0


def estimate(files, kill_s=1.5, surviving=0.25):
    """Minutes of a run: per mutant, ``kill_s`` if killed (one run stopped at its first failure,
    measured 0.7 to 2 s) or the warm clean run if it survives (``surviving``: the share of
    survivors; 0.23 to 0.24 in the first runs over relu, tanh and affine, before tests/test_mutants.py)."""
    timing = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    print(f"\n{'file':<40} {'mutants':>8} {'warm s':>7} {'est. min':>9} {'measured':>9}")
    total = 0.0
    for f in files:
        t = timing.get(f, {})
        n, warm = len(_mutants_of(Path(f)).exit_code_by_key), t.get("clean_warm_s", float("nan"))
        minutes = n * ((1 - surviving) * kill_s + surviving * warm) / 60
        total += minutes
        print(f"{f:<40} {n:>8} {warm:>7.1f} {minutes:>9.1f} {t.get('seconds', float('nan')) / 60:>9.1f}")
    print(f"{'total':<40} {'':>8} {'':>7} {total:>9.1f}   ({surviving:.0%} surviving, {kill_s} s per kill)")


if __name__ == "__main__":
    sys.exit(main())
