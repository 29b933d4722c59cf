"""GPU health checks with NVML replaced by fakes (they run on any machine); on a CPU machine the real
ones report no GPU and assert nothing."""

import itertools

import pynvml

from fixtures.measure import gpu
from fixtures.measure.rounds import RoundPolicy, stability
from fixtures.measure.validity import untrusted_reason


def test_reason_bits_are_nvml_s():
    assert {bit: name for bit, name in gpu.CLOCK_EVENT_REASONS.items() if name in gpu.INVALIDATING_REASONS} == {
        pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    }
    assert gpu.CLOCK_EVENT_REASONS[pynvml.nvmlClocksEventReasonSwPowerCap] == "sw_power_cap"
    assert gpu.CLOCK_EVENT_REASONS[pynvml.nvmlClocksEventReasonGpuIdle] == "gpu_idle"


def test_a_power_capped_run_is_valid_and_its_cap_is_recorded():
    cap, idle = pynvml.nvmlClocksEventReasonSwPowerCap, pynvml.nvmlClocksEventReasonGpuIdle
    masks = [cap, cap, cap | idle, 0]
    assert gpu.throttle_problems(masks) == []  # an L4 or H100 PCIe under load is power capped: normal
    assert gpu.reason_fractions(masks) == {"gpu_idle": 0.25, "sw_power_cap": 0.75}


def test_thermal_slowdown_invalidates_and_says_how_often():
    thermal = pynvml.nvmlClocksEventReasonSwThermalSlowdown
    assert gpu.throttle_problems([0, thermal, 0, 0]) == ["sw_thermal_slowdown (25% of samples, more than 5%)"]
    # One 100 ms sample of a slowdown in a 4 s window is recorded, not a reason to throw the run away.
    momentary = [0] * 39 + [thermal]
    assert gpu.throttle_problems(momentary) == [] and gpu.reason_fractions(momentary)["sw_thermal_slowdown"] == 0.025
    assert gpu.throttle_problems([0] * 19 + [thermal] * 2)  # 9.5%: invalid
    settled = stability([100.0, 100.0, 100.0], RoundPolicy(3, 0.05, 5))
    assert "sw_thermal_slowdown" in untrusted_reason(0, settled, gpu_throttle=gpu.throttle_problems([thermal]))


def test_sampler_collects_during_the_window_and_marks_the_run_invalid():
    masks = itertools.chain([0, 0] + [pynvml.nvmlClocksEventReasonHwSlowdown] * 5, itertools.repeat(0))
    with gpu.ThrottleSampler(interval_s=0.01, read_mask=lambda: next(masks)) as sampler:
        import time

        time.sleep(0.2)
    assert 7 <= len(sampler.masks) <= 100 and sampler.problems[0].startswith("hw_slowdown (")
    assert sampler.summary()["gpu_clock_events"]["hw_slowdown"] > 0


class FakeNvml:
    """An NVML whose clock-event call exists or not (drivers older than R535 lack it)."""

    def __init__(self, has_event_reasons: bool, mask: int = 0x4):
        self.has_event_reasons, self.mask = has_event_reasons, mask

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        if not self.has_event_reasons:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self.mask

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self.mask | 0x1


def test_an_old_driver_falls_back_to_the_throttle_reasons_call():
    assert gpu.clock_reason_reader(FakeNvml(True), "h")() == 0x4
    assert gpu.clock_reason_reader(FakeNvml(False), "h")() == 0x5  # the older call's answer


def test_a_sampler_whose_nvml_call_raises_says_so_and_never_reports_not_throttled():
    def broken():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    with gpu.ThrottleSampler(interval_s=0.01, read_mask=broken) as sampler:
        import time

        time.sleep(0.05)
    assert not sampler.available and "mid-window" in sampler.unavailable_reason
    assert sampler.summary()["gpu_throttle"].startswith("unavailable: NVML call failed")
    assert gpu.nvml_required_failure(sampler, require_gpu=True).startswith("--require-gpu")
    assert gpu.nvml_required_failure(sampler, require_gpu=False) is None


def test_without_a_gpu_the_sampler_says_no_gpu():
    with gpu.ThrottleSampler(gpu_expected=False) as sampler:
        pass
    assert not sampler.available and sampler.summary()["gpu_throttle"] == "unavailable: no GPU"
    assert gpu.nvml_required_failure(sampler, require_gpu=True) == "--require-gpu: no GPU to sample"


def test_memory_wait_returns_when_memory_is_back_or_the_excess_at_the_deadline():
    readings = iter([900, 600, 410])
    assert gpu.wait_for_memory(lambda: next(readings), baseline=400, tolerance_bytes=16, timeout_s=5, poll_s=0) is None
    assert gpu.wait_for_memory(lambda: 1400, baseline=400, tolerance_bytes=16, timeout_s=0.05, poll_s=0.01) == 1000
    assert gpu.wait_for_memory(lambda: 1400, baseline=None, tolerance_bytes=16, timeout_s=5) is None  # no GPU


def test_an_unreadable_nvml_fails_under_require_gpu_and_is_a_recorded_warning_elsewhere():
    """NVML errors were swallowed (gpu_memory_used, the utilisation sampler): the leak check and GPU % went
    missing without a word."""
    def broken():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    used, problem = gpu.gpu_memory_reading(gpu_expected=True, read=broken)
    assert used is None and "NVMLError" in problem
    assert gpu.gpu_memory_reading(gpu_expected=False) == (None, None)  # no GPU: nothing to read, nothing wrong
    failure, warning = gpu.nvml_outcome(problem, require_gpu=True, what="memory before start")
    assert failure.startswith("--require-gpu: memory before start: NVML could not be read") and warning is None
    failure, warning = gpu.nvml_outcome(problem, require_gpu=False, what="memory before start")
    assert failure is None and "NVML could not be read" in warning
    assert gpu.nvml_outcome(None, require_gpu=True, what="x") == (None, None)


def test_a_utilisation_sampler_whose_nvml_call_raises_records_why_and_fails_under_require_gpu():
    from fixtures.measure.utilisation import UtilisationSampler

    class BrokenNvml:
        @staticmethod
        def nvmlDeviceGetUtilizationRates(handle):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    sampler = UtilisationSampler(lambda: set(), interval_s=0.01)
    sampler._nvml = (BrokenNvml, None)
    assert sampler._gpu_percent() is None
    assert "NVML call failed mid-window" in sampler.nvml_problem and sampler._nvml is None
    throttle = gpu.ThrottleSampler(read_mask=lambda: 0)
    throttle.available = True
    assert "GPU utilisation not sampled" in gpu.nvml_required_failure(throttle, True, sampler)
    assert gpu.nvml_required_failure(throttle, False, sampler) is None
