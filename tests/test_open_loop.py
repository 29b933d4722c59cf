"""Open-loop load, goodput, the knee search and the client-bound flag."""

import statistics

import pytest

from fixtures.drive.load import RequestResult, arrival_schedule, run_closed_loop, run_open_loop
from fixtures.drive.stream import StreamResult
from fixtures.measure.client_ceiling import client_bound
from fixtures.measure.knee import KneePolicy, find_knee
from fixtures.measure.metrics import goodput, late_count, summarize
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
    # An idle client keeps to its schedule: the typical request leaves within 1 ms of its time. A few may
    # leave later here, where the stub server is a thread sharing the client's GIL and xdist runs a torch
    # test beside it on 2 cores (3 of 50 past 5 ms in one CI run): that is this test's setup, not the client.
    assert statistics.median(r.late_s for r in run.results) < 0.001
    assert late_count(run.results) <= 5


@pytest.fixture
def stalling_server():
    """An aiohttp server on loopback that answers in about 1 ms, except that once, at its 100th request,
    it stalls for 200 ms (its event loop blocked, like a GC pause or a stuck worker)."""
    import asyncio
    import threading
    import time

    from aiohttp import web

    from fixtures.drive.server import LOOPBACK, free_port

    state = {"requests": 0}

    async def handle(request):
        await request.read()
        state["requests"] += 1
        if state["requests"] == 100:
            time.sleep(0.2)  # blocks every request this server holds, not only this one
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/predict", handle)
    port, loop = free_port(), asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, LOOPBACK, port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def restart_count():
        state["requests"] = 0

    yield f"http://{LOOPBACK}:{port}/predict", restart_count
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_a_200_ms_stall_shows_in_the_open_loop_p99_and_not_in_the_closed_loop_s(stalling_server):
    """Coordinated omission, for real: a closed loop waits for the stalled server and sends nothing meanwhile,
    so one slow request hides in its p99; an open loop keeps its schedule, and every request scheduled
    during the stall is late by up to 200 ms, counted from its scheduled time."""
    url, restart_count = stalling_server
    closed = summarize(run_closed_loop(url, [b"{}"], num_requests=300, concurrency=1).results, 1.0)
    restart_count()
    schedule = arrival_schedule(rate=200.0, count=300, seed=0)
    run = run_open_loop(url, [b"{}"], schedule)
    opened = summarize(run.results, run.wall_s)
    assert closed.errors == 0 and opened.errors == 0
    assert closed.latency_max_s >= 0.2  # the stall happened in the closed loop too ...
    assert closed.latency_p99_s < 0.1  # ... and its p99 does not show it (one slow request in 300)
    assert opened.latency_p99_s >= 0.15  # ~40 requests were scheduled during the stall: p99 shows it


def test_goodput_maths():
    results = [RequestResult(True, 200, 0.05), RequestResult(True, 200, 0.15), RequestResult(True, 200, 0.09),
               RequestResult(False, 500, 0.01)]
    g = goodput(results, wall_s=2.0, slo_s=0.1)
    assert g.share == 0.5 and g.rate == 1.0  # two of four within 100 ms, over 2 s


def test_llm_goodput_uses_ttft_and_vllms_time_per_output_token():
    from fixtures.measure.stream_metrics import stream_goodput

    fast = StreamResult(True, 200, 0.0, (0.1, 0.15, 0.2), 0.2, 3, 5)  # TTFT 0.1, TPOT (0.2 - 0.1) / 2 = 0.05
    slow_first = StreamResult(True, 200, 0.0, (0.6, 0.62, 0.64), 0.64, 3, 5)
    slow_tokens = StreamResult(True, 200, 0.0, (0.1, 0.4, 0.7), 0.7, 3, 5)  # TPOT 0.3
    # TPOT from the end of the stream, not its last chunk: a slow end (usage, [DONE]) counts, as in vLLM.
    slow_end = StreamResult(True, 200, 0.0, (0.1, 0.15, 0.2), 1.0, 3, 5)  # TPOT (1.0 - 0.1) / 2 = 0.45
    found = stream_goodput([fast, slow_first, slow_tokens, slow_end], ttft_slo_s=0.5, tpot_slo_s=0.1)
    assert found.share == pytest.approx(1 / 4) and found.rate == pytest.approx(1 / 1.0)


class FakeClock:
    """Each probe of a fake server costs probe_s of the search's time budget."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def server_with_knee(knee_rps, calls, clock=None, probe_s=3.0):
    def p99(rate):  # p99 crosses the 100 ms SLO at knee_rps
        calls.append(rate)
        if clock is not None:
            clock.now += probe_s
        return 0.05 if rate <= knee_rps else 0.5
    return p99


@pytest.mark.parametrize("knee_rps, capacity", [(70.0, 50.0), (70.0, 300.0), (7000.0, 800.0), (0.7, 1.0)])
def test_the_knee_search_brackets_the_knee_from_the_capacity_whatever_the_speed(knee_rps, capacity):
    """No range assumes the server's speed: a knee above or below the capacity, 10,000x apart, is found with
    the same policy, within 4.4% (four geometric bisections of a x2 bracket)."""
    calls = []
    found = find_knee(server_with_knee(knee_rps, calls), start_rate=capacity, slo_s=0.1)
    assert found.problem is None and found.bracketed and not found.client_bound
    assert found.knee <= knee_rps < found.first_miss <= found.knee * 2 ** (1 / 16) * 1.0001
    assert found.p99_by_rate[found.knee] <= 0.1 < found.p99_by_rate[found.first_miss]
    assert calls[0] == capacity and len(calls) == len(found.p99_by_rate) <= KneePolicy().max_probes


def test_a_knee_beyond_the_client_ceiling_is_client_bound_not_a_knee():
    calls = []
    found = find_knee(server_with_knee(1e9, calls), start_rate=100.0, slo_s=0.1, client_ceiling_rps=500.0)
    assert found.client_bound and found.knee is None and found.problem is None
    assert found.highest_met == 500.0 and found.client_ceiling_rps == 500.0 and max(calls) == 500.0
    # The start itself is capped: a capacity above what the client offers is probed at the ceiling.
    assert find_knee(server_with_knee(1e9, []), start_rate=900.0, slo_s=0.1, client_ceiling_rps=500.0).client_bound
    # A knee just under the ceiling is still a knee.
    assert find_knee(server_with_knee(450.0, []), start_rate=100.0, slo_s=0.1, client_ceiling_rps=500.0).knee <= 450.0


def test_a_knee_search_that_finds_no_knee_says_why_within_its_bounds():
    never = find_knee(lambda r: 1.0, start_rate=50.0, slo_s=0.1)
    assert never.knee is None and "no rate met" in never.problem and "1000.0 ms" in never.problem
    assert len(never.p99_by_rate) == KneePolicy().max_probes
    failing = find_knee(lambda r: None, start_rate=50.0, slo_s=0.1)  # failed requests never meet an SLO
    assert failing.knee is None and "failed requests" in failing.problem
    always = find_knee(lambda r: 0.01, start_rate=50.0, slo_s=0.1)  # no client ceiling given
    assert always.knee is None and not always.client_bound and "budget ran out" in always.problem
    clock, calls = FakeClock(), []
    timed = find_knee(server_with_knee(1e9, calls, clock, probe_s=30.0), 50.0, 0.1, KneePolicy(max_seconds=100.0), clock=clock)
    assert len(calls) == 4 and "budget ran out" in timed.problem  # 4 probes of 30 s reach the 100 s budget


def test_client_bound_flag():
    assert client_bound(8000.0, client_ceiling_rps=10000.0)  # above 70% of what the client can send
    assert not client_bound(500.0, client_ceiling_rps=10000.0)


def test_each_concurrency_is_flagged_against_the_client_s_ceiling_at_that_concurrency():
    """client_bound compared every level with the c=8 ceiling: a c=1 run at 900 req/s against a client that
    sends 1,000 req/s at c=1 (but 4,000 at c=8) is client-bound."""
    from fixtures.measure.client_ceiling import client_figures

    ceiling = {"bare_aiohttp_rps": {1: 1000.0, 8: 4000.0}, "litserve_noop_rps": {1: 500.0, 8: 1500.0}}
    at_one = client_figures(ceiling, 1, rps=900.0)
    assert at_one["client_bound"] and at_one["client_ceiling_rps"] == 1000.0 and at_one["client_ceiling_concurrency"] == 1
    assert not client_figures(ceiling, 8, rps=900.0)["client_bound"]
    assert client_figures(ceiling, 0, rps=900.0)["client_ceiling_concurrency"] == 8  # open loop: the highest level
