"""The tables people read: the terminal ceiling table and the markdown report of a saved run."""

import json

from fixtures.track.report import ceiling_tables, describe_machine, markdown_table


def bench(param, **extra_info):
    return {"param": param, "name": f"test[{param}]", "fullname": f"t::test[{param}]", "extra_info": extra_info}


RUN = {
    "datetime": "2026-11-23T11:00:00",
    "commit_info": {"id": "abcdef123456"},
    "machine_info": {"cpu_info": {"model": "Xeon", "logical_cores": 2}, "gpus": [], "packages": {"torch": "2.14.1", "litserve": "0.2.19"}},
    "benchmarks": [
        bench("cpu-batched-c8", rps=125.04, direct_rps=210.0, api_over_direct=0.5954, concurrency=8, model="resnet18",
              input_size=112, latency_p50_ms=60.0, latency_p99_ms=90.0, errors=0),
        bench("cpu-llm_eager_bf16", tokens_per_s=18.9, direct_tokens_per_s=19.3, roofline_tokens_per_s_measured=103.0,
              api_over_direct=0.979, bandwidth_achieved_gbs=5.1, recipe="eager_bf16"),
    ],
}


def test_markdown_report_has_a_table_per_kind():
    text = markdown_table(RUN)
    classifier, llm = text.split("\n\n")
    assert "| cpu-batched-c8 |" in classifier and "125.0" in classifier and "0.60" in classifier
    assert "| cpu-llm_eager_bf16 |" in llm and "18.9" in llm and "eager_bf16" in llm and "103" in llm
    assert "Xeon (2 cores), no GPU" in describe_machine(RUN) and "abcdef12" in describe_machine(RUN)


def test_a_record_is_tabled_by_the_kind_it_declares_not_by_the_keys_it_holds():
    """A user's request/response LitAPI may well report tokens/s of its own: it is a closed-loop record still."""
    from fixtures.record.records import CLOSED_LOOP, LLM, record_kind

    run = json.loads(json.dumps(RUN))
    run["benchmarks"][0]["extra_info"].update(kind=CLOSED_LOOP, tokens_per_s=900.0)
    run["benchmarks"][1]["extra_info"]["kind"] = LLM
    classifier, llm = markdown_table(run).split("\n\n")
    assert "cpu-batched-c8" in classifier and "cpu-batched-c8" not in llm
    assert [title for title, _ in ceiling_tables({"mine-c8": {"kind": CLOSED_LOOP, "rps": 5.0, "tokens_per_s": 9.0}})] == \
        ["closed loop: served req/s against its ceilings"]
    assert record_kind({"tokens_per_s": 18.9}) == LLM  # a run saved before records declared their kind


def test_ceiling_tables_align_mark_unknowns_and_keep_each_unit_apart():
    records = {"cpu-batched-c8": {"rps": 125.0, "direct_rps": 210.0, "compute_roofline_rps_measured": 360.0,
                                  "compute_roofline_rps_datasheet": None, "api_over_direct": 0.6},
               "cpu-llm_eager_bf16": {"tokens_per_s": 18.9, "direct_tokens_per_s": 19.3, "api_over_direct": 0.98,
                                      "memory_roofline_tokens_per_s_measured": 103.0}}
    (classifier_title, classifier), (llm_title, llm) = ceiling_tables(records)
    lines = classifier.splitlines()
    assert "req/s" in classifier_title and len(lines) == 2 and len(lines[0]) == len(lines[1])  # cells padded
    assert "360/-" in lines[1] and "0.60" in lines[1] and lines[1].split()[0] == "cpu-batched-c8"
    assert "tokens/s" in llm_title and "tok/s" in llm and "cpu-batched-c8" not in llm  # no tokens/s under req/s
    assert llm.splitlines()[1].split()[:3] == ["cpu-llm_eager_bf16", "18.9", "19.3"] and "103/-" in llm
    assert ceiling_tables({}) == []


def test_ids_sort_numbers_as_numbers():
    from fixtures.track.report import natural_key

    ids = ["fastapi-n100", "fastapi-n10", "cpu-batch-c8", "cpu-batch-c1", "fastapi-n50"]
    assert sorted(ids, key=natural_key) == ["cpu-batch-c1", "cpu-batch-c8", "fastapi-n10", "fastapi-n50", "fastapi-n100"]


def test_ladder_table_is_steps_in_ladder_order_by_concurrency():
    from fixtures.track.report import ladder_table

    def bench(step, concurrency, rps, valid=True):
        return {"extra_info": {"server": {"name": f"cpu-{step}"}, "concurrency": concurrency, "rps": rps,
                               "api_over_direct": 0.5, "valid": valid, "invalid_reason": None if valid else "errors",
                               "latency_p99_ms": 100.0, "server_cpu_cores": 1.5, "cpu_util_pct": 80.0}}

    run = {"benchmarks": [bench("bf16", 8, 165.0), bench("baseline", 8, 58.6), bench("baseline", 1, 58.0, valid=False),
                          bench("bf16", 1, 39.7), {"extra_info": {"tokens_per_s": 20.0}}],
           "machine_info": {"ladders": {"cpu": ["cpu-baseline", "cpu-batch", "cpu-bf16"]}}}
    assert ladder_table({"benchmarks": run["benchmarks"]}, "cpu") == ""  # saved before runs recorded their ladder
    lines = ladder_table(run, "cpu").splitlines()
    assert lines[0].startswith("| step | c=1 req/s (api/direct) | c=8 req/s (api/direct) | c=8 p99 ms")
    assert lines[2].startswith("| baseline | 58.0 (0.50) | 58.6 (0.50) | 100 | 1.50 | 80 |")
    assert lines[2].endswith("| no (c=1: errors) |")
    assert lines[3].startswith("| bf16 | 39.7 (0.50) | 165.0 (0.50) |") and lines[3].endswith("| yes |")
    assert len(lines) == 4


def test_the_floors_table_counts_floored_figures_per_class():
    from fixtures.track.report import floors_table

    table = floors_table({"cpu/X/2c/amx": {"measured": "2026-11-23", "a": {"min_rps": 10.0, "min_api_over_direct": 0.5},
                                           "b": {"min_rps": 20.0}}})
    row = table.splitlines()[2]
    assert row.startswith("| `cpu/X/2c/amx` | 2026-11-23 |") and "1 (0.5-0.5)" in row and "2 (10-20)" in row


def test_the_compared_table_puts_each_figure_beside_its_ceiling_at_its_concurrency():
    from fixtures.track.report import compared_table

    run = {"benchmarks": [bench("cpu-batch_workers-c1", rps=33.5, concurrency=1, direct_rps=54.0, direct_workers=1,
                                direct_batch_size=1, direct_assumes="1 worker(s) x batches of 1", api_over_direct=0.62,
                                observed_mean_batch_size=1.0, max_batch_size=8, client_ceiling_rps=950.0, client_bound=False,
                                rounds_taken=3, rounds_converged=True, round_cv=0.012, ci95_half_width_rel=0.03,
                                check_ms_per_request=0.021, connections_opened_in_rounds=0,
                                server_rss_mib_before=800.1, server_rss_mib_after=801.0)]}
    header, _, row = compared_table(run).splitlines()
    assert "direct at c" in header and "client ceiling at c" in header
    assert "| 1 x batch 1 | 0.62 | 1.00 | 8 | 950 | False | 3 (True) | 0.012 | 3.0% | 21 | 0 | 800.1/801.0 |" in row


def test_the_summary_page_says_what_a_reviewer_needs_in_a_minute(tmp_path):
    from fixtures.track.changepoints import ChangePoint
    from fixtures.track.report import summary_for_storage, summary_page

    run = json.loads(json.dumps(RUN))
    run["benchmarks"][0]["extra_info"]["server"] = {"name": "cpu-batch_workers"}  # the ladder's batch_workers step
    run["machine_info"].update(
        machine_class={"cpu": "cpu/Xeon/2c/amx"}, ladders={"cpu": ["cpu-baseline", "cpu-batch_workers"]},
        floor_results={"cpu-batched-c8": "held", "cpu-llm_eager_bf16": ["cpu-llm_eager_bf16: tokens_per_s measured 9 < floor 12"],
                       "cpu-new-c1": "no floor for cpu/Xeon/2c/amx"},
        relations=[{"name": "batching beats baseline", "status": "held", "message": "2.1x"},
                   {"name": "litserve beats fastapi", "status": "violated", "message": "0.8x < 1.0x"},
                   {"name": "gpu: int8 beats bf16", "status": "recorded", "message": "ratio 1.050; not asserted: unmeasured"}])
    point = ChangePoint("cpu-batched-c8", "rps", "8" * 40, "Slow the decode down", "2026-11-20T00:00:00", 7,
                        125.0, 100.0, -0.2, 1e-5)
    page = summary_page(run, [point], [".benchmarks/plots/index.md"])
    assert "`cpu/Xeon/2c/amx`" in page and "**Floors: FAIL** (1 held, 1 failed, 1 without a floor" in page
    assert "tokens_per_s measured 9 < floor 12" in page
    assert "**Relations: FAIL** (1 held, 1 recorded, 1 violated)" in page and "litserve beats fastapi: 0.8x < 1.0x" in page
    assert "- recorded, not asserted: gpu: int8 beats bf16: ratio 1.050; not asserted: unmeasured" in page
    assert "| `88888888` | cpu-batched-c8 | rps | 125 | 100 | -20.0% (worse) | 1e-05 | Slow the decode down |" in page
    # the ladder whole, by step and level, and the LLM table
    assert "| batch_workers | 125.0 (0.60) |" in page and "| cpu-llm_eager_bf16 |" in page and "| 18.9 |" in page
    assert "[index.md](.benchmarks/plots/index.md)" in page
    assert len(page.splitlines()) < 60
    assert "No saved benchmark run here" in summary_for_storage(tmp_path)


def test_the_run_names_the_batch_window_that_served_more_tokens():
    """Two windows of the GPU tier's batched recipe measured in one run: the page names the better one from the
    figures (here 50 ms at 2 of 3 levels, its batches fuller), not from a constant; an invalid figure takes no part."""
    from fixtures.track.report import summary_page, window_choice

    def batched(window_s, c, tokens, mean_batch, valid=True):
        name = "gpu-llm_batched_bf16" + ("" if window_s == 0.01 else "_window50ms")
        return bench(f"{name}-c{c}", tokens_per_s=tokens / c, tokens_per_s_aggregate=tokens, concurrency=c, device="cuda",
                     observed_mean_batch_size=mean_batch, valid=valid,
                     server={"name": name, "recipe": "eager_bf16", "max-batch-size": "64", "batch-timeout": str(window_s)})

    run = json.loads(json.dumps(RUN))
    run["benchmarks"] += [batched(0.01, 16, 900.0, 9.5), batched(0.05, 16, 1100.0, 15.2),
                          batched(0.01, 32, 1500.0, 20.0), batched(0.05, 32, 1400.0, 28.0),
                          batched(0.01, 64, 2000.0, 30.0), batched(0.05, 64, 2600.0, 55.0),
                          batched(0.01, 8, 500.0, 8.0), batched(0.05, 8, 50.0, 8.0, valid=False)]
    [row] = window_choice(run)
    assert row["better_ms"] == 50 and row["wins"] == 2 and sorted(row["levels"]) == [16, 32, 64]
    page = summary_page(run, [], [])
    assert "**the 50 ms window** served more output tokens/s at 2 of 3 levels" in page
    assert "| 64 | 2000.0 (30.0) | 2600.0 (55.0) |" in page
    assert window_choice(RUN) == []  # one window, or none: nothing to choose


def test_energy_per_token_and_per_request_show_gross_and_net_or_not_available():
    from fixtures.record.figures import TREND_FIGURES
    from fixtures.track.report import markdown_table

    run = json.loads(json.dumps(RUN))
    run["benchmarks"][0]["extra_info"].update(energy_source="not available: no RAPL package domain", j_per_request=None)
    run["benchmarks"][1]["extra_info"].update(energy_source="nvml counter, 1 GPU", j_per_token=0.1234, j_per_token_net=0.0811)
    classifier, llm = markdown_table(run).split("\n\n")
    assert "| n/a |" in classifier and "| 0.123 (0.0811 net) |" in llm
    # followed across commits: plotted, change points, and judged by the A/B where a round can meter it
    from fixtures.record.figures import ab_figures

    assert {"j_per_token", "j_per_request"} <= {f.key for f in TREND_FIGURES}
    assert {"j_per_token", "j_per_request"} <= set(ab_figures())


def test_the_summary_page_has_a_section_per_declaration_in_its_variants_order():
    """The README promises a user's figures on the summary page; it showed the classifier ladder and the LLM only."""
    from fixtures.track.report import summary_page

    run = json.loads(json.dumps(RUN))
    variants = ("no_batching", "batching")
    run["machine_info"]["declarations"] = {"nearest": {"cpu": [f"cpu-nearest_{v}" for v in variants]}}
    for variant, rps, valid in (("no_batching", 505.0, True), ("batching", 148.0, False)):
        run["benchmarks"].append(bench(f"cpu-nearest_{variant}-c8", rps=rps, api_over_direct=0.5, concurrency=8, valid=valid,
                                       invalid_reason=None if valid else "disturbed by 1.10 cores of other work",
                                       served_api="servers.nearest:NearestNeighbourAPI",
                                       server={"name": f"cpu-nearest_{variant}"}))
    page = summary_page(run, [], [])
    section = page.split("### Your LitAPI `nearest` on cpu")[1]
    rows = [line for line in section.splitlines() if line.startswith("| nearest_")]
    assert [row.split(" | ")[0] for row in rows] == ["| nearest_no_batching", "| nearest_batching"]
    assert "505.0 (0.50)" in rows[0] and rows[0].endswith("| yes |")
    assert "no (c=8: disturbed by 1.10 cores of other work)" in rows[1]
