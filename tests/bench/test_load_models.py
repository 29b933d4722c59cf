"""Load beyond a closed loop (MLPerf's Server scenario, vLLM's serving benchmark): open-loop Poisson
arrivals timed from their schedule, goodput against a latency SLO, the highest rate meeting the SLO,
and seed 004's comparison of a plain FastAPI server with LitServe."""

import statistics

import pytest

from fixtures.client_ceiling import client_bound
from fixtures.load import arrival_schedule, run_closed_loop, run_open_loop
from fixtures.metrics import error_breakdown, goodput, late_count, max_rate_at_slo, summarize
from fixtures.images import real_image_bodies
from servers.variants import CLASSIFIER_TIERS, LOAD_MODEL_TIERS, classifier_variants, fastapi_comparison_specs


def _gpu_marks(tier_name):
    return [pytest.mark.gpu] if CLASSIFIER_TIERS[tier_name].device == "cuda" else []


def _poisson_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        spec = classifier_variants(load.classifier_tier)["batch_workers"]
        for rate in load.poisson_rates:
            yield pytest.param(load, spec, rate, marks=_gpu_marks(name), id=f"{spec.name}-poisson-r{rate:g}")


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


@pytest.mark.benchmark(group="open-loop")
@pytest.mark.parametrize("load, server, rate", list(_poisson_cases()), indirect=["server"])
def test_poisson_open_loop(benchmark, harness_ceiling, load, server, rate):
    url = f"{server.url}/predict"
    bodies = real_image_bodies(CLASSIFIER_TIERS[load.classifier_tier].input_size)
    run_closed_loop(url, bodies, 16, 4)  # warm-up
    schedule = arrival_schedule(rate, max(1, round(rate * load.poisson_seconds)), seed=0)
    runs = []
    benchmark.pedantic(lambda: runs.append(run_open_loop(url, bodies, schedule)), rounds=3, iterations=1, warmup_rounds=0)
    results = [r for run in runs for r in run.results]
    wall = sum(run.wall_s for run in runs)
    summary = summarize(results, wall)
    good = goodput(results, wall, load.slo_p99_s)
    benchmark.extra_info.update({
        "offered_rate": rate, "achieved_rps": summary.rps, "requests": summary.requests, "errors": summary.errors,
        "late_requests": late_count(results), "arrivals": "poisson", "seed": 0,
        "latency_p50_ms": _ms(summary.latency_p50_s), "latency_p90_ms": _ms(summary.latency_p90_s),
        "latency_p99_ms": _ms(summary.latency_p99_s), "latency_from": "scheduled send time",
        "slo_p99_ms": load.slo_p99_s * 1000, "goodput_share": good.share, "goodput_rps": good.rate,
        "client_ceiling_rps": harness_ceiling["bare_aiohttp_rps"],
        "client_bound": client_bound(summary.rps, harness_ceiling["bare_aiohttp_rps"]),
        "server": server.spec.describe(), "device": server.spec.option("device"),
    })
    assert summary.errors == 0, f"{error_breakdown(results)}; server {server.state()}"


def _knee_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        ladder = classifier_variants(load.classifier_tier)
        for spec in (ladder["baseline"], ladder["batch_workers"]):
            yield pytest.param(load, spec, marks=_gpu_marks(name), id=f"{spec.name}-slo-p99-{load.slo_p99_s * 1000:g}ms")


@pytest.mark.benchmark(group="slo")
@pytest.mark.parametrize("load, server", list(_knee_cases()), indirect=["server"])
def test_max_rate_at_slo(benchmark, load, server):
    """Bisection over short open-loop runs for the highest Poisson rate whose p99 meets the SLO. The
    benchmark's time is the search's, not a figure: max_rate_at_slo in extra_info is."""
    url = f"{server.url}/predict"
    bodies = real_image_bodies(CLASSIFIER_TIERS[load.classifier_tier].input_size)
    run_closed_loop(url, bodies, 16, 4)  # warm-up
    tried = {}

    def p99_at(rate):
        run = run_open_loop(url, bodies, arrival_schedule(rate, max(10, round(rate * 1.5)), seed=1))
        summary = summarize(run.results, run.wall_s)
        tried[rate] = None if summary.errors else summary.latency_p99_s
        return tried[rate]

    found = []
    benchmark.pedantic(lambda: found.append(max_rate_at_slo(p99_at, load.knee_low, load.knee_high, load.slo_p99_s,
                                                            load.knee_iterations)), rounds=1, iterations=1)
    benchmark.extra_info.update({
        "max_rate_at_slo": found[0], "slo_p99_ms": load.slo_p99_s * 1000,
        "p99_ms_by_rate": {f"{rate:g}": _ms(p99) for rate, p99 in sorted(tried.items())},
        "search": f"bisection over [{load.knee_low:g}, {load.knee_high:g}] req/s, {load.knee_iterations} steps",
        "server": server.spec.describe(), "device": server.spec.option("device"),
    })
    assert len(tried) <= load.knee_iterations + 2


def _comparison_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        for framework, spec in fastapi_comparison_specs(load.classifier_tier).items():
            for n in load.fastapi_n:
                yield pytest.param(load, spec, framework, n, marks=_gpu_marks(name), id=f"{spec.name}-n{n}")


@pytest.mark.benchmark(group="fastapi-vs-litserve")
@pytest.mark.parametrize("load, server, framework, n", list(_comparison_cases()), indirect=["server"])
def test_fastapi_vs_litserve(request, benchmark, figures_by_id, load, server, framework, n):
    """n requests sent at once (seed 004): total runtime per round, response time mean and std."""
    url = f"{server.url}/predict"
    bodies = real_image_bodies(CLASSIFIER_TIERS[load.classifier_tier].input_size)
    run_closed_loop(url, bodies, min(n, 16), min(n, 16))  # warm-up
    runs = []
    benchmark.pedantic(lambda: runs.append(run_closed_loop(url, bodies, n, n)), rounds=3, iterations=1)
    latencies = [r.latency_s for run in runs for r in run.results if r.ok]
    errors = sum(1 for run in runs for r in run.results if not r.ok)
    figures = {
        "framework": framework, "concurrent_requests": n, "errors": errors,
        "total_runtime_s": statistics.median(run.wall_s for run in runs),
        "response_mean_ms": _ms(statistics.mean(latencies)) if latencies else None,
        "response_std_ms": _ms(statistics.stdev(latencies)) if len(latencies) > 1 else None,
        "server": server.spec.describe(), "device": server.spec.option("device"),
    }
    benchmark.extra_info.update(figures)
    figures_by_id[request.node.callspec.id] = figures  # LitServe against FastAPI: tests/bench/test_relations.py
    assert errors == 0, f"{errors} requests failed; server {server.state()}"
