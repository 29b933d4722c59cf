"""Benchmark-only fixtures: ceilings measured before any server starts, the floors file, and the
terminal table of req/s against ceilings."""

from pathlib import Path

import pytest

from fixtures import ceilings as ceilings_module
from fixtures import machine
from fixtures.floors import load_floors
from fixtures.relations import RELATION_RESULTS
from fixtures.report import ceiling_table
from servers import classifier

ROWS = pytest.StashKey[list]()
FIGURES = pytest.StashKey[dict]()  # benchmark id -> extra_info, for the relations
NO_FLOORS = pytest.StashKey[dict]()  # machine class -> benchmark ids that had no floor this session


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    from fixtures.ordering import one_server_per_spec_order

    items[:] = one_server_per_spec_order(items)


def _runnable_classifier_cases(session):
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        spec, tier = params.get("server"), params.get("tier")
        if spec is None or tier is None or spec.module != "servers.classifier":
            continue
        if spec.needs_gpu and not machine.cuda_available():
            continue
        yield tier, spec


@pytest.fixture(scope="session")
def classifier_ceilings(request):
    """spec name -> ClassifierCeilings, measured for every classifier case of the session at its start,
    while no server runs (an idle batched LitServe loop still polls at up to 0.66 cores)."""
    min_time_s = 0.2 if request.config.getoption("benchmark_disable") else 1.0
    found = {}
    for tier, spec in _runnable_classifier_cases(request.session):
        if spec.name in found:
            continue
        args = classifier.spec_args(spec)  # the direct ceiling builds exactly the served model
        found[spec.name] = ceilings_module.classifier_ceilings(
            classifier.config_from_args(args), args.device, args.max_batch_size, args.workers_per_device,
            tier.concurrency, min_time_s,
        )
    return found


@pytest.fixture(scope="session")
def device_peaks():
    """Measured (and datasheet) peaks of every device here, taken before any server starts."""
    devices = ["cpu"] + (["cuda"] if machine.cuda_available() else [])
    return {device: ceilings_module.device_ceilings(device) for device in devices}


@pytest.fixture(scope="session")
def harness_ceiling(request):
    """The load generator's own ceiling (bare aiohttp) and LitServe's with no model, at every closed-loop
    concurrency of the session's benchmarks, measured before any benchmarked server starts."""
    from conftest import SERVER_LOG_DIR
    from fixtures.client_ceiling import SESSION_CLIENT_CEILING, client_ceiling

    runnable = [item for item in request.session.items if machine.cuda_available() or not item.get_closest_marker("gpu")]
    levels = {getattr(getattr(item, "callspec", None), "params", {}).get("concurrency") for item in runnable}
    levels = tuple(sorted(level for level in levels if isinstance(level, int))) or (8,)
    found = client_ceiling(SERVER_LOG_DIR, levels)
    request.config.stash[SESSION_CLIENT_CEILING] = found
    return found


@pytest.fixture(scope="session")
def floors(request):
    path = request.config.getoption("--floors-file")
    return load_floors(Path(path)) if path else load_floors()


@pytest.fixture(scope="session")
def bench_rows(request):
    rows = request.config.stash.setdefault(ROWS, [])
    return rows


@pytest.fixture(scope="session")
def figures_by_id(request):
    return request.config.stash.setdefault(FIGURES, {})


@pytest.fixture(scope="session")
def machine_class(request):
    """device type ("cpu" or "cuda") -> this machine's class, the key of its floors. --machine-class
    replaces it (to check a first run on a class without floors, or to read another class's floors)."""
    override = request.config.getoption("--machine-class")
    return lambda device: override or machine.this_machine_class(device)


@pytest.fixture
def floor_failures(request, benchmark, floors, machine_class):
    """check(benchmark_id, device, figures, ceilings) -> failure lines against the floors of this machine's
    class ([] when they hold), or a recorded note that the class has none (the terminal summary then says
    how to calibrate it)."""
    from fixtures.floors import check_floor, find_floor
    from servers.runtime import device_type

    def check(benchmark_id, device, figures, ceiling_view):
        if benchmark.disabled or request.config.getoption("--no-floors"):
            return []  # smoke pass (make test) or calibration: not measured enough for floors / making them
        cls = machine_class(device_type(device))
        floor = find_floor(floors, cls, benchmark_id)
        if floor is None:
            request.config.stash.setdefault(NO_FLOORS, {}).setdefault(cls, []).append(benchmark_id)
            return []
        return check_floor(floor, figures, ceiling_view)

    return check


def pytest_terminal_summary(terminalreporter, config):
    relations = config.stash.get(RELATION_RESULTS, [])
    if relations:
        terminalreporter.write_sep("-", "relations between benchmarks of this session")
        for result in relations:
            terminalreporter.write_line(f"{result.status:9} {result.name}: {result.message}",
                                        red=result.status == "violated", yellow=result.status in ("recorded", "skipped"))
    for cls, ids in sorted(config.stash.get(NO_FLOORS, {}).items()):
        terminalreporter.write_line(
            f"machine class {cls!r} has no floors yet for {len(ids)} benchmark(s): figures recorded, ceiling sanity "
            f"and relations asserted, floors not. Calibrate it with `make calibrate` and commit floors.toml.", yellow=True)
    rows = config.stash.get(ROWS, [])
    if rows:
        terminalreporter.write_sep("-", "served throughput against its ceilings (req/s or tokens/s)")
        terminalreporter.write_line(ceiling_table(rows))
        bound = [row["benchmark"] for row in rows if row.get("client_bound")]
        if bound:
            terminalreporter.write_line(
                f"client_bound (above 70% of what the load generator itself can send; read as a client limit): {bound}",
                yellow=True,
            )
