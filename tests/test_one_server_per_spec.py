"""One server per spec: the benchmarks' parameters are session-scoped and ordered by spec, so the
concurrency levels (rates, comparisons) of one spec share one server. Before, `parametrize(...,
indirect=["server"])` beside direct arguments gave the server function scope: a server per test (the
CPU tier started each ladder step twice, the FastAPI comparison four times, and the GPU tier would have
started about 120, compiling each compile step six times)."""

import os
import subprocess
import sys
from collections import Counter

import pytest

from fixtures.drive.server import REPO_ROOT
from tests.inner import inner_session_env

pytestmark = pytest.mark.slow  # a benchmark session

COUNT_STARTS = '''
def pytest_sessionfinish(session):
    root_conftest = next(p for p in session.config.pluginmanager.get_plugins() if hasattr(p, "_started_servers"))
    print("SERVER STARTS:", ",".join(running.spec.name for running in root_conftest._started_servers))
'''


def test_two_concurrency_levels_of_one_step_start_exactly_one_server(tmp_path):
    (tmp_path / "count_starts.py").write_text(COUNT_STARTS)
    env = inner_session_env(tmp_path)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/bench/test_classifier.py", "--benchmark-disable", "-p", "count_starts",
         "-p", "no:cacheprovider", "-k", "cpu-baseline-c1 or cpu-baseline-c8", "-s", "-q"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=420, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
    starts = Counter(result.stdout.split("SERVER STARTS:")[1].split()[0].split(","))
    assert starts["cpu-baseline"] == 1, f"servers started: {dict(starts)}"  # counted starts, not log files


def test_tests_of_one_spec_run_back_to_back_in_collection_order():
    from dataclasses import dataclass

    import pytest

    from fixtures.drive.ordering import COLLECTION_INDEX, one_server_per_spec_order

    @dataclass
    class Item:
        nodeid: str
        server: object

        def __post_init__(self):
            self.stash = pytest.Stash()
            self.callspec = type("CallSpec", (), {"params": {} if self.server is None else {"server": self.server}})()

    collected = [Item("a.py::t[a-c1]", "a"), Item("a.py::t[b-c1]", "b"), Item("a.py::t[a-c8]", "a"),
                 Item("a.py::u[b-r1]", "b"), Item("a.py::plain", None), Item("b.py::t[a-c1]", "a")]
    for index, item in enumerate(collected):
        item.stash[COLLECTION_INDEX] = index
    shuffled = [collected[i] for i in (3, 5, 0, 4, 2, 1)]  # as pytest's own reordering might leave them
    ordered = [item.nodeid for item in one_server_per_spec_order(shuffled)]
    assert ordered == ["a.py::t[a-c1]", "a.py::t[a-c8]", "a.py::t[b-c1]", "a.py::u[b-r1]", "a.py::plain", "b.py::t[a-c1]"]


def test_files_of_benchmarks_or_slow_tests_come_first_and_keep_their_order():
    """make test's workers take whole files in this order (--no-loadscope-reorder): a file of servers or inner sessions
    taken last would run alone on one worker while the other idles."""
    from dataclasses import dataclass, field

    from fixtures.drive.ordering import slow_files_first

    @dataclass
    class Item:
        nodeid: str
        marks: tuple = field(default=())

        def get_closest_marker(self, name):
            return name if name in self.marks else None

    items = [Item("tests/bench/a.py::t[x]", ("benchmark",)), Item("tests/test_fast.py::one"),
             Item("tests/test_slow.py::one", ("slow",)), Item("tests/test_fast.py::two"), Item("tests/test_slow.py::two", ("slow",)),
             Item("tests/test_zz.py::one")]
    assert [item.nodeid for item in slow_files_first(items)] == [
        "tests/bench/a.py::t[x]", "tests/test_slow.py::one", "tests/test_slow.py::two", "tests/test_fast.py::one",
        "tests/test_fast.py::two", "tests/test_zz.py::one"]


def test_make_test_hands_out_files_in_the_order_collected():
    """xdist would otherwise hand out files by their number of tests, most first (its --loadscope-reorder)."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "--dist loadfile --no-loadscope-reorder" in makefile
