"""Checks that hold on every machine: a broken ceiling fails the sanity check, a violated relation fails
with both figures, and a first run on a machine class without floors passes, checked, with the hint."""

import re
import subprocess
import sys

import pytest

from fixtures.drive.server import REPO_ROOT
from fixtures.expected_relations import declared_relations
from fixtures.measure.ceilings import ClassifierCeilings
from fixtures.measure.roofline import efficiency
from fixtures.record.relations import Relation, judge
from fixtures.record.sanity import ceiling_sanity
from tests.inner import inner_session_env

pytestmark = pytest.mark.slow  # a real benchmark session


def ceilings(direct_rps, roofline_rps=400.0) -> ClassifierCeilings:
    return ClassifierCeilings(
        direct_rps_by_batch={8: direct_rps}, direct_threads=1, direct_parallel_workers=1, direct_max_batch_size=8,
        direct_rps_best=direct_rps,
        peak_dtype={"conv": "fp32", "matmul": "fp32"}, flops_per_sample=1e9, flops_by_kernel={"conv": 1e9, "matmul": 0},
        weight_bytes=1, bytes_per_sample=1.0, compute_roofline_rps_measured=roofline_rps, compute_roofline_rps_datasheet=None,
        memory_roofline_rps_measured=None, memory_roofline_rps_datasheet=None, roofline_rps_measured=roofline_rps,
        roofline_rps_datasheet=None)


def classifier_efficiency(api_rps, c: ClassifierCeilings, concurrency):
    return efficiency(api_rps, c.at(concurrency).rps, c.direct_rps_best, c.roofline_rps_measured, c.roofline_rps_datasheet)


def test_a_direct_ceiling_measured_at_a_tenth_of_its_speed_fails_the_sanity_check():
    served = 90.0
    true = {**classifier_efficiency(served, ceilings(180.0), 8), "round_cv": 0.03}
    assert ceiling_sanity(true, {"direct": "180 req/s"}) == []
    broken = {**classifier_efficiency(served, ceilings(18.0), 8), "round_cv": 0.03}  # a fake direct ceiling at a tenth
    failures = ceiling_sanity(broken, {"direct": "18 req/s (direct_rps)"})
    assert len(failures) == 1 and "served/direct = 5.000" in failures[0] and "18 req/s (direct_rps) is wrong" in failures[0]


def test_a_peak_below_the_model_s_own_speed_fails_the_sanity_check():
    # The AMD EPYC case: fp16 direct 11.2 req/s against a matmul-probe roofline of 1.17.
    figures = {**classifier_efficiency(10.5, ceilings(11.2, roofline_rps=1.17), 8), "round_cv": 0.02}
    failures = ceiling_sanity(figures, {"roofline": "1.17 req/s"})
    assert any("direct/roofline = 9.573" in f and "1.17 req/s is wrong" in f for f in failures)


def test_noise_within_the_margin_is_not_a_wrong_ceiling():
    assert ceiling_sanity({"api_over_direct": 1.06, "round_cv": 0.0, "direct_over_roofline_measured": 1.05}, {}) == []
    assert ceiling_sanity({"api_over_direct": 1.25, "round_cv": 0.1}, {}) == []  # noisy rounds widen the margin


RELATION = Relation("batching beats baseline", "cpu-batch_workers-c8", "cpu-baseline-c8", "rps", 1.3, "measured here")


def test_a_violated_relation_fails_with_both_figures():
    result = judge(RELATION, {"cpu-batch_workers-c8": {"rps": 60.0}, "cpu-baseline-c8": {"rps": 58.0}}, "cpu/X/2c/avx2")
    assert result.status == "violated"
    assert "cpu-batch_workers-c8 rps 60 vs cpu-baseline-c8 58" in result.message and "required >= 1.3" in result.message
    held = judge(RELATION, {"cpu-batch_workers-c8": {"rps": 120.0}, "cpu-baseline-c8": {"rps": 58.0}}, "cpu/X/2c/avx2")
    assert held.status == "held" and held.ratio == pytest.approx(2.069, rel=1e-3)


def test_a_relation_with_one_side_missing_is_skipped_and_lower_is_better_inverts():
    assert judge(RELATION, {"cpu-baseline-c8": {"rps": 58.0}}, "c").status == "skipped"
    faster = Relation("litserve beats fastapi", "cpu-litserve-n50", "cpu-fastapi-n50", "total_runtime_s", 1.2, "here",
                      higher_is_better=False)
    result = judge(faster, {"cpu-litserve-n50": {"total_runtime_s": 1.0}, "cpu-fastapi-n50": {"total_runtime_s": 1.4}}, "c")
    assert result.status == "held" and result.ratio == pytest.approx(1.4)


def test_a_class_measured_not_to_hold_declares_it_and_an_unmeasured_gpu_speedup_is_recorded():
    declared = Relation(**{**RELATION.__dict__, "per_class": {"cpu/X/2c/avx2": (None, "measured 1.02x on X")}})
    result = judge(declared, {"cpu-batch_workers-c8": {"rps": 60.0}, "cpu-baseline-c8": {"rps": 58.0}}, "cpu/X/2c/avx2")
    assert result.status == "recorded" and "measured 1.02x on X" in result.message
    gpu = [r for r in declared_relations() if r.better.startswith("gpu-litserve")]
    assert gpu and all(r.required_ratio is None for r in gpu)
    for relation in declared_relations():
        assert relation.source and (relation.required_ratio is None or relation.required_ratio > 0)


FAKE_CLASS = "cpu/Fake CPU/2c/avx2"


def test_a_first_run_on_a_class_without_floors_passes_checked_and_a_floored_one_asserts(tmp_path):
    """Two benchmarks and their relation, run for real, on a faked machine class: the one with a floor
    (set impossibly high) fails naming the class; the one without passes; the relation is judged; the
    summary says how to calibrate."""
    floors = tmp_path / "floors.toml"
    floors.write_text(f'["{FAKE_CLASS}"]\nmachine = "fake"\nmeasured = "never"\nmargin = "0"\n\n'
                      f'["{FAKE_CLASS}".cpu-baseline-c8]\nmin_rps = 1e9\n')
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/bench", "-p", "no:cacheprovider", "--no-plots", "-rfs",
         "-k", "cpu-baseline-c8 or cpu-batch_workers-c8", "--benchmark-storage", str(tmp_path / "storage"),
         "--machine-class", FAKE_CLASS, "--floors-file", str(floors)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env=inner_session_env(tmp_path),
    )
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    assert "FAILED tests/bench/test_classifier.py::test_classifier_throughput[cpu-baseline-c8]" in out, out[-3000:]
    assert re.search(rf"cpu-baseline-c8 on machine class '{FAKE_CLASS}': rps measured \S+ < floor 1e\+09", out), out[-3000:]
    # The relation is judged whatever the floors say (both figures were recorded before any assertion).
    assert re.search(r"(held|violated)\s+cpu: batching with workers beats the baseline at c=8", out), out[-3000:]
    assert f"machine class {FAKE_CLASS!r} has no floors yet for 1 benchmark(s)" in out and "make calibrate" in out


def test_every_relation_reads_its_evidence_from_relations_toml_and_a_missing_entry_is_an_error(tmp_path):
    """The ratios and their measurements are data (relations.toml): every entry there is read by some relation,
    and a relation without one fails naming what to add (a silent default would assert a ratio nobody measured)."""
    import tomllib

    from fixtures.expected_relations import RELATIONS_PATH, load_evidence

    evidence = load_evidence()
    sources = {r.source for r in declared_relations()}
    unread = [f"{tier}.{key}" for tier, entries in evidence.items() for key, entry in entries.items()
              if entry["source"] not in sources]
    assert unread == []
    trimmed = tomllib.loads(RELATIONS_PATH.read_text())
    del trimmed["cpu"]["int4_beats_int8"]
    import tomli_w

    path = tmp_path / "relations.toml"
    path.write_text(tomli_w.dumps(trimmed))
    with pytest.raises(KeyError, match=r"no \[cpu.int4_beats_int8\]"):
        declared_relations(path)
