"""Random JSON and bytes thrown at both servers for a bounded number of examples: never a 5xx,
never a dead server (hypothesis; each example is one request on loopback)."""

import base64
import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec

EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def post(url, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    classifier = start_server(ServerSpec(
        name="classifier-fuzz", module="servers.classifier",
        options=(("model", "resnet18"), ("input-size", 32), ("num-classes", 10), ("device", "cpu"),
                 ("max-batch-size", 4), ("batch-timeout", 0.01)),
    ), logs)
    llm = start_server(ServerSpec(
        name="llm-fuzz", module="servers.llm", startup_timeout_s=300,
        options=(("model", "smollm2-135m"), ("device", "cpu"), ("warmup-tokens", 2), ("default-max-tokens", 2),
                 ("max-tokens-limit", 4)),
    ), logs)
    yield {"classifier": f"{classifier.url}/predict", "llm": f"{llm.url}/v1/chat/completions",
           "health": [f"{classifier.url}/health", f"{llm.url}/health"]}
    classifier.stop()
    llm.stop()


@EXAMPLES
@given(body=st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"image": st.one_of(st.text(max_size=50), st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()), json_values)})
    .map(lambda v: json.dumps(v).encode()),
))
def test_classifier_never_answers_5xx(servers, body):
    assert post(servers["classifier"], body) < 500


chat_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "wizard", ""]),
                                                "content": st.one_of(st.text(max_size=20), st.integers(), st.none())}),
                         max_size=3)


@EXAMPLES
@given(body=st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"messages": chat_messages},
                          optional={"max_tokens": st.one_of(st.integers(-5, 10), st.text(max_size=3), st.booleans()),
                                    "stream": st.one_of(st.booleans(), st.integers())})
    .map(lambda v: json.dumps(v).encode()),
))
def test_llm_never_answers_5xx(servers, body):
    assert post(servers["llm"], body) < 500


def test_both_servers_are_alive_after_the_fuzzing(servers):
    assert all(post_health(url) == 200 for url in servers["health"])


def post_health(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status
