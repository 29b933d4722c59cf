"""Ceilings arithmetic: FLOP counting against hand counts, the peak table, ratios, floors."""

import pytest
import torch

from fixtures.measure import model_counts, roofline
from fixtures.measure.device_peaks import DeviceCeilings, time_per_call
from fixtures.measure.gpu_datasheets import GPU_PEAKS, UnknownGPU, lookup_gpu
from fixtures.record.floors import Floor, check_floor, find_floor, load_floors


def test_flops_of_a_linear_layer_match_the_hand_count():
    layer = torch.nn.Linear(8, 4, bias=False)
    # batch 3: 3 x 4 outputs, each 8 multiply-adds = 2 FLOPs each -> 192 FLOPs, 64 per sample
    assert model_counts.flops_per_sample(layer, torch.zeros(3, 8)) == 2 * 8 * 4


def test_flops_of_a_conv_layer_match_the_hand_count():
    conv = torch.nn.Conv2d(3, 16, kernel_size=3, bias=False)
    # 10x10 input, no padding -> 8x8 outputs per channel; each output: 3*3*3 multiply-adds
    expected = 2 * 16 * 8 * 8 * 3 * 3 * 3
    assert model_counts.flops_per_sample(conv, torch.zeros(2, 3, 10, 10)) == expected


def test_parameter_bytes_follow_precision():
    layer = torch.nn.Linear(10, 10)  # 110 parameters
    assert model_counts.parameter_bytes(layer) == 110 * 4
    assert model_counts.parameter_bytes(layer.to(torch.bfloat16)) == 110 * 2


def test_rooflines_and_ratios():
    assert roofline.compute_roofline(1e12, 2e9) == 500.0  # 1 TFLOP/s over 2 GFLOP per image
    assert roofline.memory_roofline(3e12, 1.5e9) == 2000.0  # e.g. decode: 3 TB/s over 1.5 GB per token
    assert roofline.roofline(500.0, 2000.0) == 500.0
    assert roofline.roofline(None, 2000.0) == 2000.0
    assert roofline.roofline(None, None) is None
    assert roofline.compute_roofline(None, 2e9) is None
    assert roofline.ratio(45.0, 90.0) == 0.5
    assert roofline.ratio(45.0, None) is None and roofline.ratio(None, 90.0) is None
    # weights once per batch of 8 plus a 3x224x224 fp32 input
    assert roofline.classifier_bytes_per_sample(8_000, 8, 602_112) == 1_000 + 602_112


def test_fp32_on_cuda_takes_each_kernel_familys_own_tf32_setting():
    # PyTorch's defaults: cuDNN convolutions on TF32, cuBLAS matmuls not.
    keys = roofline.kernel_peak_keys("fp32", "cuda", cudnn_allow_tf32=True, matmul_allow_tf32=False)
    assert (keys["conv"], keys["matmul"]) == ("tf32", "fp32") and "allow_tf32" in keys["reason"]
    keys = roofline.kernel_peak_keys("fp32", "cuda", cudnn_allow_tf32=False, matmul_allow_tf32=True)
    assert (keys["conv"], keys["matmul"]) == ("fp32", "tf32")
    assert roofline.kernel_peak_keys("fp32", "cpu", True, True)["conv"] == "fp32"
    assert roofline.kernel_peak_keys("bf16", "cuda", True, False)["matmul"] == "bf16"


def test_a_matmul_heavy_net_gets_the_fp32_peak_a_conv_net_the_tf32_one():
    peaks = {"conv": 156e12, "matmul": 19.5e12}  # A100: TF32 vs FP32
    conv_net = roofline.mixed_compute_roofline({"conv": 4e9, "matmul": 1e6}, peaks)
    matmul_net = roofline.mixed_compute_roofline({"conv": 1e6, "matmul": 4e9}, peaks)
    assert conv_net == pytest.approx(156e12 / 4e9, rel=0.01) and matmul_net == pytest.approx(19.5e12 / 4e9, rel=0.01)
    assert roofline.mixed_compute_roofline({"conv": 1e9, "matmul": 1e9}, {"conv": 1e12, "matmul": None}) is None


def test_flops_split_by_kernel_family():
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    split = model_counts.flops_by_kernel(model, torch.zeros(2, 3, 8, 8))
    assert split["conv"] == 2 * 8 * 3 * 9 * 36 and split["matmul"] == 2 * 8 * 36 * 10


def test_known_gpus_by_nvml_name_and_memory():
    h100 = lookup_gpu("NVIDIA H100 80GB HBM3", 79.6)  # NVML on the lent H100: 81559 MiB
    assert h100.name == "H100 SXM" and h100.bf16_tflops == 989.5 and h100.memory_bandwidth_gbs == 3350
    assert h100.flops_per_s("bf16") == 989.5e12 and h100.bytes_per_s == 3.35e12
    assert lookup_gpu("NVIDIA H200", 140.4).memory_bandwidth_gbs == 4800
    assert lookup_gpu("Tesla T4", 15.0).flops_per_s("tf32") is None  # Turing has no TF32
    assert lookup_gpu("NVIDIA A100-SXM4-80GB", 79.2).memory_bandwidth_gbs == 2039
    # NVML's names and memory as runners of these boards report them (143771, 146831 and about 97,000 MiB)
    h200_nvl = lookup_gpu("NVIDIA H200 NVL", 140.4)
    assert h200_nvl.bf16_tflops == 835.5 and h200_nvl.memory_bandwidth_gbs == 4800
    assert lookup_gpu("NVIDIA GH200 144G HBM3e", 143.4).memory_bandwidth_gbs == 4900
    assert lookup_gpu("NVIDIA GH200 480GB", 94.5).memory_bandwidth_gbs == 4000


def test_every_peak_entry_names_its_source_and_is_dense():
    for name, peaks in GPU_PEAKS.items():
        assert peaks.source.startswith("http"), name
        if peaks.bf16_tflops and peaks.tf32_tflops:
            assert peaks.bf16_tflops == pytest.approx(2 * peaks.tf32_tflops, rel=0.02), name


def test_unknown_gpu_is_an_error_not_a_guess():
    with pytest.raises(UnknownGPU, match="unknown GPU"):
        lookup_gpu("NVIDIA Imaginary 9000", 80)
    with pytest.raises(UnknownGPU, match="reports 40.0 GiB"):
        lookup_gpu("NVIDIA H100 80GB HBM3", 40.0)


def test_device_ceilings_expose_datasheet_peaks_only_when_known():
    cpu = DeviceCeilings("cpu", "Xeon", 2, {"fp32": 3e11}, 2.6e10, None, "cpu: no datasheet")
    assert cpu.datasheet_flops_per_s("fp32") is None and cpu.datasheet_bytes_per_s is None
    from dataclasses import asdict

    gpu = DeviceCeilings("cuda", "NVIDIA H200", 16, {}, 4.3e12, asdict(GPU_PEAKS["NVIDIA H200"]), "known")
    assert gpu.datasheet_flops_per_s("bf16") == 989.5e12
    assert gpu.datasheet_flops_per_s("int8") == 1979e12
    assert gpu.datasheet_bytes_per_s == 4.8e12


def test_time_per_call_runs_until_min_time():
    calls = []
    seconds = time_per_call(lambda: calls.append(1), "cpu", min_time_s=0.01, warmup=2)
    assert seconds > 0 and len(calls) > 2


FLOORS = {
    "cpu/Xeon/2c/amx": {
        "machine": "2-core Xeon", "measured": "2026-11-23", "margin": "30%",
        "cpu-batched-c8": {"min_rps": 90.0, "min_api_over_direct": 0.3},
    },
}


def test_floor_lookup():
    floor = find_floor(FLOORS, "cpu/Xeon/2c/amx", "cpu-batched-c8")
    assert floor.minimums == {"rps": 90.0, "api_over_direct": 0.3}
    assert floor.provenance == {"machine": "2-core Xeon", "measured": "2026-11-23", "margin": "30%"}
    assert find_floor(FLOORS, "cpu/Xeon/2c/amx", "cpu-baseline-c1") is None
    assert find_floor(FLOORS, "NVIDIA H100 80GB HBM3", "cpu-batched-c8") is None
    with pytest.raises(ValueError, match="must start with min_, range_ or spread_"):
        find_floor({"cpu": {"x": {"rps": 1}}}, "cpu", "x")


def test_floor_check_message_shows_measured_floor_and_ceiling():
    floor = find_floor(FLOORS, "cpu/Xeon/2c/amx", "cpu-batched-c8")
    assert check_floor(floor, {"rps": 120.0, "api_over_direct": 0.5}, {"direct": 230.0}) == []
    failures = check_floor(floor, {"rps": 80.0, "api_over_direct": 0.5}, {"direct": 230.0, "roofline": None})
    assert len(failures) == 1
    assert "rps measured 80 < floor 90" in failures[0]
    assert "direct 230" in failures[0] and "2-core Xeon" in failures[0] and "margin 30%" in failures[0]


def test_a_missing_metric_fails_its_floor():
    floor = Floor("cpu", "b", {"tokens_per_s": 10.0}, {})
    assert "measured missing" in check_floor(floor, {}, {})[0]


def test_the_floors_file_parses_and_every_floor_says_where_it_came_from():
    floors = load_floors()
    for device_class, entries in floors.items():
        benchmarks = {k: v for k, v in entries.items() if isinstance(v, dict)}
        if benchmarks:
            assert {"machine", "measured", "margin"} <= entries.keys(), device_class
        for benchmark_id in benchmarks:
            assert find_floor(floors, device_class, benchmark_id).minimums


def test_a10g_compute_peaks_are_unknown_not_borrowed_from_the_a10():
    a10g = GPU_PEAKS["NVIDIA A10G"]
    assert (a10g.fp32_tflops, a10g.tf32_tflops, a10g.bf16_tflops) == (None, None, None)
    assert a10g.memory_bandwidth_gbs == 600 and "aws.amazon.com" in a10g.source


def test_a_peak_is_the_best_of_its_repeats():
    from fixtures.measure.device_peaks import best_time_per_call

    durations = iter([0.0, 0.0, 0.0, 0.05, 0.0, 0.01, 0.0, 0.03])  # warm-ups and timed calls

    def call():
        import time

        time.sleep(next(durations, 0.03))

    assert best_time_per_call(call, "cpu", min_time_s=0.0, repeats=3) < 0.03


def test_the_direct_ceiling_is_measured_at_the_batches_each_concurrency_can_form():
    from fixtures.measure.ceilings import ceiling_batch_sizes

    assert ceiling_batch_sizes((1, 8), 4, 1) == [1, 4]  # maxbatch_4: max_batch_size itself
    assert ceiling_batch_sizes((1, 8), 16, 1) == [1, 8]  # 8 clients never fill a batch of 16
    assert ceiling_batch_sizes((1, 8), 8, 2) == [1, 4, 8]  # two workers side by side at 4 each, or one at 8
    assert ceiling_batch_sizes((1, 8), 1, 2) == [1]
    assert ceiling_batch_sizes((1, 8, 32, 64, 128, 256), 64, 1) == [1, 8, 32, 64]


def test_at_one_client_the_ceiling_is_one_worker_at_batch_one():
    """The ceiling took the best batch x workers for every concurrency: at c=1 a batch-8, two-worker 'direct'
    that no single client can ever see (a 2-core AMD EPYC: 0.050 api/direct against 334 req/s)."""
    from fixtures.measure.ceilings import direct_ceiling_at, formable_batches

    by_batch = {1: 40.0, 4: 100.0, 8: 160.0}
    assert formable_batches(1, 8, 2) == [(1, 1)]
    at_one = direct_ceiling_at(1, by_batch, max_batch_size=8, parallel_workers=2)
    assert (at_one.rps, at_one.batch_size, at_one.workers) == (40.0, 1, 1)
    at_eight = direct_ceiling_at(8, by_batch, max_batch_size=8, parallel_workers=2)
    assert (at_eight.rps, at_eight.batch_size, at_eight.workers) == (200.0, 4, 2)  # 2 x 100 beats 1 x 160
    assert "2 worker(s) x batches of 4" in at_eight.as_dict()["direct_assumes"]
    with pytest.raises(KeyError, match="batch 8 was not measured"):
        direct_ceiling_at(8, {1: 40.0}, max_batch_size=8, parallel_workers=1)


def test_decode_bytes_come_from_the_served_model_s_raw_facts():
    """The LLM worker used to import the harness (fixtures.measure.roofline) to compute bytes per token; it now
    reports raw facts and the harness computes the roofline from them."""
    import transformers

    from fixtures.measure.roofline import decode_bytes_per_token
    from servers.llm_models import model_facts

    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    facts = model_facts(model)
    assert facts["embedding_tied_to_head"] and facts["head_dim"] == 8 and facts["input_embedding_rows"] == 100
    assert facts["stored_bytes"] == sum(t.numel() * 2 for t in list(model.parameters()) + list(model.buffers()))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert facts["matmul_weight_elements"] == linear  # the tied head is an nn.Linear sharing the embedding
    figures = decode_bytes_per_token({**facts, "prompt_tokens": 10, "max_new_tokens": 4, "kv_cache_dtype": "bf16"})
    assert figures["weight_bytes_read_per_token"] == facts["stored_bytes"] + 100 * 32 * 2 / 100  # tied: all read + one row
    assert figures["kv_bytes_read_per_token"] == 2 * 2 * 2 * 8 * 2 * 12  # K and V, layers, kv heads, head_dim, bf16, context 12
    assert figures["flops_per_token"] == 2 * linear


class TwoLinears:
    """A LitAPI-shaped class (setup, decode_request, batch, predict, unbatch, encode_response) holding its torch
    module as self.net, for fixtures.measure.ceilings.code_ceilings: imported by name as a user's class would be."""

    def __init__(self, max_batch_size=1, batch_timeout=0.0):
        self.max_batch_size = max_batch_size

    def setup(self, device):
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Linear(10, 2)).to(torch.bfloat16)

    def decode_request(self, request):
        return torch.tensor(request["x"], dtype=torch.bfloat16)

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        return self.net(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return output.float().tolist()


def _code_ceilings(torch_module, monkeypatch):
    from fixtures.litapi import LitAPIBenchmark, LitAPICase, Serving
    from fixtures.measure import ceilings
    from fixtures.measure.ceilings import code_ceilings

    # The arithmetic, not the probes: peaks of 1e11 FLOP/s per family and 2e10 B/s (measuring them takes a minute).
    known = DeviceCeilings("cpu", "test", 1, {"fp32": 1e11, "bf16": 1e11}, 2e10, None, "cpu: test", {"fp32": 1e11, "bf16": 1e11})
    monkeypatch.setattr(ceilings, "device_ceilings", lambda device, threads=None, quick=False: known)

    bench = LitAPIBenchmark(api="tests.test_roofline:TwoLinears", payloads=({"x": [1.0] * 6},), check=lambda p, a: None,
                            variants={"batching": Serving(max_batch_size=4)}, torch_module=torch_module)
    return code_ceilings(LitAPICase(bench, "cpu", "batching"), "cpu", 1, (1, 4), min_time_s=0.03)


def test_a_litapi_naming_its_torch_module_gets_rooflines_from_its_own_predict(monkeypatch):
    found = _code_ceilings("net", monkeypatch)
    # FLOPs of predict on the payloads, per request: 2 per weight of each Linear (bf16 weights: the bf16 peak).
    assert found.flops_per_sample == 2 * (6 * 10 + 10 * 2) and found.peak_dtype["matmul"] == "bf16"
    assert found.weight_bytes == 2 * (6 * 10 + 10 + 10 * 2 + 2) and found.bytes_per_sample == found.weight_bytes / 4
    assert found.compute_roofline_rps_measured == pytest.approx(1e11 / found.flops_per_sample)  # one worker fits
    assert found.memory_roofline_rps_measured == pytest.approx(2e10 / found.bytes_per_sample)
    assert found.roofline_rps_measured == min(found.compute_roofline_rps_measured, found.memory_roofline_rps_measured)
    assert "api.net" in found.roofline_basis and set(found.direct_rps_by_batch) == {1, 4}


def test_a_litapi_naming_no_module_says_it_has_no_roofline(monkeypatch):
    found = _code_ceilings(None, monkeypatch)
    assert found.roofline_rps_measured is None and found.flops_per_sample is None
    assert found.roofline_basis.startswith("no roofline") and found.direct_rps_best > 0


def test_a_smoke_pass_probes_the_device_for_a_tenth_of_the_time(monkeypatch):
    """make test's smoke pass asserts nothing against the peaks: quick=True probes each kernel a tenth as long."""
    from fixtures.measure import device_peaks

    asked = {}

    def fake_timer(quick):
        def timed(fn, device, min_time_s, *args, **kwargs):
            asked.setdefault(quick, []).append(min_time_s)
            return 1.0
        return timed

    for quick in (False, True):
        monkeypatch.setattr(device_peaks, "best_time_per_call", fake_timer(quick))
        monkeypatch.setattr(device_peaks, "time_per_call", fake_timer(quick))
        monkeypatch.setattr(device_peaks, "measure_copy_bandwidth",
                            lambda device, nbytes, min_time_s, quick=quick: asked.setdefault(quick, []).append(min_time_s) or 1.0)
        device_peaks.device_ceilings.__wrapped__("cpu", 1, quick=quick)
    assert len(asked[True]) == len(asked[False]) > 0
    assert all(q == pytest.approx(full / 10) for q, full in zip(asked[True], asked[False]))


def test_the_sessions_of_one_functional_test_run_share_one_measurement_of_the_peaks(tmp_path, monkeypatch):
    """A functional test's inner pytest sessions (tests/inner.py) read the peaks the first one measured, probed as
    briefly as a smoke pass probes them; without the cache (every benchmark) each measures its own, in full."""
    from fixtures.measure import device_peaks
    from fixtures.measure.inner_session_cache import INNER_SESSION_CACHE_ENV

    measured = []
    known = DeviceCeilings("cpu", "test", 1, {"fp32": 1e11}, 2e10, None, "cpu: test", {"fp32": 1e11})
    monkeypatch.setattr(device_peaks, "_measure_device_ceilings", lambda *args: measured.append(args) or known)
    monkeypatch.delenv(INNER_SESSION_CACHE_ENV, raising=False)
    device_peaks.device_ceilings.__wrapped__("cpu", 1)
    device_peaks.device_ceilings.__wrapped__("cpu", 1)
    assert [quick for _, _, quick in measured] == [False, False]
    monkeypatch.setenv(INNER_SESSION_CACHE_ENV, str(tmp_path / "cache"))
    first = device_peaks.device_ceilings.__wrapped__("cpu", 1)
    again = device_peaks.device_ceilings.__wrapped__("cpu", 1)
    smoke = device_peaks.device_ceilings.__wrapped__("cpu", 1, quick=True)
    assert [quick for _, _, quick in measured] == [False, False, True] and first == again == smoke == known
    assert [p.name for p in (tmp_path / "cache").glob("*.json")] == ["device_peaks-cpu-1t-quick.json"]


def test_inner_sessions_probe_the_client_ceiling_with_a_tenth_of_the_requests(tmp_path, monkeypatch):
    from fixtures.measure import client_ceiling
    from fixtures.measure.inner_session_cache import INNER_SESSION_CACHE_ENV

    asked = []
    monkeypatch.setattr(client_ceiling, "_ceilings", lambda server, log_dir, levels, requests: asked.append(requests) or {8: 1.0})
    monkeypatch.delenv(INNER_SESSION_CACHE_ENV, raising=False)
    client_ceiling.client_ceiling.__wrapped__(tmp_path, (8,))
    monkeypatch.setenv(INNER_SESSION_CACHE_ENV, str(tmp_path / "cache"))
    client_ceiling.client_ceiling.__wrapped__(tmp_path, (8,))
    assert asked == [client_ceiling.PROBE_REQUESTS] * 2 + [client_ceiling.SHORT_PROBE_REQUESTS] * 2  # bare, then no-op


def test_inner_sessions_side_by_side_measure_once(tmp_path, monkeypatch):
    """Two sessions asking at once (make test's two xdist workers): one measures, the other waits for its figure."""
    import threading
    import time

    from fixtures.measure.inner_session_cache import INNER_SESSION_CACHE_ENV, cached

    monkeypatch.setenv(INNER_SESSION_CACHE_ENV, str(tmp_path / "cache"))
    measured, got = [], []

    def measure():
        measured.append(1)
        time.sleep(0.3)  # long enough for the other thread to ask meanwhile
        return 42

    threads = [threading.Thread(target=lambda: got.append(cached("peaks", measure, lambda v: v, lambda v: v)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert got == [42, 42] and len(measured) == 1
