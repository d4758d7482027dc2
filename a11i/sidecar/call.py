"""One metered call: what is built up while it runs (``Call``) and the record every observer
gets when it ends (``CallRecord``: telemetry, metrics, the event stream, the output history).

Plain data, no I/O: the proxy fills a ``Call`` step by step (planned, decided, optimized,
answered, settled, or failed) and hands ``Call.record()`` to the observers once, after the
answer is on its way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from a11i.core.analysis import ResponseFacts, ToolCall
from a11i.core.capping import CapFit
from a11i.core.frozen import slot_init
from a11i.core.meter import CallPlan, Settlement
from a11i.core.model import usd
from a11i.core.optimizer import Prints
from a11i.core.policy import Verdict

#: The agent's name for its loop: the turns of one loop share one trace.
H_SESSION: Final = "x-a11i-session"
#: Claude Code's id of its session (one per process), sent on every call.
H_CLAUDE_CODE_SESSION: Final = "x-claude-code-session-id"
#: A client's id of one request (OpenAI and Anthropic SDKs, gateways).
H_REQUEST_IDS: Final = ("x-request-id", "x-client-request-id")


@slot_init
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
    #: ``x-claude-code-session-id``: Claude Code's session, a loop of its own.
    client_session: str | None = None
    #: ``x-request-id`` (or ``x-client-request-id``): the client's id of this request.
    request_id: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str], started_ns: int) -> CallOrigin:
        """The origin from the request's headers (case-insensitive in aiohttp's mapping)."""
        # The first request id header present: one lookup each, no generator (every call).
        request_id = None
        for name in H_REQUEST_IDS:
            request_id = headers.get(name)
            if request_id is not None:
                break
        return cls(
            started_ns=started_ns,
            session=headers.get(H_SESSION),
            traceparent=headers.get("traceparent"),
            tracestate=headers.get("tracestate"),
            client_session=headers.get(H_CLAUDE_CODE_SESSION),
            request_id=request_id,
        )


@dataclass(frozen=True, slots=True)
class Optimization:
    """The optimizer's work on one request: its strategies, the input tokens they saved, and
    the USD they are estimated to save net of the prompt cache they cost."""

    strategies: tuple[str, ...]
    tokens_saved: int
    usd_saved: Decimal | None = None
    #: Earlier turns were replaced by a summary (``gen_ai.conversation.compacted``).
    compacted: bool = False

    @property
    def header(self) -> str:
        header = f"{','.join(self.strategies)}; saved={self.tokens_saved}"
        if self.usd_saved is not None:
            header += f"; saved_usd={usd(self.usd_saved)}"
        return header


@slot_init
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
    #: The forwarded request's prefix fingerprints (for the optimizer's cache estimate).
    cache_prints: Prints | None = None
    #: The fingerprints are still to be taken, from ``plan``'s body, once the answer is on its
    #: way (a small request the optimizer had no use for them on).
    prints_after: bool = False
    #: The output cap a11i lowered to fit the wallet, when it did.
    output_cap: CapFit | None = None
    #: Seconds the call waited in line for money held by calls in flight.
    admission_wait_s: float = 0.0
    origin: CallOrigin = field(default_factory=CallOrigin)
    #: The text the model produced (for content capture, when it is on).
    output_text: str = ""
    #: Why the call failed, when it did: ``error.type`` of the conventions.
    error_type: str | None = None
    #: The answer's id, model and finish reasons, as far as the provider said them.
    response: ResponseFacts = field(default_factory=ResponseFacts)
    #: The call's event went to the stream with its settlement (not to the event sink).
    event_sent: bool = False


@dataclass(slots=True, kw_only=True)
class Call:
    """A metered call while it runs: each step of the proxy fills in what it learned."""

    plan: CallPlan
    verdict: Verdict
    origin: CallOrigin
    #: ``time.perf_counter()`` when the request arrived.
    started: float
    optimization: Optimization | None = None
    cache_prints: Prints | None = None
    prints_after: bool = False
    output_cap: CapFit | None = None
    admission_wait_s: float = 0.0
    settlement: Settlement | None = None
    #: The reservation was settled already (a stream, before its last chunk was relayed).
    settled: bool = False
    #: The answer's status; 502 until the provider answered.
    status: int = 502
    complete: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    output_text: str = ""
    error_type: str | None = None
    response: ResponseFacts = field(default_factory=ResponseFacts)
    #: The call's event was written with its settlement (``EventWallet``).
    event_sent: bool = False

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
            cache_prints=self.cache_prints,
            prints_after=self.prints_after,
            output_cap=self.output_cap,
            admission_wait_s=self.admission_wait_s,
            origin=self.origin,
            output_text=self.output_text,
            error_type=self.error_type,
            response=self.response,
            event_sent=self.event_sent,
        )
