"""The conftest wiring as a user meets it: the gpu marker, --require-gpu, the indirect `server`
fixture and the server log tail in a failure report. Each case runs pytest in a subprocess with
the project's conftest loaded as a plugin."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.drive.server import REPO_ROOT
from fixtures.measure.machine import cuda_available, machine_info, this_machine_class
from tests.inner import inner_session_env

pytestmark = pytest.mark.slow  # inner pytest sessions

GPU_TEST = """
import pytest

@pytest.mark.gpu
def test_needs_a_gpu():
    pass
"""

SERVER_TEST = """
import pytest
from fixtures.drive.spec import ServerSpec

NOOP = ServerSpec(name="wiring-noop", module="servers.noop", startup_timeout_s=60)

@pytest.mark.parametrize("server", [NOOP], indirect=True, ids=["noop"])
def test_fails_with_a_server(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert False, "deliberate failure"
"""


def run_pytest(tmp_path, source, *args):
    test_file = tmp_path / "test_case.py"
    test_file.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-c", str(REPO_ROOT / "pytest.ini"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-rs", str(test_file), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
        # Not an xdist worker's environment: pytest-benchmark disables itself under xdist.
        env=inner_session_env(tmp_path),
    )


def test_gpu_marker_skips_with_a_reason_or_fails_under_require_gpu(tmp_path):
    default = run_pytest(tmp_path, GPU_TEST)
    required = run_pytest(tmp_path, GPU_TEST, "--require-gpu")
    if cuda_available():
        assert default.returncode == 0 and required.returncode == 0
    else:
        assert default.returncode == 0 and "1 skipped" in default.stdout
        assert "needs a CUDA GPU" in default.stdout
        assert required.returncode == 1 and "1 error" in required.stdout  # failed in setup
        assert "--require-gpu" in required.stdout


def test_failure_report_carries_the_server_log_tail(tmp_path):
    result = run_pytest(tmp_path, SERVER_TEST)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "deliberate failure" in result.stdout
    assert "server log tail" in result.stdout
    assert "survived the session" not in result.stdout


def test_machine_info_names_the_device_and_versions():
    info = machine_info()
    assert info["cpu_info"]["logical_cores"] >= 1
    assert info["packages"]["torch"] and info["packages"]["litserve"]
    assert info["machine_class"]["cpu"] == this_machine_class("cpu") and info["cpu_info"]["isa"]
    assert ("cuda" in info["machine_class"]) == cuda_available()
    if not cuda_available():
        assert info["gpus"] == [] or all("name" in gpu for gpu in info["gpus"])


TRIVIAL_BENCHMARK = """
def test_trivial(benchmark, device_peaks):  # the peaks fixture measures; the machine_info hook only records
    benchmark.extra_info["rps"] = 1.5
    benchmark.pedantic(sum, args=([1, 2, 3],), rounds=3, iterations=1)
"""


def test_saved_runs_carry_machine_info_and_compare(tmp_path):
    """Two autosaved runs land in the storage with our machine_info, and `pytest-benchmark compare`
    reads them back."""
    import json

    storage = tmp_path / "storage"
    for _ in range(2):
        result = run_pytest(tmp_path, TRIVIAL_BENCHMARK, "--benchmark-autosave", f"--benchmark-storage={storage}")
        assert result.returncode == 0, result.stdout[-2000:]
    saved = sorted(storage.glob("*/*.json"))
    assert len(saved) == 2
    run = json.loads(saved[-1].read_text())
    assert run["machine_info"]["machine_class"]["cpu"] == this_machine_class("cpu")
    assert run["machine_info"]["packages"]["litserve"]
    cpu = run["machine_info"]["ceilings"]["cpu"]
    assert cpu["matmul_flops_per_s"]["fp32"] > 0 and cpu["copy_bytes_per_s"] > 0 and cpu["threads"] >= 1
    assert run["benchmarks"][0]["extra_info"] == {"rps": 1.5}
    compare = subprocess.run(
        [str(Path(sys.executable).parent / "pytest-benchmark"), "--storage", str(storage), "compare", "0001", "0002"],
        capture_output=True, text=True, timeout=60,
    )
    assert compare.returncode == 0, compare.stderr
    assert compare.stdout.count("test_trivial") == 2


WAITING_SERVER_TEST = """
import json, os, time
import pytest
from fixtures.drive.spec import ServerSpec

NOOP = ServerSpec(name="ctrl-c-noop", module="servers.noop", options=(("workers-per-device", 2),), startup_timeout_s=60)

@pytest.mark.parametrize("server", [NOOP], indirect=True, ids=["noop"])
def test_waits_to_be_interrupted(server):
    with open(os.environ["PIDS_FILE"], "w") as f:
        json.dump(sorted(server.alive_pids()), f)
    time.sleep(120)
"""


def test_ctrl_c_during_a_run_ends_every_server_process(tmp_path):
    import json
    import signal
    import time

    from tests.test_server_process import wait_until_gone

    (tmp_path / "test_case.py").write_text(WAITING_SERVER_TEST)
    pids_file, inner_log = tmp_path / "pids.json", tmp_path / "inner.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | {"PIDS_FILE": str(pids_file)}
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-c", str(REPO_ROOT / "pytest.ini"), "--rootdir",
         str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_case.py")],
        cwd=REPO_ROOT, env=env, stdout=inner_log.open("wb"), stderr=subprocess.STDOUT,
        # A shell starting a job in the background (`make test &`, nohup) sets SIGINT to ignored, and the
        # setting is inherited down to here: Python then installs no KeyboardInterrupt handler and the
        # Ctrl-C below would be lost. A terminal's Ctrl-C reaches a foreground job, so restore that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 90
        while not pids_file.exists() and time.monotonic() < deadline and inner.poll() is None:
            time.sleep(0.2)
        time.sleep(0.2)  # the file is complete once written and closed
        pids = json.loads(pids_file.read_text())
        assert len(pids) >= 4
        inner.send_signal(signal.SIGINT)  # Ctrl-C
        interrupted = time.monotonic()
        try:
            inner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            inner.send_signal(signal.SIGABRT)  # pytest's faulthandler prints every thread's stack
            time.sleep(2)
            pytest.fail(f"inner pytest still running 60 s after Ctrl-C; its output:\n{inner_log.read_text()[-3000:]}")
        print(f"inner pytest exited {time.monotonic() - interrupted:.1f} s after Ctrl-C")
        alive = wait_until_gone(pids)
        assert not alive, f"still running after Ctrl-C: {alive}"
    finally:
        inner.kill()


SAVING_TEST = """
import pytest
from fixtures.drive.load import LoadRun, RequestResult
from fixtures.drive.request_log import request_rows

@pytest.mark.parametrize("n", [3], ids=["cpu-demo-c1"])
def test_saved(benchmark, save_record, n):
    runs = [LoadRun(tuple(RequestResult(True, 200, 0.01, sent_s=float(i)) for i in range(n)), 1.0, 1)]
    benchmark.pedantic(sum, args=([1],), rounds=1, iterations=1)
    save_record({"rps": 3.0, "device": "cpu"}, requests=request_rows(runs))

@pytest.mark.parametrize("n", [1], ids=["cpu-undeclared-c1"])
def test_undeclared(benchmark, save_record, n):
    benchmark.pedantic(sum, args=([1],), rounds=1, iterations=1)
    save_record({"rps": 1.0, "not_a_figure": 2.0})
"""


def test_a_saving_session_writes_per_request_records_and_refuses_undeclared_figures(tmp_path):
    import gzip

    storage = tmp_path / "storage"
    result = run_pytest(tmp_path, SAVING_TEST, "--benchmark-autosave", f"--benchmark-storage={storage}", "--no-plots")
    assert result.returncode == 1 and "1 failed, 1 passed" in result.stdout, result.stdout[-3000:]
    assert "not_a_figure" in result.stdout
    (saved,) = storage.glob("*/*.json")
    (bench,) = [b for b in json.loads(saved.read_text())["benchmarks"] if b["param"] == "cpu-demo-c1"]
    records = storage / bench["extra_info"]["requests_file"]
    assert records.parent.parent.name == "requests" and records.name == "cpu-demo-c1.jsonl.gz"
    assert len(gzip.decompress(records.read_bytes()).decode().splitlines()) == 3


def test_a_session_under_xdist_is_a_smoke_pass_and_judges_no_relation(tmp_path):
    """pytest-benchmark times nothing under xdist (make test runs the benchmarks that way): such a session is a smoke
    pass like --benchmark-disable, so a relation is skipped as one, not judged on one short round."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/bench/test_relations.py", "-n", "1", "-p", "no:cacheprovider", "-rs",
         "-k", "cpu-batch_workers-c8-vs-cpu-baseline-c8"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, env=inner_session_env(tmp_path))
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout[-2000:]
    assert "smoke pass (nothing timed)" in result.stdout, result.stdout[-2000:]


def test_a_smoke_pass_leaves_steps_that_change_only_a_batch_number_to_batch_workers(tmp_path):
    """make test's smoke pass starts no server for timeout_<ms> and maxbatch_<n>: batch_workers' code with another
    batch window, batch size or worker count (fixtures.variants.batch_number_steps); a timed session measures them."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/bench/test_classifier.py", "--benchmark-disable", "-p", "no:cacheprovider",
         "-rs", "-k", "cpu-timeout_2-c1 or cpu-maxbatch_16-c8 or cpu-batch-c8"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, env=inner_session_env(tmp_path))
    assert result.returncode == 0 and "3 skipped" in result.stdout, result.stdout[-2000:]
    assert "serves batch_workers' code with another batch window, batch size or worker count" in result.stdout, result.stdout[-2000:]


def test_no_in_process_measurement_runs_while_a_server_of_the_session_is_alive(tmp_path):
    """A classifier benchmark and a LitAPI benchmark in one session: every in-process measurement (device peaks,
    client ceiling, both direct ceilings) is taken while no server runs. pytest tears the previous spec's server
    down only when the next one is set up, after the next test's other fixtures, so the second file's direct
    ceilings used to be measured beside the first file's server (on a GPU, failing its leak check)."""
    in_process = ("device_peaks", "client_ceiling", "case_ceilings")
    log = tmp_path / "fixtures.log"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/bench", "-q", "--benchmark-disable", "-p", "no:cacheprovider",
         "-p", "tests.fixture_order_log", "-k", "cpu-baseline-c1 or cpu-embedding_no_batching-c1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, env=inner_session_env(tmp_path) | {"FIXTURE_ORDER_LOG": str(log)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    measured = []
    for line in log.read_text().splitlines():
        _, name, running = line.split()
        if name in in_process:
            assert running == "running=", f"{name} measured while {running[len('running='):]} ran"
            measured.append(name)
    assert set(measured) == set(in_process), measured
    # where the session's time went, per server (the GPU llm jobs' timeouts are estimated per recipe)
    # and what its in-process ceilings took before any server started
    assert "time per server" in result.stdout and re.search(r"cpu-baseline: in-process ceilings \d+ s \+ start ", result.stdout)
    assert re.search(r"cpu-embedding_no_batching: in-process ceilings \d+ s \+ start ", result.stdout)
    assert "1 test(s)" in result.stdout
