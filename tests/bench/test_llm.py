"""LLM decode speed through the OpenAI-compatible streaming API, batch 1, one request at a time.

A round is a fixed number of requests of exactly N new tokens each, so pytest-benchmark's time per
round is the inverse of tokens/s. The record (fixtures.records.llm_record) holds the client-side stream metrics (TTFT, inter-token
latency, time per output token, end-to-end), the server's in-process direct tokens/s, the decode
rooflines (bytes per token over memory bandwidth, FLOPs per token over peak compute; measured and
datasheet), the bandwidth achieved (bytes per token x tokens/s) and the efficiency ratios.
"""

import json

import pytest

from fixtures.answers import checked_llm_client
from fixtures.gpu import ThrottleSampler, nvml_required_failure
from fixtures.records import llm_record
from fixtures.relations import ceiling_sanity
from fixtures.request_log import stream_rows
from fixtures.rounds import RoundPolicy, record_rounds, run_until_stable
from fixtures.server import SERVER_LOG_DIR
from fixtures.stream import summarize_streams
from fixtures.utilisation import UtilisationSampler
from fixtures.variants import LLM_TIERS, gpu_smoke_ids, llm_variants
from servers.llm_models import RECIPES
from servers.runtime import device_type

ANSWER_CHECK = "one content chunk per usage token, a finish reason, exactly max_tokens under ignore_eos"


def _cases():
    for tier_name, tier in LLM_TIERS.items():
        for variant, spec in llm_variants(tier_name).items():
            recipe = RECIPES[spec.option("recipe")]
            marks = ([pytest.mark.floored, pytest.mark.llm] + ([pytest.mark.gpu] if tier.device == "cuda" else [])
                     + ([pytest.mark.compile] if recipe.static_compile else [])
                     + ([pytest.mark.gpu_smoke] if spec.name in gpu_smoke_ids() else []))
            yield pytest.param(tier, spec, marks=marks, id=spec.name)


@pytest.mark.benchmark(group="llm")
@pytest.mark.parametrize("tier, server", list(_cases()), indirect=["server"], scope="session")
def test_llm_decode(request, benchmark, device_peaks, floor_failures, machine_class, save_record, tier, server):
    # device_peaks comes before server in the signature: measured before any server starts.
    spec = server.spec
    report = json.loads((SERVER_LOG_DIR / f"llm-direct-{server.port}.json").read_text())  # the worker's raw facts

    policy = RoundPolicy(tier.rounds, tier.max_round_cv, tier.max_rounds)
    with checked_llm_client(server.url, spec, tier) as client:
        # One request of max_new_tokens: runs every decode step's shape once (and opens the keep-alive
        # connection the rounds use), at any speed.
        warmup = client.sequential(1)
        assert warmup[0].ok, f"warm-up failed: {warmup[0].status} {warmup[0].error}"
        rss_before = server.rss_bytes()
        with ThrottleSampler() as throttle, UtilisationSampler(server.alive_pids) as utilisation:
            rounds, stability = run_until_stable(lambda: client.sequential(tier.requests_per_round),
                                                 lambda streams: summarize_streams(streams).tokens_per_s_per_request,
                                                 policy, single_round=benchmark.disabled)
        rss_after = server.rss_bytes()

    record_rounds(benchmark, [max(r.end_s for r in streams) - min(r.start_s for r in streams)
                              for streams in rounds[-stability.window:]])
    figures = save_record(llm_record(
        spec=spec, tier=tier, recipe=RECIPES[spec.option("recipe")], rounds=rounds, stability=stability,
        direct_report=report, peaks=device_peaks[tier.device], throttle=throttle, utilisation=utilisation,
        rss_before=rss_before, rss_after=rss_after, answer_check=ANSWER_CHECK, ready_s=server.ready_after_s),
        requests=stream_rows(rounds))

    failed = [(r.kind, r.status, r.error) for streams in rounds for r in streams if not r.ok][:3]
    assert figures["valid"], f"figures not trusted: {figures['invalid_reason']}; first failures {failed}; server {server.state()}"
    nvml_failure = nvml_required_failure(throttle, request.config.getoption("--require-gpu"), utilisation) if tier.device == "cuda" else None
    assert nvml_failure is None, nvml_failure
    if benchmark.disabled:
        return  # smoke pass (make test): not measured enough for floors or ceiling checks
    insane = ceiling_sanity(figures, {"direct": f"{figures['direct_tokens_per_s']:.4g} tok/s (the worker's own generate)",
                                      "roofline": f"{figures['roofline_tokens_per_s_measured']} tok/s"})
    below = floor_failures(tier.device, figures, {"direct": figures["direct_tokens_per_s"],
                                                  "roofline(measured)": figures["roofline_tokens_per_s_measured"],
                                                  "roofline(datasheet)": figures["roofline_tokens_per_s_datasheet"]})
    where = f"{request.node.callspec.id} on machine class {machine_class(device_type(tier.device))!r}"
    assert not insane + below, "\n".join([f"{where}: {line}" for line in insane] + below)
