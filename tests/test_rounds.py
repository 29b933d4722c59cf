"""Rounds until stable within a budget: converged when the last k agree, invalid when the budget is spent
first; and the figure's rounds reach pytest-benchmark's saved JSON."""

import json
import math
import os
import subprocess
import sys

import pytest

from fixtures.drive.server import REPO_ROOT
from fixtures.measure.rounds import RoundPolicy, ci95_half_width_rel, run_until_stable, stability
from fixtures.measure.validity import untrusted_reason


def run(figures, policy):
    values = iter(figures)
    return run_until_stable(lambda: next(values), lambda value: value, policy)


def test_rounds_continue_until_the_last_window_agrees():
    """Before, a benchmark ran a fixed 3 rounds and took whatever they said."""
    results, judged = run([50.0, 90.0, 100.0, 101.0, 99.0, 500.0], RoundPolicy(window=3, max_cv=0.05, max_rounds=8))
    assert results == [50.0, 90.0, 100.0, 101.0, 99.0]  # stopped once 100, 101, 99 agreed
    assert judged.converged and judged.rounds_taken == 5 and judged.window == 3
    assert judged.window_cv == pytest.approx(0.01)
    assert 0 < judged.ci95_half_width_rel < 0.05
    assert untrusted_reason(0, judged) is None


def test_a_run_that_never_settles_within_its_budget_is_invalid():
    results, judged = run([100.0, 130.0, 90.0, 140.0, 80.0, 150.0], RoundPolicy(window=3, max_cv=0.05, max_rounds=5))
    assert len(results) == 5 and not judged.converged
    reason = untrusted_reason(0, judged)
    assert "did not converge" in reason and "last 3 of 5 rounds" in reason
    assert judged.as_dict()["rounds_converged"] is False and judged.as_dict()["round_budget"] == 5


def test_stability_and_confidence_interval_maths():
    assert not stability([100.0, 100.0], RoundPolicy(3, 0.05, 5)).converged  # fewer rounds than the window
    assert ci95_half_width_rel([9.0, 10.0, 11.0]) == pytest.approx(4.303 * 1 / math.sqrt(3) / 10, rel=1e-3)
    with pytest.raises(ValueError):
        RoundPolicy(window=5, max_cv=0.1, max_rounds=3)


ROUNDS_TEST = '''
from fixtures.measure.rounds import record_rounds

def test_rounds(benchmark):
    record_rounds(benchmark, [0.5, 0.25, 0.75])
'''


def test_the_figure_s_rounds_are_what_pytest_benchmark_saves(tmp_path):
    (tmp_path / "test_rounds_case.py").write_text(ROUNDS_TEST)
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_rounds_case.py"), "-p", "no:cacheprovider",
                             f"--benchmark-json={out}", "-q", "--rootdir", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout[-2000:]
    stats = json.loads(out.read_text())["benchmarks"][0]["stats"]
    assert stats["rounds"] == 3 and stats["min"] == 0.25 and stats["max"] == 0.75 and stats["median"] == 0.5


def test_rounds_are_sized_by_the_rate_a_round_serves_not_by_the_slower_warm_up():
    """A fast server warmed at a fraction of its rate got rounds far under min_round_s, too short to agree on a
    busy machine (tests/test_own_litapi.py's MLP: 0.1 s rounds, CV 0.29); a round at the warm-up's size sizes them."""
    from fixtures.closed_loop import warm_up_and_size_rounds
    from fixtures.drive.load import LoadRun, RequestResult
    from fixtures.variants import CLOSED_LOOP_TIERS

    tier, sent = CLOSED_LOOP_TIERS["cpu"], []  # min_round_s 0.5: at 1000 req/s a round is at least 500 requests

    class Client:  # the warm-up runs at 150 req/s, every later run at 1000
        def closed_loop(self, requests):
            sent.append(requests)
            rate = 150.0 if len(sent) == 1 else 1000.0
            return LoadRun(tuple(RequestResult(True, 200, 0.01) for _ in range(requests)), requests / rate, 8)

    assert warm_up_and_size_rounds(Client(), tier, 8, smoke=False, all_ok=lambda results, what: None) == 500
    assert sent == [32, 75]  # 4 waves, then a round at the warm-up's size (0.5 s at 150 req/s)
    sent.clear()
    # A smoke pass: the warm-up, then one round of its size (every connection and batch shape again).
    assert warm_up_and_size_rounds(Client(), tier, 8, smoke=True, all_ok=lambda results, what: None) == 32
    assert sent == [32]
