"""Batched generation (servers.llm.BatchedLLMAPI): a request's greedy tokens in a batch are its tokens alone
(fp32; the check that left padding and the attention mask are right), and the batched server streams each of
several concurrent users exactly their own tokens through LitServe's batched streaming loop."""

import json

import pytest
import torch

from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from fixtures.drive.stream import StreamClient
from servers import llm
from servers.llm_models import RECIPES, load
from tests.post import post

pytestmark = pytest.mark.slow  # the real LLM served batched

SHORT = [{"role": "user", "content": "Name a colour."}]
LONG = [{"role": "user", "content": "Write a short story about a robot who learns to paint, in three sentences."}]
NEW_TOKENS = 12


# bf16 may round differently at batch 2 than at batch 1 (other kernels, another accumulation order), so equality is
# asked of its first BF16_EQUAL_TOKENS only: on the 2-core AMD EPYC Zen 4 both prompts' 32 greedy bf16 tokens were
# equal batched and alone (k = 32 of 32, 2026-11-30); half of that for CPUs whose bf16 kernels accumulate otherwise.
BF16_EQUAL_TOKENS = 16


def _generation(recipe: str):
    tokenizer, model = load("smollm2-135m", RECIPES[recipe], "cpu")
    torch.set_num_threads(1)
    generation = llm.Generation(model, tokenizer, "cpu", static_compile=False, context=256)
    prompts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
               ["input_ids"][0] for chat in (SHORT, LONG)]
    assert prompts[0].shape[0] < prompts[1].shape[0]  # the short prompt is left-padded in the batch
    return generation, prompts


@pytest.fixture(scope="module")
def fp32_generation():
    generation, prompts = _generation("eager_fp32")
    yield generation, prompts
    generation.thread.shutdown()


def _batched_and_alone(generation, prompts, tokens=NEW_TOKENS):
    batched = generation.run(generation.generate_batch, prompts, tokens, [True, True])
    alone = [generation.run(generation.generate_ids, p[None], tokens, True)[0, p.shape[0]:].tolist() for p in prompts]
    width = batched.shape[1] - tokens
    return [row[width:].tolist() for row in batched], alone


def test_fp32_greedy_tokens_in_a_batch_equal_the_tokens_alone(fp32_generation):
    batched, alone = _batched_and_alone(*fp32_generation)
    assert batched == alone


def test_a_batch_that_attends_to_its_padding_fails_the_equality(fp32_generation, monkeypatch):
    """The check above can fail: with the mask set to all ones, the short prompt's row attends to the padding."""
    padded = llm.left_padded
    monkeypatch.setattr(llm, "left_padded", lambda prompts, pad_id: (padded(prompts, pad_id)[0],
                                                                      torch.ones_like(padded(prompts, pad_id)[1])))
    batched, alone = _batched_and_alone(*fp32_generation)
    assert batched[0] != alone[0]


def test_bf16_greedy_tokens_in_a_batch_equal_the_tokens_alone_for_the_first_k():
    generation, prompts = _generation("eager_bf16")
    try:
        batched, alone = _batched_and_alone(generation, prompts, BF16_EQUAL_TOKENS)
    finally:
        generation.thread.shutdown()
    assert batched == alone


def test_ignore_eos_holds_per_row():
    """EOS is barred only in the rows that asked ignore_eos (transformers' min_new_tokens is per batch)."""
    scores = torch.zeros(3, 5)
    llm.SuppressTokens([0, 2], [4])(None, scores)
    assert scores[:, 4].tolist() == [float("-inf"), 0.0, float("-inf")] and scores[:, :4].eq(0).all()


def test_eos_suppression_is_one_device_op_per_step_and_bars_what_row_indexing_barred():
    """At 64 users, per-row indexing with a Python list cost 64 index copies to the device per decode step; the
    suppression is one masked fill per step after the first, with the same scores (so the same greedy tokens)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    rows, eos = [0, 3, 5, 6], [2, 7]
    scores = torch.randn(8, 11)
    expected = scores.clone()
    for row in rows:  # what the processor did before: one indexing per row
        expected[row, eos] = float("-inf")
    processor = llm.SuppressTokens(rows, eos)
    first = processor(None, scores.clone())
    step = scores.clone()
    with Ops() as ops:
        later = processor(None, step)
    assert torch.equal(first, expected) and torch.equal(later, expected)
    assert ops.names == ["masked_fill_.Scalar"], ops.names


@pytest.fixture(scope="module")
def batched_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    spec = ServerSpec(
        name="llm-batched-functional", module="servers.llm", startup_timeout_s=300,
        options=(("model", "smollm2-135m"), ("recipe", "eager_fp32"), ("device", "cpu"), ("threads", 1),
                 ("warmup-tokens", 4), ("max-batch-size", 4), ("batch-timeout", 0.2)),
    )
    server = start_server(spec, logs)
    yield server
    server.stop()


def test_concurrent_users_share_batches_and_each_gets_its_own_exact_stream(batched_server):
    from fixtures.drive.answers import llm_check

    body = {"model": "smollm2-135m", "messages": LONG, "max_tokens": 8, "temperature": 0, "metadata": {"ignore_eos": "true"}}
    with StreamClient(f"{batched_server.url}/v1/chat/completions", body, llm_check(8, exact_length=True)) as client:
        streams = client.closed_loop(4, 4)
    assert [(r.ok, r.completion_tokens, len(r.token_times_s)) for r in streams] == [(True, 8, 8)] * 4, [r.error for r in streams]
    batches = batched_server.get_json("/stats/batch-sizes")["workers"]["0"]
    assert max(map(int, batches)) > 1  # four at once, a 200 ms window: they shared a batch
    assert batched_server.get_json(llm.PADDING_PATH)["padded"] == 0  # equal lengths: no row waited for another


def test_a_shorter_request_in_a_batch_ends_at_its_own_length_and_is_counted_as_padding(batched_server):
    from fixtures.drive.answers import llm_check

    before = batched_server.get_json(llm.PADDING_PATH)
    bodies = [{"model": "smollm2-135m", "messages": LONG, "max_tokens": n, "temperature": 0, "metadata": {"ignore_eos": "true"}}
              for n in (3, 9)]
    import concurrent.futures

    def one(body):
        with StreamClient(f"{batched_server.url}/v1/chat/completions", body, llm_check(body["max_tokens"], True)) as c:
            return c.sequential(1)[0]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        short, long = pool.map(one, bodies)
    assert (short.ok, short.completion_tokens, long.ok, long.completion_tokens) == (True, 3, True, 9), (short.error, long.error)
    after = batched_server.get_json(llm.PADDING_PATH)
    # sent together inside a 200 ms window: one batch of two rows x 9 steps, the short row padded for 6 of them
    assert (after["slots"] - before["slots"], after["padded"] - before["padded"]) == (18, 6)


def test_the_batched_server_refuses_sampling_with_a_400(batched_server):
    status, body = post(f"{batched_server.url}/v1/chat/completions",
                        json.dumps({"model": "m", "messages": SHORT, "temperature": 0.7}).encode())
    assert status == 400 and "greedily" in json.dumps(body)


def test_litserves_continuous_batching_loop_cannot_serve_the_openai_api_in_0_2_19():
    """Why there is no continuous-batching recipe (read in .venv/.../litserve/loops/continuous_batching_loop.py):
    the default loop's add_request takes no transport while prefill passes one, so its first request raises; and
    the base loop sends each step's output through the spec's encode_response, which iterates it, so one token's
    text reaches the client as one chunk per character. When a LitServe upgrade fixes either, this fails: try it."""
    import asyncio
    from types import SimpleNamespace

    import litserve
    from litserve.loops.continuous_batching_loop import DefaultContinuousBatchingLoop
    from litserve.specs.openai import OpenAISpec

    assert litserve.__version__ == "0.2.19"
    api = SimpleNamespace(max_batch_size=4, decode_request=lambda request: request)
    with pytest.raises(TypeError, match="add_request"):
        asyncio.run(DefaultContinuousBatchingLoop().prefill([(0, "uid-0", {"messages": []})], api, None, None, None))
    assert [m["content"] for m in OpenAISpec().encode_response(" Paris")] == [" ", "P", "a", "r", "i", "s"]
