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
