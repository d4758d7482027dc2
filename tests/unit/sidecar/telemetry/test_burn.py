"""The burn rate behind the budget's time-to-exhaustion gauge: pure, the clock passed in."""

from __future__ import annotations

from decimal import Decimal

import pytest

from a11i.sidecar.telemetry.metrics import BurnRate


def test_nothing_to_say_before_two_snapshots() -> None:
    burn = BurnRate()
    assert burn.seconds_left(Decimal(10)) is None
    burn.observe(Decimal(1), now=100.0)
    assert burn.usd_per_second() is None
    assert burn.seconds_left(Decimal(10)) is None


def test_seconds_left_at_the_current_rate() -> None:
    burn = BurnRate()
    burn.observe(Decimal(0), now=0.0)
    burn.observe(Decimal(6), now=60.0)  # 0.1 USD a second
    assert burn.usd_per_second() == pytest.approx(0.1)
    assert burn.seconds_left(Decimal(30)) == pytest.approx(300.0)
    assert burn.seconds_left(None) is None  # no limit: never runs out


def test_idle_wallet_never_runs_out() -> None:
    burn = BurnRate()
    burn.observe(Decimal(5), now=0.0)
    burn.observe(Decimal(5), now=60.0)
    assert burn.seconds_left(Decimal(1)) is None


def test_only_the_window_counts() -> None:
    burn = BurnRate(window_s=100.0)
    burn.observe(Decimal(0), now=0.0)
    burn.observe(Decimal(50), now=50.0)  # a burst long ago
    burn.observe(Decimal(50), now=200.0)
    burn.observe(Decimal(51), now=300.0)
    # The burst has left the window: 1 USD over the last 100 s.
    assert burn.usd_per_second() == pytest.approx(0.01)


def test_a_new_period_starts_the_rate_afresh() -> None:
    burn = BurnRate()
    burn.observe(Decimal(90), now=0.0)
    burn.observe(Decimal(95), now=60.0)
    burn.observe(Decimal(1), now=120.0)  # the period was reset
    assert burn.usd_per_second() is None
    burn.observe(Decimal(3), now=180.0)
    assert burn.usd_per_second() == pytest.approx(2 / 60)
