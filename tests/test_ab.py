"""A/B of two commits (fixtures/ab.py, fixtures/track/ab_verdict.py): the statistics on known inputs, the selection as pytest -k makes it,
and one real run where HEAD is a commit whose server is slower on purpose, served from its own worktree."""

import json
import math
import random
import subprocess

import pytest

from fixtures.ab import collected_cases, run_ab
from fixtures.track.ab_verdict import (BASE, HEAD, compare_launches, interleaved_order, render_markdown,
                                       signed_rank_critical)
from fixtures.drive.server import REPO_ROOT

pytestmark = pytest.mark.slow  # an A/B of two commits' servers


def test_signed_rank_critical_values_are_the_published_table():
    # Two-sided 5% critical values of Wilcoxon's signed-rank T for n = 6..15 (e.g. Siegel, Table G).
    assert [signed_rank_critical(n) for n in range(6, 16)] == [0, 2, 3, 5, 8, 10, 13, 17, 21, 25]
    assert signed_rank_critical(5) == -1  # no 95% interval from five launches


def _launches(ratios, noise=0.03, pairs=3, seed=1, level=100.0):
    rng = random.Random(seed)
    return [([level * (1 + rng.uniform(-noise, noise)) for _ in range(pairs)],
             [level * ratio * (1 + rng.uniform(-noise, noise)) for _ in range(pairs)]) for ratio in ratios]


def test_a_head_slower_in_every_launch_is_slower_and_fails_the_gate():
    comparison = compare_launches("rps", _launches([0.8] * 6))
    assert comparison.verdict == "slower" and comparison.fails
    assert comparison.ratio_high < 1 and 0.75 < comparison.ratio < 0.85


def test_a_lower_is_better_figure_is_slower_when_it_grows():
    comparison = compare_launches("latency_p50_ms", _launches([1.3] * 6))
    assert comparison.verdict == "slower" and comparison.fails and comparison.change < 0


def test_launches_that_disagree_are_no_change_and_never_fail():
    comparison = compare_launches("rps", _launches([0.9, 1.1, 0.95, 1.05, 0.93, 1.08]))
    assert comparison.verdict == "no change beyond the noise" and not comparison.fails


def test_a_significant_change_inside_the_threshold_does_not_fail():
    comparison = compare_launches("rps", _launches([0.97] * 6, noise=0.001), threshold=0.05)
    assert comparison.verdict == "slower" and not comparison.fails


def test_a_figure_fails_only_past_its_own_declared_noise():
    # p99's least change worth reporting is 30% (fixtures/record/figures.py): 20% worse is reported, not failed.
    comparison = compare_launches("latency_p99_ms", _launches([1.2] * 6, noise=0.001))
    assert comparison.verdict == "slower" and comparison.gate >= 0.3 and not comparison.fails


def test_too_few_launches_give_no_interval_and_no_verdict_either_way():
    comparison = compare_launches("rps", _launches([0.5] * 3))
    assert comparison.ratio_low is None and comparison.verdict.startswith("too few launches") and not comparison.fails


def test_each_pair_holds_both_sides_in_a_seeded_random_order():
    order = interleaved_order(40, random.Random(7))
    assert all(sorted(pair) == sorted((BASE, HEAD)) for pair in order)
    assert {pair[0] for pair in order} == {BASE, HEAD}  # both orders occur
    assert order == interleaved_order(40, random.Random(7))


def test_the_selection_is_pytest_k_over_the_collected_benchmarks():
    ids = lambda expression: [case.id for case in collected_cases(expression, "cpu")]  # noqa: E731
    assert sorted(ids("batch_workers-c8 or (test_llm_decode and llm_eager_bf16)")) == ["cpu-batch_workers-c8", "cpu-llm_eager_bf16"]
    (under_load,) = collected_cases("test_llm_concurrency and llm_eager_bf16-c4", "cpu")  # a sweep level, at its users
    assert under_load.kind == "llm" and under_load.concurrency == 4
    assert ids("test_classifier_throughput and batch_workers and c8") == ["cpu-batch_workers-c8"]
    assert {case.kind for case in collected_cases("test_llm_decode", "cpu")} == {"llm"}
    # A user's own LitAPI declaration is found the same way, with its declaration beside it.
    (embedding,) = collected_cases("embedding_batching-c8", "cpu")
    assert embedding.case.bench.api == "servers.embedding:EmbeddingAPI" and embedding.concurrency == 8
    # and a streaming one (fixtures/chat.py) as an LLM case, driven by its own case
    (chat,) = collected_cases("chat_plain-c4", "cpu")
    assert chat.kind == "llm" and chat.case.bench.api == "servers.chat:ChatLLM" and chat.concurrency == 4
    assert collected_cases("test_poisson", "cpu") == []  # open loop: not A/B'd


@pytest.fixture
def slowed_clone(tmp_path):
    """A clone of this repository's HEAD plus one commit whose classifier sleeps 40 ms in every predict by default."""
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(REPO_ROOT), str(clone)], check=True)
    server = clone / "servers" / "classifier.py"
    text = server.read_text()
    assert '"--predict-delay-ms", type=float, default=0.0' in text
    server.write_text(text.replace('"--predict-delay-ms", type=float, default=0.0', '"--predict-delay-ms", type=float, default=40.0'))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(git + ["commit", "--quiet", "-am", "a slower classifier"], cwd=clone, check=True)
    return clone


def test_each_side_is_served_from_its_own_commit(slowed_clone, tmp_path):
    # One launch, one pair: no verdict (too few launches), but the head's server is the slowed commit's and
    # the base's is not, although both run from this venv, whose editable install points at another checkout.
    result = run_ab(slowed_clone, "HEAD~1", "HEAD", "cpu-baseline-c1", launches=1, pairs=1, seed=3, tier_name="cpu")
    (case,) = result["cases"]
    assert "problem" not in case, case.get("problem")
    (launch,) = case["launches"]
    base_p50 = launch["samples"][BASE][0]["latency_p50_ms"]
    head_p50 = launch["samples"][HEAD][0]["latency_p50_ms"]
    assert head_p50 - base_p50 > 30, (base_p50, head_p50)
    assert result["verdict"] == "pass" and not result["slower"]
    assert result["base"]["commit"] != result["head"]["commit"]
    markdown = render_markdown(result)
    assert "cpu-baseline-c1" in markdown and "too few launches" in markdown
    json.dumps(result)  # saved as JSON
    listed = subprocess.run(["git", "worktree", "list"], cwd=slowed_clone, capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1, f"worktrees left behind:\n{listed}"


def test_the_summary_page_shows_the_newest_ab_table(tmp_path):
    from dataclasses import asdict

    from fixtures.track.ab_verdict import RESULTS_FOLDER
    from fixtures.track.report import summary_for_storage

    slower = compare_launches("rps", _launches([0.8] * 6))
    result = {"base": {"ref": "origin/main", "commit": "a" * 40}, "head": {"ref": "HEAD", "commit": "b" * 40},
              "selection": "batch_workers-c8", "machine_class": "cpu/test", "launches": 6, "pairs": 3, "confidence": 0.95,
              "threshold": 0.05, "seconds": 90.0, "verdict": "slower",
              "cases": [{"id": "cpu-batch_workers-c8", "comparisons": [asdict(slower) | {"change": slower.change}]}]}
    (tmp_path / RESULTS_FOLDER).mkdir(parents=True)
    (tmp_path / RESULTS_FOLDER / "20261130-000000-aaaaaaaa-bbbbbbbb.json").write_text(json.dumps(result))
    page = summary_for_storage(tmp_path)
    assert "A/B: `bbbbbbbb` (HEAD) against `aaaaaaaa` (origin/main): **FAIL: slower**" in page
    assert "| cpu-batch_workers-c8 | rps |" in page and "**(fails: past 5%)**" in page
    # its reach, in the job summary and on the summary page alike
    assert f"every figure could tell a change of {slower.detectable:.1%} or more from none" in page


def test_every_comparison_states_the_smallest_change_it_could_detect():
    """'No change beyond the noise' said nothing of how large a change the noise could hide: now it reads 'no change
    larger than X%', X the interval's half width (a true change of X puts 1 at the interval's edge)."""
    from dataclasses import asdict

    from fixtures.track.ab_verdict import reading

    quiet = compare_launches("rps", _launches([1.0] * 6, noise=0.002))
    noisy = compare_launches("rps", _launches([0.9, 1.1, 0.95, 1.05, 0.93, 1.08]))
    for c in (quiet, noisy):
        assert c.detectable == pytest.approx(math.exp((math.log(c.ratio_high) - math.log(c.ratio_low)) / 2) - 1)
    assert quiet.detectable < 0.01 < 0.05 < noisy.detectable < 0.15
    assert reading(asdict(noisy)) == f"no change larger than {noisy.detectable:.1%}"
    assert compare_launches("rps", _launches([0.5] * 3)).detectable is None  # no interval, no reach


def test_a_figure_marked_ab_in_the_catalogue_reaches_the_a_b_without_an_edit_to_it(monkeypatch):
    """The A/B computed its figures by hand and named them in two lists of its own; a round's figures are now the
    record's (fixtures.record.records' round figures), and the catalogue says which are compared."""
    from dataclasses import replace
    from types import SimpleNamespace

    import fixtures.record.figures as catalogue
    from fixtures.ab import Side
    from fixtures.closed_loop import REQUEST_RESPONSE
    from fixtures.drive.load import LoadRun, RequestResult
    from fixtures.track.ab_verdict import judge

    class Client:
        def __init__(self, scale):
            self.scale = scale

        def closed_loop(self, requests):
            results = tuple(RequestResult(True, 200, self.scale * (0.010 + 0.001 * (i % 10))) for i in range(requests))
            return LoadRun(results, wall_s=self.scale * 0.012 * requests, concurrency=1)

    def rounds(scale):
        side = Side.__new__(Side)
        side.case, side.shape = SimpleNamespace(kind="closed_loop", concurrency=1), REQUEST_RESPONSE
        side.client, side.energy_sources, side.server = Client(scale), ([], "none in this test"), None
        return [side.round(100) for _ in range(3)]

    assert "latency_p90_ms" not in rounds(1.0)[0]
    monkeypatch.setitem(catalogue.FIGURES, "latency_p90_ms", replace(catalogue.FIGURES["latency_p90_ms"], better="lower", ab=True))
    measured = {"launches": [{"samples": {BASE: rounds(1.0), HEAD: rounds(1.2)}} for _ in range(6)]}
    compared = tuple(measured["launches"][0]["samples"][BASE][0])
    assert "latency_p90_ms" in compared and "rps" in compared
    p90 = next(c for c in judge(measured, compared, 0.05) if c.figure == "latency_p90_ms")
    assert p90.ratio == pytest.approx(1.2) and p90.fails  # 20% slower at the p90 too
