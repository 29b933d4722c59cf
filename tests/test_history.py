"""Plots and the regression check over a history of saved runs: one real pytest-benchmark run (made
by an inner pytest) and synthetic runs derived from it for several commits."""

import copy
import json
import random

import pytest

from fixtures.track.history import load_history, machine_fingerprint
from fixtures.track.plots import make_plots
from fixtures.track.regression import detect_changes, format_changes, main as regression_main, regressions
from tests.test_pytest_wiring import run_pytest

REAL_BENCHMARK = """
import pytest

@pytest.mark.benchmark(group="classifier")
@pytest.mark.parametrize("concurrency", [8], ids=["cpu-batched-c8"])
def test_served(benchmark, concurrency):
    benchmark.pedantic(sum, args=([1, 2, 3],), rounds=3, iterations=1)
    benchmark.extra_info.update({
        "rps": 100.0, "rps_per_round": [99.0, 100.0, 101.0], "latency_p99_ms": 80.0, "api_over_direct": 0.5,
        "concurrency": concurrency, "device": "cpu", "direct_rps": 200.0, "direct_rps_by_batch": {"1": 80.0, "8": 100.0},
        "model": "resnet18", "input_size": 112, "precision": "fp32", "direct_threads": 1,
        "server": {"name": "cpu-batched"},
    })
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    storage = tmp / "storage"
    result = run_pytest(tmp, REAL_BENCHMARK, "--benchmark-autosave", f"--benchmark-storage={storage}", "--no-plots")
    assert result.returncode == 0, result.stdout[-3000:]
    (path,) = storage.glob("*/*.json")
    return json.loads(path.read_text())


def write_history(storage, template, rps_per_commit, seed=0, noise=0.03, dirty_last=False):
    """One saved run per commit, in commit order, each with 5 rounds of rps around the given mean."""
    rng = random.Random(seed)
    folder = storage / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    for i, mean in enumerate(rps_per_commit):
        run = copy.deepcopy(template)
        run["commit_info"] = {"id": f"{i + 1:07x}" + "0" * 33, "time": f"2026-11-{10 + i:02d}T12:00:00+00:00",
                              "dirty": dirty_last and i == len(rps_per_commit) - 1}
        run["datetime"] = f"2026-11-{10 + i:02d}T12:30:00"
        rounds = [mean * (1 + rng.gauss(0, noise)) for _ in range(5)]
        info = run["benchmarks"][0]["extra_info"]
        info["rps_per_round"], info["rps"] = rounds, sum(rounds) / len(rounds)
        info["api_over_direct"] = info["rps"] / 200.0
        (folder / f"{i + 1:04d}_{run['commit_info']['id']}_{run['datetime']}.json").write_text(json.dumps(run))


def test_a_30_percent_drop_is_flagged(tmp_path, real_run):
    write_history(tmp_path, real_run, [100, 100, 100, 100, 100, 70])
    runs = load_history(tmp_path)
    assert len(runs) == 6
    found = {(c.benchmark_id, c.metric) for c in regressions(detect_changes(runs))}
    assert ("cpu-batched-c8", "rps") in found
    assert ("cpu-batched-c8", "api_over_direct") in found
    assert "REGRESSION" in format_changes(detect_changes(runs), runs)
    assert regression_main(["--storage", str(tmp_path), "--fail"]) == 1


@pytest.mark.parametrize("seed", range(5))
def test_run_to_run_noise_is_not_flagged(tmp_path, real_run, seed):
    write_history(tmp_path, real_run, [100, 100, 100, 100, 100, 100], seed=seed)
    runs = load_history(tmp_path)
    assert detect_changes(runs) == []
    assert regression_main(["--storage", str(tmp_path), "--fail"]) == 0


def test_an_improvement_is_reported_but_not_a_failure(tmp_path, real_run):
    write_history(tmp_path, real_run, [100, 100, 100, 140])
    changes = detect_changes(load_history(tmp_path))
    assert {c.direction for c in changes} == {"improvement"}
    assert regression_main(["--storage", str(tmp_path), "--fail"]) == 0


def test_runs_of_another_machine_are_never_compared(tmp_path, real_run):
    write_history(tmp_path, real_run, [100, 100, 100, 100])
    other = copy.deepcopy(real_run)
    other["machine_info"]["gpus"] = [{"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6, "driver": "580"}]
    other["commit_info"] = {"id": "f" * 40, "time": "2026-11-20T12:00:00+00:00", "dirty": False}
    other["datetime"] = "2026-11-20T12:30:00"
    other["benchmarks"][0]["extra_info"]["rps"] = 5000.0
    (tmp_path / "Linux-CPython-3.11-64bit" / "0099_other.json").write_text(json.dumps(other))
    runs = load_history(tmp_path)  # the newest saved run is the GPU machine's
    assert [r.commit for r in runs] == ["f" * 40]
    cpu_runs = load_history(tmp_path, machine=machine_fingerprint(real_run["machine_info"]))
    assert len(cpu_runs) == 4 and detect_changes(cpu_runs) == []


def test_a_run_on_fewer_cores_of_the_same_host_is_another_machine(tmp_path, real_run):
    """`taskset -c 0` on the 2-core host: a one-core run's two-worker figures are about half the host's, and were
    once reported as a 43% regression against it (the fingerprint read logical_cores, which taskset leaves at 2)."""
    write_history(tmp_path, real_run, [100, 100, 100, 100])
    one_core = copy.deepcopy(real_run)
    one_core["machine_info"]["cpu_info"]["usable_cores"] = 1
    one_core["commit_info"] = {"id": "e" * 40, "time": "2026-11-20T12:00:00+00:00", "dirty": False}
    one_core["datetime"] = "2026-11-20T12:30:00"
    one_core["benchmarks"][0]["extra_info"]["rps"] = 57.0
    (tmp_path / "Linux-CPython-3.11-64bit" / "0099_one_core.json").write_text(json.dumps(one_core))
    assert [r.commit for r in load_history(tmp_path)] == ["e" * 40]  # the newest run's machine: one core
    whole_host = load_history(tmp_path, machine=machine_fingerprint(real_run["machine_info"]))
    assert len(whole_host) == 4 and detect_changes(whole_host) == []


def test_a_regression_after_a_package_upgrade_is_reported_beside_the_upgrade_not_silenced(tmp_path, real_run):
    """An environment change used to turn every regression into 'environment changed', and the GPU workflow
    installs unpinned packages: a real regression shipped with an upgrade was never reported."""
    write_history(tmp_path, real_run, [100, 100, 100, 70])
    newest = sorted(tmp_path.glob("*/*.json"))[-1]
    run = json.loads(newest.read_text())
    old_torch = run["machine_info"]["packages"]["torch"]
    run["machine_info"]["packages"]["torch"] = "9.9.9"
    newest.write_text(json.dumps(run))
    runs = load_history(tmp_path)
    changes = detect_changes(runs)
    assert changes and all(c.direction == "REGRESSION" for c in changes)
    assert regressions(changes) == changes
    assert all(c.environment_change == f"torch {old_torch} -> 9.9.9" for c in changes)
    table = format_changes(changes, runs)
    assert "REGRESSION" in table and f"torch {old_torch} -> 9.9.9" in table


def test_one_earlier_run_is_not_enough_to_judge(tmp_path, real_run):
    write_history(tmp_path, real_run, [100, 70])
    runs = load_history(tmp_path)
    assert detect_changes(runs) == []
    assert "nothing judged yet" in format_changes([], runs)


def test_plots_and_index_are_written(tmp_path, real_run):
    write_history(tmp_path, real_run, [100, 104, 98, 101], dirty_last=True)
    out = tmp_path / "plots"
    paths = make_plots(tmp_path, out)
    names = {p.name for p in paths}
    assert "trend-classifier-c8-rps.png" in names and "trend-classifier-c8-api_over_direct.png" in names
    assert "run-classifier-concurrency.png" in names and "run-direct-batch.png" in names
    assert all(p.stat().st_size > 5_000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    index = (out / "index.md").read_text()
    assert "4 saved run(s)" in index and "0000004*" in index  # the newest commit, marked dirty
    assert all(p.name in index for p in paths)


def test_session_hook_plots_and_checks_after_saving(tmp_path):
    storage = tmp_path / "storage"
    result = run_pytest(tmp_path, REAL_BENCHMARK, "--benchmark-autosave", f"--benchmark-storage={storage}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "nothing judged yet" in result.stdout
    assert (storage / "plots" / "index.md").exists()


def test_invalid_figures_are_left_out_of_the_history(tmp_path, real_run):
    from fixtures.track.history import series

    write_history(tmp_path, real_run, [100, 100, 100, 70])
    newest = sorted(tmp_path.glob("*/*.json"))[-1]
    run = json.loads(newest.read_text())
    run["benchmarks"][0]["extra_info"].update(valid=False, invalid_reason="3 request(s) failed")
    newest.write_text(json.dumps(run))
    runs = load_history(tmp_path)
    assert len(series(runs, "cpu-batched-c8", "rps")) == 3
    assert detect_changes(runs) == []  # the 30% drop came from a run that was not trusted


def test_the_end_of_a_saving_session_searches_change_points_once(tmp_path, real_run, monkeypatch):
    """make_plots takes the history and change points the regression check already has, instead of
    reading every saved run and running the change-point search a second time."""
    import fixtures.track.changepoints
    import fixtures.track.plots

    write_history(tmp_path, real_run, [100, 100, 100, 70])
    runs = load_history(tmp_path)

    def searched_again(*args, **kwargs):
        raise AssertionError("change points searched a second time")

    monkeypatch.setattr(fixtures.track.changepoints, "change_points", searched_again)
    monkeypatch.setattr(fixtures.track.plots, "load_history", lambda *a, **k: searched_again())
    paths = make_plots(tmp_path, tmp_path / "plots", runs=runs, points_of_change=[])
    assert any(p.name.startswith("trend-") for p in paths)


def test_a_user_s_declaration_is_plotted_by_its_variants_in_its_order_in_its_unit_and_every_ceiling_on_the_axes(
        tmp_path, real_run, monkeypatch):
    """A numpy LitAPI's run: its direct-ceiling plot was titled "None@None None cpu 1t" in images/s with one line
    for three variants; trend panels came in alphabetical order; a ceiling above the first panel's figures fell
    off the shared axis."""
    import matplotlib.figure

    drawn = {}
    savefig = matplotlib.figure.Figure.savefig

    def recording(fig, path, *args, **kwargs):
        drawn[path.name] = [(ax.get_title(), ax.get_ylabel(), ax.get_ylim(), ax.get_yscale(),
                             [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")])
                            for ax in fig.axes if ax.get_visible()]
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    run = copy.deepcopy(real_run)
    variants = ("no_batching", "batching", "batching_workers")  # the declaration's order, not the alphabet's
    run["machine_info"]["declarations"] = {"nearest": {"cpu": [f"cpu-nearest_{v}" for v in variants]}}
    for index, variant in enumerate(variants):
        for concurrency, rps in ((1, 50.0 + index), (8, 60.0 + 10 * index)):
            bench = copy.deepcopy(run["benchmarks"][0])
            bench.update(param=f"cpu-nearest_{variant}-c{concurrency}", name=f"test_nearest[cpu-nearest_{variant}-c{concurrency}]",
                         fullname=f"t::test_nearest[cpu-nearest_{variant}-c{concurrency}]", group="nearest")
            bench["extra_info"] = {"rps": rps, "rps_per_round": [rps] * 3, "concurrency": concurrency, "device": "cpu",
                                   "served_api": "servers.nearest:NearestNeighbourAPI", "direct_threads": 1,
                                   # the last variant's ceiling is 10x its figures: a log axis
                                   "direct_rps": 900.0 if index == 2 else 120.0 + index,
                                   "direct_rps_by_batch": {"1": 100.0 + index, "8": 120.0 + index},
                                   "server": {"name": f"cpu-nearest_{variant}"}}
            run["benchmarks"].append(bench)
    folder = tmp_path / "Linux-CPython-3.11-64bit"
    folder.mkdir()
    (folder / "0001_run.json").write_text(json.dumps(run))
    make_plots(tmp_path, tmp_path / "plots")

    [(title, unit, _, _, lines)] = drawn["run-direct-batch-nearest.png"]
    assert "servers.nearest:NearestNeighbourAPI" in title and unit.startswith("requests/s")
    assert lines == [f"cpu-nearest_{v}" for v in variants]
    assert [label for _, label, *_ in drawn["run-direct-batch.png"]] == ["images/s (one process, no HTTP)"]  # the classifier
    panels = drawn["trend-nearest-c8-rps.png"]
    assert [p[0] for p in panels] == [f"cpu-nearest_{v}" for v in variants]
    assert all(p[3] == "log" and p[2][1] >= 900.0 for p in panels)  # the 10x ceiling, on the shared axis
    [(_, _, (bottom, top), scale, lines)] = drawn["run-nearest-concurrency.png"]
    assert scale == "log" and top >= 900.0 and bottom <= 50.0
    assert lines[:3] == [f"cpu-nearest_{v} API" for v in variants]
