"""Bounds on what a provider's reported usage may say about one call.

The provider's usage is the truth a call is settled by, but an OpenAI-compatible upstream (a
self-hosted server, a buggy proxy, a compromised gateway) can report anything: ``prompt_tokens``
of 10**30 would make a wallet spent for ever, ``cached_tokens`` far beyond the prompt would
price cache reads that never happened. A count is believable when it fits what the request
allows:

- input: at most the model's context window, or twice the sidecar's own count of the request
  when that is larger (a tokenizer the sidecar only estimates, a rate card with too small a
  window);
- output: at most the request's own cap per choice (else the model's output cap, else its
  context window) times the number of choices;
- cache reads and writes: together at most the input;
- with server-side tools (web search, code execution, ...) the provider samples several times
  and sums the usage of every round: both ceilings are multiplied by ``SERVER_TOOL_ROUNDS``.

A count beyond its ceiling is replaced by the sidecar's own count (cache counts by what the
input leaves room for), and the call is flagged. Pure: no I/O, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from a11i.core.model import JSONValue, Usage

__all__ = ["SERVER_TOOL_ROUNDS", "BoundedUsage", "UsageBounds", "bound_usage", "bounds_for"]

#: How many sampling rounds a call with server-side tools is allowed to have reported.
SERVER_TOOL_ROUNDS: Final = 8
#: Tool types the agent runs itself: one sampling round per call.
_CLIENT_TOOL_TYPES: Final = frozenset({"function", "custom"})


@dataclass(frozen=True, slots=True)
class UsageBounds:
    """The largest believable counts of one call."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class BoundedUsage:
    """The usage to settle by, and what was out of bounds (empty when nothing was)."""

    usage: Usage
    violations: tuple[str, ...]


def bounds_for(
    *,
    counted_input: int,
    context_window: int,
    max_output_per_choice: int | None,
    model_output_cap: int | None,
    choices: int,
    tools: JSONValue = None,
) -> UsageBounds:
    """The ceilings of one call from its plan: the sidecar's count, the model's limits, the
    request's own cap and the tools it offers (``tools`` of the body, any dialect)."""
    rounds = SERVER_TOOL_ROUNDS if _offers_server_tools(tools) else 1
    per_choice = max_output_per_choice
    if per_choice is None:
        per_choice = model_output_cap or context_window
    return UsageBounds(
        input_tokens=max(context_window, 2 * counted_input) * rounds,
        output_tokens=per_choice * max(choices, 1) * rounds,
    )


def bound_usage(
    usage: Usage, bounds: UsageBounds, *, own_input: int, own_output: int
) -> BoundedUsage:
    """``usage`` with every count beyond ``bounds`` replaced by the sidecar's own count."""
    violations: list[str] = []
    input_tokens = usage.input_tokens
    if not 0 <= input_tokens <= bounds.input_tokens:
        violations.append(f"input_tokens={input_tokens} not in [0, {bounds.input_tokens}]")
        input_tokens = own_input
    output_tokens = usage.output_tokens
    if not 0 <= output_tokens <= bounds.output_tokens:
        violations.append(f"output_tokens={output_tokens} not in [0, {bounds.output_tokens}]")
        output_tokens = min(own_output, bounds.output_tokens)
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    if not 0 <= cached <= input_tokens:
        violations.append(f"cached_input_tokens={cached} not in [0, input_tokens={input_tokens}]")
        cached = min(max(cached, 0), input_tokens)
    room = input_tokens - cached
    if not 0 <= written <= room:
        violations.append(f"cache_write_tokens={written} not in [0, input - cached={room}]")
        written = min(max(written, 0), room)
    if not violations:
        return BoundedUsage(usage, ())
    # replace() keeps any other field of Usage (server-side tool counts, tiers) as reported.
    bounded = replace(
        usage,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=written,
    )
    return BoundedUsage(bounded, tuple(violations))


def _offers_server_tools(tools: JSONValue) -> bool:
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if isinstance(tool, dict):
            kind = tool.get("type")
            if isinstance(kind, str) and kind not in _CLIENT_TOOL_TYPES:
                # Anthropic's own tools are typed too ("custom" or absent for client tools).
                return True
    return False
