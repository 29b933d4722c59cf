"""pytest wiring for the harness: options, the gpu marker's skip, the `server` fixture, server log
tails in failure reports, machine_info for saved benchmark runs, and the session's leak check.
The harness itself lives in fixtures/ (plain modules)."""

import os
from pathlib import Path

import pytest

# No test may reach a model hub: everything is built from configs or loaded from local files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from fixtures import machine  # noqa: E402
from fixtures.server import REPO_ROOT, ServerStartError, start_server  # noqa: E402

SERVER_LOG_DIR = REPO_ROOT / ".server-logs"
_started_servers = []  # every server this pytest process started, for the end-of-session leak check


def pytest_addoption(parser):
    group = parser.getgroup("litserve-bench")
    group.addoption(
        "--require-gpu", action="store_true",
        help="fail (instead of skip) tests marked gpu when CUDA is absent: for the GPU CI runner",
    )


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") and not machine.cuda_available():
        reason = "needs a CUDA GPU; torch.cuda.is_available() is False on this machine"
        if item.config.getoption("--require-gpu"):
            pytest.fail(f"--require-gpu: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def server(request):
    """A running server for the ServerSpec given by indirect parametrization. Session-scoped:
    pytest keeps one instance per spec and tears the previous one down when the spec changes."""
    spec = request.param
    try:
        running = start_server(spec, SERVER_LOG_DIR)
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    _started_servers.append(running)
    yield running
    running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    running = getattr(item, "funcargs", {}).get("server")
    if report.failed and running is not None and hasattr(running, "log_tail"):
        report.sections.append((f"server log tail ({running.log_path})", running.log_tail(60)))


def pytest_benchmark_update_machine_info(config, machine_info):
    from fixtures.ceilings import device_ceilings

    machine_info.update(machine.machine_info())
    # Measured matmul/copy ceilings beside the datasheet entry, per device (cached: measured once a session).
    devices = ["cpu"] + (["cuda"] if machine.cuda_available() else [])
    machine_info["ceilings"] = {device: device_ceilings(device).as_dict() for device in devices}


def pytest_sessionfinish(session, exitstatus):
    """No server process may outlive the session: stop any still running and fail loudly if a
    process survived its stop."""
    survivors = {}
    for running in _started_servers:
        running.stop()
        if running.alive_pids():
            survivors[running.spec.name] = sorted(running.alive_pids())
    if survivors:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"server processes survived the session: {survivors}", red=True)
