"""The text-embedding server (servers/embedding.py) as an OpenAI client sees it, served by the generic launcher
(fixtures/drive/launch.py) with batching: unit vectors that keep meaning, the batch sizes it ran, and bad bodies
answered 422 without failing the requests batched beside them."""

import json
import math
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from servers.runtime import STATS_PATH
from tests.post import post

PAIR = ("The cat sleeps on the sofa.", "A kitten is napping on the couch.")
UNRELATED = "Rain is expected in Paris tomorrow."


@pytest.fixture(scope="module")
def embedding(tmp_path_factory):
    spec = ServerSpec(name="embedding-functional", module="fixtures.drive.launch",
                      options=(("api", "servers.embedding:EmbeddingAPI"), ("accelerator", "cpu"), ("max-batch-size", 8),
                               ("batch-timeout", 0.05)))
    server = start_server(spec, tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


def test_an_openai_client_gets_unit_vectors_that_keep_meaning(embedding):
    with openai.OpenAI(base_url=f"{embedding.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=[*PAIR, UNRELATED])
    vectors = [item.embedding for item in answer.data]
    assert [len(v) for v in vectors] == [384] * 3
    assert all(math.isclose(math.hypot(*v), 1, abs_tol=1e-4) for v in vectors)
    cosine = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert answer.usage.prompt_tokens > 10


@pytest.mark.parametrize("body", [b'{"input": 5}', b'{"input": []}', b'{"input": [""]}', b"{}", b"not json",
                                  json.dumps({"input": ["x"] * 65}).encode()])
def test_a_bad_body_gets_422_and_the_requests_batched_beside_it_succeed(embedding, body):
    url = f"{embedding.url}/v1/embeddings"
    good = json.dumps({"input": PAIR[0]}).encode()
    before = embedding.get_json(STATS_PATH)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: post(url, b), [good] * 7 + [body]))
    assert [status for status, _ in answers[:7]] == [200] * 7, answers[:7]
    assert answers[7][0] == 422, answers[7]
    after = embedding.get_json(STATS_PATH)
    ran = sum(int(size) * n for counts in after["workers"].values() for size, n in counts.items()) - \
        sum(int(size) * n for counts in before["workers"].values() for size, n in counts.items())
    assert ran == 7  # the bad body never reached a worker; the launcher counted every good request's batch
