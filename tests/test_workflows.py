"""The GPU workflow's shape: a doctor gate first, jobs split so one failure does not hide the rest,
caches for the venv, photos and model caches, and a timeout on every job (estimated in its header)."""

from pathlib import Path

import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def test_the_gpu_workflow_gates_on_the_doctor_and_splits_its_jobs():
    jobs = yaml.safe_load((WORKFLOWS / "gpu-bench.yml").read_text())["jobs"]
    assert set(jobs) == {"doctor", "functional", "classifier", "llm"}
    assert all(jobs[name]["needs"] == "doctor" for name in ("functional", "classifier", "llm"))
    assert all(isinstance(job["timeout-minutes"], int) for job in jobs.values())
    doctor_runs = " ".join(step.get("run", "") for step in jobs["doctor"]["steps"])
    assert "nvidia-smi" in doctor_runs and "torch.cuda.is_available()" in doctor_runs
    assert "fixtures.doctor --require-gpu" in doctor_runs
    cached = next(step for step in jobs["doctor"]["steps"] if step.get("uses", "").startswith("actions/cache@"))
    assert {".venv", "fixtures/data", ".cache"} <= set(cached["with"]["path"].split())


def test_the_cpu_workflow_runs_the_readme_test_command():
    steps = yaml.safe_load((WORKFLOWS / "cpu.yml").read_text())["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in steps)


def test_both_workflows_write_the_summary_page():
    for name, job in (("cpu.yml", "test"), ("gpu-bench.yml", "classifier"), ("gpu-bench.yml", "llm")):
        steps = yaml.safe_load((WORKFLOWS / name).read_text())["jobs"][job]["steps"]
        summary = [step for step in steps if "fixtures.report --summary" in step.get("run", "")]
        assert summary and "$GITHUB_STEP_SUMMARY" in summary[0]["run"] and summary[0]["if"] == "always()", (name, job)
