"""LLM decode speed through the OpenAI-compatible streaming API: every recipe at one user (batch 1, one request at
a time: test_llm_decode, the seeds' question) and under a closed loop of several users (test_llm_concurrency).
The benchmark itself is every streaming benchmark's (fixtures/streaming.py); a recipe's case reads the direct
figures its worker measured in-process at start-up (servers/llm.py's report).
"""

import json
from dataclasses import dataclass

import pytest

from fixtures.drive.answers import checked_llm_client
from fixtures.drive.server import SERVER_LOG_DIR
from fixtures.record.records import own_recipe
from fixtures.streaming import DirectDecode, streaming_benchmark
from fixtures.variants import LLM_SMOKE_MAX_TOKENS, LLM_TIERS, gpu_smoke_ids, llm_variants
from servers.llm import PADDING_PATH
from servers.llm_models import RECIPES

ANSWER_CHECK = "one content chunk per usage token, a finish reason, exactly max_tokens under ignore_eos"


@dataclass(frozen=True)
class RecipeCase:
    """A recipe of servers/llm.py on one tier, as fixtures.streaming.streaming_benchmark asks of a case."""

    tier: object  # fixtures.variants.LLMTier
    model: str  # servers.llm_models.MODELS
    answer_check: str = ANSWER_CHECK
    padding_path: str = PADDING_PATH

    def max_tokens(self, smoke: bool) -> int:
        # The smoke pass (make test) asserts no speed: its requests are LLM_SMOKE_MAX_TOKENS long, the same path (a
        # prefill, decode steps, the stream's checks) at a fraction of the decode, and so was the server's start-up
        # measurement (the plugin's server fixture).
        return LLM_SMOKE_MAX_TOKENS if smoke else self.tier.max_new_tokens

    def client(self, url: str, max_tokens: int):
        return checked_llm_client(url, self.model, self.tier, max_tokens)

    def served(self, spec, direct):
        return own_recipe(spec, RECIPES[spec.option("recipe")])

    def direct(self, server, max_tokens: int, concurrency: int, ceilings=None) -> DirectDecode:
        report = json.loads((SERVER_LOG_DIR / f"llm-direct-{server.port}.json").read_text())  # the worker's raw facts
        assert report["max_new_tokens"] == max_tokens, f"the start-up direct measurement generated {report['max_new_tokens']}"
        return DirectDecode(report, source="the worker's own generate")


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
                yield pytest.param(RecipeCase(tier, spec.option("model")), spec, 1, marks=marks + smoke, id=spec.name)
                continue
            batched = int(spec.option("max-batch-size", 1)) > 1
            for concurrency in tier.batched_concurrency if batched else tier.concurrency:
                yield pytest.param(RecipeCase(tier, spec.option("model")), spec, concurrency, marks=marks, id=f"{spec.name}-c{concurrency}")


# device_peaks comes before server in the signatures: measured before any server starts. scope="session": one
# server per recipe across both tests (fixtures/drive/ordering.py).
@pytest.mark.benchmark(group="llm")
@pytest.mark.parametrize("case, server, concurrency", list(_cases(sweep=False)), indirect=["server"], scope="session")
def test_llm_decode(request, benchmark, device_peaks, floor_failures, machine_class, save_record, case, server, concurrency):
    streaming_benchmark(request, benchmark, case, server, concurrency, device_peaks, floor_failures, machine_class,
                        save_record)


@pytest.mark.benchmark(group="llm-concurrency")
@pytest.mark.parametrize("case, server, concurrency", list(_cases(sweep=True)), indirect=["server"], scope="session")
def test_llm_concurrency(request, benchmark, device_peaks, floor_failures, machine_class, save_record, case, server,
                         concurrency):
    streaming_benchmark(request, benchmark, case, server, concurrency, device_peaks, floor_failures, machine_class,
                        save_record)
