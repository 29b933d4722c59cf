"""servers/chat.py, the plain chat server a LitServe user writes (generate + TextIteratorStreamer behind OpenAISpec),
declared as any user's streaming LitAPI is (fixtures/chat.py); its relation to the tuned llm_eager_bf16 recipe
says what the recipe's engineering buys (fixtures/expected_relations.py)."""
from fixtures.chat import ChatBenchmark, benchmark_test
from fixtures.litapi import Serving

PROMPTS = ([{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
           [{"role": "user", "content": "Explain in two sentences why the sky is blue."}])


def english_words(messages, text, usage):
    words = text.split()
    if not words or sum(w.strip(".,;:!?'\"").isalpha() for w in words) < len(words) / 2:
        return f"not English words: {text[:80]!r}"
    return None if usage["completion_tokens"] >= len(words) / 2 else f"{usage['completion_tokens']} tokens for {len(words)} words"


test_chat = benchmark_test(ChatBenchmark(
    api="servers.chat:ChatLLM", prompts=PROMPTS, max_tokens=32, check=english_words, torch_module="model",
    concurrency={"cpu": (1, 4), "gpu": (1, 8)}, variants={"plain": Serving()}))
