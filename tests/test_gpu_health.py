"""GPU health checks with NVML replaced by fakes (they run on any machine); on a CPU machine the real
ones report no GPU and assert nothing."""

import itertools

import pynvml
import pytest

from fixtures import gpu
from fixtures.metrics import untrusted_reason


def test_throttle_bits_are_nvml_s():
    assert gpu.THROTTLE_PROBLEMS == {
        pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
        pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    }


def test_idle_and_application_clocks_are_not_problems():
    idle, app_clocks = pynvml.nvmlClocksEventReasonGpuIdle, pynvml.nvmlClocksEventReasonApplicationsClocksSetting
    assert gpu.throttle_problems([idle, app_clocks, 0]) == []
    assert gpu.throttle_problems([0, pynvml.nvmlClocksEventReasonSwThermalSlowdown | idle, 0]) == ["sw_thermal_slowdown"]


def test_sampler_collects_during_the_window_and_marks_the_run_invalid():
    masks = itertools.chain([0, 0, pynvml.nvmlClocksEventReasonHwSlowdown], itertools.repeat(0))
    with gpu.ThrottleSampler(interval_s=0.01, read_mask=lambda: next(masks)) as sampler:
        import time

        time.sleep(0.2)
    assert len(sampler.masks) >= 5 and sampler.problems == ["hw_slowdown"]
    assert "throttled during the measurement: hw_slowdown" in untrusted_reason(0, 0.01, gpu_throttle=sampler.problems)


def test_without_a_driver_the_sampler_reports_no_gpu():
    with gpu.ThrottleSampler() as sampler:
        pass
    if gpu.gpu_memory_used() is None:  # a CPU machine
        assert not sampler.available and sampler.problems == []


def test_memory_wait_returns_when_memory_is_back_or_the_excess_at_the_deadline():
    readings = iter([900, 600, 410])
    assert gpu.wait_for_memory(lambda: next(readings), baseline=400, tolerance_bytes=16, timeout_s=5, poll_s=0) is None
    assert gpu.wait_for_memory(lambda: 1400, baseline=400, tolerance_bytes=16, timeout_s=0.05, poll_s=0.01) == 1000
    assert gpu.wait_for_memory(lambda: 1400, baseline=None, tolerance_bytes=16, timeout_s=5) is None  # no GPU
