import time

from fixtures.measure.utilisation import UtilisationSampler


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_busy_client_shows_up_and_an_idle_server_does_not():
    """The sampler's client figure is this process's CPU time over the window: compared with what the process
    itself counts, not with a core it may not get (a CI run under xdist beside a compile got 0.45 of one)."""
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    with UtilisationSampler(server_pids=lambda: set(), interval_s=0.1) as sampler:
        busy(0.8)
    cores = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
    summary = sampler.summary()
    assert summary["utilisation_samples"] >= 5
    assert summary["client_cpu_cores"] > 0.1 and abs(summary["client_cpu_cores"] - cores) < 0.25, (summary, cores)
    assert summary["server_cpu_cores"] == 0.0
    assert 0 < summary["cpu_util_pct"] <= 100


def test_a_cpu_hog_beside_a_benchmark_marks_the_run_disturbed_and_invalid():
    """batching-c1 read 148 and 61 req/s in two runs of one commit while other work ran, both marked valid. A busy
    process that is neither the server nor the client is other work: past the limit the run is invalid, saying
    how many cores it took, as a throttled GPU makes it."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from fixtures.measure.utilisation import DISTURBED_CORES
    from fixtures.measure.validity import untrusted_reason

    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # the hog is running
        with UtilisationSampler(server_pids=lambda: set(), interval_s=0.1, disturbance_limit=DISTURBED_CORES) as sampler:
            time.sleep(1.5)  # the benchmark's client idles here: the hog's core is other work
        with UtilisationSampler(server_pids=lambda: {hog.pid}, interval_s=0.1) as as_server:
            time.sleep(1.0)  # the same busy process counted as the server is not other work, and nothing is judged
    finally:
        hog.kill()
        hog.wait()
    summary = sampler.summary()
    assert summary["other_cpu_cores"] > 0.6 and summary["disturbance_limit_cores"] == DISTURBED_CORES, summary
    assert sampler.disturbed.startswith(f"disturbed by {summary['other_cpu_cores'] + summary['steal_cpu_cores']:.2f} "
                                        f"cores of other work during the rounds")
    converged = SimpleNamespace(converged=True, verdict="")
    assert untrusted_reason(0, converged, disturbed=sampler.disturbed) == sampler.disturbed
    assert as_server.summary()["server_cpu_cores"] > 0.6 and as_server.disturbed is None


def test_a_smoke_pass_and_a_functional_test_s_inner_session_record_other_work_without_judging_it(monkeypatch):
    from fixtures.measure.inner_session_cache import INNER_SESSION_CACHE_ENV
    from fixtures.measure.utilisation import DISTURBED_CORES, disturbance_limit

    monkeypatch.delenv(INNER_SESSION_CACHE_ENV, raising=False)
    assert disturbance_limit(smoke=False) == DISTURBED_CORES and disturbance_limit(smoke=True) is None
    monkeypatch.setenv(INNER_SESSION_CACHE_ENV, "/tmp/cache")  # beside the other make test worker by design
    assert disturbance_limit(smoke=False) is None
