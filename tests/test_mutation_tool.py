"""The pure parts of ``tools/mutation.py`` (docs/mutation.md): the order in which a mutant's tests
run and the interval given for a run cut short. The tool itself runs outside CI (hours)."""

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("mutation_tool", Path(__file__).parent.parent / "tools" / "mutation.py")
mutation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mutation)


def test_a_mutants_tests_run_its_functions_killers_first_then_the_files_then_the_fastest():
    ids = ["slow", "fast", "medium", "kills_f", "kills_g", "kills_g_often"]
    seconds = {"slow": 9.0, "fast": 0.1, "medium": 1.0, "kills_f": 5.0, "kills_g": 4.0, "kills_g_often": 8.0}
    killers = {"m.x_f__mutmut_1": "kills_f",
               "m.x_g__mutmut_1": "kills_g", "m.x_g__mutmut_2": "kills_g_often", "m.x_g__mutmut_3": "kills_g_often",
               "m.x_h__mutmut_1": "not a selected test"}
    order = mutation._test_order(ids, killers, seconds)
    assert order("m.x_f__mutmut_9") == ["kills_f", "kills_g_often", "kills_g", "fast", "medium", "slow"]
    assert order("m.x_g__mutmut_9") == ["kills_g_often", "kills_g", "kills_f", "fast", "medium", "slow"]
    assert order("m.x_h__mutmut_2") == ["kills_g_often", "kills_g", "kills_f", "fast", "medium", "slow"]  # ties: faster first
    assert sorted(order("m.x_h__mutmut_2")) == sorted(ids)  # every test, each once
    assert mutation._test_order(ids, {}, {})("m.x_f__mutmut_1") == ids  # nothing known: the given order
    assert mutation._function_of("pure_backprop.perturb.x__bind__mutmut_17") == "pure_backprop.perturb.x__bind"


def test_the_score_of_a_sample_comes_with_wilsons_interval():
    low, high = mutation._wilson(95, 100)
    assert low == pytest.approx(0.8882, abs=1e-4) and high == pytest.approx(0.9785, abs=1e-4)
    assert mutation._wilson(10, 10)[1] == pytest.approx(1.0) and mutation._wilson(0, 10)[0] == pytest.approx(0.0)


class _FakeWorker:
    """A worker whose answers are scripted: per mutant, a list of outcomes ("die" or an rc)."""

    def __init__(self, script):
        import multiprocessing

        self.script, self.exitcode, self.sent = script, None, []
        self.conn, self._other = multiprocessing.Pipe()

    def send(self, kind, name, args):
        self.sent.append(name)
        self.exitcode = None
        self._other.send(self.script[name].pop(0))

    def receive(self):
        outcome = self.conn.recv()
        if outcome == "die":
            self.exitcode = -11
            return None
        return {"rc": outcome}

    def stop(self, kill=False):
        pass


@pytest.mark.parametrize("outcomes, verdict", [
    (["die", 1], {"rc": 1}),  # a crash, then killed on the second try: the kill counts
    (["die", 0], {"rc": 0}),  # a crash, then survived
    (["die", "die"], None),  # two crashes: no result (recorded as suspicious)
])
def test_a_mutant_whose_worker_crashes_runs_once_more(outcomes, verdict):
    worker = _FakeWorker({"m.x_f__mutmut_1": list(outcomes), "m.x_f__mutmut_2": [1]})
    recorded = []
    mutation._dispatch([worker], ["m.x_f__mutmut_1", "m.x_f__mutmut_2"], lambda w, i: None, lambda name: [],
                       60.0, lambda name, result, w: recorded.append((name, result)))
    assert recorded == [("m.x_f__mutmut_1", verdict), ("m.x_f__mutmut_2", {"rc": 1})]
    assert worker.sent == ["m.x_f__mutmut_1", "m.x_f__mutmut_1", "m.x_f__mutmut_2"]
