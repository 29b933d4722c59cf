"""The compiled LLM recipes on the CPU, where the GPU's first run would otherwise find out: one static KV
cache per worker, allocated outside compiled code and reused by every request; one compiled decode graph
that prompts of any length never recompile; and the same inductor settings for every compiled recipe."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from fixtures.record.records import compile_problem
from servers.llm import Generation, compile_counters
from servers.llm_models import INDUCTOR_SETTINGS, RECIPES

pytestmark = pytest.mark.slow  # torch.compile of the LLM recipes


@pytest.fixture(scope="module")
def tiny_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval().to(torch.bfloat16)


def test_a_compiled_worker_reuses_one_cache_and_one_graph_across_prompt_lengths(tiny_model):
    """Compiling model.forward put the prefill in the graph: each new prompt length recompiled, and the cache,
    allocated inside the traced prefill, skipped mark_static_address (on CUDA, CUDA-graph outputs that the
    next step may overwrite). transformers also built a new cache per generate()."""
    import torch

    generation = Generation(tiny_model, SimpleNamespace(eos_token_id=0), "cpu", static_compile=True, context=64)
    cache, pointers = generation.cache, generation.cache_pointers()
    assert cache is not None and all(pointer for pair in pointers for pointer in pair)  # allocated at start-up

    def generate(length):
        prompt = torch.randint(1, 512, (1, length))
        return generation.generate_ids(prompt, max_new_tokens=6, exact=True)

    for _ in range(2):  # the worker's warm-up
        generate(10)
    after_warmup = compile_counters()
    assert after_warmup["graphs_compiled"] >= 1
    outputs = [generate(length) for length in (5, 17, 40)]  # requests of other lengths, within the context
    assert [out.shape[1] for out in outputs] == [11, 23, 46]
    assert compile_counters() == after_warmup, "a request after the warm-up compiled or recompiled"
    assert generation.cache is cache and generation.cache_pointers() == pointers


def test_an_eager_recipe_has_no_cache_to_keep_and_nothing_to_compile(tiny_model):
    generation = Generation(tiny_model, SimpleNamespace(eos_token_id=0), "cpu", static_compile=False, context=64)
    assert generation.cache is None and generation.generate_kwargs == {} and generation.compile_mode is None


def test_a_run_that_compiled_after_its_warm_up_is_not_trusted():
    steady = {"mode": "default", "cudagraph_skips": 0, "after_warmup": {"graphs_compiled": 0, "recompiles": 0, "cudagraph_skips": 0,
                                                                         "cudagraph_recorded_non_static_inputs": 0}}
    assert compile_problem(None) is None and compile_problem(steady) is None
    late = {**steady, "after_warmup": {**steady["after_warmup"], "recompiles": 2}}
    assert "recompiles" in compile_problem(late)
    assert "CUDA graphs skipped 3" in compile_problem({**steady, "mode": "reduce-overhead", "cudagraph_skips": 3})


def test_a_cuda_graph_recorded_again_after_the_warm_up_invalidates_the_run_though_nothing_was_skipped():
    """Inductor re-records a CUDA graph for new input addresses up to 128 times without counting a skip; its
    count of recorded non-static inputs is what grows (torch/_inductor/cudagraph_trees.py)."""
    from torch._dynamo.utils import counters

    from fixtures.record.records import compile_problem

    before = compile_counters()
    counters["inductor"]["cudagraph_recorded_non_static_inputs"] += 3  # what one recording of 3 such inputs adds
    after = compile_counters()
    counters["inductor"]["cudagraph_recorded_non_static_inputs"] -= 3
    assert after["cudagraph_recorded_non_static_inputs"] - before["cudagraph_recorded_non_static_inputs"] == 3
    report = {"mode": "reduce-overhead", "cudagraph_skips": 0, **after,
              "after_warmup": {key: after[key] - before[key] for key in after}}
    assert "recorded again" in compile_problem(report)


SETTINGS_OF_RECIPE = """
import json, sys
from servers.llm import Generation
from servers.llm_models import RECIPES, inductor_settings, load
recipe = RECIPES[sys.argv[1]]
tokenizer, model = load("smollm2-135m", recipe, "cpu")
generation = Generation(model, tokenizer, "cpu", recipe.static_compile, 64)
print(json.dumps(generation.run(inductor_settings)))  # on the thread that compiles
"""


def test_every_compiled_recipe_runs_under_the_same_inductor_settings():
    """torchao's configs set their recommended inductor settings (set_inductor_config defaults to True) for the
    quantised recipes only, and in the quantising thread; torch 2.14 keeps them per thread, so read them on
    the generation thread, where the decode step compiles."""
    compiled = [name for name, recipe in RECIPES.items() if recipe.static_compile and not recipe.needs_gpu]
    assert {"static_compile", "torchao_int8wo", "torchao_int4wo"} <= set(compiled)
    ran_with = {}
    for name in compiled:  # one process each: inductor's settings are process-wide
        done = subprocess.run([sys.executable, "-c", SETTINGS_OF_RECIPE, name], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        ran_with[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(settings == INDUCTOR_SETTINGS for settings in ran_with.values()), ran_with


def test_inductor_settings_are_per_thread_so_they_are_set_on_the_thread_that_compiles(tiny_model):
    """The fact the design rests on (torch 2.14's config module keeps overrides in ContextVars)."""
    import threading

    from servers.llm_models import apply_inductor_settings, inductor_settings

    seen = {}
    worker = threading.Thread(target=lambda: seen.update(apply_inductor_settings()))
    worker.start()
    worker.join()
    assert seen == INDUCTOR_SETTINGS
    generation = Generation(tiny_model, SimpleNamespace(eos_token_id=0), "cpu", static_compile=True, context=64)
    assert generation.run(inductor_settings) == INDUCTOR_SETTINGS
    eager = Generation(tiny_model, SimpleNamespace(eos_token_id=0), "cpu", static_compile=False, context=64)
    assert eager.run(inductor_settings)["coordinate_descent_tuning"] is False  # a fresh thread has the defaults


@pytest.mark.parametrize("name, device", [("int8wo", "cpu"), ("int4wo", "cpu"), ("int8wo", "cuda:0"), ("int4wo", "cuda:0"),
                                          ("float8dq", "cuda:0")])
def test_no_torchao_config_sets_inductor_settings_of_its_own(name, device):
    """The CUDA configs too (constructing one needs no GPU): INDUCTOR_SETTINGS is the one place they come from."""
    from servers.llm_models import torchao_config

    assert torchao_config(name, device).set_inductor_config is False
