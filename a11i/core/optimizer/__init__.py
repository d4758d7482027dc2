"""The optimizer: make a call cheaper when its wallet is tight, without breaking the agent.

When a wallet is Yellow or Red the proxy hands the request body (a JSON object as sent on the
wire) to :func:`optimize` before forwarding it. Every strategy is a small pure function over the
message list, measurable on its own; :func:`optimize` runs the enabled ones in a fixed order:

1. ``json_minify`` (lossless): a text that is entirely one JSON object or array, or the body of
   a ```json fence, is re-serialised compactly when that round-trips exactly (no duplicate
   keys, every number written back as it was written: ``1E5`` and ``1e400`` stay).
2. ``whitespace`` (lossless): prose only (never tool results, never code fences): trailing
   blanks that are no Markdown hard break, runs of blank lines. Leading and inner whitespace of
   a line is never touched: it is indentation, alignment, a diff's or a table's meaning.
3. ``rag_filter`` (lossy, off unless ``rag_min_score`` or ``rag_top_k`` is set): retrieved
   chunks in a JSON list are filtered by score (higher-is-better, or lower for distances).
4. ``compact_history`` (lossy): whole blocks of messages between the goal and the kept tail
   become one local, extractive summary that keeps the user's words, tool arguments, error
   lines and identifiers; blocks make the summary stable across turns, so it is cached once.
5. ``truncate_tool_results`` (lossy): the old tool results left are cut to
   ``tool_result_max_chars``.
6. ``dedupe`` (lossless): a text identical to an earlier one becomes a reference to it.

What it may not do:

- no I/O, no clock, no model calls: a pure function of the body, the settings and the cache
  estimate it is given;
- never mutate the input body (unchanged sub-values are shared: treat both as read-only);
- never rewrite the latest message and the tool exchange it closes, Anthropic's cached prefix
  (up to the last ``cache_control`` breakpoint), or with extended thinking the message that
  opened the current turn and the assistant message answering it (:class:`Scope`);
- never send what the provider would refuse: each step is checked by
  :mod:`a11i.core.optimizer.rules` and dropped whole if it adds a violation;
- with a :class:`CacheContext`, never apply a step that does not save money net of the prompt
  cache it loses.

OpenAI Responses and embeddings bodies pass through unchanged. Sections: ``rules`` (the
providers' rules), ``text`` (lossless text rewrites), ``history`` (the lossy strategies and
dedupe), ``cache`` (money net of the prompt cache), ``settings``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from a11i.core.model import Dialect, JSONObject
from a11i.core.optimizer.cache import (
    CacheContext,
    CacheMemory,
    CachePrices,
    CacheState,
    Prints,
    cached_tokens_after,
    estimated_cost,
    has_breakpoints,
    net_saving,
    prefix_prints,
)
from a11i.core.optimizer.history import (
    filter_rag_text,
    strategy_compact_history,
    strategy_dedupe,
    strategy_rag_filter,
    strategy_truncate_tool_results,
    summarize,
    truncate_text,
)
from a11i.core.optimizer.rules import (
    Messages,
    Scope,
    check_rewrite,
    thinking_enabled,
    validate_conversation,
    validate_messages,
)
from a11i.core.optimizer.settings import (
    ALL_STRATEGIES,
    COMPACT_HISTORY,
    DEDUPE,
    JSON_MINIFY,
    LOSSLESS,
    LOSSY,
    RAG_FILTER,
    TRUNCATE_TOOL_RESULTS,
    WHITESPACE,
    OptimizerSettings,
)
from a11i.core.optimizer.text import minify_json_text, squeeze_whitespace
from a11i.core.optimizer.text import strategy_json_minify as _json_minify
from a11i.core.optimizer.text import strategy_whitespace as _whitespace
from a11i.core.policy import WalletState

__all__ = [
    "ALL_STRATEGIES",
    "COMPACT_HISTORY",
    "DEDUPE",
    "JSON_MINIFY",
    "LOSSLESS",
    "LOSSY",
    "RAG_FILTER",
    "TRUNCATE_TOOL_RESULTS",
    "WHITESPACE",
    "CacheContext",
    "CacheMemory",
    "CachePrices",
    "CacheState",
    "Optimized",
    "OptimizerSettings",
    "Prints",
    "Scope",
    "cached_tokens_after",
    "check_rewrite",
    "estimated_cost",
    "filter_rag_text",
    "has_breakpoints",
    "minify_json_text",
    "net_saving",
    "optimize",
    "prefix_prints",
    "squeeze_whitespace",
    "strategy_compact_history",
    "strategy_dedupe",
    "strategy_json_minify",
    "strategy_rag_filter",
    "strategy_truncate_tool_results",
    "strategy_whitespace",
    "summarize",
    "thinking_enabled",
    "truncate_text",
    "validate_conversation",
    "validate_messages",
]


@dataclass(frozen=True, slots=True)
class Optimized:
    """The outcome of :func:`optimize`."""

    #: The body to forward: a new object (unchanged sub-values are shared with the input).
    body: JSONObject
    #: Names of the strategies that changed something, in the order they ran.
    strategies: tuple[str, ...]
    #: Whether ``body`` differs from the input at all.
    changed: bool
    #: The estimated USD saved net of the prompt cache (None without a cache context).
    usd_saved: Decimal | None = None

    @property
    def compacted(self) -> bool:
        """Whether earlier turns were replaced by a summary (gen_ai.conversation.compacted)."""
        return COMPACT_HISTORY in self.strategies


#: A strategy: (dialect, messages, settings, scope) -> (new messages, whether anything changed).
Strategy = Callable[[Dialect, Messages, OptimizerSettings, Scope | None], tuple[Messages, bool]]


def strategy_json_minify(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings, scope: Scope | None = None
) -> tuple[Messages, bool]:
    """Minify the exactly round-tripping JSON of every message outside the frozen scope."""
    scope = scope or Scope.of(dialect, messages)
    return _json_minify(dialect, messages, scope.frozen)


def strategy_whitespace(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings, scope: Scope | None = None
) -> tuple[Messages, bool]:
    """Squeeze the prose whitespace of every message outside the frozen scope."""
    scope = scope or Scope.of(dialect, messages)
    return _whitespace(dialect, messages, scope.frozen)


_PIPELINE: Final[tuple[tuple[str, Strategy], ...]] = (
    (JSON_MINIFY, strategy_json_minify),
    (WHITESPACE, strategy_whitespace),
    (RAG_FILTER, strategy_rag_filter),
    # Compaction before truncation: the summary reads the whole of the results it replaces.
    (COMPACT_HISTORY, strategy_compact_history),
    (TRUNCATE_TOOL_RESULTS, strategy_truncate_tool_results),
    (DEDUPE, strategy_dedupe),
)


def optimize(
    dialect: Dialect,
    body: JSONObject,
    state: WalletState,
    settings: OptimizerSettings,
    cache: CacheContext | None = None,
) -> Optimized:
    """Apply the strategies enabled for ``state`` to ``body``; never mutates ``body``. With
    ``cache``, a step is kept only when it saves money net of the prompt cache it loses."""
    enabled = settings.strategies_for(state)
    messages = body.get("messages")
    if (
        dialect not in (Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES)
        or not enabled
        or not isinstance(messages, list)
    ):
        return Optimized(dict(body), (), False)
    scope = Scope.of_body(dialect, body)
    baseline = set(validate_messages(dialect, messages, thinking=scope.thinking))
    original = prefix_prints(dialect, body)
    prints = original
    current: Messages = messages
    applied: list[str] = []
    for name, step in _PIPELINE:
        if name not in enabled:
            continue
        if (
            name in LOSSY
            and settings.target_reduction > 0
            and 1 - prints.chars[-1] / max(original.chars[-1], 1) >= settings.target_reduction
        ):
            continue
        # Indexes move when compaction drops messages: the scope follows the current list.
        scope = Scope.of(dialect, current, thinking=scope.thinking)
        candidate, changed = step(dialect, current, settings, scope)
        if not changed:
            continue
        # The guard of last resort: a step that would add a rule violation is dropped whole, so
        # a valid conversation stays valid whatever a strategy gets wrong.
        if set(validate_messages(dialect, candidate, thinking=scope.thinking)) - baseline:
            continue
        rewritten = {**body, "messages": candidate}
        if check_rewrite(dialect, body, rewritten):
            continue
        candidate_prints = prefix_prints(dialect, rewritten)
        if cache is not None and net_saving(cache, prints, candidate_prints) <= 0:
            continue
        current, prints = candidate, candidate_prints
        applied.append(name)
    result = dict(body)
    result["messages"] = current
    saved = net_saving(cache, original, prints) if cache is not None else None
    return Optimized(result, tuple(applied), bool(applied), saved)
