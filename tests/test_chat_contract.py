"""The streaming declaration's contract (fixtures/chat.py), without a server: what a check may return, how tokens
are counted, which prompt each request sends and the check it is judged by, the levels and the ids it declares."""

import pytest

from fixtures.chat import ChatBenchmark, ChatCase, cases, stream_check
from fixtures.drive.stream import USAGE_RULE, usage_check
from fixtures.litapi import CHECK_RULE, CheckContractBroken, Serving

PROMPTS = ([{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}])


def declared(check, **kwargs):
    return ChatBenchmark(api="servers.mine:MyLLM", prompts=PROMPTS, max_tokens=8, check=check,
                         variants={"plain": Serving(), "batched": Serving(max_batch_size=4, batch_timeout=0.05)}, **kwargs)


@pytest.mark.parametrize("returned", [True, False, 0, ""])
def test_a_check_returning_anything_but_none_or_a_reason_stops_the_benchmark(returned):
    check = stream_check(declared(lambda messages, text, usage: returned), 0)
    with pytest.raises(CheckContractBroken, match=f"mine: {CHECK_RULE}; .*returned {returned!r}"):
        check(8, 8, "stop", "some text")


def test_each_prompt_is_judged_with_its_own_messages_and_the_stream_s_usage():
    seen = []
    bench = declared(lambda messages, text, usage: seen.append((messages, text, usage)) or None)
    assert stream_check(bench, 1)(5, 3, "stop", "abc") is None
    assert seen == [(PROMPTS[1], "abc", {"completion_tokens": 5})]
    assert "raised ZeroDivisionError" in stream_check(declared(lambda m, t, u: 1 / 0), 0)(5, 3, "stop", "abc")
    # the client sends the prompts in turn, each with its own check
    client = ChatCase(bench, "cpu", "plain").client("http://127.0.0.1:1", 8)
    bodies = [client._next()[0]["messages"] for _ in range(3)]
    assert bodies == [PROMPTS[0], PROMPTS[1], PROMPTS[0]]


def test_tokens_are_the_server_s_count_so_a_stream_without_usage_is_a_wrong_answer():
    assert usage_check(None, 12, "stop", "words") == f"12 content chunks but usage.completion_tokens=None: {USAGE_RULE}"
    assert usage_check(0, 3, "stop", "words").startswith("3 content chunks")
    assert usage_check(12, 5, "stop", "five words sent as chunks") is None  # a chunk may hold several tokens


def test_levels_ids_and_objectives_follow_the_tier_unless_declared():
    bench = declared(lambda m, t, u: None, objectives={"cpu": (0.5, None)}, concurrency={"gpu": (1, 16)})
    ids = [param.id for param in cases(bench)]
    assert ids[:4] == ["cpu-mine_plain-c1", "cpu-mine_plain-c2", "cpu-mine_plain-c4", "cpu-mine_plain-c8"]
    assert "gpu-mine_batched-c16" in ids and "gpu-mine_plain-c4" not in ids
    tier = ChatCase(bench, "cpu", "plain").tier
    assert (tier.ttft_slo_s, tier.tpot_slo_s, tier.max_new_tokens) == (0.5, 0.1, 8)
    assert ChatCase(bench, "cpu", "plain").max_tokens(smoke=True) == 4
    spec = bench.spec("cpu", "batched")
    assert spec.option("openai-spec") is True and spec.option("max-batch-size") == 4
