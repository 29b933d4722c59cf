"""The LLM server as an OpenAI client sees it: the real SmolLM2-135M answers, streams one chunk per
token with usage at the end, honours max_tokens, and answers bad requests with 400."""

import json

import openai
import pytest

from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from fixtures.drive.stream import StreamResult, run_sequential_streams
from fixtures.measure.stream_metrics import summarize_streams
from servers.llm import validate_chat_body
from tests.post import post

USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    spec = ServerSpec(
        name="llm-functional", module="servers.llm", startup_timeout_s=300,
        options=(("model", "smollm2-135m"), ("recipe", "eager_bf16"), ("device", "cpu"), ("threads", 1),
                 ("warmup-tokens", 4), ("context", 256), ("max-tokens-limit", 192)),
    )
    server = start_server(spec, logs)
    yield server
    server.stop()


@pytest.fixture
def client(llm):
    with openai.OpenAI(base_url=f"{llm.url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_the_real_model_knows_the_capital_of_france(client):
    answer = client.chat.completions.create(model="smollm2", messages=USER, temperature=0, max_tokens=30)
    assert "Paris" in answer.choices[0].message.content
    usage = answer.usage
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_sends_one_chunk_per_token_and_usage_last(client):
    stream = client.chat.completions.create(
        model="smollm2", messages=USER, temperature=0, max_tokens=10, stream=True, metadata={"ignore_eos": "true"},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content is not None]
    assert len(content) == 10  # exactly max_tokens with ignore_eos
    assert chunks[-1].usage.completion_tokens == 10
    assert "Paris" in "".join(content)


def test_max_tokens_is_honoured(client):
    answer = client.chat.completions.create(model="smollm2", messages=USER, temperature=0, max_tokens=3)
    assert answer.usage.completion_tokens == 3  # the full answer needs more than 3 tokens


def test_stream_metrics_cross_check_usage(llm):
    body = {"messages": USER, "max_tokens": 6, "temperature": 0, "metadata": {"ignore_eos": "true"}}
    (result,) = run_sequential_streams(f"{llm.url}/v1/chat/completions", body, 1)
    assert result.ok, result.error
    assert result.completion_tokens == 6 and len(result.token_times_s) == 6
    assert 0 < result.ttft_s < result.end_s - result.start_s


@pytest.mark.parametrize(
    "body, message",
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role must be one of"),
        ({"messages": USER, "max_tokens": 0}, "'max_tokens' must be an integer from 1 to 192"),
        ({"messages": USER, "max_tokens": 193}, "'max_tokens' must be an integer from 1 to 192"),
    ],
    ids=["empty-messages", "unknown-role", "max-tokens-zero", "max-tokens-above-limit"],
)
def test_bad_requests_get_a_400_with_a_message(client, body, message):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="smollm2", **body)
    assert message in str(error.value)
    with pytest.raises(openai.BadRequestError):  # streaming requests too, before any event is sent
        client.chat.completions.create(model="smollm2", stream=True, **body)
    assert client.chat.completions.create(model="smollm2", messages=USER, max_tokens=2).usage.completion_tokens >= 1


def test_malformed_json_and_a_too_long_prompt_are_400(llm, client):
    status, body = post(f"{llm.url}/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["message"] == "request body is not valid JSON"
    long_prompt = [{"role": "user", "content": "word " * 400}]  # beyond the 256-token context
    status, body = post(f"{llm.url}/v1/chat/completions", json.dumps({"messages": long_prompt, "max_tokens": 8}).encode())
    assert status == 400 and "exceeds the context of 256" in json.dumps(body)
    assert client.chat.completions.create(model="smollm2", messages=USER, max_tokens=2).usage.completion_tokens >= 1


def test_validate_chat_body_accepts_a_good_request():
    good = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 5, "stream": True}
    assert validate_chat_body(json.dumps(good).encode(), 192) is None
    assert validate_chat_body(b"[]", 192) == "request body must be a JSON object"
    assert "'stream' must be true or false" == validate_chat_body(json.dumps({**good, "stream": "yes"}).encode(), 192)
    assert "max_completion_tokens" in validate_chat_body(json.dumps({**good, "max_completion_tokens": True}).encode(), 192)


def test_summarize_streams_hand_computed():
    # Two requests: sent at 0 and 10; tokens at +0.5, +0.6, +0.8 (first) and +1.0, +1.1, +1.2 (second).
    a = StreamResult(True, 200, 0.0, (0.5, 0.6, 0.8), 1.0, 3, 10)
    b = StreamResult(True, 200, 10.0, (11.0, 11.1, 11.2), 11.5, 3, 10)
    failed = StreamResult(False, 400, 20.0, (), 20.1, None, None, "bad")
    s = summarize_streams([a, b, failed])
    assert s.requests == 3 and s.errors == 1 and s.tokens == 6
    assert s.ttft_mean_s == pytest.approx(0.75) and s.ttft_p50_s == pytest.approx(0.75)
    assert s.itl_mean_s == pytest.approx((0.1 + 0.2 + 0.1 + 0.1) / 4)
    assert s.tpot_mean_s == pytest.approx(((1.0 - 0.5) / 2 + (1.5 - 1.0) / 2) / 2)
    assert s.e2e_mean_s == pytest.approx(1.25)
    assert s.tokens_per_s_per_request == pytest.approx((3 / 1.0 + 3 / 1.5) / 2)
    assert s.wall_s == pytest.approx(20.1)


def test_a_client_leaving_mid_stream_does_not_stop_the_server(llm, client):
    """LitServe 0.2.19 has no way to tell a worker that its client left: the generation runs to its
    max_tokens (bounded by --max-tokens-limit), then the next request is served."""
    import http.client
    import time

    connection = http.client.HTTPConnection("127.0.0.1", llm.port, timeout=60)
    body = json.dumps({"messages": USER, "max_tokens": 40, "stream": True, "metadata": {"ignore_eos": "true"}})
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.read(5) == b"data:"  # the first token arrived (chunked transfer decoded)
    connection.close()  # leave mid-stream
    started = time.monotonic()
    answer = client.chat.completions.create(model="smollm2", messages=USER, max_tokens=2)
    assert answer.usage.completion_tokens >= 1
    assert time.monotonic() - started < 60


def test_the_gguf_conversion_reads_one_file_once_and_only_with_the_gguf_it_was_written_for(tmp_path, monkeypatch):
    """servers.llm_models._gguf_read_once: one reader per file and one name map per architecture inside the block,
    gguf's own functions again after it, and nothing changed under another gguf release."""
    import gguf
    from importlib import metadata

    from servers import llm_models

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with llm_models._gguf_read_once():
        assert gguf.GGUFReader(str(path)) is gguf.GGUFReader(str(path))
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    monkeypatch.setattr(metadata, "version", lambda name: "0.20.0")
    with llm_models._gguf_read_once():
        assert gguf.GGUFReader(str(path)) is not gguf.GGUFReader(str(path))
