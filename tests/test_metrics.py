import math

import pytest

from fixtures.drive.load import HTTP_ERROR, TRANSPORT, WRONG_ANSWER, RequestResult
from fixtures.measure.metrics import error_breakdown, percentile, summarize


def ok(latency):
    return RequestResult(ok=True, status=200, latency_s=latency)


def failed(status=500, error="Internal server error"):
    return RequestResult(ok=False, status=status, latency_s=0.5, error=error, kind=HTTP_ERROR if status else TRANSPORT)


def test_percentile_interpolates_between_ranks():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5  # rank 1.5
    assert percentile(values, 90) == pytest.approx(3.7)  # rank 2.7: 3 + 0.7 * (4 - 3)


def test_percentile_of_one_value_and_bad_input():
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_hand_computed():
    # Ten successes of 10..100 ms in 2 s of wall time.
    results = [ok(ms / 1000) for ms in range(10, 101, 10)]
    s = summarize(results, wall_s=2.0)
    assert s.requests == 10 and s.errors == 0 and s.success_rate == 1.0
    assert s.rps == pytest.approx(5.0)
    assert s.latency_mean_s == pytest.approx(0.055)
    assert s.latency_p50_s == pytest.approx(0.055)  # rank 4.5 between 50 and 60 ms
    assert s.latency_p90_s == pytest.approx(0.091)  # rank 8.1: 90 + 0.1 * 10 ms
    assert s.latency_p95_s == pytest.approx(0.0955)
    assert s.latency_p99_s == pytest.approx(0.0991)
    assert s.latency_max_s == pytest.approx(0.100)


def test_summarize_counts_errors_and_excludes_them_from_latency():
    results = [ok(0.1), ok(0.3), failed(), failed(status=0, error="ClientConnectorError")]
    s = summarize(results, wall_s=1.0)
    assert s.requests == 4 and s.errors == 2 and s.success_rate == 0.5
    assert s.rps == 2.0  # successes only
    assert s.latency_mean_s == pytest.approx(0.2)
    assert s.latency_max_s == 0.3
    assert error_breakdown(results) == {"http_error 500: Internal server error": 1,
                                       "transport 0: ClientConnectorError": 1}


def test_summarize_all_failed_has_no_latency():
    s = summarize([failed(), failed()], wall_s=1.0)
    assert s.rps == 0.0 and s.success_rate == 0.0
    assert s.latency_p99_s is None and s.latency_mean_s is None


def test_summarize_rejects_zero_wall_time():
    with pytest.raises(ValueError):
        summarize([ok(0.1)], wall_s=0.0)


def test_summary_serialises_to_plain_floats():
    d = summarize([ok(0.1), ok(0.2)], wall_s=1.0).as_dict()
    assert all(v is None or isinstance(v, (int, float)) and math.isfinite(v) for v in d.values())


def test_coefficient_of_variation_and_trust():
    from fixtures.measure.metrics import coefficient_of_variation
    from fixtures.measure.rounds import RoundPolicy, stability
    from fixtures.measure.validity import untrusted_reason

    assert coefficient_of_variation([10.0]) == 0.0
    assert coefficient_of_variation([9.0, 10.0, 11.0]) == pytest.approx(0.1)  # sample sd 1, mean 10
    settled, unsettled = (stability(rates, RoundPolicy(3, 0.10, 3)) for rates in ([99.0, 100.0, 101.0], [60.0, 100.0, 140.0]))
    assert untrusted_reason(0, settled) is None
    assert untrusted_reason(2, settled) == "2 request(s) failed"
    assert "did not converge" in untrusted_reason(0, unsettled)


def test_wrong_answers_are_counted_apart_and_make_the_run_untrusted():
    from fixtures.measure.rounds import RoundPolicy, stability
    from fixtures.measure.validity import untrusted_reason

    wrong = RequestResult(ok=False, status=200, latency_s=0.01, error="top-1 281, expected 207", kind=WRONG_ANSWER, check_s=2e-5)
    s = summarize([ok(0.01), wrong, failed()], wall_s=1.0)
    assert s.errors == 2 and s.wrong_answers == 1 and s.rps == 1.0
    assert s.check_ms_per_request == pytest.approx(0.02 / 3)
    assert error_breakdown([wrong]) == {"wrong_answer 200: top-1 281, expected 207": 1}
    assert untrusted_reason(s.errors, stability([1.0] * 3, RoundPolicy(3, 0.1, 3)), wrong_answers=s.wrong_answers) == \
        "1 wrong answer(s) among 2 failed request(s)"


def test_a_soak_whose_server_memory_keeps_growing_fails_as_a_leak():
    from fixtures.measure.validity import rss_growth_problem

    mib = 2**20
    warm_then_flat = [500 * mib, 580 * mib, 585 * mib, 590 * mib]  # the first chunk warms allocator pools: not counted
    assert rss_growth_problem(warm_then_flat, bound_mib=64) is None
    leaking = [500 * mib, 580 * mib, 640 * mib, 700 * mib]
    assert "grew 120 MiB after the first chunk (bound 64 MiB): a leak" in rss_growth_problem(leaking, bound_mib=64)
    with pytest.raises(ValueError):
        rss_growth_problem([1, 2], 64)
