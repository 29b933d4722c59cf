"""Load beyond a closed loop over the classifier's servers: open-loop Poisson arrivals, the highest rate meeting
the SLO, a memory soak below it, and seed 004's FastAPI against LitServe. The bodies are the library's
(fixtures/load_models.py); every answer is checked (fixtures/drive/answers.py)."""

import pytest

from fixtures.drive.answers import checked_classifier_client
from fixtures.load_models import framework_benchmark, knee_benchmark, poisson_benchmark, soak_benchmark
from fixtures.variants import CLASSIFIER_TIERS, LOAD_MODEL_TIERS, classifier_variants, fastapi_comparison_specs

KNEE = pytest.StashKey[dict]()  # spec name -> the rate this session's knee search found, for the soak


def _gpu_marks(tier_name):
    return [pytest.mark.gpu] if CLASSIFIER_TIERS[tier_name].device == "cuda" else []


def _clients(spec):
    return lambda url, concurrency: checked_classifier_client(url, spec, concurrency)


def _poisson_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        spec = classifier_variants(load.classifier_tier)["batch_workers"]
        for fraction in load.poisson_fractions:
            yield pytest.param(load, spec, fraction, marks=_gpu_marks(name), id=f"{spec.name}-poisson-x{fraction:g}")


@pytest.mark.benchmark(group="open-loop")
@pytest.mark.parametrize("load, server, fraction", list(_poisson_cases()), indirect=["server"], scope="session")
def test_poisson_open_loop(benchmark, client_ceiling, figures_by_id, save_record, load, server, fraction):
    poisson_benchmark(benchmark, server, _clients(server.spec), CLASSIFIER_TIERS[load.classifier_tier], load, fraction,
                      client_ceiling=client_ceiling, figures_by_id=figures_by_id, save_record=save_record)


def _knee_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        ladder = classifier_variants(load.classifier_tier)
        for spec in (ladder["baseline"], ladder["batch_workers"]):
            yield pytest.param(load, spec, marks=_gpu_marks(name), id=f"{spec.name}-slo-p99-{load.slo_p99_s * 1000:g}ms")


@pytest.mark.benchmark(group="slo")
@pytest.mark.parametrize("load, server", list(_knee_cases()), indirect=["server"], scope="session")
def test_max_rate_at_slo(request, benchmark, client_ceiling, figures_by_id, save_record, load, server):
    search = knee_benchmark(benchmark, server, _clients(server.spec), CLASSIFIER_TIERS[load.classifier_tier], load,
                            client_ceiling=client_ceiling, figures_by_id=figures_by_id, save_record=save_record)
    request.config.stash.setdefault(KNEE, {})[server.spec.name] = search.highest_met


def _soak_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        spec = classifier_variants(load.classifier_tier)["batch_workers"]
        yield pytest.param(load, spec, marks=_gpu_marks(name), id=f"{spec.name}-soak")


@pytest.mark.benchmark(group="soak")
@pytest.mark.parametrize("load, server", list(_soak_cases()), indirect=["server"], scope="session")
def test_soak_memory(request, benchmark, client_ceiling, figures_by_id, save_record, load, server):
    soak_benchmark(benchmark, server, _clients(server.spec), CLASSIFIER_TIERS[load.classifier_tier], load,
                   request.config.stash.get(KNEE, {}).get(server.spec.name), client_ceiling=client_ceiling,
                   figures_by_id=figures_by_id, save_record=save_record)


def _comparison_cases():
    for name, load in LOAD_MODEL_TIERS.items():
        for framework, spec in fastapi_comparison_specs(load.classifier_tier).items():
            for n in load.fastapi_n:
                yield pytest.param(load, spec, framework, n, marks=_gpu_marks(name), id=f"{spec.name}-n{n}")


@pytest.mark.benchmark(group="fastapi-vs-litserve")
@pytest.mark.parametrize("load, server, framework, n", list(_comparison_cases()), indirect=["server"], scope="session")
def test_fastapi_vs_litserve(benchmark, save_record, load, server, framework, n):
    framework_benchmark(benchmark, server, _clients(server.spec), framework, n, save_record=save_record)
