"""LLM decode speed through the OpenAI-compatible streaming API: every recipe at one user (batch 1, one request at
a time: test_llm_decode, the seeds' question) and under a closed loop of several users (test_llm_concurrency).

A round is a fixed number of requests of exactly N new tokens each (at c users, c of them at once), so
pytest-benchmark's time per round is the inverse of tokens/s. The record (fixtures.record.records.llm_record) holds the
client-side stream metrics (TTFT, inter-token latency, time per output token, end-to-end: p50/p90/p99), goodput at
the tier's TTFT and TPOT objectives, the server's in-process direct tokens/s, the decode rooflines at the batch
the concurrency can form (bytes per step over memory bandwidth, FLOPs per token over peak compute; measured and
datasheet), the bandwidth achieved and the efficiency ratios, the batches the server ran and, batched, the
decode-step slots spent on padding. Its rounds are streams, not fixtures/closed_loop.py's request runs; its
ending is every benchmark's (end_benchmark). A batch-1 recipe under concurrency queues: its TTFT grows with c.
"""

import json

import pytest

from fixtures.closed_loop import end_benchmark, sampled_window
from fixtures.drive.answers import checked_llm_client
from fixtures.drive.request_log import stream_rows
from fixtures.drive.server import SERVER_LOG_DIR
from fixtures.measure.batches import batch_size_delta
from fixtures.measure.gpu import slowdown_share
from fixtures.measure.rounds import RoundPolicy, record_rounds, run_until_stable
from fixtures.measure.stream_metrics import summarize_streams
from fixtures.record.records import llm_record
from fixtures.variants import LLM_SMOKE_MAX_TOKENS, LLM_TIERS, gpu_smoke_ids, llm_variants
from servers.llm import PADDING_PATH
from servers.llm_models import RECIPES
from servers.runtime import SERVING_PATH, STATS_PATH

ANSWER_CHECK = "one content chunk per usage token, a finish reason, exactly max_tokens under ignore_eos"


def _cases(sweep: bool):
    """(tier, spec, concurrency) of every recipe: at one user (ids <tier>-llm_<recipe>, the ids floors and saved runs
    have always used), or at each of the tier's levels beyond one (ids <tier>-llm_<recipe>-c<n>)."""
    for tier_name, tier in LLM_TIERS.items():
        for variant, spec in llm_variants(tier_name).items():
            recipe = RECIPES[spec.option("recipe")]
            marks = ([pytest.mark.floored, pytest.mark.llm] + ([pytest.mark.gpu] if tier.device == "cuda" else [])
                     + ([pytest.mark.compile] if recipe.static_compile else []))
            if not sweep:
                smoke = [pytest.mark.gpu_smoke] if spec.name in gpu_smoke_ids() else []
                yield pytest.param(tier, spec, 1, marks=marks + smoke, id=spec.name)
                continue
            batched = int(spec.option("max-batch-size", 1)) > 1
            for concurrency in tier.batched_concurrency if batched else tier.concurrency:
                yield pytest.param(tier, spec, concurrency, marks=marks, id=f"{spec.name}-c{concurrency}")


def llm_benchmark(request, benchmark, device_peaks, floor_failures, machine_class, save_record, tier, server, concurrency):
    spec = server.spec
    report = json.loads((SERVER_LOG_DIR / f"llm-direct-{server.port}.json").read_text())  # the worker's raw facts
    requests = tier.requests_per_round if concurrency == 1 else tier.round_requests(concurrency)

    def one_round(client):
        return client.sequential(requests) if concurrency == 1 else client.closed_loop(requests, concurrency)

    figure = (lambda streams: summarize_streams(streams).tokens_per_s_per_request) if concurrency == 1 else (
        lambda streams: summarize_streams(streams).tokens_per_s_aggregate)
    # The smoke pass (make test) asserts no speed: its requests are LLM_SMOKE_MAX_TOKENS long, the same path (a prefill,
    # decode steps, the stream's checks) at a fraction of the decode (a one-at-a-time server queues 8 x 32 tokens at c=8),
    # and so was the server's start-up measurement (the plugin's server fixture).
    max_tokens = LLM_SMOKE_MAX_TOKENS if benchmark.disabled else tier.max_new_tokens
    assert report["max_new_tokens"] == max_tokens, f"the start-up direct measurement generated {report['max_new_tokens']}"
    with checked_llm_client(server.url, spec, tier, max_tokens) as client:
        # At one user one request of max_new_tokens: every decode step's shape once, and the keep-alive connection.
        # At c users one wave of c requests of 2 tokens: the c connections the rounds use, a prefill and a decode
        # step at the batch c forms (the server is already warm from one user: one wave of N tokens cost 32-60 s
        # of make bench and warmed nothing more). The smoke pass's one round needs no warm-up.
        warmup = [] if benchmark.disabled else client.sequential(1) if concurrency == 1 else client.closed_loop(
            concurrency, concurrency, max_tokens=2)
        assert all(r.ok for r in warmup), f"warm-up failed: {[(r.status, r.error) for r in warmup if not r.ok][:3]}"
        rss_before, batches_before, padding_before = server.rss_bytes(), server.get_json(STATS_PATH), server.get_json(PADDING_PATH)
        with sampled_window(server, tier.device, benchmark.disabled) as (energy, throttle, utilisation):
            rounds, stability = run_until_stable(lambda: one_round(client), figure,
                                                 RoundPolicy(tier.rounds, tier.max_round_cv, tier.max_rounds),
                                                 single_round=benchmark.disabled)
        rss_after, padding_after, serving = server.rss_bytes(), server.get_json(PADDING_PATH), server.get_json(SERVING_PATH)
        batches = batch_size_delta(batches_before, server.get_json(STATS_PATH))

    record_rounds(benchmark, [max(r.end_s for r in streams) - min(r.start_s for r in streams)
                              for streams in rounds[-stability.window:]])
    figures = save_record(llm_record(
        spec=spec, tier=tier, recipe=RECIPES[spec.option("recipe")], rounds=rounds, stability=stability,
        direct_report=report, peaks=device_peaks[tier.device], throttle=throttle, utilisation=utilisation,
        rss_before=rss_before, rss_after=rss_after, answer_check=ANSWER_CHECK, ready_s=server.ready_after_s,
        concurrency=concurrency, max_batch_size=int(spec.option("max-batch-size", 1)), batches=batches,
        padding={key: padding_after[key] - padding_before[key] for key in padding_after}, max_new_tokens=max_tokens,
        energy=energy.summary(summarize_streams([r for streams in rounds for r in streams]).tokens, "token",
                              slowdown_share(throttle)), thread_pools=serving.get("thread_pools")),
        requests=stream_rows(rounds))

    failed = [(r.kind, r.status, r.error) for streams in rounds for r in streams if not r.ok][:3]
    end_benchmark(request, benchmark, figures, device=tier.device, server=server, failures=f"first failures {failed}",
                  throttle=throttle, utilisation=utilisation,
                  sanity={"direct": f"{figures['direct_tokens_per_s']:.4g} tok/s (the worker's own generate)",
                          "roofline": f"{figures['roofline_tokens_per_s_measured']} tok/s"},
                  floor_ceilings={"direct": figures["direct_tokens_per_s"],
                                  "roofline(measured)": figures["roofline_tokens_per_s_measured"],
                                  "roofline(datasheet)": figures["roofline_tokens_per_s_datasheet"]},
                  floor_failures=floor_failures, machine_class=machine_class)


# device_peaks comes before server in the signatures: measured before any server starts. scope="session": one
# server per recipe across both tests (fixtures/drive/ordering.py).
@pytest.mark.benchmark(group="llm")
@pytest.mark.parametrize("tier, server, concurrency", list(_cases(sweep=False)), indirect=["server"], scope="session")
def test_llm_decode(request, benchmark, device_peaks, floor_failures, machine_class, save_record, tier, server, concurrency):
    llm_benchmark(request, benchmark, device_peaks, floor_failures, machine_class, save_record, tier, server, concurrency)


@pytest.mark.benchmark(group="llm-concurrency")
@pytest.mark.parametrize("tier, server, concurrency", list(_cases(sweep=True)), indirect=["server"], scope="session")
def test_llm_concurrency(request, benchmark, device_peaks, floor_failures, machine_class, save_record, tier, server,
                         concurrency):
    llm_benchmark(request, benchmark, device_peaks, floor_failures, machine_class, save_record, tier, server, concurrency)
