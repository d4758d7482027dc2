"""The event loop and the telemetry thread scrub with scrubbers of their own.

A scrubber keeps per-call state (the call's shared time budget, the replacements pending): an
event scrubbed on the loop (it rides in its Redis settle) while the telemetry thread is inside a
call must get neither that call's budget nor its counts."""

from __future__ import annotations

import threading

from a11i.core.scrub import TIMEOUT_REDACTION
from a11i.sidecar.settings import from_env
from a11i.sidecar.telemetry.traces import Telemetry

EMAIL = "jane.doe@example.com"


def telemetry() -> Telemetry:
    settings = from_env({"A11I_WALLET_FILE": ":memory:"})
    return Telemetry(settings, settings.telemetry_config)


def test_the_loop_scrubs_while_the_telemetry_threads_call_has_run_out() -> None:
    t = telemetry()
    inside, done = threading.Event(), threading.Event()

    def telemetry_thread() -> None:
        # A call whose shared budget is already spent: its own values time out.
        t.scrubber._call_budget_s = 1e-9  # the budget, made tiny
        with t.scrubber.one_call():
            inside.set()
            done.wait(10)
            assert t.scrub_value("x" * 300 + EMAIL) == TIMEOUT_REDACTION

    worker = threading.Thread(target=telemetry_thread)
    worker.start()
    try:
        assert inside.wait(10)
        scrubbed = t.scrub_value_on_loop(f"mail {EMAIL} now " + "y" * 300)
        assert EMAIL not in scrubbed
        assert scrubbed != TIMEOUT_REDACTION
        assert t.scrub_value_on_loop(f"to {EMAIL}") not in (f"to {EMAIL}", TIMEOUT_REDACTION)
    finally:
        done.set()
        worker.join(10)
    stats = t.scrub_stats()
    assert stats["timeouts"] == 1  # the telemetry thread's, counted once
    replacements = stats["replacements"]
    assert isinstance(replacements, dict)
    assert sum(replacements.values()) >= 2  # the loop's


def test_held_keys_and_reloads_reach_the_loops_scrubber() -> None:
    t = telemetry()
    settings = from_env(
        {"A11I_WALLET_FILE": ":memory:", "A11I_OPENAI_API_KEY": "held-key-0123456789"}
    )
    t.hold_keys(settings.custody)
    assert "held-key-0123456789" not in t.scrub_value_on_loop("k=held-key-0123456789 " + "z" * 300)
    t.apply(settings.telemetry_config)
    assert "held-key-0123456789" not in t.scrub_value_on_loop("k=held-key-0123456789 " + "z" * 300)
