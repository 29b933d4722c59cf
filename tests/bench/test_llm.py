"""LLM decode speed through the OpenAI-compatible streaming API, batch 1, one request at a time.

A round is a fixed number of requests of exactly N new tokens each, so pytest-benchmark's time per
round is the inverse of tokens/s. extra_info holds the client-side stream metrics (TTFT, inter-token
latency, time per output token, end-to-end), the server's in-process direct tokens/s, the decode
rooflines (bytes per token over memory bandwidth, FLOPs per token over peak compute; measured and
datasheet), the bandwidth achieved (bytes per token x tokens/s) and the efficiency ratios.
"""

import json

import pytest

from fixtures.server import SERVER_LOG_DIR
from fixtures.ceilings import llm_ceilings
from fixtures.gpu import ThrottleSampler, nvml_required_failure
from fixtures.utilisation import UtilisationSampler
from fixtures.answers import llm_check
from fixtures.metrics import mib, ms, untrusted_reason
from fixtures.rounds import RoundPolicy, record_rounds, run_until_stable
from fixtures.relations import ceiling_sanity
from servers.runtime import device_type
from fixtures.roofline import decode_bytes_per_token, ratio
from fixtures.stream import StreamClient, summarize_streams
from servers.llm import BENCH_MESSAGES
from servers.llm_models import RECIPES
from fixtures.variants import LLM_TIERS, llm_variants


def _cases():
    for tier_name, tier in LLM_TIERS.items():
        for variant, spec in llm_variants(tier_name).items():
            recipe = RECIPES[spec.option("recipe")]
            marks = ([pytest.mark.gpu] if tier.device == "cuda" else []) + ([pytest.mark.compile] if recipe.static_compile else [])
            yield pytest.param(tier, spec, marks=marks, id=spec.name)



@pytest.mark.benchmark(group="llm")
@pytest.mark.parametrize("tier, server", list(_cases()), indirect=["server"], scope="session")
def test_llm_decode(request, benchmark, device_peaks, floor_failures, machine_class, bench_rows, figures_by_id, tier, server):
    # device_peaks comes before server in the signature: measured before any server starts.
    spec = server.spec
    url = f"{server.url}/v1/chat/completions"
    body = {"model": spec.option("model"), "messages": BENCH_MESSAGES, "max_tokens": tier.max_new_tokens,
            "temperature": 0, "metadata": {"ignore_eos": "true"}}
    report = json.loads((SERVER_LOG_DIR / f"llm-direct-{server.port}.json").read_text())  # the worker's raw facts
    direct = {**report, **decode_bytes_per_token(report)}

    policy = RoundPolicy(tier.rounds, tier.max_round_cv, tier.max_rounds)
    with StreamClient(url, body, llm_check(tier.max_new_tokens, exact_length=True)) as client:
        warmup = client.sequential(1)  # also opens the keep-alive connection the rounds use
        assert warmup[0].ok, f"warm-up failed: {warmup[0].status} {warmup[0].error}"
        rss_before = server.rss_bytes()
        with ThrottleSampler() as throttle, UtilisationSampler(server.alive_pids) as utilisation:
            rounds, stability = run_until_stable(lambda: client.sequential(tier.requests_per_round),
                                                 lambda streams: summarize_streams(streams).tokens_per_s_per_request,
                                                 policy, single_round=benchmark.disabled)
        rss_after = server.rss_bytes()

    measured = rounds[-stability.window:]
    record_rounds(benchmark, [max(r.end_s for r in streams) - min(r.start_s for r in streams) for streams in measured])
    results = [r for round_results in measured for r in round_results]
    every = summarize_streams([r for round_results in rounds for r in round_results])
    summary = summarize_streams(results)
    recipe = RECIPES[spec.option("recipe")]
    ceilings = llm_ceilings(direct, device_peaks[tier.device], recipe.precision)
    api = summary.tokens_per_s_per_request
    per_round = [summarize_streams(r).tokens_per_s_per_request for r in rounds]
    invalid = untrusted_reason(every.errors, stability.window_cv, gpu_throttle=throttle.problems,
                               wrong_answers=every.wrong_answers, stability=stability)
    figures = {
        "tokens_per_s": api,  # per request: completion tokens / end-to-end time, mean over requests
        "tokens_per_s_aggregate": summary.tokens_per_s,
        "tokens_per_s_per_round": per_round,
        **stability.as_dict(), "valid": invalid is None, "invalid_reason": invalid,
        "wrong_answers": every.wrong_answers,
        "answer_check": "one content chunk per usage token, a finish reason, exactly max_tokens under ignore_eos",
        "server_rss_mib_before": mib(rss_before), "server_rss_mib_after": mib(rss_after),
        **throttle.summary(),
        **utilisation.summary(),
        "ttft_mean_ms": ms(summary.ttft_mean_s), "ttft_p50_ms": ms(summary.ttft_p50_s), "ttft_p99_ms": ms(summary.ttft_p99_s),
        "itl_mean_ms": ms(summary.itl_mean_s), "itl_p50_ms": ms(summary.itl_p50_s), "itl_p99_ms": ms(summary.itl_p99_s),
        "tpot_mean_ms": ms(summary.tpot_mean_s), "e2e_mean_ms": ms(summary.e2e_mean_s), "e2e_p99_ms": ms(summary.e2e_p99_s),
        "requests": summary.requests, "errors": every.errors, "completion_tokens": summary.tokens,
        "max_new_tokens": tier.max_new_tokens, "batch_size": 1, "concurrency": 1,
        "device": tier.device, "model": spec.option("model"), "recipe": spec.option("recipe"),
        "precision": recipe.precision, "quantization": recipe.quantization, "static_compile": recipe.static_compile,
        "threads_per_worker": tier.threads, "server": spec.describe(), "server_ready_s": round(server.ready_after_s, 2),
        **direct,
        **ceilings,
        "bandwidth_achieved_gbs": direct["bytes_per_token"] * api / 1e9,
        "direct_bandwidth_achieved_gbs": direct["bytes_per_token"] * direct["direct_tokens_per_s"] / 1e9,
        "api_over_direct": ratio(api, direct["direct_tokens_per_s"]),
        "direct_over_roofline_measured": ratio(direct["direct_tokens_per_s"], ceilings["roofline_tokens_per_s_measured"]),
        "direct_over_roofline_datasheet": ratio(direct["direct_tokens_per_s"], ceilings["roofline_tokens_per_s_datasheet"]),
        "api_over_roofline_measured": ratio(api, ceilings["roofline_tokens_per_s_measured"]),
        "api_over_roofline_datasheet": ratio(api, ceilings["roofline_tokens_per_s_datasheet"]),
    }
    benchmark.extra_info.update(figures)
    benchmark_id = request.node.callspec.id
    figures_by_id[benchmark_id] = figures
    bench_rows.append({"benchmark": benchmark_id, "rps": api, "direct_rps": direct["direct_tokens_per_s"],
                       "compute_roofline_rps_measured": ceilings["compute_roofline_tokens_per_s_measured"],
                       "compute_roofline_rps_datasheet": ceilings["compute_roofline_tokens_per_s_datasheet"],
                       "memory_roofline_rps_measured": ceilings["memory_roofline_tokens_per_s_measured"],
                       "memory_roofline_rps_datasheet": ceilings["memory_roofline_tokens_per_s_datasheet"],
                       **figures})

    failed = [(r.kind, r.status, r.error) for streams in rounds for r in streams if not r.ok][:3]
    assert invalid is None, f"figures not trusted: {invalid}; first failures {failed}; server {server.state()}"
    nvml_failure = nvml_required_failure(throttle, request.config.getoption("--require-gpu"), utilisation) if tier.device == "cuda" else None
    assert nvml_failure is None, nvml_failure
    if benchmark.disabled:
        return  # smoke pass (make test): not measured enough for floors or ceiling checks
    insane = ceiling_sanity(figures, {"direct": f"{direct['direct_tokens_per_s']:.4g} tok/s (the worker's own generate)",
                                      "roofline": f"{ceilings['roofline_tokens_per_s_measured']} tok/s"})
    below = floor_failures(benchmark_id, tier.device, figures, {"direct": direct["direct_tokens_per_s"],
                                                               "roofline(measured)": ceilings["roofline_tokens_per_s_measured"],
                                                               "roofline(datasheet)": ceilings["roofline_tokens_per_s_datasheet"]})
    where = f"{benchmark_id} on machine class {machine_class(device_type(tier.device))!r}"
    assert not insane + below, "\n".join([f"{where}: {line}" for line in insane] + below)
