import subprocess
import sys
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


def test_an_in_process_ceiling_measured_beside_a_cpu_hog_is_measured_again(monkeypatch):
    """A ceiling taken while other work ran is low, and its server then looks faster than its own code (a grep beside
    make bench's first minute: the chat server's ceiling 20% low, served/direct 1.19). It is measured again; a
    ceiling disturbed on every try fails its own benchmarks, saying why."""
    import fixtures.measure.utilisation as utilisation
    from fixtures.measure.ceilings import CeilingFailed, undisturbed

    def beside_a_hog():  # a real hog: the sampler sees it (whatever else runs here, e.g. another xdist worker)
        hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
        try:
            time.sleep(1.0)
        finally:
            hog.kill()
            hog.wait()
        return "low"

    failed, seen = undisturbed("cpu-mine", beside_a_hog, limit=0.25, tries=1)
    assert isinstance(failed, CeilingFailed) and "measured 1 times, disturbed each time: disturbed by" in failed.error
    assert seen.startswith("disturbed by") and "limit 0.25" in seen

    # The retries, with a sampler whose verdict is scripted: disturbed on the first try only.
    verdicts = iter(["disturbed by 0.97 cores of other work during the rounds (...; limit 0.25)", None])

    class Scripted:
        def __init__(self, server_pids, disturbance_limit=None):
            self.disturbed = next(verdicts)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(utilisation, "UtilisationSampler", Scripted)
    tries, cleared = [], []
    found, seen = undisturbed("cpu-mine", lambda: tries.append(1) or f"try {len(tries)}", limit=0.25,
                              before_retry=lambda: cleared.append(True))
    assert (found, cleared) == ("try 2", [True]) and seen == "disturbed by 0.97 cores of other work (...; limit 0.25)"
    verdicts = iter([None])
    assert undisturbed("cpu-mine", lambda: "quiet", limit=0.25) == ("quiet", None)  # measured once, nothing said
