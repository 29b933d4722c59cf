"""Server lifecycle: readiness, clean stop, no orphans, failures reported with the log tail.
These start the no-op LitServe API (1-3 s) rather than a model."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

import fixtures.drive.server as server_module
from fixtures.drive.server import REPO_ROOT, ServerStartError, start_server
from fixtures.drive.spec import ServerSpec

pytestmark = pytest.mark.slow  # servers started, killed and waited for

NOOP = ServerSpec(name="noop", module="servers.noop", options=(("workers-per-device", 2),), startup_timeout_s=60)


def _running(pid) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it may exit between any two calls
        return False


def wait_until_gone(pids, timeout_s=20.0):
    """The pids still running after up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.1)
    return alive


def post(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_start_serve_stop_leaves_no_process(tmp_path):
    server = start_server(NOOP, tmp_path)
    try:
        assert server.ready_after_s > 0
        assert post(f"{server.url}/predict", {"x": 1}) == (200, {"output": {"x": 1}})
        pids = server.alive_pids()
        # main process, 2 inference workers, at least one uvicorn server process
        assert len(pids) >= 4, pids
    finally:
        server.stop()
    assert not server.alive_pids()
    assert not wait_until_gone(pids, timeout_s=1)
    assert server.process.returncode is not None


def test_sigterm_to_the_main_process_alone_stops_every_worker(tmp_path):
    """LitServe alone leaves its workers serving after SIGTERM; the entry point must not."""
    server = start_server(NOOP, tmp_path)
    pids = server.alive_pids()
    try:
        os.kill(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=20)
        assert not wait_until_gone(pids), f"survived SIGTERM to the main process; log:\n{server.log_tail()}"
    finally:
        server.stop()


HELPER = """
import json, sys
from pathlib import Path
from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
server = start_server(ServerSpec(name="orphan-check", module="servers.noop", options=(("workers-per-device", 2),)), Path(sys.argv[1]))
print(json.dumps(sorted(server.alive_pids())), flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_servers_die_with_a_killed_parent(tmp_path):
    """If pytest itself is SIGKILLed, its servers must not keep serving (parent-death signal)."""
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(tmp_path)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )
    pids = []
    try:
        line = helper.stdout.readline()
        assert line, "helper did not start its server"
        pids = json.loads(line)
        assert len(pids) >= 4
        helper.kill()
        helper.wait(timeout=10)
        survivors = wait_until_gone(pids)
        assert not survivors, f"still running after their parent was killed: {survivors}"
    finally:
        helper.kill()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


STARTER_THAT_DIES = """
import os, sys
from pathlib import Path
from fixtures.drive.server import _launch, free_port
from fixtures.drive.spec import ServerSpec
server = _launch(ServerSpec(name="orphan-at-start", module="servers.noop"), free_port(), Path(sys.argv[1]))
print(server.process.pid, flush=True)
os._exit(0)  # before the server's own imports are done
"""


def test_a_server_whose_parent_dies_while_it_imports_does_not_outlive_it(tmp_path):
    """The server's own parent-death request comes after its imports (a few hundred ms, seconds on a cold
    disk); the launcher's comes before its exec. An A/B killed while its servers started left one running."""
    starter = subprocess.run([sys.executable, "-c", STARTER_THAT_DIES, str(tmp_path)], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
    pid = int(starter.stdout.split()[0])
    try:
        assert not wait_until_gone([pid], timeout_s=20), "the server outlived the process that started it"
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_crash_at_startup_fails_fast_with_exit_code_and_log_tail(tmp_path):
    spec = ServerSpec(name="crashes", module="servers.noop", options=(("fail-setup", True),))
    started = time.monotonic()
    with pytest.raises(ServerStartError) as error:
        start_server(spec, tmp_path, timeout_s=60)
    assert time.monotonic() - started < 30  # fails when the process dies, not at the deadline
    message = str(error.value)
    assert "exited with code 1" in message
    assert "asked to fail in setup" in message  # the log tail
    assert not error.value.server.alive_pids()


def test_a_worker_that_dies_while_another_starts_fails_the_start_at_once(tmp_path):
    """LitServe answers /health 200 only when every worker is ready; with one worker ready and one dead it
    stays 503, and the start used to wait out the whole timeout."""
    spec = ServerSpec(name="one-worker-crashes", module="servers.noop",
                      options=(("workers-per-device", 2), ("crash-later-workers", tmp_path / "first-worker")))
    started = time.monotonic()
    with pytest.raises(ServerStartError) as error:
        start_server(spec, tmp_path, timeout_s=90)
    assert time.monotonic() - started < 45
    message = str(error.value)
    # Either the server stays up and unready (the dead worker is named) or, on a loaded machine, LitServe's main
    # process notices within the grace and exits by itself (its exit code is named): both fail at once.
    assert "died during start-up" in message or "(its worker" in message, message
    assert "crashing in setup" in error.value.server.log_tail(400)
    assert not error.value.server.alive_pids()


def test_a_child_a_worker_forks_and_that_exits_is_not_a_dead_worker(tmp_path):
    """A worker's own short-lived child shows the worker's command line: it read as a worker that died, and
    failed about one start in thirty of fixtures/ab.py's launches (a library forking a helper in setup)."""
    spec = ServerSpec(name="worker-forks-a-helper", module="servers.noop",
                      options=(("workers-per-device", 2), ("fork-helper", 0.6), ("setup-delay", 1.5)))
    server = start_server(spec, tmp_path, timeout_s=60)
    try:
        assert server.process.poll() is None
    finally:
        server.stop()
    assert not server.alive_pids()


def test_never_ready_fails_at_the_deadline_and_is_stopped(tmp_path):
    spec = ServerSpec(name="never-ready", module="servers.noop", options=(("setup-delay", 600),))
    with pytest.raises(ServerStartError, match=r"not ready after 4 s") as error:
        start_server(spec, tmp_path, timeout_s=4)
    assert not error.value.server.alive_pids()


def test_unknown_module_is_reported(tmp_path):
    spec = ServerSpec(name="missing", module="servers.does_not_exist")
    with pytest.raises(ServerStartError, match="No module named"):
        start_server(spec, tmp_path, timeout_s=30)


def test_port_taken_between_pick_and_bind_is_retried(tmp_path, monkeypatch):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real_free_port = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports, None) or real_free_port())
    taken_port = taken.getsockname()[1]
    try:
        server = start_server(NOOP, tmp_path)
        try:
            assert server.port != taken_port
            assert post(f"{server.url}/predict", {}) == (200, {"output": {}})
        finally:
            server.stop()
    finally:
        taken.close()
    assert len(list(tmp_path.glob("noop-*.log"))) == 2  # one attempt per port
    (first_attempt,) = tmp_path.glob(f"noop-{taken_port}-*.log")
    assert "address already in use" in first_attempt.read_text().lower()


def test_spec_is_hashable_and_renders_its_command_line():
    spec = ServerSpec(name="x", module="servers.noop", options=(("max-batch-size", 4), ("fail-setup", True)))
    assert hash(spec) == hash(ServerSpec(name="x", module="servers.noop", options=(("max-batch-size", 4), ("fail-setup", True))))
    assert spec.argv(1234) == ["-m", "servers.noop", "--port", "1234", "--max-batch-size", "4", "--fail-setup"]
    assert spec.option("max-batch-size") == 4 and spec.option("absent", "d") == "d"


def test_a_server_dying_mid_load_gives_errors_and_its_exit_not_a_hang(tmp_path):
    import threading

    from fixtures.drive.load import run_closed_loop

    server = start_server(NOOP, tmp_path)
    try:
        killer = threading.Timer(1.0, lambda: os.killpg(server.process.pid, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        # Far more requests than 1 s of load: the loop must end on errors, each failing fast.
        run = run_closed_loop(f"{server.url}/predict", [b"{}"], num_requests=20_000, concurrency=4, timeout_s=10)
        killer.join()
        assert time.monotonic() - started < 60
        failed = [r for r in run.results if not r.ok]
        assert failed and all(r.status == 0 for r in failed)
        server.process.wait(timeout=10)
        assert server.state().startswith("exited with code -9")
    finally:
        server.stop()
    assert not server.alive_pids()


def test_teardown_never_signals_a_recycled_pid(tmp_path):
    """Teardown killed pids it remembered: a pid recycled by another program after the server's process
    ended would have been SIGKILLed. Processes are remembered with their create time (psutil)."""
    import psutil

    from fixtures.drive.server import RunningServer

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server_main = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    server_main.wait()
    try:
        recycled = psutil.Process(bystander.pid)
        # As if the server once had a worker with this pid, created at another time: the same number, another process.
        recycled._ident = (bystander.pid, recycled._ident[1] - 1000.0)
        server = RunningServer(spec=ServerSpec(name="gone", module="servers.noop"), port=0, process=server_main,
                               log_path=tmp_path / "none.log", known={bystander.pid: recycled})
        assert server.alive_pids() == set()  # not ours: not counted as a survivor either
        server.stop(grace_s=1)
        time.sleep(0.2)
        assert bystander.poll() is None, "teardown signalled a process that only shared a pid with the server's"
    finally:
        bystander.kill()
        bystander.wait()
