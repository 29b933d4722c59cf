"""pytest wiring for the harness: options, the gpu marker's skip, the `server` fixture, server log
tails in failure reports, machine_info for saved benchmark runs, and the session's leak check.
The harness itself lives in fixtures/ (plain modules)."""

import os
import warnings
from pathlib import Path

import pytest

# No test may reach a model hub: everything is built from configs or loaded from local files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from fixtures import gpu, machine  # noqa: E402
from fixtures.server import REPO_ROOT, ServerStartError, start_server  # noqa: E402

SERVER_LOG_DIR = REPO_ROOT / ".server-logs"
GPU_MEMORY_TOLERANCE = 256 * 2**20  # NVML counts every process on the device: allow for small drifts
_started_servers = []  # every server this pytest process started, for the end-of-session leak check


def pytest_addoption(parser):
    group = parser.getgroup("litserve-bench")
    group.addoption(
        "--require-gpu", action="store_true",
        help="fail (instead of skip) tests marked gpu when CUDA is absent: for the GPU CI runner",
    )
    group.addoption(
        "--regression-fail", action="store_true",
        help="after saving a run, fail the session if the regression check finds a regression",
    )
    group.addoption(
        "--regression-threshold", type=float, default=0.10,
        help="relative change below which nothing is reported (default 0.10); noise may raise it",
    )
    group.addoption("--no-plots", action="store_true", help="do not plot saved runs at the end of the session")
    group.addoption("--no-floors", action="store_true",
                    help="record figures without asserting floors (calibration runs); ceiling sanity and relations still hold")
    group.addoption("--gpu-smoke", action="store_true",
                    help="only the benchmarks of servers.variants.gpu_smoke_ids (make gpu-smoke)")
    group.addoption("--floors-file", default=None, help="read floors from this file instead of floors.toml")
    group.addoption("--machine-class", default=None,
                    help="look floors up under this machine class instead of this machine's (fixtures.machine.machine_class)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    from fixtures.ordering import remember_collection_order

    remember_collection_order(items)  # before pytest reorders by fixture keys
    if not config.getoption("--gpu-smoke"):
        return
    from servers.variants import gpu_smoke_ids

    wanted = gpu_smoke_ids()
    keep = [item for item in items if getattr(getattr(item, "callspec", None), "id", None) in wanted]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


def pytest_runtest_setup(item):
    if not item.get_closest_marker("gpu"):
        return
    require_gpu = item.config.getoption("--require-gpu")
    if not machine.cuda_available():
        reason = "needs a CUDA GPU; torch.cuda.is_available() is False on this machine"
        if require_gpu:
            pytest.fail(f"--require-gpu: {reason}", pytrace=False)
        pytest.skip(reason)
    status = machine.machine_info()["nvml_status"]
    failure, warning = gpu.nvml_outcome(None if status.startswith("ok") else status, require_gpu, "machine info")
    if failure:
        pytest.fail(failure, pytrace=False)
    if warning:
        warnings.warn(gpu.NvmlWarning(warning))


@pytest.fixture(scope="session")
def server(request):
    """A running server for the ServerSpec given by indirect parametrization. Session-scoped:
    pytest keeps one instance per spec and tears the previous one down when the spec changes."""
    spec = request.param
    if spec.min_compute_capability and machine.cuda_available():
        import torch

        reason = spec.capability_skip_reason(True, torch.cuda.get_device_capability())
        if reason:
            pytest.skip(reason)
    require_gpu = request.config.getoption("--require-gpu")
    memory_before, problem = gpu.gpu_memory_reading()  # (None, None) without a GPU
    failure, warning = gpu.nvml_outcome(problem, require_gpu, f"{spec.name}: GPU memory before start")
    if failure:
        pytest.fail(failure, pytrace=False)
    if warning:
        warnings.warn(gpu.NvmlWarning(f"{warning}: the GPU memory leak check is off for this server"))
    try:
        running = start_server(spec, SERVER_LOG_DIR)
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    _started_servers.append(running)
    yield running
    running.stop()
    excess = gpu.wait_for_memory(gpu.gpu_memory_used, memory_before, GPU_MEMORY_TOLERANCE, timeout_s=30)
    if excess is not None:
        pytest.fail(f"{spec.name}: GPU memory still {excess / 2**20:.0f} MiB above its level before the server "
                    f"started, 30 s after it stopped", pytrace=False)


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
    from fixtures.client_ceiling import SESSION_CLIENT_CEILING

    # The load generator's own limit at each concurrency this session measured (None: no benchmark needed it).
    machine_info["client_ceiling"] = config.stash.get(SESSION_CLIENT_CEILING, None)
    override = config.getoption("--machine-class")
    if override:
        machine_info["machine_class_override"] = override
    from fixtures.relations import RELATION_RESULTS

    machine_info["relations"] = [r.as_dict() for r in config.stash.get(RELATION_RESULTS, [])]


def pytest_sessionfinish(session, exitstatus):
    """Stop every server (failing the session if a process survives), then, when this session saved a
    benchmark run, plot the history and run the regression check. pytest-benchmark's own
    sessionfinish is a hook wrapper that saves before this runs."""
    _check_no_server_survived(session)
    _after_saved_run(session)


def _after_saved_run(session):
    config = session.config
    bench = getattr(config, "_benchmarksession", None)
    if hasattr(config, "workerinput") or bench is None or bench.disabled or not (bench.save or bench.autosave):
        return  # an xdist worker, or nothing saved this session
    if not bench.benchmarks:
        return
    from fixtures.history import load_history
    from fixtures.plots import make_plots
    from fixtures.regression import detect_changes, format_changes, regressions

    storage = Path(str(bench.storage.path))
    tr = config.pluginmanager.get_plugin("terminalreporter")
    runs = load_history(storage)
    changes = detect_changes(runs, threshold=config.getoption("--regression-threshold"))
    found = regressions(changes)
    if tr is not None:
        tr.write_line(format_changes(changes, runs), red=bool(found))
    if not config.getoption("--no-plots"):
        paths = make_plots(storage, storage / "plots")
        if tr is not None:
            tr.write_line(f"plots: {len(paths)} PNG files and index.md in {storage / 'plots'}")
    if found and config.getoption("--regression-fail"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _check_no_server_survived(session):
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
