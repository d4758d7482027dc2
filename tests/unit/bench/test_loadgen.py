"""The pure parts of the benchmarks' load generator: statistics, pacing, order, /proc parsing.

No timing is asserted anywhere: only arithmetic on given numbers.
"""

from __future__ import annotations

import pytest

from bench.loadgen import (
    Summary,
    interleaved_order,
    open_loop_schedule,
    paired_differences,
    parse_stat_cpu_ticks,
    parse_status_rss_kib,
    percentile,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([3.0, 1.0, 4.0, 2.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(n) for n in range(1, 101)], 99, 99.01),
        ([float(n) for n in range(101)], 99, 99.0),
    ],
    ids=["one", "one-p99", "odd", "even", "unsorted", "min", "max", "p99-100", "p99-101"],
)
def test_percentile_interpolates_between_ranks(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)], ids=["none", "low", "high"]
)
def test_percentile_refuses_what_has_no_answer(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, q)


def test_summary_of_latencies() -> None:
    summary = Summary.of([0.001, 0.002, 0.003, 0.010])
    assert summary.count == 4
    assert summary.p50 == pytest.approx(0.0025)
    assert summary.mean == pytest.approx(0.004)
    assert summary.p99 == pytest.approx(0.00979)


def test_paired_differences_are_call_by_call() -> None:
    assert paired_differences([1.0, 2.0], [1.5, 2.25]) == [0.5, 0.25]
    with pytest.raises(ValueError, match="baseline samples"):
        paired_differences([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("rate", "seconds", "expected"),
    [
        (4, 1, [0.0, 0.25, 0.5, 0.75]),
        (2, 1.5, [0.0, 0.5, 1.0]),
        (10, 0.3, [0.0, 0.1, 0.2]),
        (0.5, 4, [0.0, 2.0]),
    ],
    ids=["four-per-second", "fraction-of-a-second", "float-rounding", "slow"],
)
def test_open_loop_schedule_is_evenly_spaced_and_fixed(
    rate: float, seconds: float, expected: list[float]
) -> None:
    assert open_loop_schedule(rate, seconds) == pytest.approx(expected)


def test_open_loop_schedule_count_is_rate_times_seconds() -> None:
    assert len(open_loop_schedule(200, 5)) == 1000


@pytest.mark.parametrize(
    ("rate", "seconds"), [(0, 1), (1, 0), (-1, 1)], ids=["no-rate", "no-time", "negative"]
)
def test_open_loop_schedule_refuses_nonsense(rate: float, seconds: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        open_loop_schedule(rate, seconds)


def test_interleaved_order_puts_every_target_in_every_position() -> None:
    targets = ["direct", "a11i", "litellm", "portkey"]
    rounds = [interleaved_order(targets, index) for index in range(len(targets))]
    for position in range(len(targets)):
        assert sorted(r[position] for r in rounds) == sorted(targets)
    assert interleaved_order(targets, 4) == targets
    assert interleaved_order([], 3) == []


@pytest.mark.parametrize(
    ("stat", "ticks"),
    [
        ("1234 (python3) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0", 300),
        ("77 (node (gw) x) R 1 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0", 10),
    ],
    ids=["plain", "name-with-spaces-and-parens"],
)
def test_parse_stat_reads_utime_and_stime(stat: str, ticks: int) -> None:
    assert parse_stat_cpu_ticks(stat) == ticks


def test_parse_status_reads_rss() -> None:
    assert parse_status_rss_kib("Name:\tnode\nVmRSS:\t  123456 kB\nThreads:\t7\n") == 123456
    assert parse_status_rss_kib("Name:\tzombie\n") == 0
