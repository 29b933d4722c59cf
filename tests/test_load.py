"""The load generator against an in-process aiohttp server on loopback."""

import asyncio
import threading

import pytest
from aiohttp import web

from fixtures.drive.load import WRONG_ANSWER, LoadClient, run_closed_loop
from fixtures.drive.server import LOOPBACK, free_port


class StubServer:
    """Counts requests, tracks the most in flight at once, fails on request bodies b'fail'."""

    def __init__(self, delay_s=0.01):
        self.delay_s = delay_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request):
        body = await request.read()
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if body == b"fail":
            return web.json_response({"detail": "bad"}, status=400)
        return web.json_response({"ok": True})


@pytest.fixture
def stub():
    state = StubServer()
    app = web.Application()
    app.router.add_post("/predict", state.handle)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, LOOPBACK, port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state.url = f"http://{LOOPBACK}:{port}/predict"
    yield state
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_closed_loop_sends_exactly_n_and_respects_concurrency(stub):
    run = run_closed_loop(stub.url, [b"{}"], num_requests=40, concurrency=4)
    assert len(run.results) == 40 and all(r.ok and r.status == 200 for r in run.results)
    assert stub.requests == 40
    assert stub.max_in_flight == 4
    # 40 requests of >= 10 ms at 4 in flight take at least 100 ms.
    assert run.wall_s >= 0.1
    assert all(r.latency_s >= 0.01 for r in run.results)


def test_warmup_requests_are_sent_but_not_reported(stub):
    run = run_closed_loop(stub.url, [b"{}"], num_requests=5, concurrency=2, warmup_requests=3)
    assert stub.requests == 8
    assert len(run.results) == 5


def test_http_errors_are_recorded_with_status_and_body(stub):
    run = run_closed_loop(stub.url, [b"{}", b"fail"], num_requests=6, concurrency=2)
    statuses = [r.status for r in run.results]
    assert statuses == [200, 400, 200, 400, 200, 400]  # bodies are used in turn
    failed = [r for r in run.results if not r.ok]
    assert len(failed) == 3 and all('"bad"' in r.error for r in failed)


def test_connection_refused_is_an_error_not_an_exception():
    url = f"http://{LOOPBACK}:{free_port()}/predict"  # nothing listens there
    run = run_closed_loop(url, [b"{}"], num_requests=3, concurrency=3)
    assert [r.status for r in run.results] == [0, 0, 0]
    assert all(not r.ok and "Connect" in r.error for r in run.results)


def test_timeout_is_recorded(stub):
    stub.delay_s = 2.0
    run = run_closed_loop(stub.url, [b"{}"], num_requests=1, concurrency=1, timeout_s=0.2)
    assert not run.results[0].ok and run.results[0].status == 0 and "Timeout" in run.results[0].error


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_closed_loop("http://127.0.0.1:1/", [b"{}"], num_requests=0, concurrency=1)


def test_a_200_with_a_wrong_answer_is_a_wrong_answer_not_a_success(stub):
    """Any 2xx used to count as success: a server answering garbage passed every benchmark."""
    def check(index, payload):
        return None if index == 0 else f"body {index}: not the answer expected"

    run = run_closed_loop(stub.url, [b"{}", b"{}"], num_requests=4, concurrency=1, check=check)
    assert [r.ok for r in run.results] == [True, False, True, False]
    wrong = [r for r in run.results if not r.ok]
    assert all(r.kind == WRONG_ANSWER and r.status == 200 and "not the answer" in r.error for r in wrong)
    assert all(r.check_s > 0 for r in run.results)  # the check's client cost is recorded per request


def test_warm_up_opens_the_connections_the_rounds_use(stub):
    """One session across warm-up and rounds: the measured rounds open no connection of their own."""
    with LoadClient(stub.url, [b"{}"], concurrency=4) as client:
        warmup = client.closed_loop(8)
        rounds = [client.closed_loop(20) for _ in range(3)]
    assert warmup.connections_opened == 4
    assert [r.connections_opened for r in rounds] == [0, 0, 0]
    assert all(r.ok for run in rounds for r in run.results)


def test_a_connection_idle_past_the_client_keep_alive_is_not_reused(stub):
    """The client drops idle connections before a server may close them (uvicorn: 5 s): reusing one the
    server was closing failed a request with ServerDisconnectedError (fastapi-n200, fresh-clone make test)."""
    import time

    from fixtures.drive.load import KEEPALIVE_S

    assert KEEPALIVE_S < 5.0  # under uvicorn's default timeout_keep_alive
    with LoadClient(stub.url, [b"{}"], concurrency=2, keepalive_s=0.2) as client:
        client.closed_loop(4)
        at_once = client.closed_loop(4)
        time.sleep(0.5)
        after_idle = client.closed_loop(4)
    assert at_once.connections_opened == 0  # reused while fresh
    assert after_idle.connections_opened == 2  # idle past keep-alive: reopened, never reused stale
    assert all(r.ok for r in after_idle.results)


@pytest.mark.parametrize("returned", [False, True, 0, ""])
def test_a_check_that_returns_neither_none_nor_a_reason_stops_the_load_at_the_first_answer(stub, returned):
    """A check returning False for every answer passed silently (every answer counted right); one returning True
    crashed on a subscript. Either breaks the rule, named in the failure, at the first answer."""
    from fixtures.litapi import CHECK_RULE, CheckContractBroken, LitAPIBenchmark, Serving, answer_check

    def right_answer(payload, answer):
        return returned

    bench = LitAPIBenchmark(api="servers.mine:MyAPI", payloads=({"x": 1},), check=right_answer,
                            variants={"no_batching": Serving()})
    with pytest.raises(CheckContractBroken, match=f"mine: {CHECK_RULE}; .*right_answer returned {returned!r}"):
        run_closed_loop(stub.url, [b"{}"], num_requests=4, concurrency=1, check=answer_check(bench))
    assert stub.requests == 1  # stopped at the first answer


def test_a_check_keeping_the_rule_passes_and_fails_answers_as_it_says(stub):
    from fixtures.litapi import LitAPIBenchmark, Serving, answer_check

    bench = LitAPIBenchmark(api="servers.mine:MyAPI", payloads=({"x": 1}, {"x": 2}), variants={"no_batching": Serving()},
                            check=lambda payload, answer: None if payload["x"] == 1 else "x=2 is never right")
    run = run_closed_loop(stub.url, [b"{}", b"{}"], num_requests=4, concurrency=1, check=answer_check(bench))
    assert [r.ok for r in run.results] == [True, False, True, False] and run.results[1].error == "x=2 is never right"
