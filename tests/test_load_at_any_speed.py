"""No load shape assumes how fast a server is: the knee search, the Poisson fractions and the soak of
tests/bench/test_load_models.py, with the CPU tier's own policy and no constant changed, against two
servers 130x apart in speed (1,606 and 12.3 req/s at c=8 on a 2-core AMD EPYC Zen 4): the no-op LitServe API and
the CPU tier's baseline classifier made slower on purpose (each predict sleeps first). make test's smoke pass runs the same on the ladder's baseline and
batch_workers, between the two. The search is make test's (fixtures.measure.knee.bracket_only): its bracket is
what follows a server's speed; the bisections a full run adds narrow a bracket by fixed ratios at any speed."""

import pytest

from fixtures.drive.answers import checked_classifier_client
from fixtures.drive.load import LoadClient, soak
from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from fixtures.measure.client_ceiling import client_ceiling
from fixtures.measure.knee import bracket_only, find_knee, knee_rate_cap, open_loop_p99, probe_capacity
from fixtures.measure.metrics import error_breakdown, summarize
from fixtures.measure.validity import rss_growth_problem
from fixtures.variants import CLASSIFIER_TIERS, LOAD_MODEL_TIERS, classifier_variants

pytestmark = pytest.mark.slow  # knee searches, Poisson runs and soaks of real servers

TIER, LOAD = CLASSIFIER_TIERS["cpu"], LOAD_MODEL_TIERS["cpu"]
BASELINE = classifier_variants("cpu")["baseline"]
SLOWED = ServerSpec(name="cpu-baseline-slowed", module=BASELINE.module,
                    # 60 ms per predict: 4x slower than the baseline (12.3 against 48 req/s at c=8, 2-core AMD EPYC Zen 4).
                    options=BASELINE.options + (("predict-delay-ms", 60),))
NOOP = ServerSpec(name="litserve-noop", module="servers.noop", startup_timeout_s=60)


def _client(spec, server):
    if spec.module == "servers.noop":
        return LoadClient(f"{server.url}/predict", [b"{}"])
    return checked_classifier_client(server.url, spec)


@pytest.fixture(scope="module")
def ceiling(tmp_path_factory):
    return client_ceiling(tmp_path_factory.mktemp("ceiling-logs"), (max(TIER.concurrency),))


@pytest.mark.parametrize("spec", [NOOP, SLOWED], ids=lambda spec: spec.name)
def test_knee_poisson_fractions_and_soak_hold_at_any_speed(spec, ceiling, tmp_path):
    server = start_server(spec, tmp_path)
    try:
        with _client(spec, server) as client:
            client.closed_loop(16, concurrency=4)  # warm-up, as the benchmarks do
            top = max(TIER.concurrency)
            capacity = probe_capacity(client, top, TIER.round_requests(top))

            policy = bracket_only(LOAD.knee)
            search = find_knee(open_loop_p99(client, policy), capacity.rps, LOAD.slo_p99_s, policy,
                               client_ceiling_rps=knee_rate_cap(ceiling))
            assert search.problem is None, f"{spec.name} (capacity {capacity.rps:.1f} req/s): {search.problem}"
            assert len(search.p99_by_rate) <= policy.max_probes
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
