"""Each GPU-side decision as a pure function, its GPU branch exercised on a CPU machine (issue: GPU first
contact). LitServe hands a worker f"{accelerator}:{index}", so every decision takes 'cuda:0'."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from fixtures.variants import llm_variants
from servers.llm import GenerationFailed, compile_config, compile_plan, stream_tokens
from servers.llm_models import RECIPES, torchao_config
from servers.runtime import device_type


def test_litserve_s_device_string_is_cuda():
    assert device_type("cuda:0") == device_type("cuda") == "cuda" and device_type("cpu") == "cpu"


def test_int4_on_a_litserve_cuda_worker_picks_the_cuda_config():
    from torchao.quantization import Int4WeightOnlyConfig

    config = torchao_config("int4wo", "cuda:0")  # building a config touches no GPU
    assert isinstance(config, Int4WeightOnlyConfig) and str(config.int4_packing_format).endswith("tile_packed_to_4d")
    assert type(torchao_config("int4wo", "cpu")).__name__ == "PrototypeInt4WeightOnlyConfig"


def test_float8_runs_torch_s_kernels_by_name_and_the_weights_say_which_ran():
    """torchao's AUTO picks mslk's float8 kernels on sm90+ wherever mslk imports (a system-wide install seen through
    --system-site-packages); the recipe names torch's, and the model facts record what the weights carry."""
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.common import KernelPreference
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import Float8Tensor

    from servers.llm_models import quantized_kernels

    assert torchao_config("float8dq", "cuda:0").kernel_preference == KernelPreference.TORCH
    linear = torch.nn.Linear(64, 64, bias=False).to(torch.bfloat16)
    assert quantized_kernels(linear) == []
    # the weight quantize_ would give (from_hp runs on the CPU; quantize_ itself asks for sm89)
    weight = Float8Tensor.from_hp(linear.weight.detach(), granularity=PerRow(), kernel_preference=KernelPreference.TORCH)
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    assert quantized_kernels(linear) == ["torch"]


def test_cuda_int4_needs_sm80_on_the_gpu_tier_only():
    assert RECIPES["torchao_int4wo"].min_compute_capability == (8, 0)
    gpu, cpu = llm_variants("gpu")["llm_torchao_int4wo"], llm_variants("cpu")["llm_torchao_int4wo"]
    assert gpu.min_compute_capability == (8, 0) and cpu.min_compute_capability is None
    assert "needs compute capability >= (8, 0), this GPU has (7, 5)" in gpu.capability_skip_reason(True, (7, 5))  # T4
    assert gpu.capability_skip_reason(True, (8, 9)) is None and gpu.capability_skip_reason(False, None) is None
    assert cpu.capability_skip_reason(True, (7, 5)) is None  # a CPU spec on a GPU machine is not the GPU's business


def test_one_compile_chosen_on_purpose():
    cuda = compile_plan("cuda:0", static_compile=True)
    assert cuda == {"compile_mode": "reduce-overhead", "static_cache": True}  # CUDA graphs on the decode step
    assert compile_plan("cpu", True)["compile_mode"] == "default"
    assert compile_plan("cuda:0", static_compile=False) == {"compile_mode": None, "static_cache": False}
    config = compile_config("reduce-overhead")
    assert config.mode == "reduce-overhead" and config.dynamic is False and config._compile_all_devices


def test_transformers_compiles_the_decode_step_only_and_on_any_device_when_asked():
    """What compile_plan relies on: generate() runs the prefill through the plain call and the decode steps
    through get_compiled_call, and compiles on a CPU when the CompileConfig says _compile_all_devices."""
    import inspect

    from transformers.generation.utils import GenerationMixin

    sample = inspect.getsource(GenerationMixin._sample)
    assert "get_compiled_call" in sample and "self._prefill(" in sample
    assert "return self(**model_inputs" in inspect.getsource(GenerationMixin._prefill)
    assert "_compile_all_devices" in inspect.getsource(GenerationMixin._valid_auto_compile_criteria)


def test_generation_runs_on_one_long_lived_thread():
    executor = ThreadPoolExecutor(1)
    seen = set()

    def generate(streamer):
        seen.add(threading.get_ident())
        streamer.put(None)  # the prompt, skipped
        for token in (5, 6):
            streamer.queue.put(token)
        streamer.end()

    for _ in range(3):
        assert list(stream_tokens(executor, generate, 5)) == [5, 6]
    assert len(seen) == 1 and threading.get_ident() not in seen


def test_an_exception_in_generation_ends_the_stream_with_an_error_not_a_hang():
    executor = ThreadPoolExecutor(1)

    def generate(streamer):
        streamer.queue.put(7)
        raise RuntimeError("CUDA error: device-side assert triggered")

    start = time.monotonic()
    got = []
    with pytest.raises(GenerationFailed, match="device-side assert"):
        for token in stream_tokens(executor, generate, timeout_s=30):
            got.append(token)
    assert got == [7] and time.monotonic() - start < 5
    # The thread is still there for the next request.
    assert list(stream_tokens(executor, lambda s: s.end(), timeout_s=5)) == []


def test_a_generation_that_stalls_ends_with_an_error_at_the_token_timeout():
    executor = ThreadPoolExecutor(1)
    release = threading.Event()
    with pytest.raises(GenerationFailed, match="no token for 0.2 s"):
        list(stream_tokens(executor, lambda s: release.wait(5), timeout_s=0.2))
    release.set()


def test_the_datasheet_row_of_a_mapped_cuda_device():
    from fixtures.measure.device_peaks import datasheet_for

    name, sheet, status = datasheet_for({"cuda_index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6})
    assert status == "known" and sheet["bf16_tflops"] == 989.5
    assert datasheet_for({"cuda_index": 0, "name": "NVIDIA B300", "memory_gib": 270.0})[2].startswith("unknown: unknown GPU")
    assert datasheet_for({"cuda_index": 1, "name": None})[:2] == ("cuda device 1", None)  # no NVML: measured peaks only


def test_gpu_smoke_touches_each_precision_once_and_every_llm_recipe():
    from fixtures.variants import classifier_variants, gpu_smoke_ids, llm_variants

    ids = gpu_smoke_ids()
    steps = classifier_variants("gpu")
    chosen = {i[len("gpu-"):-len("-c8")] for i in ids if i.endswith("-c8")}
    assert {steps[s].option("precision") for s in chosen} == {spec.option("precision") for spec in steps.values()}
    assert {"compile", "pinned"} <= chosen and all(i.endswith("-c8") or "llm" in i for i in ids)
    recipes = {spec.option("recipe") for spec in llm_variants("gpu").values()}
    assert {spec.option("recipe") for spec in llm_variants("gpu").values() if spec.name in ids} == recipes
    # one batch window touches the batched path; the others are the timed run's to compare
    assert "gpu-llm_batched_bf16" in ids and "gpu-llm_batched_bf16_window50ms" not in ids


def test_the_gpu_tier_measures_two_batch_windows_of_its_batched_recipe_and_the_cpu_tier_one():
    from fixtures.variants import llm_variants

    windows = {spec.name: spec.option("batch-timeout") for spec in llm_variants("gpu").values() if spec.option("batch-timeout")}
    assert windows == {"gpu-llm_batched_bf16": 0.01, "gpu-llm_batched_bf16_window50ms": 0.05}
    assert [spec.option("batch-timeout") for spec in llm_variants("cpu").values() if spec.option("batch-timeout")] == [0.05]


def test_the_gpu_llm_sweep_goes_to_64_users_batched_and_to_8_one_at_a_time():
    """What gpu-bench.yml's llm job collects from tests/bench/test_llm.py on a GPU: every recipe at one user, the
    one-at-a-time recipes at 2-8 users (beyond, a batch-1 server only queues), the batched one at 2-64."""
    import subprocess
    import sys

    from fixtures.drive.server import REPO_ROOT

    listed = subprocess.run([sys.executable, "-m", "pytest", "tests/bench/test_llm.py", "--collect-only", "-q", "-m", "gpu",
                             "-p", "no:cacheprovider"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120).stdout
    ids = {line.split("[", 1)[1].rstrip("]") for line in listed.splitlines() if "[gpu-" in line}
    for name in ("gpu-llm_batched_bf16", "gpu-llm_batched_bf16_window50ms"):  # each window over the whole sweep
        batched = {i for i in ids if i.startswith(f"{name}-c")}
        assert {int(i.rsplit("-c", 1)[1]) for i in batched} == {2, 4, 8, 16, 32, 64}
    assert {i for i in ids if i.startswith("gpu-llm_eager_bf16-c")} == {f"gpu-llm_eager_bf16-c{c}" for c in (2, 4, 8)}
    assert "gpu-llm_torchao_float8" in ids and "gpu-llm_torchao_float8-c8" in ids and "gpu-llm_batched_bf16" in ids


def test_every_benchmarks_ending_fails_a_gpu_run_whose_nvml_was_not_read_under_require_gpu():
    """fixtures.closed_loop.end_benchmark, on the GPU tier with --require-gpu: an unread NVML fails the benchmark
    before any floor is looked at (the classifier's, a LitAPI's and the LLM's ending alike)."""
    from types import SimpleNamespace

    from fixtures.closed_loop import end_benchmark

    request = SimpleNamespace(config=SimpleNamespace(getoption=lambda name: name == "--require-gpu"),
                              node=SimpleNamespace(callspec=SimpleNamespace(id="gpu-x-c8")))
    unread = SimpleNamespace(unavailable_reason="NVML library not found", available=False)
    floors_looked_at = []
    kwargs = dict(device="cuda", server=SimpleNamespace(state=lambda: "running"), failures="", throttle=unread,
                  utilisation=SimpleNamespace(nvml_problem=None), sanity={}, floor_ceilings={},
                  floor_failures=lambda *a: floors_looked_at.append(a) or [], machine_class=lambda device: "gpu/1x H100")
    with pytest.raises(AssertionError, match="GPU clock events not sampled"):
        end_benchmark(request, SimpleNamespace(disabled=False), {"valid": True}, **kwargs)
    assert floors_looked_at == []
    read = SimpleNamespace(unavailable_reason=None, available=True)
    end_benchmark(request, SimpleNamespace(disabled=False), {"valid": True, "api_over_direct": 0.5}, **{**kwargs, "throttle": read})
    assert len(floors_looked_at) == 1  # read: on to the floors of the class


@pytest.mark.parametrize("smoke", [True, False])
def test_on_a_gpu_the_smoke_pass_leaves_the_batch_number_steps_to_batch_workers_too(monkeypatch, smoke):
    """A GPU runner's make test skips gpu-timeout_<ms> and the like as the CPU's does: the session's direct ceilings
    leave them out, so running one would find no ceiling. A timed session runs them."""
    from types import SimpleNamespace

    from fixtures import plugin
    from fixtures.variants import batch_number_steps

    spec = next(iter(batch_number_steps("gpu").values()))
    item = SimpleNamespace(callspec=SimpleNamespace(params={"server": spec}), config=None,
                           get_closest_marker=lambda name: object() if name in ("gpu", "benchmark") else None)
    monkeypatch.setattr(plugin, "_check_gpu", lambda item: None)  # a GPU that passes its checks
    monkeypatch.setattr(plugin, "smoke_pass", lambda config: smoke)
    if smoke:
        with pytest.raises(pytest.skip.Exception, match="serves batch_workers' code"):
            plugin.pytest_runtest_setup(item)
    else:
        plugin.pytest_runtest_setup(item)


def test_the_in_process_measurements_hand_their_cached_gpu_memory_back(monkeypatch):
    """The peaks and direct ceilings run in the pytest process: on a GPU their cached blocks stayed reserved for the
    whole session (several GB, a 24 GB L4's servers need them). Synchronised, then emptied; never a CUDA start-up
    where no measurement used CUDA."""
    from fixtures.plugin import release_cached_gpu_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    release_cached_gpu_memory()
    assert calls == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    release_cached_gpu_memory()
    assert calls == ["synchronize", "empty_cache"]


def test_a_server_stopped_before_the_next_spec_s_test_is_checked_for_leaks_once_then_and_not_beside_a_measurement(monkeypatch):
    """The next spec's first test stops the server it replaces before its fixtures (the in-process ceilings among
    them) run; the leak verdict is taken then, before the pytest process's own CUDA use, and pytest's teardown of
    that server reads the same verdict instead of measuring again."""
    from types import SimpleNamespace

    from fixtures import plugin
    from fixtures.measure import gpu

    stops, readings = [], iter([2**30 + 600 * 2**20])  # 600 MiB above a 1 GiB baseline once, then no more readings
    old = SimpleNamespace(spec=SimpleNamespace(name="gpu-baseline"), stop=lambda: stops.append("gpu-baseline"))
    monkeypatch.setattr(plugin, "_started_servers", [old])
    monkeypatch.setattr(plugin, "_memory_before", {id(old): 2**30})
    monkeypatch.setattr(plugin, "_memory_excess", {})
    monkeypatch.setattr(gpu, "gpu_memory_used", lambda: next(readings))
    monkeypatch.setattr(gpu, "wait_for_memory", lambda read, baseline, tolerance, timeout_s: read() - baseline)
    same_spec = SimpleNamespace(callspec=SimpleNamespace(params={"server": SimpleNamespace(name="gpu-baseline")}))
    plugin.stop_the_server_being_replaced(same_spec)
    assert stops == []  # a test of the running spec keeps its server
    next_spec = SimpleNamespace(callspec=SimpleNamespace(params={"server": SimpleNamespace(name="gpu-batch_workers")}))
    plugin.stop_the_server_being_replaced(next_spec)
    assert stops == ["gpu-baseline"]
    assert plugin.stop_and_check_memory(old) == 600 * 2**20 and stops == ["gpu-baseline"]  # the teardown's read
