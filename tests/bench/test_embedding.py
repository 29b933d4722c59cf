"""The text-embedding server (servers/embedding.py): a user's own LitAPI on the suite's generic path."""
import math

from fixtures.litapi import LitAPIBenchmark, Serving, benchmark_test

# Each request embeds a paraphrase pair and an unrelated sentence (OpenAI's list input).
TRIPLES = (("A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."),
           ("The cat sleeps on the sofa.", "A kitten is napping on the couch.", "Rain is expected in Paris tomorrow."),
           ("How do I reset my password?", "I forgot my password, how can I change it?", "Bake the bread for forty minutes."))


def right_answer(payload, answer):
    vectors = [item["embedding"] for item in answer["data"]]
    if len(vectors) != 3 or any(len(v) != 384 or abs(math.hypot(*v) - 1) > 1e-3 for v in vectors):
        return f"expected three 384-d unit vectors, got {[(len(v), round(math.hypot(*v), 4)) for v in vectors]}"
    pair, off = (sum(a * b for a, b in zip(vectors[0], v)) for v in vectors[1:])
    return None if pair > off + 0.2 else f"paraphrases {pair:.3f} apart, unrelated {off:.3f}: meaning lost"


test_embedding = benchmark_test(LitAPIBenchmark(
    api="servers.embedding:EmbeddingAPI", path="/v1/embeddings", check=right_answer, torch_module="model",
    payloads=tuple({"input": list(triple), "model": "all-MiniLM-L6-v2"} for triple in TRIPLES),
    variants={"no_batching": Serving(), "batching": Serving(max_batch_size=8, batch_timeout=0.01),
              "batching_workers": Serving(max_batch_size=8, batch_timeout=0.01, workers_per_device=2),
              "fast_queue": Serving(max_batch_size=8, batch_timeout=0.01, workers_per_device=2, fast_queue=True)}))
