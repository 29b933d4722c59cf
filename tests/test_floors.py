"""Machine classes and calibration on fake saved runs: floors land under the class that measured them,
other classes stay as they were, provenance is kept, and untrusted runs give no floors."""

import json
import statistics

import pytest

from fixtures.measure.machine import GENERATION_NOT_RECORDED, cpu_generation, cpu_info, cpu_isa_tier, machine_class
from fixtures.record import calibrate as calibrate_module
from fixtures.record.calibrate import CalibrationError, calibrated_floors, merge_floors
from fixtures.record.floors import find_floor, load_floors
from fixtures.record.noise import pooled_spread

AMD = {"cpu_info": {"model": "AMD EPYC", "vendor": "AuthenticAMD", "cpu_family": "25", "cpu_model": "17",
                    "usable_cores": 2, "isa": "avx512_bf16"}, "cuda_devices": []}
XEON = {"cpu_info": {"model": "Intel(R) Xeon(R) Processor", "vendor": "GenuineIntel", "cpu_family": "6",
                     "cpu_model": "143", "usable_cores": 2, "isa": "amx"}, "cuda_devices": []}
AMD_CLASS = "cpu/AMD EPYC/AuthenticAMD family 25 model 17 (Zen 4)/2c/avx512_bf16"


def saved_run(info, rps, valid=True, commit="abc1234"):
    bench = {"name": "test_classifier_throughput[cpu-baseline-c8]", "param": "cpu-baseline-c8",
             "extra_info": {"device": "cpu", "rps": rps, "api_over_direct": rps / 100, "valid": valid,
                            "invalid_reason": None if valid else "round CV 0.4 > 0.25",
                            "direct_over_roofline_measured": 0.5}}
    llm = {"name": "test_llm_decode[cpu-llm_eager_bf16]", "param": "cpu-llm_eager_bf16",
           "extra_info": {"device": "cpu", "tokens_per_s": 18.0, "api_over_direct": 0.95, "valid": True}}
    other = {"name": "test_poisson_open_loop[x]", "param": "x", "extra_info": {"device": "cpu", "rps": 1.0}}
    return {"machine_info": info, "commit_info": {"id": commit}, "benchmarks": [bench, llm, other]}


def test_the_class_names_cpu_model_generation_usable_cores_and_isa_tier():
    assert machine_class(AMD, "cpu") == AMD_CLASS
    assert machine_class({**AMD, "cpu_info": {**AMD["cpu_info"], "usable_cores": 4}}, "cpu") != machine_class(AMD, "cpu")
    assert cpu_isa_tier(["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]) == "amx"
    assert cpu_isa_tier(["avx2", "avx512f", "avx512_bf16"]) == "avx512_bf16"
    assert cpu_isa_tier(["sse2"]) == "baseline"


def test_the_gpu_class_is_the_visible_gpus_name_and_count():
    info = {**AMD, "cuda_devices": [{"cuda_index": 0, "nvml_index": 3, "name": "NVIDIA L4", "uuid": "u"}] * 2}
    assert machine_class(info, "cuda") == "gpu/2x NVIDIA L4"
    assert machine_class({**AMD, "cuda_devices": [{"cuda_index": 0, "nvml_index": None, "name": None}]}, "cuda") \
        == "gpu/1x unknown (no NVML)"


def test_calibration_takes_the_lowest_run_less_k_spreads_and_keeps_the_range():
    """The rule's own arithmetic is tests/test_noise.py's; here: what lands where."""
    cls, entries, rule = calibrated_floors([saved_run(AMD, 130.0), saved_run(AMD, 100.0), saved_run(AMD, 120.0)], "cpu")
    assert cls == AMD_CLASS and "k = " in rule
    baseline = entries["cpu-baseline-c8"]
    assert baseline["range_rps"] == [100.0, 130.0] and 0 < baseline["min_rps"] < 100.0
    own = statistics.stdev([130.0, 100.0, 120.0]) / statistics.fmean([130.0, 100.0, 120.0])
    assert baseline["spread_rps"] == pytest.approx(max(own, pooled_spread([(own, 3)])), rel=1e-2)
    assert 0 < baseline["min_api_over_direct"] < 1.0 and "spread_api_over_direct" in baseline  # its own spread
    assert entries["cpu-llm_eager_bf16"]["range_tokens_per_s"] == [18.0, 18.0]
    assert "x" not in entries  # open-loop figures are not floored


def test_calibration_refuses_invalid_runs_and_mixed_classes():
    with pytest.raises(CalibrationError, match="invalid.*round CV"):
        calibrated_floors([saved_run(AMD, 130.0), saved_run(AMD, 100.0, valid=False)], "cpu")
    with pytest.raises(CalibrationError, match="several machine classes"):
        calibrated_floors([saved_run(AMD, 130.0), saved_run(XEON, 100.0)], "cpu")
    with pytest.raises(CalibrationError, match="no saved runs"):
        calibrated_floors([], "cpu")
    with pytest.raises(CalibrationError, match="one run gives no spread"):
        calibrated_floors([saved_run(AMD, 130.0)], "cpu")
    # one run, with the spread to assume stated: floors, and the rule says what was assumed
    _, one, rule = calibrated_floors([saved_run(AMD, 130.0)], "cpu", assumed_spread=0.1)
    assert 0 < one["cpu-baseline-c8"]["min_rps"] < 130.0 and "a spread of 10.0% assumed" in rule


def test_writing_merges_with_other_classes_and_keeps_provenance(tmp_path):
    path = tmp_path / "floors.toml"
    xeon_entries = {"cpu-baseline-c8": {"min_rps": 37.7}}
    calibrate_module.write_floors(merge_floors({}, "cpu/Intel(R) Xeon(R) Processor/2c/amx", xeon_entries,
                                            {"machine": "xeon", "measured": "2026-11-23", "margin": "30%"}), path)
    runs = [tmp_path / f"000{i}_abc.json" for i in range(1, 4)]
    for run, rps in zip(runs, (130.0, 100.0, 120.0)):
        run.write_text(json.dumps(saved_run(AMD, rps)))
    assert calibrate_module.main(["--from-runs", *map(str, runs), "--device", "cpu", "--floors", str(path)]) == 0
    written = load_floors(path)
    assert written["cpu/Intel(R) Xeon(R) Processor/2c/amx"]["cpu-baseline-c8"] == {"min_rps": 37.7}
    amd = written[AMD_CLASS]
    assert amd["runs"] == ["0001_abc.json", "0002_abc.json", "0003_abc.json"] and amd["commit"] == "abc1234"
    assert "AMD EPYC" in amd["machine"] and amd["measured"] and "lowest of 3 runs x (1 - k x spread)" in amd["margin"]
    # Floors written from saved runs say so (they said --calibrate, a command that did not run).
    assert amd["command"] == "python -m fixtures.record.calibrate --from-runs 0001_abc.json 0002_abc.json 0003_abc.json"
    assert find_floor(written, AMD_CLASS, "cpu-baseline-c8").minimums["rps"] == amd["cpu-baseline-c8"]["min_rps"]
    # An invalid run: nothing is written, the file is as it was.
    before = path.read_text()
    runs[0].write_text(json.dumps(saved_run(AMD, 1.0, valid=False)))
    assert calibrate_module.main(["--from-runs", *map(str, runs), "--device", "cpu", "--floors", str(path)]) == 1
    assert path.read_text() == before


def test_the_floors_file_keys_every_class_by_a_machine_class():
    for name in load_floors():
        assert name.startswith(("cpu/", "gpu/")), f"floors.toml class {name!r} is not a machine class"
        if name.startswith("cpu/"):  # model name / generation / cores / ISA tier
            assert len(name.split("/")) == 5, f"floors.toml class {name!r} lacks the CPU generation"


def cpuinfo_text(family, model, name="AMD EPYC", vendor="AuthenticAMD"):
    processor = (f"processor\t: {{}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                 f"model name\t: {name}\nstepping\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    return processor.format(0) + processor.format(1)


def test_one_model_name_on_two_cpu_generations_gives_two_classes():
    """This cloud says "AMD EPYC" for Zen 4 and Zen 5 alike; their speeds differ 1.4-2x, so must their floors."""
    zen4, zen5 = cpu_info(cpuinfo_text(25, 17)), cpu_info(cpuinfo_text(26, 2))
    assert zen4["model"] == zen5["model"] == "AMD EPYC"
    assert (zen4["cpu_family"], zen4["cpu_model"], zen4["stepping"]) == ("25", "17", "1")
    classes = {machine_class({"cpu_info": info, "cuda_devices": []}, "cpu") for info in (zen4, zen5)}
    assert len(classes) == 2
    assert "AuthenticAMD family 26 model 2 (Zen 5)" in machine_class({"cpu_info": zen5, "cuda_devices": []}, "cpu")
    # A pair the table does not know is named by its numbers alone, never guessed.
    assert cpu_generation(cpu_info(cpuinfo_text(99, 7))) == "AuthenticAMD family 99 model 7"


def test_arm_generations_come_from_implementer_and_part():
    text = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n"
    assert cpu_generation(cpu_info(text)) == "arm implementer 0x41 part 0xd0c (Neoverse N1)"


def test_a_run_saved_without_family_and_model_never_takes_a_generations_floors():
    old = {"cpu_info": {"model": "AMD EPYC", "usable_cores": 2, "isa": "avx512_bf16"}, "cuda_devices": []}
    assert cpu_generation(old["cpu_info"]) == GENERATION_NOT_RECORDED
    assert machine_class(old, "cpu") != AMD_CLASS
    assert AMD_CLASS in load_floors()  # today's AMD floors sit under the generation that measured them


def test_an_update_replaces_only_the_remeasured_benchmarks_and_says_so():
    existing = merge_floors({}, "cpu/A/2c/avx2", {"a": {"min_rps": 1.0}, "b": {"min_rps": 2.0}},
                            {"machine": "m", "measured": "d1", "commit": "c1", "runs": ["1"], "margin": "30%"})
    updated = merge_floors(existing, "cpu/A/2c/avx2", {"b": {"min_rps": 3.0}},
                           {"machine": "m", "measured": "d2", "commit": "c2", "runs": ["7", "8"], "margin": "30%"}, update=True)
    table = updated["cpu/A/2c/avx2"]
    assert table["a"] == {"min_rps": 1.0} and table["b"] == {"min_rps": 3.0} and table["commit"] == "c1"
    assert table["updates"] == ["d2: b from commit c2, runs 7, 8, 30%"]
    assert find_floor(updated, "cpu/A/2c/avx2", "a").provenance["updates"] == table["updates"]
