"""Open-loop load, goodput, the knee search and the client-bound flag."""

import statistics

import pytest

from fixtures.client_ceiling import client_bound
from fixtures.load import RequestResult, arrival_schedule, run_open_loop
from fixtures.metrics import goodput, late_count, llm_goodput, max_rate_at_slo
from fixtures.stream import StreamResult
from tests.test_load import stub  # noqa: F401  (the in-process aiohttp stub server fixture)


def gaps(offsets):
    return [b - a for a, b in zip(offsets, offsets[1:])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_schedule_has_the_asked_mean_rate_and_exponential_gaps(seed):
    offsets = arrival_schedule(rate=50.0, count=4000, seed=seed)
    between = gaps(offsets)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert 1 / statistics.mean(between) == pytest.approx(50.0, rel=0.05)
    assert statistics.stdev(between) / statistics.mean(between) == pytest.approx(1.0, abs=0.06)  # exponential: CV 1


def test_schedule_is_seeded_and_burstiness_shapes_it():
    assert arrival_schedule(10.0, 100, seed=7) == arrival_schedule(10.0, 100, seed=7)
    assert arrival_schedule(10.0, 100, seed=7) != arrival_schedule(10.0, 100, seed=8)
    bursty = gaps(arrival_schedule(20.0, 4000, seed=0, burstiness=0.25))
    even = gaps(arrival_schedule(20.0, 4000, seed=0, burstiness=4.0))
    assert statistics.stdev(bursty) / statistics.mean(bursty) > 1.7  # gamma CV = 1/sqrt(shape) = 2
    assert statistics.stdev(even) / statistics.mean(even) < 0.6  # 0.5
    with pytest.raises(ValueError):
        arrival_schedule(0.0, 10)


def test_open_loop_sends_on_schedule_and_times_from_it(stub):  # noqa: F811
    stub.delay_s = 0.02
    schedule = arrival_schedule(rate=100.0, count=50, seed=0)
    run = run_open_loop(stub.url, [b"{}"], schedule)
    assert len(run.results) == 50 and all(r.ok for r in run.results)
    assert run.wall_s >= schedule[-1] + 0.02
    assert all(r.latency_s >= 0.02 for r in run.results)
    assert late_count(run.results) <= 2  # an idle client keeps to its schedule


def test_latency_counts_client_side_queueing():
    """A request sent 30 ms late that took 10 ms has a latency of 40 ms from its schedule."""
    late = RequestResult(True, 200, latency_s=0.040, late_s=0.030)
    assert late_count([late, RequestResult(True, 200, 0.01)]) == 1


def test_goodput_maths():
    results = [RequestResult(True, 200, 0.05), RequestResult(True, 200, 0.15), RequestResult(True, 200, 0.09),
               RequestResult(False, 500, 0.01)]
    g = goodput(results, wall_s=2.0, slo_s=0.1)
    assert g.share == 0.5 and g.rate == 1.0  # two of four within 100 ms, over 2 s


def test_llm_goodput_uses_ttft_and_time_per_output_token():
    fast = StreamResult(True, 200, 0.0, (0.1, 0.15, 0.2), 0.2, 3, 5)  # TTFT 0.1, TPOT 0.05
    slow_first = StreamResult(True, 200, 0.0, (0.6, 0.62, 0.64), 0.64, 3, 5)
    slow_tokens = StreamResult(True, 200, 0.0, (0.1, 0.4, 0.7), 0.7, 3, 5)  # TPOT 0.3
    assert llm_goodput([fast, slow_first, slow_tokens], ttft_slo_s=0.5, tpot_slo_s=0.1) == pytest.approx(1 / 3)


def test_knee_search_finds_the_highest_rate_meeting_the_slo():
    calls = []

    def p99(rate):  # a server whose p99 crosses 100 ms at 70 req/s
        calls.append(rate)
        return 0.05 if rate <= 70 else 0.5

    found = max_rate_at_slo(p99, low=10, high=130, slo_s=0.1, iterations=6)
    assert 68 <= found <= 70
    assert len(calls) == 8  # low, high, 6 bisections: bounded
    assert max_rate_at_slo(lambda r: 1.0, 10, 100, 0.1) is None
    assert max_rate_at_slo(lambda r: 0.01, 10, 100, 0.1) == 100
    assert max_rate_at_slo(lambda r: None, 10, 100, 0.1) is None  # failed requests never meet an SLO


def test_client_bound_flag():
    assert client_bound(8000.0, client_ceiling_rps=10000.0)  # above 70% of what the client can send
    assert not client_bound(500.0, client_ceiling_rps=10000.0)
