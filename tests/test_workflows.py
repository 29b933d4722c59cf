"""The GPU workflow's shape: a doctor gate first, jobs split so one failure does not hide the rest,
caches for the venv, photos and model caches, and a timeout on every job (estimated in its header)."""

from pathlib import Path

import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def _needs(job) -> set:
    needs = job.get("needs", [])
    return {needs} if isinstance(needs, str) else set(needs)


def test_the_gpu_workflow_gates_on_the_doctor_and_runs_its_gpu_jobs_one_after_another():
    """Jobs that need only the doctor may run at once on a host with several runner instances sharing one GPU."""
    jobs = yaml.safe_load((WORKFLOWS / "gpu-bench.yml").read_text())["jobs"]
    assert set(jobs) == {"doctor", "functional", "classifier", "llm", "llm-compiled"}
    assert _needs(jobs["functional"]) == {"doctor"}
    assert _needs(jobs["classifier"]) == {"doctor", "functional"} and _needs(jobs["llm"]) == {"doctor", "classifier"}
    assert _needs(jobs["llm-compiled"]) == {"doctor", "llm"}
    for name in ("classifier", "llm", "llm-compiled"):  # one failure does not hide the rest; a failed doctor stops them
        assert "!cancelled()" in jobs[name]["if"] and "needs.doctor.result == 'success'" in jobs[name]["if"]
    assert all(isinstance(job["timeout-minutes"], int) for job in jobs.values())
    doctor_runs = " ".join(step.get("run", "") for step in jobs["doctor"]["steps"])
    assert "nvidia-smi" in doctor_runs and "torch.cuda.is_available()" in doctor_runs
    assert "fixtures.setup.doctor --require-gpu" in doctor_runs


def test_each_gpu_cache_is_saved_by_the_job_that_fills_it_and_keyed_by_the_lock():
    """With actions/cache in the doctor only, its key was taken first and every later job hit it and never
    saved: the model and inductor caches stayed cold on every run. packages.lock was not in the key."""
    jobs = yaml.safe_load((WORKFLOWS / "gpu-bench.yml").read_text())["jobs"]

    def steps_using(job, action):
        return [step for step in jobs[job]["steps"] if step.get("uses", "").startswith(action)]

    assert not any(steps_using(job, "actions/cache@") for job in jobs)  # restore and save, each on purpose
    venv_saves = steps_using("doctor", "actions/cache/save@")
    assert any({".venv", "fixtures/data"} <= set(step["with"]["path"].split()) for step in venv_saves)
    for job in ("doctor", "functional", "classifier", "llm", "llm-compiled"):
        restored = [step for step in steps_using(job, "actions/cache/restore@") if ".venv" in step["with"]["path"]]
        assert restored and "packages.lock" in restored[0]["with"]["key"], job
    for job in ("functional", "classifier", "llm", "llm-compiled"):
        saves = [step for step in steps_using(job, "actions/cache/save@") if step["with"]["path"].strip() == ".cache"]
        assert saves and saves[0]["if"] == "always()" and "github.run_id" in saves[0]["with"]["key"], job
        restore = next(step for step in steps_using(job, "actions/cache/restore@") if step["with"]["path"].strip() == ".cache")
        assert restore["with"]["restore-keys"], job  # the newest cache any earlier run saved


def test_the_cpu_workflow_runs_the_readme_test_command():
    steps = yaml.safe_load((WORKFLOWS / "cpu.yml").read_text())["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in steps)


def test_both_workflows_write_the_summary_page():
    for name, job in (("cpu.yml", "test"), ("gpu-bench.yml", "classifier"), ("gpu-bench.yml", "llm")):
        steps = yaml.safe_load((WORKFLOWS / name).read_text())["jobs"][job]["steps"]
        summary = [step for step in steps if "fixtures.track.report --summary" in step.get("run", "")]
        assert summary and "$GITHUB_STEP_SUMMARY" in summary[0]["run"] and summary[0]["if"] == "always()", (name, job)


def _actionlint(repo: Path):
    """actionlint over a repository's workflows, with shellcheck on their run: scripts (both from the venv)."""
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    return subprocess.run([str(bin_dir / "actionlint"), "-shellcheck", str(bin_dir / "shellcheck"), "-no-color"],
                          cwd=repo, capture_output=True, text=True, timeout=120)


def test_actionlint_and_shellcheck_find_nothing_in_the_workflows():
    """Every action on a runtime GitHub runs (node20 was removed from runners on 2026-09-23), the self-hosted
    labels declared in .github/actionlint.yaml, and shellcheck clean run: scripts."""
    found = _actionlint(WORKFLOWS.parent.parent)
    assert found.returncode == 0 and not found.stdout.strip(), found.stdout + found.stderr


def test_actionlint_would_catch_a_node20_action_and_an_undeclared_label(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "old.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: [self-hosted, tpu]\n    steps:\n      - uses: actions/checkout@v4\n"
        "      - run: echo $UNQUOTED_VAR\n")
    found = _actionlint(tmp_path)
    assert found.returncode == 1
    assert "node20" in found.stdout and 'label "tpu" is unknown' in found.stdout and "shellcheck" in found.stdout


def _runs(job) -> list:
    return [step.get("run", "") for step in job["steps"]]


def _index(runs, text) -> int:
    return next(i for i, run in enumerate(runs) if text in run)


def test_every_cpu_job_gates_something_and_the_main_job_publishes():
    """The pull request job runs the A/B between the PR's base and head; the main job measures the CPU tier with
    relations and ceiling sanity asserted (no --benchmark-disable; floors off: a hosted runner is not one machine),
    between a pull and a publish of the history store under an explicit machine id."""
    workflow = yaml.safe_load((WORKFLOWS / "cpu.yml").read_text())
    jobs = workflow["jobs"]
    ab = jobs["ab"]
    assert ab["if"] == "github.event_name == 'pull_request'"
    (command,) = [run for run in _runs(ab) if run.startswith("make ab")]
    assert "github.event.pull_request.base.sha" in command and "github.event.pull_request.head.sha" in command
    assert ab["steps"][0]["with"]["fetch-depth"] == 0  # both commits present for their worktrees
    bench = jobs["bench"]
    assert "refs/heads/main" in bench["if"] and "push" in bench["if"]
    assert bench["permissions"]["contents"] == "write" and bench["env"]["LITSERVE_BENCH_MACHINE_ID"] == "github-hosted-cpu"
    runs = _runs(bench)
    measure = runs[_index(runs, "pytest tests/bench")]
    assert "--benchmark-autosave" in measure and "--benchmark-disable" not in measure and "--no-floors" in measure
    assert _index(runs, "fixtures.track.store pull") < _index(runs, "pytest tests/bench") < _index(runs, "fixtures.track.store publish")
    assert any("$GITHUB_STEP_SUMMARY" in run for run in _runs(ab)) and any("$GITHUB_STEP_SUMMARY" in run for run in runs)
    assert "make test" in _runs(jobs["test"])  # .ci/run's command still runs on every push and pull request


def test_the_gpu_benchmark_jobs_pull_the_store_before_and_publish_after():
    jobs = yaml.safe_load((WORKFLOWS / "gpu-bench.yml").read_text())["jobs"]
    for name in ("classifier", "llm", "llm-compiled"):
        runs = _runs(jobs[name])
        pull, measure, publish = (_index(runs, "fixtures.track.store pull"), _index(runs, "pytest tests/bench"),
                                  _index(runs, "fixtures.track.store publish"))
        assert pull < measure < publish < _index(runs, "fixtures.track.regression --fail"), name
        assert "--machine-id" in runs[publish], name
        uses = [step.get("with", {}).get("path", "") for step in jobs[name]["steps"] if "cache" in step.get("uses", "")]
        assert not any(".benchmarks" in path for path in uses), f"{name}: saved runs still kept in a cache GitHub evicts"


GPU_CLASS = "${{ inputs.gpu_class || vars.GPU_CLASS || 'gpu' }}"


def test_every_gpu_job_of_one_run_runs_on_one_gpu_class_and_the_store_names_it():
    """With several GPU runners, a plain [self-hosted, gpu] let the doctor, functional and benchmark jobs of one run
    land on different GPUs: the doctor passed one host and the benchmarks ran on another."""
    workflow = yaml.safe_load((WORKFLOWS / "gpu-bench.yml").read_text())
    assert "gpu_class" in workflow[True]["workflow_dispatch"]["inputs"]  # yaml reads the key `on` as True
    assert workflow["env"]["GPU_CLASS"] == GPU_CLASS and GPU_CLASS in workflow["concurrency"]["group"]
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] == ["self-hosted", "gpu", GPU_CLASS], name
    for name in ("classifier", "llm", "llm-compiled"):
        runs = _runs(workflow["jobs"][name])
        assert '--machine-id "gpu-$GPU_CLASS-$RUNNER_NAME"' in runs[_index(runs, "fixtures.track.store publish")], name


def test_the_compiled_llm_recipes_run_in_a_job_of_their_own_and_every_llm_benchmark_in_one_of_the_two():
    """Four cold compiles with coordinate-descent tuning beside the sweep did not fit one 75-minute job."""
    workflow = yaml.safe_load((WORKFLOWS / "gpu-bench.yml").read_text())
    bench = " ".join(_runs(workflow["jobs"]["llm"]))
    assert 'llm) selection="gpu and ((llm and not compile) or relation)"' in bench
    assert 'llm-compiled) selection="gpu and ((llm and compile) or relation)"' in bench
    assert workflow["jobs"]["llm"]["timeout-minutes"] == 45 and workflow["jobs"]["llm-compiled"]["timeout-minutes"] == 100
