"""Classifier serving throughput: each step of the optimisation ladder x concurrency level is one benchmark.

A round is one closed-loop load run of a fixed request count, so pytest-benchmark's time per round
is the inverse of throughput and `--benchmark-compare-fail=median:10%` means what users expect. Rounds
repeat until the last few agree (fixtures/rounds.py); every answer is checked (fixtures/answers.py).
The record (fixtures.records.classifier_record; every key in fixtures/figures.py) holds req/s and
latency, what produced them, the ceilings (the direct model at the batches this concurrency can form,
compute roofline, memory roofline), the efficiency ratios, the batch sizes the server actually ran and
its memory; then the floors are asserted.
"""

import pytest

from fixtures.answers import classifier_check, expected_top1_for
from fixtures.gpu import ThrottleSampler, nvml_required_failure
from fixtures.images import payload_description, real_image_bodies
from fixtures.load import LoadClient
from fixtures.metrics import batch_size_delta, error_breakdown, summarize
from fixtures.records import classifier_record
from fixtures.request_log import request_rows
from fixtures.relations import ceiling_sanity
from fixtures.rounds import RoundPolicy, record_rounds, run_until_stable
from fixtures.utilisation import UtilisationSampler
from fixtures.variants import CLASSIFIER_TIERS, classifier_args, classifier_specs, gpu_smoke_ids
from servers import classifier
from servers.runtime import device_type


def _cases():
    for tier_name, tier in CLASSIFIER_TIERS.items():
        for spec in classifier_specs(tier_name).values():
            marks = ([pytest.mark.floored] + ([pytest.mark.gpu] if tier.device == "cuda" else [])
                     + ([pytest.mark.compile] if spec.option("compile") else []))
            for concurrency in tier.concurrency:
                case_id = f"{spec.name}-c{concurrency}"
                smoke = [pytest.mark.gpu_smoke] if case_id in gpu_smoke_ids() else []
                yield pytest.param(tier, spec, concurrency, marks=marks + smoke, id=case_id)


# scope="session": one server per spec across its concurrency levels (fixtures/ordering.py).
@pytest.mark.benchmark(group="classifier")
@pytest.mark.parametrize("tier, server, concurrency", list(_cases()), indirect=["server"], scope="session")
def test_classifier_throughput(request, benchmark, classifier_ceilings, harness_ceiling, floor_failures, machine_class,
                               save_record, tier, server, concurrency):
    # The ceilings come before server in the signature: measured before any server starts.
    spec = server.spec
    served = classifier.config_from_args(classifier_args(spec))
    bodies = real_image_bodies(served.input_size)
    expected_top1, answer_check = expected_top1_for(served, bodies)
    check = classifier_check(classifier.served_labels(served), served.top_k, expected_top1)
    policy = RoundPolicy(tier.rounds, tier.max_round_cv, tier.max_rounds)

    with LoadClient(f"{server.url}/predict", bodies, concurrency, check) as client:
        # Warm-up on the connections the rounds use: worker caches, batch shapes, keep-alive connections.
        # 4 waves: every client's connection and every batch shape the level forms, at any speed.
        warmup = client.closed_loop(min(tier.round_requests(concurrency), 4 * concurrency))
        assert all(r.ok for r in warmup.results), f"warm-up failed: {error_breakdown(warmup.results)}"
        round_requests = tier.round_requests(concurrency, summarize(warmup.results, warmup.wall_s).rps)
        batches_before, rss_before = server.get_json(classifier.STATS_PATH), server.rss_bytes()
        with ThrottleSampler() as throttle, UtilisationSampler(server.alive_pids) as utilisation:
            runs, stability = run_until_stable(lambda: client.closed_loop(round_requests),
                                               lambda run: summarize(run.results, run.wall_s).rps, policy,
                                               single_round=benchmark.disabled)
        batches = batch_size_delta(batches_before, server.get_json(classifier.STATS_PATH))
        rss_after = server.rss_bytes()

    record_rounds(benchmark, [run.wall_s for run in runs[-stability.window:]])
    figures = save_record(classifier_record(
        spec=spec, served=served, concurrency=concurrency, round_requests=round_requests, runs=runs, stability=stability,
        ceilings=classifier_ceilings[spec.name], client_ceiling=harness_ceiling, throttle=throttle, utilisation=utilisation, batches=batches,
        rss_before=rss_before, rss_after=rss_after, answer_check=answer_check,
        payload=payload_description(served.input_size), ready_s=server.ready_after_s), requests=request_rows(runs))

    assert figures["valid"], (f"figures not trusted: {figures['invalid_reason']}; "
                              f"errors {error_breakdown([r for run in runs for r in run.results])}; server {server.state()}")
    nvml_failure = nvml_required_failure(throttle, request.config.getoption("--require-gpu"), utilisation) if tier.device == "cuda" else None
    assert nvml_failure is None, nvml_failure
    if benchmark.disabled:
        return  # smoke pass (make test): one round, too noisy for floors or ceiling checks
    insane = ceiling_sanity(figures, {"direct": f"{figures['direct_rps']:.4g} req/s (direct_rps: {figures['direct_assumes']})",
                                      "roofline": f"{figures['roofline_rps_measured']} req/s (peaks {figures['peak_dtype']})"})
    below = floor_failures(spec.option("device"), figures,
                           {"direct": figures["direct_rps"], "roofline(measured)": figures["roofline_rps_measured"],
                            "roofline(datasheet)": figures["roofline_rps_datasheet"]})
    where = f"{request.node.callspec.id} on machine class {machine_class(device_type(spec.option('device')))!r}"
    assert not insane + below, "\n".join([f"{where}: {line}" for line in insane] + below)
