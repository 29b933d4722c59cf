"""Every native thread pool of a worker and of the in-process ceiling at the tier's thread count, and recorded as
each library reports it: torch.set_num_threads alone left numpy's OpenBLAS at every core (2 threads per worker on
a 2-core machine where the record said 1)."""

import json
import urllib.request

import pytest

from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from servers.runtime import SERVING_PATH
from tests.post import post


@pytest.fixture(scope="module")
def numpy_server(tmp_path_factory):
    spec = ServerSpec(name="numpy-nearest", module="fixtures.drive.launch", startup_timeout_s=120,
                      options=(("api", "tests.numpy_litapi:NearestNeighbourAPI"), ("accelerator", "cpu"), ("threads", 1),
                               ("workers-per-device", 2), ("max-batch-size", 4), ("batch-timeout", 0.01)))
    server = start_server(spec, tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


def test_a_numpy_litapi_serves_with_one_blas_thread_per_worker_and_its_record_says_so(numpy_server):
    body = json.dumps({"vector": [0.5] * 128}).encode()
    answers = [post(f"{numpy_server.url}/predict", body)[1] for _ in range(8)]
    assert {tuple(a["blas_threads"]) for a in answers} == {(1,)}, answers  # inside predict, while it serves
    with urllib.request.urlopen(f"{numpy_server.url}{SERVING_PATH}", timeout=10) as response:
        pools = json.loads(response.read())["thread_pools"]
    assert sorted(pools) == ["0", "1"]  # each worker's own report
    for worker, found in pools.items():
        by_api = {(p["library"], p["api"]): p["threads"] for p in found}
        assert by_api[("torch", "intra-op")] == 1 and by_api[("openblas", "blas")] == 1, (worker, found)
        assert all(threads == 1 for threads in by_api.values()), (worker, found)


def test_the_in_process_ceiling_runs_the_user_s_code_with_the_same_pools():
    from fixtures.litapi import LitAPIBenchmark, Serving, cases
    from fixtures.measure.ceilings import code_ceilings
    from threadpoolctl import threadpool_info

    bench = LitAPIBenchmark(api="tests.numpy_litapi:NearestNeighbourAPI", path="/predict",
                            check=lambda payload, answer: None, payloads=({"vector": [0.5] * 128},),
                            variants={"batching": Serving(max_batch_size=4, batch_timeout=0.01)})
    case = cases(bench)[0].values[0]
    ceilings = code_ceilings(case, "cpu", 1, (1, 4), min_time_s=0.2, quick=True)
    blas = [p for p in ceilings.direct_thread_pools if p["api"] == "blas"]
    assert blas and all(p["threads"] == 1 for p in blas), ceilings.direct_thread_pools
    # and the pytest process gets its own pools back afterwards
    assert any(pool["num_threads"] > 1 for pool in threadpool_info() if pool["user_api"] == "blas") or \
        __import__("os").cpu_count() == 1


def test_a_no_batching_step_of_an_api_that_batches_says_what_litserve_does_instead_of_its_warning():
    """litserve warns on every max_batch_size=1 build of a class with batch() and unbatch(): the ladder's first step
    does that on purpose. The launcher (and the in-process ceiling) build it without the warning and say the path."""
    import warnings

    from fixtures.drive.launch import LITSERVE_UNBATCHED_WARNING, UNBATCHED_PATH, build_api
    from tests.numpy_litapi import NearestNeighbourAPI

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NearestNeighbourAPI(max_batch_size=1, batch_timeout=0.0)  # litserve's own behaviour, which the launcher meets
        assert any(LITSERVE_UNBATCHED_WARNING in str(w.message) for w in caught)
        caught.clear()
        api, note = build_api(NearestNeighbourAPI, 1, 0.0, {})
        assert not caught and note == UNBATCHED_PATH and api.max_batch_size == 1
        assert build_api(NearestNeighbourAPI, 4, 0.01, {})[1] is None
