"""One metered call: what is built up while it runs (``Call``) and the record every observer
gets when it ends (``CallRecord``: telemetry, metrics, the event stream, the output history).

Plain data, no I/O: the proxy fills a ``Call`` step by step (planned, decided, optimized,
answered, settled, or failed) and hands ``Call.record()`` to the observers once, after the
answer is on its way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from a11i.core.analysis import ToolCall
from a11i.core.capping import CapFit
from a11i.core.meter import CallPlan, Settlement
from a11i.core.policy import Verdict

#: The agent's name for its loop: the turns of one loop share one trace.
H_SESSION: Final = "x-a11i-session"


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """When a call arrived and what the agent said about its loop and trace."""

    #: Wall-clock time the request arrived (ns since the epoch), the span's start.
    started_ns: int = 0
    #: ``x-a11i-session``: the agent's name for its loop (one trace per loop).
    session: str | None = None
    #: W3C trace context of an instrumented agent: its turns join the agent's own trace.
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str], started_ns: int) -> CallOrigin:
        """The origin from the request's headers (case-insensitive in aiohttp's mapping)."""
        return cls(
            started_ns=started_ns,
            session=headers.get(H_SESSION),
            traceparent=headers.get("traceparent"),
            tracestate=headers.get("tracestate"),
        )


@dataclass(frozen=True, slots=True)
class Optimization:
    """The optimizer's work on one request: its strategies and the input tokens they saved."""

    strategies: tuple[str, ...]
    tokens_saved: int

    @property
    def header(self) -> str:
        return f"{','.join(self.strategies)}; saved={self.tokens_saved}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One metered call, as telemetry and the event stream see it."""

    plan: CallPlan
    verdict: Verdict
    settlement: Settlement | None
    status: int
    streamed: bool
    #: The answer ended as the provider meant it to (not cut, not refused).
    complete: bool
    duration_s: float
    tool_calls: tuple[ToolCall, ...] = ()
    #: What the optimizer did to the request, when it changed it.
    optimization: Optimization | None = None
    #: The output cap a11i lowered to fit the wallet, when it did.
    output_cap: CapFit | None = None
    origin: CallOrigin = field(default_factory=CallOrigin)
    #: The text the model produced (for content capture, when it is on).
    output_text: str = ""
    #: Why the call failed, when it did: ``error.type`` of the conventions.
    error_type: str | None = None


@dataclass(slots=True, kw_only=True)
class Call:
    """A metered call while it runs: each step of the proxy fills in what it learned."""

    plan: CallPlan
    verdict: Verdict
    origin: CallOrigin
    #: ``time.perf_counter()`` when the request arrived.
    started: float
    optimization: Optimization | None = None
    output_cap: CapFit | None = None
    settlement: Settlement | None = None
    #: The reservation was settled already (a stream, before its last chunk was relayed).
    settled: bool = False
    #: The answer's status; 502 until the provider answered.
    status: int = 502
    complete: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    output_text: str = ""
    error_type: str | None = None

    def fail(self, status: int, error_type: str) -> None:
        """The call ended without a usable answer: refused, timed out, cut, cancelled."""
        self.status = status
        self.error_type = error_type

    def record(self, now: float) -> CallRecord:
        """The call as it ended, at ``now`` (``time.perf_counter()``)."""
        return CallRecord(
            plan=self.plan,
            verdict=self.verdict,
            settlement=self.settlement,
            status=self.status,
            streamed=self.plan.request.stream,
            complete=self.complete,
            duration_s=now - self.started,
            tool_calls=self.tool_calls,
            optimization=self.optimization,
            output_cap=self.output_cap,
            origin=self.origin,
            output_text=self.output_text,
            error_type=self.error_type,
        )
