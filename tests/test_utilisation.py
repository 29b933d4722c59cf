import time

from fixtures.utilisation import UtilisationSampler


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_busy_client_shows_up_and_an_idle_server_does_not():
    with UtilisationSampler(server_pids=lambda: set(), interval_s=0.1) as sampler:
        busy(0.8)
    summary = sampler.summary()
    assert summary["utilisation_samples"] >= 5
    assert summary["client_cpu_cores"] > 0.5  # this process spun one core
    assert summary["server_cpu_cores"] == 0.0
    assert 0 < summary["cpu_util_pct"] <= 100
