"""The gates' thresholds from measured noise (fixtures/record/noise.py): synthetic runs and histories whose noise is
known give the floors and the change-point magnitude the rule says, and the rule's k holds its false-alarm rate."""

import statistics

import numpy as np
import pytest

from fixtures.record.calibrate import calibrated_floors, rederived_floors
from fixtures.record.noise import (D2, MIN_CHANGE, floor_k, history_spread, least_change, pooled_spread,
                                   relative_spread_from_range)
from fixtures.track.changepoints import split_points

AMD = {"cpu_info": {"model": "AMD EPYC", "vendor": "AuthenticAMD", "cpu_family": "25", "cpu_model": "17",
                    "usable_cores": 2, "isa": "avx512_bf16"}, "cuda_devices": []}


def test_k_holds_its_false_alarm_rate_for_a_new_run_against_the_lowest_of_three():
    """P(a new run < the lowest of 3 runs - k spreads) = alpha, checked by drawing 400,000 sets of 4 runs."""
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(400_000, 4))
    for alpha in (0.05, 0.01):
        k = floor_k(3, alpha)
        rate = np.mean(draws[:, 3] < draws[:, :3].min(axis=1) - k)
        assert rate == pytest.approx(alpha, rel=0.1), (alpha, k, rate)
    assert floor_k(3, 0.001) > floor_k(3, 0.01) > floor_k(5, 0.01)  # rarer alarms, fewer runs: a lower floor


def runs_of(values_by_benchmark: dict, runs: int) -> list:
    """Saved runs of one machine class: benchmark id -> its rps in each run (api_over_direct the same over 100)."""
    return [{"machine_info": AMD, "commit_info": {"id": "abc1234"},
             "benchmarks": [{"name": f"test_x[{bid}]", "param": bid,
                             "extra_info": {"device": "cpu", "rps": values[i], "api_over_direct": values[i] / 100,
                                            "valid": True}}
                            for bid, values in values_by_benchmark.items()]}
            for i in range(runs)]


def test_a_synthetic_calibration_with_known_noise_gives_the_floors_the_rule_says():
    rng = np.random.default_rng(1)
    spread = 0.05  # every benchmark's runs move by 5% of their figure
    values = {f"cpu-step{i}-c8": list(100 * (i + 1) * (1 + rng.normal(0, spread, 3))) for i in range(40)}
    values["cpu-lucky-c8"] = [50.0, 50.0, 50.0]  # three runs that agree by chance
    values["cpu-noisy-c8"] = [10.0, 40.0, 90.0]  # too noisy for any floor above zero
    _, entries, rule = calibrated_floors(runs_of(values, 3), "cpu", false_alarm=0.05)
    floors = 2 * len(values)
    k = floor_k(3, 0.05 / floors)
    assert f"k = {k:.2f}" in rule and f"0.05 / {floors} floors" in rule
    pooled = pooled_spread([(statistics.stdev(v) / statistics.fmean(v), 3) for v in values.values()])
    assert pooled == pytest.approx(spread, rel=0.25)  # the known noise, within what 42 x 3 runs tell; not the noisy one's
    for bid, measured in values.items():
        own = statistics.stdev(measured) / statistics.fmean(measured)
        if bid == "cpu-noisy-c8":
            assert "min_rps" not in entries.get(bid, {}) and any(bid in line for line in entries["unfloored"])
            continue
        used = max(own, pooled)
        assert entries[bid]["spread_rps"] == pytest.approx(used, rel=1e-2)
        assert entries[bid]["min_rps"] == pytest.approx(min(measured) * (1 - k * used), rel=2e-3)
        assert entries[bid]["range_rps"] == [pytest.approx(min(measured), rel=1e-3), pytest.approx(max(measured), rel=1e-3)]
    # three runs that agreed by chance are held to the class's noise, not to none
    assert entries["cpu-lucky-c8"]["min_rps"] == pytest.approx(50 * (1 - k * pooled), rel=2e-3)


def test_floors_written_before_the_runs_were_kept_are_re_derived_from_their_ranges():
    assert relative_spread_from_range(90.0, 110.0, 3) == pytest.approx(20 / D2[3] / 100)
    table = {"machine": "m", "runs": ["1", "2", "3"], "margin": "30% below the lowest of 3 runs",
             "cpu-a-c8": {"min_rps": 63.0, "range_rps": [90.0, 110.0]},
             "cpu-b-c8": {"min_rps": 14.0, "range_rps": [20.0, 21.0]}}
    entries, rule = rederived_floors(table, false_alarm=0.05)
    k, pooled = floor_k(3, 0.05 / 2), pooled_spread([(20 / D2[3] / 100, 3), (1 / D2[3] / 20.5, 3)])
    assert entries["cpu-a-c8"]["min_rps"] == pytest.approx(90 * (1 - k * 20 / D2[3] / 100), rel=2e-3)
    assert entries["cpu-b-c8"]["min_rps"] == pytest.approx(20 * (1 - k * pooled), rel=2e-3)  # held to the pooled
    assert "range / d2" in rule


def test_a_history_with_known_noise_gives_the_change_threshold_the_rule_says():
    rng = np.random.default_rng(2)
    noisy = list(100 * (1 + rng.normal(0, 0.04, 200)))
    assert history_spread(noisy) == pytest.approx(0.04, rel=0.15)
    assert least_change(noisy) == pytest.approx(0.04, rel=0.15)  # one spread
    quiet = list(100 * (1 + rng.normal(0, 0.002, 40)))
    assert least_change(quiet) == MIN_CHANGE  # never below 2%


def test_a_3_percent_step_in_a_quiet_history_is_found_where_a_flat_5_percent_hid_it():
    rng = np.random.default_rng(3)
    values = list(np.where(np.arange(24) >= 12, 97.0, 100.0) * (1 + rng.normal(0, 0.005, 24)))
    assert [index for index, *_ in split_points(values, min_magnitude=least_change(values))] == [12]
    assert split_points(values, min_magnitude=0.05) == []  # the flat threshold this replaced
