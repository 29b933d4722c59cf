"""Change points across commits (fixtures/track/changepoints.py) on synthetic histories of saved runs: a real
pytest-benchmark run (tests/test_history.py's real_run) copied into one saved run per commit."""

import copy
import json

import numpy as np
import pytest

from fixtures.track.changepoints import change_points, recent_regressions, split_points
from fixtures.track.history import load_history
from fixtures.track.regression import main as regression_main
from tests.test_history import real_run  # noqa: F401  (the fixture)

# This machine's run-to-run spread: the median coefficient of variation of req/s over three make bench runs
# of one commit (runs 0009-0011, 2-core AMD EPYC) was 5.9% (p99 latency: 7.9%; the worst benchmark's req/s 12.5%).
SPREAD = 0.06
COMMITS = 12
STEP_AT = 8  # the 8th commit (1-based) is 20% slower


def write_runs(storage, template, rps_by_commit, seed):
    """One saved run per commit with req/s around the given means, p99 latency and api/direct at the spread."""
    rng = np.random.default_rng(seed)
    folder = storage / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    for i, mean in enumerate(rps_by_commit):
        run = copy.deepcopy(template)
        run["commit_info"] = {"id": f"{i + 1:07x}" + "0" * 33, "time": f"2026-11-{10 + i:02d}T12:00:00+00:00", "dirty": False}
        run["datetime"] = f"2026-11-{10 + i:02d}T12:30:00"
        info = run["benchmarks"][0]["extra_info"]
        rounds = list(mean * (1 + rng.normal(0, SPREAD / 2, 5)))  # rounds of one run agree more than runs do
        info["rps_per_round"], info["rps"] = rounds, float(np.mean(rounds) * (1 + rng.normal(0, SPREAD)))
        info["latency_p99_ms"] = float(80 * (1 + rng.normal(0, SPREAD)))
        info["api_over_direct"] = float(0.5 * (1 + rng.normal(0, SPREAD)))  # noise only: no step here
        (folder / f"{i + 1:04d}_{run['commit_info']['id']}.json").write_text(json.dumps(run))


def test_a_20_percent_step_at_commit_8_is_named_at_commit_8_and_nowhere_else(tmp_path, real_run):  # noqa: F811
    write_runs(tmp_path, real_run, [100.0] * (STEP_AT - 1) + [80.0] * (COMMITS - STEP_AT + 1), seed=0)
    runs = load_history(tmp_path)
    found = change_points(runs, subject_of=lambda commit: f"subject of {commit[:7]}")
    assert [(c.commit[:7], c.metric, c.direction) for c in found] == [(f"{STEP_AT:07x}", "rps", "REGRESSION")]
    (point,) = found
    assert point.mean_before == pytest.approx(100, rel=0.06) and point.mean_after == pytest.approx(80, rel=0.06)
    assert point.change == pytest.approx(-0.2, abs=0.06) and point.p_value <= 0.001
    assert point.subject == "subject of 0000008"
    assert recent_regressions(found, runs, last_commits=5) == [point]
    assert recent_regressions(found, runs, last_commits=4) == []  # commit 8 is the 5th newest
    assert regression_main(["--storage", str(tmp_path), "--fail", "--last-commits", "5"]) == 1
    assert regression_main(["--storage", str(tmp_path), "--fail", "--last-commits", "4"]) == 0


def test_pure_noise_at_this_machine_s_spread_names_nothing(tmp_path, real_run):  # noqa: F811
    write_runs(tmp_path, real_run, [100.0] * COMMITS, seed=0)
    assert change_points(load_history(tmp_path), subject_of=lambda commit: "") == []


def test_false_positives_and_detection_over_many_seeds():
    """Over 400 histories of 12 runs at the machine's spread: pure noise named a change point in 2% of 500
    histories when measured, a 20% step at commit 8 was found exactly there in 87% (asserted: <= 5%, >= 75%)."""
    false_positive = detected = 0
    seeds = range(400)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        false_positive += bool(split_points(list(100 * (1 + rng.normal(0, SPREAD, COMMITS)))))
        step = np.where(np.arange(COMMITS) >= STEP_AT - 1, 80.0, 100.0) * (1 + rng.normal(0, SPREAD, COMMITS))
        detected += [index for index, *_ in split_points(list(step))] == [STEP_AT - 1]
    assert false_positive / len(seeds) <= 0.05
    assert detected / len(seeds) >= 0.75


def test_a_figure_of_an_invalid_run_is_left_out(tmp_path, real_run):  # noqa: F811
    write_runs(tmp_path, real_run, [100.0] * 6 + [50.0] + [100.0] * 5, seed=1)
    broken = sorted(tmp_path.glob("*/*.json"))[6]
    run = json.loads(broken.read_text())
    run["benchmarks"][0]["extra_info"].update(valid=False, invalid_reason="3 request(s) failed")
    broken.write_text(json.dumps(run))
    assert [c for c in change_points(load_history(tmp_path), subject_of=lambda commit: "") if c.metric == "rps"] == []
