"""The A/B's reach, measured (fixtures/power.py): a server made slower by a fraction of its own work, and the table
that counts how often the A/B calls it slower, from A/B results."""

import math
import time

import pytest

from fixtures.power import power_rows, render, variance_split
from fixtures.track.ab_verdict import BASE, HEAD
from servers.runtime import Slowdown


def test_a_slowdown_does_a_fraction_of_the_work_it_follows_again():
    started = time.perf_counter()
    time.sleep(0.2)  # the work
    before = time.perf_counter()
    Slowdown(0.5).after(started)
    assert time.perf_counter() - before == pytest.approx(0.5 * (before - started), rel=0.1, abs=0.01)
    step = Slowdown(0.25)  # as a logits processor: a quarter of each decode step, the time since its previous call
    time.sleep(0.2)
    before = time.perf_counter()
    assert step(None, "scores") == "scores"
    assert time.perf_counter() - before == pytest.approx(0.05, rel=0.2, abs=0.01)


def test_the_llm_server_slowed_by_a_fraction_generates_the_same_tokens_doing_that_fraction_again(monkeypatch):
    """Each decode step (and the prefill) done once more over, on the worker's own Generation (a tiny Llama): the
    time spun is the fraction of the rest of the generation's time, whatever else this machine runs meanwhile."""
    from types import SimpleNamespace

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import servers.runtime as runtime
    from servers.llm import Generation

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)
    generation = Generation(LlamaForCausalLM(config).eval(), SimpleNamespace(eos_token_id=0), "cpu",
                            static_compile=False, context=128)
    prompt = torch.tensor([[1, 5, 9, 14, 3]])
    plain_ids = generation.generate_ids(prompt, 32, exact=True)
    spun, spin = [], runtime.spin
    monkeypatch.setattr(runtime, "spin", lambda seconds: (spun.append(seconds), spin(seconds)))
    generation.slowdown = 0.5
    started = time.perf_counter()
    slowed_ids = generation.generate_ids(prompt, 32, exact=True)
    elapsed = time.perf_counter() - started
    assert torch.equal(plain_ids, slowed_ids)
    assert len(spun) == 32  # one per generated token: the first after the prefill, then each decode step
    assert sum(spun) / (elapsed - sum(spun)) == pytest.approx(0.5, rel=0.15)


def ab_result(case_id, verdicts, detectable=0.04, seconds=60.0):
    """An A/B result of one case whose speed comparison says `verdicts` in turn over its launches' samples."""
    samples = {BASE: [{"rps": 100.0}, {"rps": 102.0}], HEAD: [{"rps": 99.0}, {"rps": 103.0}]}
    return {"cases": [{"id": case_id, "seconds": seconds, "launches": [{"samples": samples}] * 3,
                       "comparisons": [{"figure": "rps", "verdict": verdicts, "detectable": detectable}]}]}


def test_the_power_table_counts_slower_calls_per_fraction_and_alarms_in_the_a_as():
    results = {0.0: [ab_result("cpu-batch_workers-c8", "no change beyond the noise")] * 9
               + [ab_result("cpu-batch_workers-c8", "faster")],
               0.03: [ab_result("cpu-batch_workers-c8", "slower")] * 7 + [ab_result("cpu-batch_workers-c8", "no change beyond the noise")] * 3}
    rows = power_rows(results)
    assert rows == [(0.0, "cpu-batch_workers-c8", 0, 1, 10, 0.04, 60.0), (0.03, "cpu-batch_workers-c8", 7, 7, 10, 0.04, 60.0)]
    table = render(results, "python -m fixtures.power -k batch_workers-c8", "cpu/test")
    assert "| none (A/A) | cpu-batch_workers-c8 | 0/10 | 1/10 |" in table and "| 3% | cpu-batch_workers-c8 | 7/10 |" in table
    assert "within a launch" in table


def test_the_noise_splits_into_within_a_launch_and_between_launches():
    launch = lambda shift: {"samples": {BASE: [{"rps": 100.0}, {"rps": 100.0}],
                                        HEAD: [{"rps": 100.0 * math.exp(shift + 0.01)}, {"rps": 100.0 * math.exp(shift - 0.01)}]}}
    split = variance_split({"launches": [launch(0.0), launch(0.02), launch(-0.02)]}, "rps")
    assert split["within_launch"] == pytest.approx(math.sqrt(2) * 0.01, rel=1e-6)  # pairs of one launch: +-1%
    assert split["between_launches"] == pytest.approx(0.02, rel=1e-6)  # launch medians 0, +2%, -2%
