"""Classifier serving throughput: each step of the optimisation ladder x concurrency level is one benchmark.

A round is one closed-loop load run of a fixed request count, so pytest-benchmark's time per round
is the inverse of throughput and `--benchmark-compare-fail=median:10%` means what users expect. Rounds
repeat until the last few agree (fixtures/measure/rounds.py); every answer is checked (fixtures/drive/answers.py).
The benchmark is every closed-loop server's (fixtures/closed_loop.py); what is particular to the classifier is
its case there (fixtures.closed_loop.ClassifierCase). The record (fixtures.record.records.classifier_record; every key in fixtures/record/figures.py) holds req/s and
latency, what produced them, the ceilings (the direct model at the batches this concurrency can form,
compute roofline, memory roofline), the efficiency ratios, the batch sizes the server actually ran and
its memory; then the floors are asserted.
"""

import pytest

from fixtures.closed_loop import ClassifierCase, closed_loop_benchmark
from fixtures.measure.ceilings import ceilings_of
from fixtures.variants import CLASSIFIER_TIERS, classifier_specs, gpu_smoke_ids


def _cases():
    for tier_name, tier in CLASSIFIER_TIERS.items():
        for spec in classifier_specs(tier_name).values():
            marks = ([pytest.mark.floored] + ([pytest.mark.gpu] if tier.device == "cuda" else [])
                     + ([pytest.mark.compile] if spec.option("compile") else []))
            for concurrency in tier.concurrency:
                case_id = f"{spec.name}-c{concurrency}"
                smoke = [pytest.mark.gpu_smoke] if case_id in gpu_smoke_ids() else []
                yield pytest.param(ClassifierCase(tier, spec), spec, concurrency, marks=marks + smoke, id=case_id)


# scope="session": one server per spec across its concurrency levels (fixtures/drive/ordering.py).
@pytest.mark.benchmark(group="classifier")
@pytest.mark.parametrize("case, server, concurrency", list(_cases()), indirect=["server"], scope="session")
def test_classifier_throughput(request, benchmark, case_ceilings, client_ceiling, floor_failures, machine_class,
                               save_record, case, server, concurrency):
    # The ceilings come before server in the signature: measured before any server starts.
    closed_loop_benchmark(request, benchmark, case, server, concurrency, ceilings_of(case_ceilings, server.spec.name),
                          client_ceiling=client_ceiling, floor_failures=floor_failures, machine_class=machine_class,
                          save_record=save_record)
