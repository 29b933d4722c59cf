"""A LitAPI the suite has never seen, benchmarked with one server file and one short test and nothing else:
written into a copy of this repository, run there by pytest as a subprocess. Also: no list of names under
fixtures/ or .github/ that a new server would have to join."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures.drive.server import REPO_ROOT
from tests.inner import inner_session_env

pytestmark = pytest.mark.slow  # a real benchmark session in a copy of the repository

TINY_SERVER = '''\
"""A two-layer torch MLP over JSON vectors."""
import litserve as ls
import torch


class TinyMLP(ls.LitAPI):
    def setup(self, device):
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval().to(device)
        self.device = device

    def decode_request(self, request):
        return torch.tensor(request["x"], dtype=torch.float32)

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.inference_mode():
            return self.model(x.to(self.device)).softmax(-1).cpu()

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"probabilities": output.tolist()}
'''

TINY_TEST = '''\
import math

from fixtures.litapi import LitAPIBenchmark, Serving, benchmark_test


def sums_to_one(payload, answer):
    p = answer["probabilities"]
    return None if len(p) == 4 and math.isclose(sum(p), 1, abs_tol=1e-4) else f"not a distribution: {p}"


test_tiny_mlp = benchmark_test(LitAPIBenchmark(
    api="servers.tiny_mlp:TinyMLP", check=sums_to_one, torch_module="model",
    payloads=tuple({"x": [((i * 7 + j) % 5) / 5 for j in range(16)]} for i in range(4)),
    variants={"batching": Serving(max_batch_size=4, batch_timeout=0.005)}))
'''


def _copy_of_this_repository(tmp_path: Path) -> Path:
    """The repository's files as git knows them (tracked and untracked, ignored ones left out), in tmp_path."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    copy = tmp_path / "repo"
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def _benchmarked_in_a_copy(tmp_path: Path, name: str, server: str, test: str) -> tuple:
    """(the copy, its saved run): servers/<name>.py and its test of at most 30 lines written into a copy of this
    repository, and its CPU benchmarks run there and saved."""
    copy = _copy_of_this_repository(tmp_path)
    (copy / "servers" / f"{name}.py").write_text(server)
    (copy / "tests" / "bench" / f"test_{name}.py").write_text(test)
    assert len(test.splitlines()) <= 30
    storage = copy / ".benchmarks"
    ran = _pytest(copy, f"tests/bench/test_{name}.py", "-m", "not gpu", "--benchmark-autosave",
                  f"--benchmark-storage={storage}", "--no-plots")
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    (saved,) = storage.glob("*/*.json")
    return copy, saved


def _calibrated(copy: Path, saved: Path) -> str:
    """The floors `make calibrate` writes from the saved run `saved` (the CPU tier's), as text. One run (what make
    test can afford) gives no spread: the one to assume is stated (--spread), as a user with one run would."""
    floors = copy / "floors-test.toml"
    calibrated = subprocess.run([sys.executable, "-m", "fixtures.record.calibrate", "--from-runs", str(saved), "--floors",
                                 str(floors), "--device", "cpu", "--spread", "0.1"], cwd=copy, capture_output=True,
                                text=True, timeout=120)
    assert calibrated.returncode == 0, calibrated.stdout + calibrated.stderr
    return floors.read_text()


def _pytest(copy: Path, *args, timeout=600):
    env = inner_session_env(copy.parent, drop=("PYTEST_", "PYTHONPATH"))  # copy: <tmp_path>/repo
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"], cwd=copy,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_a_new_litapi_needs_one_server_file_and_one_short_test(tmp_path):
    # Measured and saved, with the direct ceiling of the user's own code.
    copy, saved = _benchmarked_in_a_copy(tmp_path, "tiny_mlp", TINY_SERVER, TINY_TEST)
    records = {b["param"]: b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert set(records) == {"cpu-tiny_mlp_batching-c1", "cpu-tiny_mlp_batching-c8"}
    # its variants in its own order, for the summary page's section and the plots
    assert json.loads(saved.read_text())["machine_info"]["declarations"] == {"tiny_mlp": {"cpu": ["cpu-tiny_mlp_batching"]}}
    for record in records.values():
        assert record["valid"] and record["served_api"] == "servers.tiny_mlp:TinyMLP"
        assert 0 < record["api_over_direct"] and record["direct_rps"] > 0 and record["observed_mean_batch_size"] >= 1
        # Its rooflines from the module it named: 2 FLOPs per weight of each Linear, its fp32 parameters' bytes.
        assert record["flops_per_sample"] == 2 * (16 * 64 + 64 * 4) and record["weight_bytes"] == 4 * (16 * 64 + 64 + 64 * 4 + 4)
        assert record["roofline_rps_measured"] > 0 and "FlopCounterMode" in record["roofline_basis"]

    # Floors for it from that run.
    written = _calibrated(copy, saved)
    assert '"cpu-tiny_mlp_batching-c8"' in written or "cpu-tiny_mlp_batching-c8" in written
    assert "min_api_over_direct" in written and "min_rps" in written

    # Collected on the GPU by the GPU workflow's own selection, and by make gpu-smoke.
    selection = _classifier_job_selection()
    collected = _pytest(copy, "tests/bench/test_tiny_mlp.py", "-m", selection, "--collect-only", "-q")
    assert "gpu-tiny_mlp_batching-c8" in collected.stdout, collected.stdout[-2000:]
    smoke = _pytest(copy, "tests/bench/test_tiny_mlp.py", "--gpu-smoke", "--collect-only", "-q")
    assert "gpu-tiny_mlp_batching-c8" in smoke.stdout and re.search(r"\b1/\d+ tests collected", smoke.stdout), smoke.stdout[-2000:]


def _classifier_job_selection() -> str:
    """The -m expression gpu-bench.yml's classifier job runs tests/bench with."""
    job = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "gpu-bench.yml").read_text())["jobs"]["classifier"]
    script = next(step["run"] for step in job["steps"] if "pytest tests/bench" in step.get("run", ""))
    return re.search(r'classifier\) selection="([^"]+)"', script).group(1)


# Names a new server would have had to be added to: the benchmark tests' function names.
BENCHMARK_TEST_NAMES = ("test_classifier_throughput", "test_llm_decode", "test_llm_concurrency", "test_poisson", "test_max_rate_at_slo",
                        "test_fastapi", "test_relation", "test_embedding")


def test_no_list_of_benchmark_names_under_fixtures_or_github():
    found = []
    for folder in ("fixtures", ".github"):
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yml", ".yaml", ".toml"):
                text = path.read_text(errors="replace")
                found += [f"{path.relative_to(REPO_ROOT)}: {name}" for name in BENCHMARK_TEST_NAMES
                          if re.search(rf"\b{name}\b", text)]
    assert not found, found


BROKEN_SERVER = '''\
"""A LitAPI written for batches only: predict() indexes the batch's list, which a single request is not."""
import litserve as ls


class BatchesOnly(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request["x"]

    def batch(self, inputs):
        return list(inputs)

    def predict(self, xs):
        return [x * 2 for x in xs]  # at max_batch_size=1 xs is one number: TypeError

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"y": output}


class NeverStarts(BatchesOnly):
    def setup(self, device):
        raise RuntimeError("the model file is missing")
'''

BROKEN_TEST = '''\
from fixtures.litapi import LitAPIBenchmark, Serving, benchmark_test


def doubled(payload, answer):
    return None if answer["y"] == 2 * payload["x"] else f"expected {2 * payload['x']}, got {answer['y']}"


test_batches_only = benchmark_test(LitAPIBenchmark(
    api="servers.broken:BatchesOnly", check=doubled, payloads=({"x": 1},), concurrency={"cpu": (1,)},
    variants={"no_batching": Serving()}))
test_never_starts = benchmark_test(LitAPIBenchmark(
    api="servers.broken:NeverStarts", name="never_starts", check=doubled, payloads=({"x": 1},),
    concurrency={"cpu": (1,)}, variants={"batching": Serving(max_batch_size=2, batch_timeout=0.01)}))
'''


def test_a_broken_declaration_fails_its_own_benchmarks_only(tmp_path):
    """One LitAPI's predict raising at max_batch_size=1 errored every LitAPI benchmark of the session (its
    in-process ceiling raised inside a session fixture every one of them uses): now it fails its own, with the
    error, and so does one whose setup raises; the embedding example beside them passes."""
    copy = _copy_of_this_repository(tmp_path)
    (copy / "servers" / "broken.py").write_text(BROKEN_SERVER)
    (copy / "tests" / "bench" / "test_broken.py").write_text(BROKEN_TEST)
    ran = _pytest(copy, "tests/bench/test_broken.py", "tests/bench/test_embedding.py", "-m", "not gpu", "-rfE",
                  "--benchmark-disable", "-k", "broken or never_starts or embedding_no_batching")
    out = ran.stdout
    assert ran.returncode == 1, out[-4000:]
    assert re.search(r"1 failed, 2 passed, \d+ deselected, .*1 error", out), out[-4000:]
    summary = out.split("short test summary info")[-1]
    # predict raising in the in-process ceiling: its own benchmark fails, saying so
    assert "FAILED tests/bench/test_broken.py::test_batches_only[cpu-broken_no_batching-c1]" in summary
    assert "cpu-broken_no_batching: its in-process direct ceiling raised" in out and "TypeError" in out
    # setup raising: its server does not start, and its own benchmark errors with the server's log tail
    assert "ERROR tests/bench/test_broken.py::test_never_starts[cpu-never_starts_batching-c1]" in summary
    assert "RuntimeError: the model file is missing" in out and "exited with code 1 before it was ready" in out
    outcomes = [line.split()[0] for line in summary.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    assert outcomes == ["FAILED", "ERROR"] or outcomes == ["ERROR", "FAILED"], summary  # the embedding cases passed
