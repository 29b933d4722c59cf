"""A pytest plugin for inner sessions (-p tests.fixture_order_log): writes each session fixture's setup and
teardown, in order, to the file FIXTURE_ORDER_LOG names ("up server cpu-baseline", "down server ..."), so a
test can read which fixtures were alive when another was set up."""

import os

import pytest


def _line(event: str, fixturedef, request) -> str:
    param = getattr(request, "param", None)
    return f"{event} {fixturedef.argname} {getattr(param, 'name', '')}".rstrip() + "\n"


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    yield  # logged once the fixture's value exists: a server is up once it answers
    if fixturedef.scope == "session":
        with open(os.environ["FIXTURE_ORDER_LOG"], "a") as log:
            log.write(_line("up", fixturedef, request))


def pytest_fixture_post_finalizer(fixturedef, request):
    if fixturedef.scope == "session" and fixturedef.cached_result is not None:
        with open(os.environ["FIXTURE_ORDER_LOG"], "a") as log:
            log.write(_line("down", fixturedef, request))
