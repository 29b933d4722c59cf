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

COMPARISON = pytest.StashKey[dict]()


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
def test_fastapi_vs_litserve(request, benchmark, load, server, framework, n):
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
    request.config.stash.setdefault(COMPARISON, {})[(load.classifier_tier, framework, n)] = figures
    assert errors == 0, f"{errors} requests failed; server {server.state()}"


# (from n, speedup) LitServe must reach over plain FastAPI. LitServe's own CI asks 1.0x on CPU and 1.2x
# on CUDA. Ours on the 2-core CPU (2026-11-23, total runtime FastAPI / LitServe): synthetic images, two
# runs: 1.05-1.2x at n=10 (too close to call), 1.42-1.57x at n=50, 100, 200; the floor is 1.2x from
# n=50, 15% under the lowest. With the real photos (run 0018): 1.04x at n=10, 1.34-1.38x from n=50, so
# 1.2x is still 10% under. The GPU entry is LitServe CI's figure, not yet measured here.
REQUIRED_SPEEDUP = {"cpu": (50, 1.2), "gpu": (10, 1.2)}


@pytest.mark.parametrize("tier_name", [pytest.param(n, marks=_gpu_marks(n), id=f"{n}-fastapi-speedup") for n in LOAD_MODEL_TIERS])
def test_litserve_is_faster_than_fastapi(request, tier_name):
    if request.config.getoption("benchmark_disable"):
        pytest.skip("smoke pass (--benchmark-disable): one unwarmed round is not enough to compare speed")
    measured = request.config.stash.get(COMPARISON, {})
    from_n, required = REQUIRED_SPEEDUP[tier_name]
    rows = []
    for n in LOAD_MODEL_TIERS[tier_name].fastapi_n:
        fastapi, litserve = measured.get((tier_name, "fastapi", n)), measured.get((tier_name, "litserve", n))
        if fastapi is None or litserve is None:
            pytest.skip(f"test_fastapi_vs_litserve did not run both frameworks at n={n} in this session")
        rows.append((n, fastapi["total_runtime_s"], litserve["total_runtime_s"], fastapi["total_runtime_s"] / litserve["total_runtime_s"]))
    table = "\n".join(f"n={n:<4} FastAPI {f:.3f} s  LitServe {l:.3f} s  speedup {x:.2f}x" for n, f, l, x in rows)
    behind = [(n, x) for n, _, _, x in rows if n >= from_n and x < required]
    assert not behind, f"LitServe slower than {required}x FastAPI from n={from_n} on:\n{table}"
