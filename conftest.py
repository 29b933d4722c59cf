"""pytest wiring: no model hub, the harness's plugin (fixtures/plugin.py: fixtures and hooks), and the
suite's command-line options. Everything else lives in fixtures/."""

import os

# No test may reach a model hub: everything is built from configs or loaded from local files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

pytest_plugins = ["fixtures.plugin"]


def pytest_addoption(parser):
    group = parser.getgroup("litserve-bench")
    group.addoption(
        "--require-gpu", action="store_true",
        help="fail (instead of skip) tests marked gpu when CUDA is absent: for the GPU CI runner",
    )
    group.addoption(
        "--regression-fail", action="store_true",
        help="after saving a run, fail the session on a worse-direction change point at its commit",
    )
    group.addoption(
        "--regression-threshold", type=float, default=0.10,
        help="relative change below which nothing is reported (default 0.10); noise may raise it",
    )
    group.addoption("--no-plots", action="store_true", help="do not plot saved runs at the end of the session")
    group.addoption("--no-floors", action="store_true",
                    help="record figures without asserting floors (calibration runs); ceiling sanity and relations still hold")
    group.addoption("--gpu-smoke", action="store_true",
                    help="only the benchmarks marked gpu_smoke (make gpu-smoke)")
    group.addoption("--floors-file", default=None, help="read floors from this file instead of floors.toml")
    group.addoption("--machine-class", default=None,
                    help="look floors up under this machine class instead of this machine's (fixtures.measure.machine.machine_class)")
