"""LLM decode speed through the OpenAI-compatible streaming API: every recipe at one user (batch 1, one request at
a time: test_llm_decode, the seeds' question) and under a closed loop of several users (test_llm_concurrency).
The benchmark itself is every benchmark's, in its streaming shape (fixtures/closed_loop.py, fixtures/streaming.py);
a recipe's case serves servers/llm.py
and times the same LitAPI class in the pytest process for its direct ceiling (fixtures.measure.ceilings.chat_ceilings),
with the decode roofline from the model's own facts (servers.llm_models.model_facts).
"""

import os
from dataclasses import dataclass

import pytest

from fixtures.closed_loop import closed_loop_benchmark
from fixtures.drive.answers import checked_llm_client, llm_bench_body
from fixtures.litapi import Serving
from fixtures.measure.ceilings import ceilings_of
from fixtures.record.records import own_recipe
from fixtures.streaming import STREAMING, direct_decode, stream_record
from fixtures.variants import LLM_SMOKE_MAX_TOKENS, LLM_TIERS, gpu_smoke_ids, llm_variants
from servers.llm import PADDING_PATH
from servers.llm_models import RECIPES

ANSWER_CHECK = "one content chunk per usage token, a finish reason, exactly max_tokens under ignore_eos"


@dataclass(frozen=True)
class RecipeCase:
    """A recipe of servers/llm.py on one tier, as fixtures.closed_loop.closed_loop_benchmark (its streaming shape)
    and the plugin's case_ceilings ask of a case."""

    tier: object  # fixtures.variants.LLMTier
    spec: object  # its fixtures.drive.spec.ServerSpec (fixtures.variants.llm_variants)
    answer_check: str = ANSWER_CHECK
    padding_path: str = PADDING_PATH
    shape = STREAMING

    @property
    def recipe(self):
        return RECIPES[self.spec.option("recipe")]

    @property
    def serving(self) -> Serving:
        return Serving(max_batch_size=int(self.spec.option("max-batch-size", 1)),
                       batch_timeout=float(self.spec.option("batch-timeout", 0.0)))

    def max_tokens(self, smoke: bool) -> int:
        # The smoke pass (make test) asserts no speed: its requests are LLM_SMOKE_MAX_TOKENS long, the same path (a
        # prefill, decode steps, the stream's checks) at a fraction of the decode, and so are the server's warm-up
        # (the plugin's server fixture) and the in-process direct ceiling.
        return LLM_SMOKE_MAX_TOKENS if smoke else self.tier.max_new_tokens

    def body(self, index: int, max_tokens: int) -> dict:
        return llm_bench_body(self.spec.option("model"), max_tokens)

    def client(self, url: str, max_tokens: int):
        return checked_llm_client(url, self.spec.option("model"), self.tier, max_tokens)

    def served(self, spec, direct):
        return own_recipe(spec, self.recipe)

    def ceilings(self, levels: tuple, quick: bool = False, min_time_s: float = 1.0):
        from fixtures.measure.ceilings import chat_ceilings

        os.environ.update(dict(self.spec.env))  # the server's inductor cache: a compile here finds it warm
        return chat_ceilings(self, levels, self.max_tokens(quick), quick)

    def build_api(self, max_tokens: int):
        from servers.llm import BatchedLLMAPI, LLMAPI

        api_class = BatchedLLMAPI if self.serving.max_batch_size > 1 else LLMAPI
        return api_class(model=self.spec.option("model"), recipe=self.spec.option("recipe"), warmup_tokens=max_tokens,
                         max_batch_size=self.serving.max_batch_size, batch_timeout=self.serving.batch_timeout)

    def decode_counts(self, api, prompt_tokens: int, max_tokens: int) -> dict:
        from servers.llm_models import model_facts

        facts = {"prompt_tokens": prompt_tokens, "max_new_tokens": max_tokens, "kv_cache_dtype": self.recipe.precision,
                 **model_facts(api.model), "compile": api.compile_report()}
        return {"precision": self.recipe.precision, "facts": facts,
                "roofline_basis": "bytes and FLOPs of a decode step from the model's stored weights and KV cache "
                                  "(servers.llm_models.model_facts)"}

    def record(self, measured, **context) -> dict:
        return stream_record(self, measured, **context)

    def direct(self, max_tokens: int, concurrency: int, ceilings):
        assert ceilings.max_tokens == max_tokens, f"the direct ceiling generated {ceilings.max_tokens} tokens a request"
        return direct_decode(ceilings, self.serving, concurrency, "the recipe's generate in-process")


def _cases(sweep: bool):
    """(case, spec, concurrency) of every recipe: at one user (ids <tier>-llm_<recipe>, the ids floors and saved runs
    have always used), or at each of the tier's levels beyond one (ids <tier>-llm_<recipe>-c<n>)."""
    for tier_name, tier in LLM_TIERS.items():
        for variant, spec in llm_variants(tier_name).items():
            recipe = RECIPES[spec.option("recipe")]
            marks = ([pytest.mark.floored, pytest.mark.llm] + ([pytest.mark.gpu] if tier.device == "cuda" else [])
                     + ([pytest.mark.compile] if recipe.static_compile else []))
            if not sweep:
                smoke = [pytest.mark.gpu_smoke] if spec.name in gpu_smoke_ids() else []
                yield pytest.param(RecipeCase(tier, spec), spec, 1, marks=marks + smoke, id=spec.name)
                continue
            batched = int(spec.option("max-batch-size", 1)) > 1
            for concurrency in tier.batched_concurrency if batched else tier.concurrency:
                yield pytest.param(RecipeCase(tier, spec), spec, concurrency, marks=marks, id=f"{spec.name}-c{concurrency}")


# The ceilings come before server in the signatures: measured before any server starts. scope="session": one server
# per recipe across both tests (fixtures/drive/ordering.py).
@pytest.mark.benchmark(group="llm")
@pytest.mark.parametrize("case, server, concurrency", list(_cases(sweep=False)), indirect=["server"], scope="session")
def test_llm_decode(request, benchmark, device_peaks, case_ceilings, floor_failures, machine_class, save_record, case,
                    server, concurrency):
    closed_loop_benchmark(request, benchmark, case, server, concurrency, ceilings_of(case_ceilings, server.spec.name),
                          device_peaks=device_peaks, floor_failures=floor_failures, machine_class=machine_class,
                          save_record=save_record)


@pytest.mark.benchmark(group="llm-concurrency")
@pytest.mark.parametrize("case, server, concurrency", list(_cases(sweep=True)), indirect=["server"], scope="session")
def test_llm_concurrency(request, benchmark, device_peaks, case_ceilings, floor_failures, machine_class, save_record,
                         case, server, concurrency):
    closed_loop_benchmark(request, benchmark, case, server, concurrency, ceilings_of(case_ceilings, server.spec.name),
                          device_peaks=device_peaks, floor_failures=floor_failures, machine_class=machine_class,
                          save_record=save_record)
