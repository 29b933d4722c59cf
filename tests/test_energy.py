"""Energy per token and per request (fixtures/measure/energy.py) against a fake NVML whose counter and power are
known, RAPL's counter files, and a host with neither ("not available", never a zero)."""

import time
from types import SimpleNamespace

import pytest

from fixtures.measure.energy import EnergyMeter, _wrapping_counter, nvml_sources, rapl_sources
from fixtures.measure.gpu import slowdown_share
from fixtures.record.figures import checked_record

IDLE_W, LOAD_W = 50.0, 200.0


class FakeNvml:
    """pynvml's two calls for `gpus` boards drawing `watts` each: the energy counter (mJ) is the integral of the power
    drawn since the first read, updated at every read; with_counter=False: a board without the counter."""

    def __init__(self, with_counter=True):
        self.watts, self.with_counter = IDLE_W, with_counter
        self.millijoules, self.last = {}, {}

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.with_counter:
            raise RuntimeError("NVMLError_NotSupported")
        now = time.monotonic()
        self.millijoules[handle] = self.millijoules.get(handle, 0.0) + self.watts * 1000 * (now - self.last.get(handle, now))
        self.last[handle] = now
        return int(self.millijoules[handle])

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self.watts * 1000)

    def load(self):
        """The load starts: every board draws LOAD_W from now on (counters brought up to date at the idle power)."""
        for handle in list(self.last):
            self.nvmlDeviceGetTotalEnergyConsumption(handle)
        self.watts = LOAD_W


def metered(nvml, gpus=1, seconds=0.6, units=100, unit="token", throttled=None):
    meter = EnergyMeter(nvml_sources(tuple(range(gpus)), nvml=nvml, handle_of=lambda i: f"gpu{i}"), idle_s=0.4,
                        interval_s=0.02)
    with meter:
        nvml.load()
        time.sleep(seconds)
    return meter.summary(units, unit, throttled)


def test_a_known_counter_gives_joules_per_token_gross_and_net_of_idle():
    figures = metered(FakeNvml())
    window = figures["energy_window_s"]
    assert figures["energy_source"] == "nvml counter, 1 GPU" and window == pytest.approx(0.6, abs=0.1)
    assert figures["power_idle_w"] == pytest.approx(IDLE_W, rel=0.02)
    assert figures["energy_j"] == pytest.approx(LOAD_W * window, rel=0.02)
    assert figures["energy_net_j"] == pytest.approx((LOAD_W - IDLE_W) * window, rel=0.03)
    assert figures["power_mean_w"] == pytest.approx(LOAD_W, rel=0.02)
    assert figures["power_mean_net_w"] == pytest.approx(LOAD_W - IDLE_W, rel=0.03)
    assert figures["j_per_token"] == pytest.approx(LOAD_W * window / 100, rel=0.02)
    assert figures["j_per_token_net"] == pytest.approx((LOAD_W - IDLE_W) * window / 100, rel=0.03)
    checked_record(figures)  # every key declared in the figure catalogue


def test_joules_per_request_sum_every_gpu_the_server_uses():
    figures = metered(FakeNvml(), gpus=2, units=40, unit="request", throttled=0.25)
    window = figures["energy_window_s"]
    assert figures["energy_source"] == "nvml counter, 2 GPUs" and figures["energy_throttled_share"] == 0.25
    assert figures["j_per_request"] == pytest.approx(2 * LOAD_W * window / 40, rel=0.02)
    assert figures["j_per_request_net"] == pytest.approx(2 * (LOAD_W - IDLE_W) * window / 40, rel=0.03)


def test_a_gpu_without_the_counter_integrates_its_power_and_says_so():
    figures = metered(FakeNvml(with_counter=False))
    window = figures["energy_window_s"]
    assert figures["energy_source"] == "nvml power samples (no energy counter), 1 GPU"
    assert figures["power_idle_w"] == pytest.approx(IDLE_W, rel=0.02)
    # the first interval of the window is a trapezoid from the idle reading: within one interval of LOAD_W x window
    assert figures["energy_j"] == pytest.approx(LOAD_W * window, abs=(LOAD_W - IDLE_W) * 0.02 + 1e-9)


def test_a_cpu_host_without_rapl_records_not_available_never_a_zero(tmp_path):
    sources, problem = rapl_sources(tmp_path / "powercap")
    meter = EnergyMeter(sources, problem, idle_s=0.1)
    with meter:
        pass
    figures = meter.summary(100, "token")
    assert figures["energy_source"] == f"not available: no RAPL package domain under {tmp_path / 'powercap'}"
    assert all(value is None for key, value in figures.items() if key != "energy_source")
    checked_record(figures)


def test_rapl_reads_package_domains_only_and_counts_the_counter_s_wraps(tmp_path):
    for domain, value in (("intel-rapl:0", 1_000_000), ("intel-rapl:0:0", 5), ("intel-rapl:1", 2_000_000)):
        (tmp_path / domain).mkdir()
        (tmp_path / domain / "energy_uj").write_text(str(value))
        (tmp_path / domain / "max_energy_range_uj").write_text("9999999")
    sources, problem = rapl_sources(tmp_path)
    assert problem is None and [s.name for s in sources] == ["rapl", "rapl"]  # intel-rapl:0:0 is inside package 0
    counter = tmp_path / "intel-rapl:0" / "energy_uj"
    read = _wrapping_counter(counter, 9_999_999)
    assert read() == 0.0
    counter.write_text("9000000")
    assert read() == pytest.approx(8.0)
    counter.write_text("500000")  # wrapped past 9,999,999: 999,999 + 1 + 500,000 more microjoules
    assert read() == pytest.approx(8.0 + 1.5)


def test_the_throttled_share_counts_power_caps_and_slowdowns():
    sampler = SimpleNamespace(available=True, masks=[0x0, 0x4, 0x40, 0x1, 0x10])  # idle and sync boost do not count
    assert slowdown_share(sampler) == pytest.approx(2 / 5)
    assert slowdown_share(SimpleNamespace(available=False, masks=[])) is None


def test_the_a_b_s_rounds_meter_gross_energy_without_an_idle_wait():
    nvml = FakeNvml()
    meter = EnergyMeter(nvml_sources((0,), nvml=nvml, handle_of=lambda i: i), idle_s=0, interval_s=0.02)
    started = time.monotonic()
    with meter:
        nvml.load()
        time.sleep(0.2)
    assert time.monotonic() - started < 0.5
    figures = meter.summary(10, "token")
    assert figures["j_per_token"] == pytest.approx(LOAD_W * figures["energy_window_s"] / 10, rel=0.05)
    assert figures["j_per_token_net"] is None and figures["power_idle_w"] is None
