"""Packing of batch timings into TimingReport payloads, and the log rate limiter (no broker)."""

from __future__ import annotations

import logging
import math

import pytest

from producers.timingpack import pack_timings
from shardsense.events import TimingReport, decode
from shardsense.kafka_logs import RateLimitFilter

pytestmark = pytest.mark.unit


def _rows(n: int, start: int = 0) -> list[tuple]:
    return [(1, start + i, 32, 0.002, 0.015, 3, 1_700_000_000.5 + i) for i in range(n)]


def _decoded(payloads: list[tuple[bytes, int]]) -> list[TimingReport]:
    reports = []
    for payload, n in payloads:
        report = decode(payload, expect=TimingReport)
        assert isinstance(report, TimingReport) and len(report) == n
        reports.append(report)
    return reports


def test_rows_are_packed_in_order_into_capped_valid_reports() -> None:
    payloads, invalid = pack_timings("job-a", 3, _rows(4500), max_per_report=2000, host="h1")
    reports = _decoded(payloads)
    assert invalid == 0
    assert [len(r) for r in reports] == [2000, 2000, 500]
    assert [s for r in reports for s in r.timings["step"]] == list(range(4500))
    assert {(r.job_id, r.worker_id, r.host) for r in reports} == {("job-a", 3, "h1")}
    assert len({r.event_id for r in reports}) == 3
    first = reports[0].timings
    assert (first["epoch"][0], first["samples"][0], first["map_version"][0]) == (1, 32, 3)
    assert first["end_ts"][1] == 1_700_000_001.5


def test_reports_over_the_byte_limit_are_split_without_losing_order() -> None:
    payloads, invalid = pack_timings("j", 0, _rows(1000), max_per_report=1000, max_bytes=8192)
    reports = _decoded(payloads)
    assert invalid == 0 and len(reports) > 1
    assert all(len(p) <= 8192 for p, _ in payloads)
    assert [s for r in reports for s in r.timings["step"]] == list(range(1000))


@pytest.mark.parametrize(
    "bad",
    [
        (0, 1, 32, math.nan, 0.1, 1, 1.0),
        (0, 1, 32, 0.1, math.inf, 1, 1.0),
        (0, 1, -5, 0.1, 0.1, 1, 1.0),
        (0, 1, 32, 0.1, -0.1, 1, 1.0),
        (0, 1, "x", 0.1, 0.1, 1, 1.0),
        (0, 1, None, 0.1, 0.1, 1, 1.0),
        (0, 1, 32, 0.1, 0.1, 1),
    ],
)
def test_an_invalid_row_is_counted_and_never_poisons_its_report(bad: tuple) -> None:
    rows = [*_rows(2), bad, *_rows(2, start=2)]
    payloads, invalid = pack_timings("j", 0, rows)
    (report,) = _decoded(payloads)
    assert invalid == 1
    assert report.timings["step"] == [0, 1, 2, 3]


def test_numeric_lookalikes_are_coerced_to_the_contract_types() -> None:
    class Tensorish(float):  # e.g. numpy.float64: a float subclass
        pass

    payloads, invalid = pack_timings("j", 0, [(True, 2.0, 32, Tensorish(0.5), 1, 4, 9)])
    (report,) = _decoded(payloads)
    assert invalid == 0
    assert report.timings["step"] == [2] and isinstance(report.timings["step"][0], int)
    assert report.timings["compute_s"] == [1.0]


def test_empty_input_packs_nothing() -> None:
    assert pack_timings("j", 0, []) == ([], 0)
    with pytest.raises(ValueError):
        pack_timings("j", 0, [], max_per_report=0)


def test_rate_limit_filter_lets_one_record_per_interval_and_says_how_many_it_hid() -> None:
    limiter = RateLimitFilter(interval_s=3600)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.WARNING, __file__, 1, text, None, None)

    assert limiter.filter(record("first"))
    assert not any(limiter.filter(record("again")) for _ in range(5))
    assert limiter.suppressed == 5
    limiter._gate._last -= 3600
    late = record("later")
    assert limiter.filter(late)
    assert "5 similar suppressed" in late.getMessage()


def test_offer_cost_ns_times_any_offer_callable() -> None:
    from benchmarks.telemetry_bench import offer_cost_ns

    calls: list[tuple] = []
    cost = offer_cost_ns(lambda *a: calls.append(a), 1000, burst=100, pause_s=0.0)
    assert cost > 0 and len(calls) == 1000
    assert [c[1] for c in calls] == list(range(1000))
