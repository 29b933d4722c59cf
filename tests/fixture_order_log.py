"""A pytest plugin for inner sessions (-p tests.fixture_order_log): writes each session fixture's setup, in order,
to the file FIXTURE_ORDER_LOG names, with the servers whose processes were running at that moment:
"up case_ceilings running=cpu-baseline" (running= empty when none)."""

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    yield  # logged once the fixture's value exists: a server is up once it answers
    if fixturedef.scope == "session":
        from fixtures.plugin import _started_servers

        running = ",".join(s.spec.name for s in _started_servers if s.process.poll() is None)
        with open(os.environ["FIXTURE_ORDER_LOG"], "a") as log:
            log.write(f"up {fixturedef.argname} running={running}\n")
