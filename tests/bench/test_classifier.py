"""Classifier serving throughput: each step of the optimisation ladder x concurrency level is one benchmark.

A round is one closed-loop load run of a fixed request count, so pytest-benchmark's time per round
is the inverse of throughput and `--benchmark-compare-fail=median:10%` means what users expect. Rounds
repeat until the last few agree (fixtures/rounds.py); every answer is checked (fixtures/answers.py).
extra_info records req/s and latency, what produced them, the ceilings (the direct model at the batches
this concurrency can form, compute roofline, memory roofline), the efficiency ratios, the batch sizes
the server actually ran and its memory; then the floors are asserted.
"""

import pytest

from fixtures.answers import classifier_check, expected_top1_for
from fixtures.ceilings import efficiency
from fixtures.client_ceiling import client_figures
from fixtures.gpu import ThrottleSampler, nvml_required_failure
from fixtures.images import payload_description, real_image_bodies
from fixtures.load import LoadClient
from fixtures.metrics import batch_size_delta, error_breakdown, mean_batch_size, mib, ms, summarize, untrusted_reason
from fixtures.relations import ceiling_sanity
from fixtures.rounds import RoundPolicy, record_rounds, run_until_stable
from fixtures.utilisation import UtilisationSampler
from servers import classifier
from servers.runtime import device_type
from fixtures.variants import CLASSIFIER_TIERS, classifier_args, classifier_specs


def _cases():
    for tier_name, tier in CLASSIFIER_TIERS.items():
        for spec in classifier_specs(tier_name).values():
            marks = ([pytest.mark.gpu] if tier.device == "cuda" else []) + ([pytest.mark.compile] if spec.option("compile") else [])
            for concurrency in tier.concurrency:
                yield pytest.param(tier, spec, concurrency, marks=marks, id=f"{spec.name}-c{concurrency}")




# scope="session": one server per spec across its concurrency levels (fixtures/ordering.py).
@pytest.mark.benchmark(group="classifier")
@pytest.mark.parametrize("tier, server, concurrency", list(_cases()), indirect=["server"], scope="session")
def test_classifier_throughput(request, benchmark, classifier_ceilings, harness_ceiling, floor_failures, machine_class,
                               bench_rows, figures_by_id, tier, server, concurrency):
    # The ceilings come before server in the signature: measured before any server starts.
    spec = server.spec
    served = classifier.config_from_args(classifier_args(spec))
    bodies = real_image_bodies(served.input_size)
    expected_top1, answer_check = expected_top1_for(served, bodies)
    check = classifier_check(classifier.served_labels(served), served.top_k, expected_top1)
    round_requests = tier.round_requests(concurrency)
    policy = RoundPolicy(tier.rounds, tier.max_round_cv, tier.max_rounds)

    with LoadClient(f"{server.url}/predict", bodies, concurrency, check) as client:
        # Warm-up on the connections the rounds use: worker caches, batch shapes, keep-alive connections.
        warmup = client.closed_loop(min(round_requests, 4 * concurrency))
        assert all(r.ok for r in warmup.results), f"warm-up failed: {error_breakdown(warmup.results)}"
        batches_before, rss_before = server.get_json(classifier.STATS_PATH), server.rss_bytes()
        with ThrottleSampler() as throttle, UtilisationSampler(server.alive_pids) as utilisation:
            runs, stability = run_until_stable(lambda: client.closed_loop(round_requests),
                                               lambda run: summarize(run.results, run.wall_s).rps, policy,
                                               single_round=benchmark.disabled)
        batches = batch_size_delta(batches_before, server.get_json(classifier.STATS_PATH))
        rss_after = server.rss_bytes()

    measured = runs[-stability.window:]  # the rounds that agree: the figure; earlier ones warmed up further
    record_rounds(benchmark, [run.wall_s for run in measured])
    results = [r for run in measured for r in run.results]
    every_result = [r for run in runs for r in run.results]
    summary = summarize(results, sum(run.wall_s for run in measured))
    every = summarize(every_result, sum(run.wall_s for run in runs))
    rps_per_round = [summarize(run.results, run.wall_s).rps for run in runs]
    invalid = untrusted_reason(every.errors, stability.window_cv, gpu_throttle=throttle.problems,
                               wrong_answers=every.wrong_answers, stability=stability)
    ceilings = classifier_ceilings[spec.name]
    direct = ceilings.at(concurrency)
    figures = {
        "rps": summary.rps,
        "rps_per_round": rps_per_round,
        **stability.as_dict(),
        "valid": invalid is None,
        "invalid_reason": invalid,
        **throttle.summary(),
        **utilisation.summary(),
        "latency_mean_ms": ms(summary.latency_mean_s),
        "latency_p50_ms": ms(summary.latency_p50_s),
        "latency_p90_ms": ms(summary.latency_p90_s),
        "latency_p95_ms": ms(summary.latency_p95_s),
        "latency_p99_ms": ms(summary.latency_p99_s),
        "requests": summary.requests,
        "errors": every.errors,
        "wrong_answers": every.wrong_answers,
        "success_rate": summary.success_rate,
        "answer_check": answer_check,
        "check_ms_per_request": every.check_ms_per_request,
        "connections_opened_in_rounds": sum(run.connections_opened for run in runs),
        "concurrency": concurrency,
        "requests_per_round": round_requests,
        "payload": payload_description(served.input_size),
        "device": spec.option("device"),
        "model": served.model,
        "pretrained": served.pretrained,
        "input_size": served.input_size,
        "precision": spec.option("precision"),
        "threads_per_worker": int(spec.option("threads")),
        "max_batch_size": int(spec.option("max-batch-size")),
        "workers_per_device": int(spec.option("workers-per-device")),
        "observed_batch_sizes": batches,  # worker -> {batch size: batches run during the rounds}
        "observed_mean_batch_size": mean_batch_size(batches),
        "server_rss_mib_before": mib(rss_before),
        "server_rss_mib_after": mib(rss_after),
        "server": spec.describe(),
        "server_ready_s": round(server.ready_after_s, 2),
        **ceilings.as_dict(),
        **direct.as_dict(),  # direct_rps: the ceiling at this concurrency, which api_over_direct divides by
        **efficiency(summary.rps, ceilings, concurrency),
        **client_figures(harness_ceiling, concurrency, summary.rps),
    }
    benchmark.extra_info.update(figures)
    benchmark_id = request.node.callspec.id
    figures_by_id[benchmark_id] = figures
    bench_rows.append({"benchmark": benchmark_id, **figures})

    assert invalid is None, (
        f"figures not trusted: {invalid}; errors {error_breakdown(every_result)}; server {server.state()}"
    )
    nvml_failure = nvml_required_failure(throttle, request.config.getoption("--require-gpu"), utilisation) if tier.device == "cuda" else None
    assert nvml_failure is None, nvml_failure
    if benchmark.disabled:
        return  # smoke pass (make test): one round, too noisy for floors or ceiling checks
    insane = ceiling_sanity(figures, {"direct": f"{direct.rps:.4g} req/s (direct_rps: {figures['direct_assumes']})",
                                      "roofline": f"{ceilings.roofline_rps_measured} req/s (peaks {ceilings.peak_dtype})"})
    below = floor_failures(benchmark_id, spec.option("device"), figures,
                           {"direct": direct.rps, "roofline(measured)": ceilings.roofline_rps_measured,
                            "roofline(datasheet)": ceilings.roofline_rps_datasheet})
    where = f"{benchmark_id} on machine class {machine_class(device_type(spec.option('device')))!r}"
    assert not insane + below, "\n".join([f"{where}: {line}" for line in insane] + below)
