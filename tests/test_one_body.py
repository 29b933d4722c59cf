"""One benchmark body for every case (fixtures.closed_loop.closed_loop_benchmark): what a request and a round are is
the case's shape, so a shape the body has never seen is measured by it unchanged, and every case of the suite and of
a user's declaration names one of the two shapes the A/B drives too."""

import contextlib
import os
from dataclasses import dataclass
from types import SimpleNamespace

from fixtures.closed_loop import REQUEST_RESPONSE, closed_loop_benchmark
from fixtures.drive.spec import ServerSpec
from fixtures.streaming import STREAMING
from servers.runtime import SERVING_PATH, STATS_PATH


@dataclass(frozen=True)
class Ticks:
    """A round of a made-up shape: `count` ticks in `seconds`."""

    count: int
    seconds: float


class TickShape:
    kind = "ticks"
    unit = "tick"

    def __init__(self):
        self.calls = []

    def client(self, case, url, concurrency, smoke):
        self.calls.append("client")
        return contextlib.nullcontext(SimpleNamespace(url=url))

    def warm_up(self, case, client, concurrency, smoke, ceilings, all_ok):
        self.calls.append("warm_up")
        all_ok([SimpleNamespace(ok=True)], "warm-up")
        return 4 * concurrency

    def round(self, client, requests, concurrency):
        self.calls.append("round")
        return Ticks(requests, 0.5)

    def results(self, run):
        return [SimpleNamespace(ok=True, kind="ok", status=200, error="")] * run.count

    def seconds(self, run):
        return run.seconds

    def figure(self, concurrency):
        return lambda run: run.count / run.seconds

    def counted(self, runs):
        return sum(run.count for run in runs)

    def round_figures(self, run, energy):
        return {"ticks_per_s": run.count / run.seconds}

    def rows(self, runs):
        return [{"round": i, "ticks": run.count} for i, run in enumerate(runs)]

    def counters(self, case, server):
        server.ticks += 10  # the server's own counter moves on between the two reads
        return {"ticks": server.ticks}

    def ending(self, case, figures, ceilings, concurrency):
        self.calls.append("ending")
        return {"sanity": {}, "floor_ceilings": {"direct": ceilings}}


@dataclass(frozen=True)
class TickCase:
    tier: object
    shape: object

    def record(self, measured, *, spec, concurrency, ceilings, client_ceiling, device_peaks, ready_s):
        return {"valid": True, "kind": self.shape.kind, "rounds": len(measured.runs),
                "round_requests": measured.round_requests, "counters": measured.counters,
                "energy_source": measured.energy["energy_source"], "served": spec.name, "ceilings": ceilings}


class FakeServer:
    spec = ServerSpec(name="cpu-ticks", module="servers.noop")
    url = "http://127.0.0.1:9"
    ready_after_s = 0.1
    ticks = 0

    def get_json(self, path):
        return {SERVING_PATH: {"accelerator": "cpu"}, STATS_PATH: {"workers": {}}}[path]

    def rss_bytes(self):
        return 0

    def alive_pids(self):
        return {os.getpid()}

    def state(self):
        return "fake"


class FakeBenchmark:
    disabled = False
    _mode = None

    def __init__(self):
        self.durations = []

    def _make_stats(self, iterations):
        return SimpleNamespace(update=self.durations.append)


def test_a_shape_the_body_has_never_seen_is_measured_by_it_unchanged():
    shape, saved, judged = TickShape(), [], []
    tier = SimpleNamespace(device="cpu", rounds=3, max_round_cv=0.10, max_rounds=6)
    request = SimpleNamespace(node=SimpleNamespace(callspec=SimpleNamespace(id="cpu-ticks-c2")),
                              config=SimpleNamespace(getoption=lambda name: False))
    benchmark = FakeBenchmark()

    def save_record(record, requests):
        saved.append((record, requests))
        return record

    def floor_failures(device, figures, floor_ceilings):
        judged.append(floor_ceilings)
        return []

    figures = closed_loop_benchmark(request, benchmark, TickCase(tier, shape), FakeServer(), 2, "the ceilings",
                                    floor_failures=floor_failures, machine_class=lambda device: "test",
                                    save_record=save_record)
    assert shape.calls == ["client", "warm_up", "round", "round", "round", "ending"]  # 3 agreeing rounds
    assert figures["rounds"] == 3 and figures["round_requests"] == 8 and figures["kind"] == "ticks"
    assert figures["counters"] == {"ticks": 10} and figures["ceilings"] == "the ceilings"
    assert figures["energy_source"].startswith("not available")  # a CPU host without RAPL says so, never a zero
    assert saved[0][1] == [{"round": i, "ticks": 8} for i in range(3)]  # the request log is the shape's rows
    assert benchmark.durations == [0.5, 0.5, 0.5]  # pytest-benchmark's rounds are the shape's round seconds
    assert judged == [{"direct": "the ceilings"}]  # the floors were judged (not a smoke pass)


def test_every_case_of_the_suite_names_one_of_the_two_shapes():
    from fixtures.chat import ChatCase
    from fixtures.closed_loop import ClassifierCase
    from fixtures.litapi import LitAPICase
    from tests.bench.test_llm import RecipeCase

    shapes = {case.shape for case in (ClassifierCase, LitAPICase, ChatCase, RecipeCase)}
    assert shapes == {REQUEST_RESPONSE, STREAMING}
    assert (REQUEST_RESPONSE.kind, STREAMING.kind) == ("closed_loop", "llm")
