"""No load shape assumes how fast a server is: the knee search, the Poisson fractions and the soak of
tests/bench/test_load_models.py, with the CPU tier's own policy and no constant changed, against three
servers tens of times apart in speed: the no-op LitServe API, the CPU tier's baseline classifier, and
the same classifier made slower on purpose (each predict sleeps first)."""

import pytest

from fixtures.drive.answers import checked_classifier_client
from fixtures.drive.load import LoadClient, soak
from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from fixtures.measure.client_ceiling import client_ceiling
from fixtures.measure.knee import find_knee, knee_rate_cap, open_loop_p99, probe_capacity
from fixtures.measure.metrics import error_breakdown, summarize
from fixtures.measure.verdicts import rss_growth_problem
from fixtures.variants import CLASSIFIER_TIERS, LOAD_MODEL_TIERS, classifier_variants

TIER, LOAD = CLASSIFIER_TIERS["cpu"], LOAD_MODEL_TIERS["cpu"]
BASELINE = classifier_variants("cpu")["baseline"]
SLOWED = ServerSpec(name="cpu-baseline-slowed", module=BASELINE.module,
                    # 60 ms per predict: about 2.5x slower than the baseline here, 60x slower than the no-op.
                    options=BASELINE.options + (("predict-delay-ms", 60),))
NOOP = ServerSpec(name="litserve-noop", module="servers.noop", startup_timeout_s=60)


def _client(spec, server):
    if spec.module == "servers.noop":
        return LoadClient(f"{server.url}/predict", [b"{}"])
    return checked_classifier_client(server.url, spec)


@pytest.fixture(scope="module")
def ceiling(tmp_path_factory):
    return client_ceiling(tmp_path_factory.mktemp("ceiling-logs"), (max(TIER.concurrency),))


@pytest.mark.parametrize("spec", [NOOP, BASELINE, SLOWED], ids=lambda spec: spec.name)
def test_knee_poisson_fractions_and_soak_hold_at_any_speed(spec, ceiling, tmp_path):
    server = start_server(spec, tmp_path)
    try:
        with _client(spec, server) as client:
            client.closed_loop(16, concurrency=4)  # warm-up, as the benchmarks do
            top = max(TIER.concurrency)
            capacity = probe_capacity(client, top, TIER.round_requests(top))

            search = find_knee(open_loop_p99(client, LOAD.knee), capacity.rps, LOAD.slo_p99_s, LOAD.knee,
                               client_ceiling_rps=knee_rate_cap(ceiling))
            assert search.problem is None, f"{spec.name} (capacity {capacity.rps:.1f} req/s): {search.problem}"
            assert len(search.p99_by_rate) <= LOAD.knee.max_probes
            assert search.bracketed or search.client_bound

            runs = [client.poisson(capacity.at(fraction), LOAD.poisson_seconds, seed=0) for fraction in LOAD.poisson_fractions]
            soaked, rss = soak(client, LOAD.soak_fraction * search.highest_met, LOAD.soak_smoke_seconds,
                               LOAD.soak_chunk_seconds, server.rss_bytes)
            results = [r for run in runs + soaked for r in run.results]
            assert summarize(results, 1.0).errors == 0, error_breakdown(results)
            assert rss_growth_problem(rss, LOAD.soak_max_rss_growth_mib) is None
    finally:
        server.stop()
    print(f"{spec.name}: capacity {capacity.rps:.1f} req/s ({capacity.source}), knee {search.knee} "
          f"(client-bound {search.client_bound}), p99 by rate { {f'{r:.4g}': p for r, p in search.p99_by_rate.items()} }")
