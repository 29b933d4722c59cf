"""Load beyond a closed loop (MLPerf's Server scenario, vLLM's serving benchmark): open-loop Poisson
arrivals timed from their schedule, goodput against a latency SLO, the highest rate meeting the SLO,
a memory soak below that rate, and seed 004's comparison of a plain FastAPI server with LitServe.
Every answer is checked (fixtures/drive/answers.py)."""

import time

import pytest

from fixtures.drive.answers import checked_classifier_client
from fixtures.drive.load import soak
from fixtures.drive.request_log import request_rows
from fixtures.measure.knee import Capacity, bracket_only, find_knee, knee_rate_cap, open_loop_p99, probe_capacity
from fixtures.measure.metrics import error_breakdown
from fixtures.measure.validity import rss_growth_problem
from fixtures.record.records import framework_record, knee_record, open_loop_record, soak_record
from fixtures.variants import CLASSIFIER_TIERS, LOAD_MODEL_TIERS, classifier_variants, fastapi_comparison_specs

KNEE = pytest.StashKey[dict]()  # spec name -> the rate this session's knee search found, for the soak


def _gpu_marks(tier_name):
    return [pytest.mark.gpu] if CLASSIFIER_TIERS[tier_name].device == "cuda" else []


def _client(server, load, concurrency=None):
    return checked_classifier_client(server.url, server.spec, concurrency)


# A count, not a time: 16 requests open 4 connections and pass each worker's first batches; 0.1 s on the
# no-op server, 2 s on a server 4x slower than this machine's baseline classifier.
WARMUP = "16 requests at concurrency 4 on the measured session's connections"


def _capacity(figures_by_id, client, spec, load) -> Capacity:
    """The spec's closed-loop req/s at the tier's highest concurrency: this session's throughput benchmark of
    the same spec when it ran (tests/bench/test_classifier.py runs first), else a short probe now."""
    tier = CLASSIFIER_TIERS[load.classifier_tier]
    top = max(tier.concurrency)
    measured = figures_by_id.get(f"{spec.name}-c{top}", {}).get("rps")
    if measured:
        return Capacity(measured, f"test_classifier_throughput[{spec.name}-c{top}] this session")
    return probe_capacity(client, top, tier.round_requests(top))


def _poisson_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        spec = classifier_variants(load.classifier_tier)["batch_workers"]
        for fraction in load.poisson_fractions:
            yield pytest.param(load, spec, fraction, marks=_gpu_marks(name), id=f"{spec.name}-poisson-x{fraction:g}")


@pytest.mark.benchmark(group="open-loop")
@pytest.mark.parametrize("load, server, fraction", list(_poisson_cases()), indirect=["server"], scope="session")
def test_poisson_open_loop(benchmark, client_ceiling, figures_by_id, save_record, load, server, fraction):
    """Poisson arrivals at a fraction of the spec's measured capacity: the same share of its load on any machine."""
    runs = []
    with _client(server, load) as client:
        client.closed_loop(16, concurrency=4)  # warm-up
        capacity = _capacity(figures_by_id, client, server.spec, load)
        # 3 rounds of poisson_seconds each: a time at any speed (the request count follows the rate).
        benchmark.pedantic(lambda: runs.append(client.poisson(capacity.at(fraction), load.poisson_seconds, seed=0)),
                           rounds=3, iterations=1, warmup_rounds=0)
    figures = save_record(open_loop_record(spec=server.spec, capacity=capacity, fraction=fraction, seed=0, runs=runs,
                                           slo_s=load.slo_p99_s, client_ceiling=client_ceiling, warmup=WARMUP),
                          requests=request_rows(runs))
    assert figures["errors"] == 0, f"{error_breakdown([r for run in runs for r in run.results])}; server {server.state()}"


def _knee_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        ladder = classifier_variants(load.classifier_tier)
        for spec in (ladder["baseline"], ladder["batch_workers"]):
            yield pytest.param(load, spec, marks=_gpu_marks(name), id=f"{spec.name}-slo-p99-{load.slo_p99_s * 1000:g}ms")


def knee_policy(load, smoke: bool):
    """The tier's knee policy; a smoke pass stops once the knee is bracketed (fixtures.measure.knee.bracket_only)."""
    return bracket_only(load.knee) if smoke else load.knee


def _search(client, capacity, load, client_ceiling, policy):
    return find_knee(open_loop_p99(client, policy), capacity.rps, load.slo_p99_s, policy,
                     client_ceiling_rps=knee_rate_cap(client_ceiling))


def assert_knee_found(search, policy, name):
    """Found: a knee bracketed between a rate meeting the SLO and one missing it, or a client-bound server
    (the SLO still met at the most the client offers); within the search's bounds either way."""
    assert search.problem is None, f"{name}: {search.problem}; p99 by rate {search.p99_by_rate}"
    assert len(search.p99_by_rate) <= policy.max_probes
    assert search.p99_by_rate[search.highest_met] <= search.slo_s
    if search.bracketed:
        above = search.p99_by_rate[search.first_miss]
        assert search.first_miss > search.highest_met and (above is None or above > search.slo_s)


@pytest.mark.benchmark(group="slo")
@pytest.mark.parametrize("load, server", list(_knee_cases()), indirect=["server"], scope="session")
def test_max_rate_at_slo(request, benchmark, client_ceiling, figures_by_id, save_record, load, server):
    """The highest Poisson rate whose p99 meets the SLO, searched from the spec's measured capacity
    (fixtures/measure/knee.py). The benchmark's time is the search's, not a figure: max_rate_at_slo in extra_info is."""
    found = []
    with _client(server, load) as client:
        client.closed_loop(16, concurrency=4)  # warm-up
        capacity = _capacity(figures_by_id, client, server.spec, load)
        policy = knee_policy(load, benchmark.disabled)
        benchmark.pedantic(lambda: found.append(_search(client, capacity, load, client_ceiling, policy)), rounds=1,
                           iterations=1)
    search = found[0]
    save_record(knee_record(spec=server.spec, search=search, policy=policy, capacity=capacity, warmup=WARMUP))
    assert_knee_found(search, policy, server.spec.name)
    request.config.stash.setdefault(KNEE, {})[server.spec.name] = search.highest_met


def _soak_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        spec = classifier_variants(load.classifier_tier)["batch_workers"]
        yield pytest.param(load, spec, marks=_gpu_marks(name), id=f"{spec.name}-soak")


@pytest.mark.benchmark(group="soak")
@pytest.mark.parametrize("load, server", list(_soak_cases()), indirect=["server"], scope="session")
def test_soak_memory(request, benchmark, client_ceiling, figures_by_id, save_record, load, server):
    """Open-loop Poisson load at soak_fraction of the knee for soak_seconds, the server's RSS read between
    chunks: RSS growing past the tier's bound from the first chunk to the last is a leak. The knee is this
    session's of the same spec (searched here when that test did not run; a client-bound search gives the
    highest rate it met)."""
    with _client(server, load) as client:
        client.closed_loop(16, concurrency=4)  # warm-up
        knee = request.config.stash.get(KNEE, {}).get(server.spec.name)
        if knee is None:
            policy = knee_policy(load, benchmark.disabled)
            search = _search(client, _capacity(figures_by_id, client, server.spec, load), load, client_ceiling, policy)
            assert_knee_found(search, policy, server.spec.name)
            knee = search.highest_met
        rate = load.soak_fraction * knee
        seconds = load.soak_smoke_seconds if benchmark.disabled else load.soak_seconds
        started, soaked = time.monotonic(), []
        benchmark.pedantic(lambda: soaked.append(soak(client, rate, seconds, load.soak_chunk_seconds, server.rss_bytes)),
                           rounds=1, iterations=1)
        runs, rss = soaked[0]
    figures = save_record(soak_record(spec=server.spec, knee=knee, fraction=load.soak_fraction,
                                      seconds=time.monotonic() - started, runs=runs, rss=rss,
                                      bound_mib=load.soak_max_rss_growth_mib), requests=request_rows(runs))
    assert figures["errors"] == 0, f"{error_breakdown([r for run in runs for r in run.results])}; server {server.state()}"
    leak = rss_growth_problem(rss, load.soak_max_rss_growth_mib)
    assert leak is None, f"{server.spec.name}, {seconds:g} s soak at {rate:.0f} req/s: {leak}"


def _comparison_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        for framework, spec in fastapi_comparison_specs(load.classifier_tier).items():
            for n in load.fastapi_n:
                yield pytest.param(load, spec, framework, n, marks=_gpu_marks(name), id=f"{spec.name}-n{n}")


@pytest.mark.benchmark(group="fastapi-vs-litserve")
@pytest.mark.parametrize("load, server, framework, n", list(_comparison_cases()), indirect=["server"], scope="session")
def test_fastapi_vs_litserve(benchmark, save_record, load, server, framework, n):
    """n requests sent at once (seed 004): total runtime per round, response time mean and std."""
    runs = []
    with _client(server, load, concurrency=n) as client:
        client.closed_loop(n)  # warm-up: opens the n connections the rounds use
        # 3 rounds of n requests (seed 004's shape; LoadModelTier.fastapi_n says what it costs at other speeds).
        benchmark.pedantic(lambda: runs.append(client.closed_loop(n)), rounds=3, iterations=1)
    # Saved for tests/bench/test_relations.py too: LitServe against FastAPI at the same n.
    figures = save_record(framework_record(spec=server.spec, framework=framework, n=n, runs=runs), requests=request_rows(runs))
    failed = [r for run in runs for r in run.results if not r.ok]
    assert figures["errors"] == 0, f"{error_breakdown(failed)}; server {server.state()}"
