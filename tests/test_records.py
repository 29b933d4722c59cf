"""The record layer on fixed inputs: each builder turns known load results, rounds and ceilings into the
saved figures; the catalogue refuses an undeclared key; runs saved before the record layer still read."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixtures.measure.knee import Capacity, KneePolicy, find_knee

from fixtures.closed_loop import Measurement
from fixtures.drive.load import WRONG_ANSWER, LoadRun, RequestResult
from fixtures.drive.stream import StreamResult
from fixtures.measure.ceilings import ClassifierCeilings
from fixtures.measure.device_peaks import DeviceCeilings
from fixtures.measure.rounds import RoundPolicy, stability
from fixtures.record.figures import FIGURES, FLOORED_FIGURES, HIGHER, TREND_FIGURES, UnknownFigure, checked_record, markdown
from fixtures.record.records import (classifier_record, framework_record, knee_record, llm_record, open_loop_record, own_recipe,
                                     soak_record)
from fixtures.variants import classifier_specs, llm_variants
from servers import classifier
from servers.llm_models import RECIPES

DATA = Path(__file__).parent / "data"
QUIET = SimpleNamespace(problems=[], summary=lambda: {"gpu_throttle": [], "gpu_clock_events": {}, "gpu_clock_samples": 4})
IDLE = SimpleNamespace(disturbed=None, summary=lambda: {"cpu_util_pct": 150.0, "server_cpu_cores": 1.5, "client_cpu_cores": 0.4,
                                                        "gpu_util_pct": None, "gpu_util_problem": "no GPU",
                                                        "utilisation_samples": 4})
CLIENT_CEILING = {"bare_aiohttp_rps": {8: 9000.0}, "litserve_noop_rps": {8: 2000.0}}


def ceilings() -> ClassifierCeilings:
    return ClassifierCeilings(
        direct_rps_by_batch={1: 40.0, 4: 60.0, 8: 64.0}, direct_threads=1, direct_parallel_workers=2,
        direct_max_batch_size=8, direct_rps_best=128.0, peak_dtype={"conv": "fp32", "matmul": "fp32"},
        flops_per_sample=1e9, flops_by_kernel={"conv": 1e9, "matmul": 0.0}, weight_bytes=4, bytes_per_sample=1.0,
        compute_roofline_rps_measured=400.0, compute_roofline_rps_datasheet=None, memory_roofline_rps_measured=None,
        memory_roofline_rps_datasheet=None, roofline_rps_measured=400.0, roofline_rps_datasheet=None)


def load_run(latencies, wall_s, wrong=0) -> LoadRun:
    results = [RequestResult(True, 200, latency) for latency in latencies]
    results += [RequestResult(False, 200, 0.1, "top-1 differs", kind=WRONG_ANSWER)] * wrong
    return LoadRun(tuple(results), wall_s, concurrency=8)


def batch_workers_record(runs):
    spec = classifier_specs("cpu")["batch_workers"]
    served = classifier.config_from_args(classifier.parse_args(spec.argv(0)[2:]))
    rounds = stability([len([r for r in run.results if r.ok]) / run.wall_s for run in runs], RoundPolicy(3, 0.10, 8))
    measured = Measurement(runs, rounds, round_requests=100, batches={"0": {"4": 20, "3": 5}},
                                     rss_before=300 * 2**20, rss_after=301 * 2**20, throttle=QUIET, utilisation=IDLE,
                                     serving={"accelerator": "cpu", "threads_per_worker": 1, "transport": "mp",
                                              "fast_queue": True})
    return checked_record(classifier_record(  # every key a declared figure: it can be saved
        spec=spec, served=served, measured=measured, concurrency=8, ceilings=ceilings(), client_ceiling=CLIENT_CEILING,
        answer_check="labels", payload="photos", ready_s=3.14159))


def test_a_classifier_record_from_known_rounds():
    runs = [load_run([0.05] * 100, 1.25), load_run([0.04] * 100, 1.0), load_run([0.04] * 100, 1.0), load_run([0.04] * 100, 1.0)]
    record = batch_workers_record(runs)
    assert record["kind"] == "closed_loop"  # every record says what kind it is (fixtures.record.records.record_kind)
    assert record["rps"] == pytest.approx(100.0)  # the last 3 rounds: 300 requests in 3 s
    assert record["rps_per_round"] == pytest.approx([80.0, 100.0, 100.0, 100.0])
    assert record["latency_p99_ms"] == pytest.approx(40.0) and record["requests"] == 300
    assert record["latency_max_ms"] == pytest.approx(40.0)
    # the ceiling at c=8 with 2 workers: 2 x batch 4 (2 x 60) beats 1 x batch 8 (64)
    assert (record["direct_rps"], record["direct_workers"], record["direct_batch_size"]) == (120.0, 2, 4)
    assert record["api_over_direct"] == pytest.approx(100 / 120)
    assert record["direct_over_roofline_measured"] == pytest.approx(128 / 400)
    assert record["observed_mean_batch_size"] == pytest.approx((4 * 20 + 3 * 5) / 25)
    assert record["valid"] and record["invalid_reason"] is None and record["server_ready_s"] == 3.14
    assert record["client_ceiling_rps"] == 9000.0 and record["server_rss_mib_after"] == 301.0
    # what served, as the server reported it: asked for the ZMQ transport, ran mp
    assert (record["device"], record["threads_per_worker"], record["transport"], record["fast_queue"]) == ("cpu", 1, "mp", True)
    assert set(FLOORED_FIGURES) - {"tokens_per_s"} <= set(record)  # what floors.toml reads


def test_a_wrong_answer_in_any_round_makes_the_classifier_record_invalid():
    runs = [load_run([0.04] * 99, 1.0, wrong=1), load_run([0.04] * 100, 1.0), load_run([0.04] * 100, 1.0)]
    record = batch_workers_record(runs)
    assert not record["valid"] and "1 wrong answer" in record["invalid_reason"] and record["wrong_answers"] == 1


def stream(start, first_token, gap, tokens) -> StreamResult:
    times = tuple(start + first_token + i * gap for i in range(tokens))
    return StreamResult(True, 200, start, times, times[-1], tokens, 20, finish_reason="length")


LLM_REPORT = {"direct_tokens_per_s": 25.0, "direct_tokens_per_s_runs": [24.0, 25.0, 23.0], "direct_threads": 1,
              "prompt_tokens": 20, "max_new_tokens": 32, "kv_cache_dtype": "bf16", "stored_bytes": 270_000_000,
              "stored_bytes_by_dtype": {"bfloat16": 270_000_000}, "input_embedding_bytes": 28_311_552,
              "input_embedding_rows": 49152, "embedding_tied_to_head": True, "matmul_weight_elements": 134_000_000,
              "num_hidden_layers": 30, "num_key_value_heads": 3, "head_dim": 64}
LLM_PEAKS = DeviceCeilings("cpu", "AMD EPYC", 2, {"bf16": 1e11}, 20e9, None, "cpu: no datasheet, measured ceilings only")
LLM_TIER = SimpleNamespace(max_new_tokens=32, device="cpu", threads=1, ttft_slo_s=0.5, tpot_slo_s=0.06)


def llm_record_of(rounds, spec_name="llm_eager_bf16", **kwargs):
    levels = stability([20.0, 20.0, 20.0], RoundPolicy(3, 0.10, 6))
    spec = llm_variants("cpu")[spec_name]
    return checked_record(llm_record(spec=spec, tier=LLM_TIER, served=own_recipe(spec, RECIPES["eager_bf16"]),
                                     rounds=rounds, stability=levels, direct_report=LLM_REPORT, peaks=LLM_PEAKS,
                                     throttle=QUIET, utilisation=IDLE, rss_before=0, rss_after=0,
                                     answer_check="exact length", ready_s=1.0, **kwargs))


def test_an_llm_record_holds_tokens_per_s_against_the_direct_ceiling_and_the_bandwidth_roofline():
    record = llm_record_of([[stream(0.0, 0.1, 0.05, 32), stream(2.0, 0.1, 0.05, 32)] for _ in range(3)])
    assert record["kind"] == "llm"
    per_request = 32 / (0.1 + 31 * 0.05)
    assert record["tokens_per_s"] == pytest.approx(per_request) and record["tokens_per_s_served"] == record["tokens_per_s"]
    assert record["api_over_direct"] == pytest.approx(per_request / 25.0)
    assert record["bandwidth_achieved_gbs"] == pytest.approx(record["bytes_per_token"] * per_request / 1e9)
    assert record["memory_roofline_tokens_per_s_measured"] == pytest.approx(20e9 / record["bytes_per_token"])
    assert record["direct_over_roofline_measured"] == pytest.approx(25.0 / record["roofline_tokens_per_s_measured"])
    assert record["model_facts"]["stored_bytes"] == 270_000_000 and "direct_tokens_per_s" not in record["model_facts"]
    assert record["ttft_p50_ms"] == pytest.approx(100.0) and record["valid"]
    # TPOT (1.65 - 0.1) / 31 = 50 ms: every request within TTFT 500 ms and TPOT 60 ms
    assert record["tpot_p50_ms"] == pytest.approx(50.0) and record["goodput_share"] == 1.0
    assert record["max_new_tokens"] == 32  # the tier's


def test_the_smoke_pass_s_short_llm_requests_are_recorded_and_checked_at_their_own_length():
    from fixtures.drive.answers import checked_llm_client

    record = llm_record_of([[stream(0.0, 0.1, 0.05, 4)] for _ in range(3)], max_new_tokens=4)
    assert record["max_new_tokens"] == 4 and record["valid"]
    client = checked_llm_client("http://127.0.0.1:1", "smollm2-135m", LLM_TIER, max_tokens=4)
    ((body, check),) = client.requests
    assert body["max_tokens"] == 4 and check(4, 4, "length") is None and check(32, 32, "length")


def test_an_llm_record_under_load_holds_all_users_tokens_against_the_batched_decode_roofline():
    """Four users of a batched server: one decode step reads the weights once and four sequences' KV, so the
    memory roofline of all users' tokens is 4 x bandwidth / (weights read + 4 x KV per token)."""
    # three rounds back to back, each a wave of 4 requests sent at once, TTFT 100-400 ms, ending 1.95 s later
    rounds = [[stream(1.95 * k, 0.1 * (i + 1), 0.05, 32) for i in range(4)] for k in range(3)]
    record = llm_record_of(rounds, "llm_batched_bf16", concurrency=4, max_batch_size=8,
                           batches={"0": {"4": 3}}, padding={"slots": 384, "padded": 0})
    weights, kv = record["weight_bytes_read_per_token"], record["kv_bytes_read_per_token"]
    assert record["roofline_batch"] == 4 and record["bytes_per_decode_step"] == pytest.approx(weights + 4 * kv)
    assert record["memory_roofline_tokens_per_s_measured"] == pytest.approx(4 * 20e9 / (weights + 4 * kv))
    assert record["compute_roofline_tokens_per_s_measured"] == pytest.approx(1e11 / (2 * 134_000_000))  # per token, any batch
    aggregate = 3 * 4 * 32 / (3 * 1.95)  # 384 tokens from the first send to the last end
    assert record["tokens_per_s_served"] == pytest.approx(aggregate) == record["tokens_per_s_aggregate"]
    assert record["api_over_roofline_measured"] == pytest.approx(aggregate / record["roofline_tokens_per_s_measured"])
    # the model alone is held against the batch-1 roofline, a user's speed against the model alone
    assert record["direct_over_roofline_measured"] == pytest.approx(25.0 / min(20e9 / (weights + kv), 1e11 / (2 * 134_000_000)))
    assert (record["observed_mean_batch_size"], record["padding_share"], record["concurrency"]) == (4.0, 0.0, 4)
    assert record["ttft_p90_ms"] == pytest.approx(400.0) and record["goodput_share"] == 1.0  # nearest rank of 12
    # full batches: the roofline at the observed batch is the one at roofline_batch
    assert record["observed_batch_roofline_tokens_per_s_measured"] == pytest.approx(record["roofline_tokens_per_s_measured"])


def test_an_llm_record_holds_the_served_tokens_against_the_roofline_at_the_batch_the_workers_formed():
    """Eight users, batches of up to 8, but the window closed early: batches of 4 and 2 alternated (mean 3). The
    roofline at min(c, max_batch_size) = 8 assumes full batches; the one at the observed mean batch does not."""
    rounds = [[stream(1.95 * k, 0.1, 0.05, 32) for _ in range(8)] for k in range(3)]
    record = llm_record_of(rounds, "llm_batched_bf16", concurrency=8, max_batch_size=8,
                           batches={"0": {"4": 3, "2": 3}}, padding={"slots": 768, "padded": 0})
    weights, kv = record["weight_bytes_read_per_token"], record["kv_bytes_read_per_token"]
    assert record["roofline_batch"] == 8 and record["observed_mean_batch_size"] == 3.0
    at_three = min(3 * 20e9 / (weights + 3 * kv), 1e11 / (2 * 134_000_000))
    assert record["observed_batch_roofline_tokens_per_s_measured"] == pytest.approx(at_three)
    assert record["observed_batch_roofline_tokens_per_s_measured"] < record["roofline_tokens_per_s_measured"]
    assert record["api_over_observed_batch_roofline_measured"] == pytest.approx(record["tokens_per_s_served"] / at_three)
    # one user of a batch-1 recipe has no batches recorded: nothing to put the roofline at
    alone = llm_record_of([[stream(0.0, 0.1, 0.05, 32)] for _ in range(3)])
    assert alone["observed_batch_roofline_tokens_per_s_measured"] is None and alone["api_over_observed_batch_roofline_measured"] is None


def test_soak_and_framework_records():
    spec = classifier_specs("cpu")["batch_workers"]
    runs = [load_run([0.02] * 10, 1.0), load_run([0.03] * 10, 1.0)]
    soak = checked_record(soak_record(spec=spec, knee=100.0, fraction=0.8, seconds=6.04, runs=runs,
                       rss=[100 * 2**20, 110 * 2**20, 111 * 2**20, 112 * 2**20], bound_mib=64))
    assert soak["soak_rate"] == 80.0 and soak["rss_growth_mib"] == 2.0 and soak["soak_s"] == 6.0
    framework = checked_record(framework_record(spec=spec, framework="litserve", n=10, runs=runs))
    assert framework["total_runtime_s"] == 1.0 and framework["response_mean_ms"] == pytest.approx(25.0)


def test_open_loop_and_knee_records_say_what_capacity_their_rates_came_from():
    spec = classifier_specs("cpu")["batch_workers"]
    capacity = Capacity(120.0, "closed-loop probe: 48 requests at c=8")
    ceiling = {"bare_aiohttp_rps": {8: 5000.0}, "litserve_noop_rps": {8: 900.0}}
    opened = checked_record(open_loop_record(spec=spec, capacity=capacity, fraction=0.6, seed=0,
                                             runs=[load_run([0.02] * 10, 1.0)], slo_s=0.25, client_ceiling=ceiling, warmup="w"))
    assert opened["offered_rate"] == pytest.approx(72.0) and opened["capacity_rps"] == 120.0 and opened["kind"] == "open_loop"
    assert opened["capacity_fraction"] == 0.6 and "probe" in opened["capacity_source"]
    knee = find_knee(lambda rate: 0.1 if rate <= 150 else 0.5, 120.0, 0.25, client_ceiling_rps=3500.0)
    record = checked_record(knee_record(spec=spec, search=knee, policy=KneePolicy(), capacity=capacity, warmup="w"))
    assert record["max_rate_at_slo"] == knee.knee <= 150 < record["first_rate_missing_slo"] and not record["client_bound"]
    assert list(record["p99_ms_by_rate"])[0] == "120" and record["search_problem"] is None
    # Client-bound: the highest rate met and the ceiling, and no knee.
    bound = find_knee(lambda rate: 0.1, 120.0, 0.25, client_ceiling_rps=3500.0)
    record = checked_record(knee_record(spec=spec, search=bound, policy=KneePolicy(), capacity=capacity, warmup="w"))
    assert record["max_rate_at_slo"] is None and record["client_bound"]
    assert record["highest_rate_meeting_slo"] == record["client_ceiling_rps"] == 3500.0


def test_a_figure_missing_from_the_catalogue_cannot_be_saved():
    assert checked_record({"rps": 1.0}) == {"rps": 1.0}
    with pytest.raises(UnknownFigure, match="rps_typo"):
        checked_record({"rps": 1.0, "rps_typo": 2.0})


def test_the_catalogue_judges_only_what_has_a_direction():
    assert all(f.better for f in TREND_FIGURES)
    assert all(FIGURES[key].better == HIGHER and FIGURES[key].trend for key in FLOORED_FIGURES)
    assert FIGURES["rps"].ceiling == "direct_rps" and FIGURES["rps"].samples == "rps_per_round"


def test_docs_list_every_figure_of_the_catalogue():
    listed = (Path(__file__).parent.parent / "docs" / "figures.md").read_text()
    assert markdown() in listed, "docs/figures.md's figure list is stale: paste `python -m fixtures.record.figures` into it"


def test_a_run_saved_before_the_record_layer_plots_on_the_same_trend_lines(tmp_path):
    """Run 0012 (commit f9502e9, before fixtures/record/records.py) and a run of today's records share their trend
    lines: every key it saved is still a declared figure, and each trend series reads both runs."""
    from fixtures.track.history import load_history, series

    old = json.loads((DATA / "run-0012-before-the-record-layer.json").read_text())
    assert {key for bench in old["benchmarks"] for key in bench["extra_info"]} <= set(FIGURES)
    new = json.loads(json.dumps(old))
    new["datetime"], new["commit_info"] = "2026-11-24T02:00:00+00:00", {"id": "f" * 40, "time": "2026-11-24T02:00:00+00:00"}
    runs = [load_run([0.04] * 100, 1.0)] * 3
    for bench in new["benchmarks"]:
        if bench["param"] == "cpu-batch_workers-c8":
            bench["extra_info"] = batch_workers_record(runs)
    folder = tmp_path / "Linux-CPython-3.11-64bit"
    folder.mkdir()
    shutil.copy(DATA / "run-0012-before-the-record-layer.json", folder / "0012_old.json")
    (folder / "0013_new.json").write_text(json.dumps(new))
    history = load_history(tmp_path)
    assert [run.commit[:7] for run in history] == ["f9502e9", "fffffff"]
    for figure in TREND_FIGURES:
        for benchmark_id in ("cpu-batch_workers-c8", "cpu-llm_eager_bf16"):
            points = series(history, benchmark_id, figure.key)
            assert len(points) in (0, 2), f"{benchmark_id} {figure.key}: {len(points)} point(s)"
    assert len(series(history, "cpu-batch_workers-c8", "rps")) == 2
    assert len(series(history, "cpu-llm_eager_bf16", "tokens_per_s")) == 2
