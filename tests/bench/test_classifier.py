"""Classifier serving throughput: each step of the optimisation ladder x concurrency level is one benchmark.

A round is one closed-loop load run of a fixed request count, so pytest-benchmark's time per round
is the inverse of throughput and `--benchmark-compare-fail=median:10%` means what users expect.
extra_info records req/s and latency, what produced them, the three ceilings (direct model,
compute roofline, memory roofline) and the efficiency ratios; then the floors are asserted.
"""

import pytest

from fixtures.ceilings import efficiency
from fixtures.client_ceiling import client_bound
from fixtures.gpu import ThrottleSampler, nvml_required_failure
from fixtures.utilisation import UtilisationSampler
from fixtures.load import run_closed_loop
from fixtures.metrics import coefficient_of_variation, error_breakdown, summarize, untrusted_reason
from fixtures.images import payload_description, real_image_bodies
from fixtures.relations import ceiling_sanity
from servers.runtime import device_type
from servers import classifier
from servers.variants import CLASSIFIER_TIERS, classifier_specs


def _cases():
    for tier_name, tier in CLASSIFIER_TIERS.items():
        for spec in classifier_specs(tier_name).values():
            marks = ([pytest.mark.gpu] if tier.device == "cuda" else []) + ([pytest.mark.compile] if spec.option("compile") else [])
            for concurrency in tier.concurrency:
                yield pytest.param(tier, spec, concurrency, marks=marks, id=f"{spec.name}-c{concurrency}")


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


@pytest.mark.benchmark(group="classifier")
@pytest.mark.parametrize("tier, server, concurrency", list(_cases()), indirect=["server"])
def test_classifier_throughput(request, benchmark, classifier_ceilings, harness_ceiling, floor_failures, machine_class,
                               bench_rows, figures_by_id, tier, server, concurrency):
    # The ceilings come before server in the signature: measured before any server starts.
    url = f"{server.url}/predict"
    served = classifier.config_from_args(classifier.spec_args(server.spec))
    bodies = real_image_bodies(served.input_size)

    # Warm-up: one load run at this concurrency (connections, worker caches, batch shapes), unmeasured.
    round_requests = tier.round_requests(concurrency)
    warmup = run_closed_loop(url, bodies, min(round_requests, 4 * concurrency), concurrency)
    assert all(r.ok for r in warmup.results), f"warm-up failed: {error_breakdown(warmup.results)}"

    runs = []
    with ThrottleSampler() as throttle, UtilisationSampler(server.alive_pids) as utilisation:
        benchmark.pedantic(
            lambda: runs.append(run_closed_loop(url, bodies, round_requests, concurrency)),
            rounds=tier.rounds, iterations=1, warmup_rounds=0,
        )

    results = [r for run in runs for r in run.results]
    summary = summarize(results, sum(run.wall_s for run in runs))
    rps_per_round = [summarize(run.results, run.wall_s).rps for run in runs]
    invalid = untrusted_reason(summary.errors, coefficient_of_variation(rps_per_round), gpu_throttle=throttle.problems)
    spec = server.spec
    ceilings = classifier_ceilings[spec.name]
    figures = {
        "rps": summary.rps,
        "rps_per_round": rps_per_round,
        "round_cv": coefficient_of_variation(rps_per_round),
        "valid": invalid is None,
        "invalid_reason": invalid,
        **throttle.summary(),
        **utilisation.summary(),
        "latency_mean_ms": _ms(summary.latency_mean_s),
        "latency_p50_ms": _ms(summary.latency_p50_s),
        "latency_p90_ms": _ms(summary.latency_p90_s),
        "latency_p95_ms": _ms(summary.latency_p95_s),
        "latency_p99_ms": _ms(summary.latency_p99_s),
        "requests": summary.requests,
        "errors": summary.errors,
        "success_rate": summary.success_rate,
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
        "server": spec.describe(),
        "server_ready_s": round(server.ready_after_s, 2),
        **ceilings.as_dict(),
        **efficiency(summary.rps, ceilings),
        "client_ceiling_rps": harness_ceiling["bare_aiohttp_rps"],
        "litserve_noop_rps": harness_ceiling["litserve_noop_rps"],
        "client_bound": client_bound(summary.rps, harness_ceiling["bare_aiohttp_rps"]),
    }
    benchmark.extra_info.update(figures)
    benchmark_id = request.node.callspec.id
    figures_by_id[benchmark_id] = figures
    bench_rows.append({"benchmark": benchmark_id, **figures})

    assert invalid is None, (
        f"figures not trusted: {invalid}; errors {error_breakdown(results)}; server {server.state()}"
    )
    nvml_failure = nvml_required_failure(throttle, request.config.getoption("--require-gpu")) if tier.device == "cuda" else None
    assert nvml_failure is None, nvml_failure
    if benchmark.disabled:
        return  # smoke pass (make test): one unwarmed-by-rounds run, too noisy for floors or ceiling checks
    insane = ceiling_sanity(figures, {"direct": f"{ceilings.direct_rps:.4g} req/s (direct_rps)",
                                      "roofline": f"{ceilings.roofline_rps_measured} req/s (peaks {ceilings.peak_dtype})"})
    below = floor_failures(benchmark_id, spec.option("device"), figures,
                           {"direct": ceilings.direct_rps, "roofline(measured)": ceilings.roofline_rps_measured,
                            "roofline(datasheet)": ceilings.roofline_rps_datasheet})
    where = f"{benchmark_id} on machine class {machine_class(device_type(spec.option('device')))!r}"
    assert not insane + below, "\n".join([f"{where}: {line}" for line in insane] + below)
