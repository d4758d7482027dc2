"""The optimizer: make a call cheaper when its wallet is tight, without breaking the conversation.

When a wallet is Red the guard's decision is OPTIMIZE and the proxy hands the request body (a
JSON object as sent on the wire) to :func:`optimize` before forwarding it. At Yellow only the
lossless strategies run by default. Every strategy is a small pure function over the message
list, measurable on its own; :func:`optimize` runs the enabled ones in a fixed order:

1. ``json_minify`` (lossless): a text that parses entirely as a JSON object or array, or the body
   of a fenced code block tagged ``json``, is re-serialised compactly. Texts with duplicate keys
   are left alone (re-serialising would drop one of them).
2. ``whitespace`` (lossless): runs of 2+ spaces/tabs collapse to one space, trailing whitespace
   is stripped, 3+ newlines become 2. Indentation at line starts is kept, and inside fenced code
   blocks only trailing whitespace and blank-line runs change. Texts that are JSON are skipped:
   spaces inside JSON strings are meaning.
3. ``rag_filter`` (lossy, off unless ``rag_min_score`` or ``rag_top_k`` is set): a text that is a
   JSON list of retrieved chunks is filtered. Recognised shapes: a top-level list, or an object
   whose ``results`` / ``documents`` / ``matches`` / ``data`` member is that list, where EVERY
   entry is an object with a string text field (``content``, ``text`` or ``page_content``) and a
   numeric score field (``score`` or ``relevance_score``). Entries scoring below
   ``rag_min_score`` are dropped, then only the ``rag_top_k`` best remain; survivors keep their
   original order (retrievers often order by document position, not score).
4. ``truncate_tool_results`` (lossy): tool results outside the protected tail are cut to
   ``tool_result_max_chars`` with a marker ``[... N characters truncated by a11i]``.
5. ``compact_history`` (lossy): messages between the first user message (the goal) and the last
   ``keep_last_turns`` messages are replaced by ONE extractive summary (tools called, first line
   of each text), built locally: no LLM call.
6. ``dedupe`` (lossless): a tool result, or a long message text, identical to an earlier one is
   replaced by a short reference to it. It runs last so that a reference never points at a
   message that compaction summarised away.

What it may not do:

- no I/O, no clock, no model calls: a pure function of the body and the settings;
- never mutate the input body: the result is a new object (unchanged sub-values are shared with
  the input, so treat both as read-only);
- never send a conversation the provider would reject: every structural step is checked with
  :func:`validate_conversation` and discarded if it adds a violation (OpenAI: each ``tool``
  message follows the assistant message that called it, every call is answered; Anthropic:
  alternating roles starting with user, each ``tool_result`` answers a ``tool_use`` of the
  previous message);
- never drop the system prompt (OpenAI ``system``/``developer`` messages; Anthropic's top-level
  ``system`` is never touched), the first user message or the last ``keep_last_turns`` messages.

OpenAI Responses and embeddings bodies pass through unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.policy import WalletState

WHITESPACE: Final = "whitespace"
JSON_MINIFY: Final = "json_minify"
DEDUPE: Final = "dedupe"
RAG_FILTER: Final = "rag_filter"
TRUNCATE_TOOL_RESULTS: Final = "truncate_tool_results"
COMPACT_HISTORY: Final = "compact_history"

#: Strategies that keep every piece of information the model saw.
LOSSLESS: Final[frozenset[str]] = frozenset({WHITESPACE, JSON_MINIFY, DEDUPE})
#: Strategies that drop information; only worth it when the budget is nearly spent.
LOSSY: Final[frozenset[str]] = frozenset({RAG_FILTER, TRUNCATE_TOOL_RESULTS, COMPACT_HISTORY})
ALL_STRATEGIES: Final[frozenset[str]] = LOSSLESS | LOSSY

#: Below this many characters a duplicate is not worth a reference (the reference is ~50 chars).
_MIN_DEDUPE_CHARS: Final = 120
#: Length cap of each line quoted in a compaction summary.
_SUMMARY_LINE_CHARS: Final = 160
#: At most this many quoted lines in a summary, so the summary itself stays small.
_SUMMARY_MAX_LINES: Final = 40
_RAG_TEXT_KEYS: Final = ("content", "text", "page_content")
_RAG_SCORE_KEYS: Final = ("score", "relevance_score")
_RAG_WRAPPERS: Final = ("results", "documents", "matches", "data")
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
_CHAT_RESULT_ROLES: Final = frozenset({"tool", "function"})


@dataclass(frozen=True, slots=True)
class OptimizerSettings:
    """Which strategies run at which wallet state, and their knobs."""

    #: Strategies run when the wallet is Yellow (calls are only warned): lossless by default.
    at_yellow: frozenset[str] = LOSSLESS
    #: Strategies run when the wallet is Red or Exhausted-but-let-through: all by default.
    at_red: frozenset[str] = ALL_STRATEGIES
    #: RAG filter: drop retrieved chunks scoring below this (None: no threshold).
    rag_min_score: float | None = None
    #: RAG filter: keep at most this many best-scoring chunks per result (None: no cap).
    rag_top_k: int | None = None
    #: Compaction never touches the last this-many messages (at least 1).
    keep_last_turns: int = 6
    #: Old tool results (outside the kept tail) are cut to this many characters.
    tool_result_max_chars: int = 4000
    #: Stop applying lossy steps once the estimated reduction reaches this fraction (0: all).
    target_reduction: float = 0.0

    def __post_init__(self) -> None:
        unknown = (self.at_yellow | self.at_red) - ALL_STRATEGIES
        if unknown:
            raise ValueError(f"unknown optimizer strategies: {sorted(unknown)}")
        if self.keep_last_turns < 1:
            raise ValueError("keep_last_turns must be at least 1")
        if self.tool_result_max_chars < 1:
            raise ValueError("tool_result_max_chars must be at least 1")
        if self.rag_top_k is not None and self.rag_top_k < 1:
            raise ValueError("rag_top_k must be at least 1")
        if not 0.0 <= self.target_reduction < 1.0:
            raise ValueError("target_reduction must be in [0, 1)")

    def strategies_for(self, state: WalletState) -> frozenset[str]:
        """The strategies enabled in ``state``: none while Green (or Suspended: never sent)."""
        if state is WalletState.YELLOW:
            return self.at_yellow
        if state in (WalletState.RED, WalletState.EXHAUSTED):
            return self.at_red
        return frozenset()


@dataclass(frozen=True, slots=True)
class Optimized:
    """The outcome of :func:`optimize`."""

    #: The body to forward: a new object (unchanged sub-values are shared with the input).
    body: JSONObject
    #: Names of the strategies that changed something, in the order they ran.
    strategies: tuple[str, ...]
    #: Whether ``body`` differs from the input at all.
    changed: bool


Messages = list[JSONValue]
#: A strategy: (dialect, messages, settings) -> (new messages, whether anything changed).
Strategy = Callable[[Dialect, Messages, OptimizerSettings], tuple[Messages, bool]]


def optimize(
    dialect: Dialect, body: JSONObject, state: WalletState, settings: OptimizerSettings
) -> Optimized:
    """Apply the strategies enabled for ``state`` to ``body``; never mutates ``body``."""
    enabled = settings.strategies_for(state)
    messages = body.get("messages")
    if (
        dialect not in (Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES)
        or not enabled
        or not isinstance(messages, list)
    ):
        return Optimized(dict(body), (), False)
    baseline = set(validate_messages(dialect, messages))
    original_size = _size(messages)
    current: Messages = messages
    applied: list[str] = []
    for name, step in _PIPELINE:
        if name not in enabled:
            continue
        if (
            name in LOSSY
            and settings.target_reduction > 0
            and 1 - _size(current) / max(original_size, 1) >= settings.target_reduction
        ):
            continue
        candidate, changed = step(dialect, current, settings)
        if not changed:
            continue
        # The guard of last resort: a step that would add a rule violation is dropped whole, so
        # a valid conversation stays valid whatever a strategy gets wrong.
        if set(validate_messages(dialect, candidate)) - baseline:
            continue
        current = candidate
        applied.append(name)
    result = dict(body)
    result["messages"] = current
    return Optimized(result, tuple(applied), bool(applied))


def _size(messages: Messages) -> int:
    # Characters of the serialised messages: a cheap, tokenizer-free proxy for tokens, good
    # enough to decide whether a target reduction is reached.
    return len(json.dumps(messages, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------
# Text helpers: walk the texts a model reads, rebuilding only the messages that change

TextFn = Callable[[str], str]


def _map_message(dialect: Dialect, message: JSONValue, fn: TextFn, results_only: bool) -> JSONValue:
    """``message`` with ``fn`` applied to its texts (the same object when nothing changed).
    ``results_only`` limits it to tool results."""
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    new_content: JSONValue
    if dialect is Dialect.OPENAI_CHAT:
        if results_only and message.get("role") not in _CHAT_RESULT_ROLES:
            return message
        new_content = _map_content(content, fn, text_types=("text",))
    else:
        if isinstance(content, str):
            new_content = content if results_only else fn(content)
        elif isinstance(content, list):
            new_content = _map_blocks(content, fn, results_only)
        else:
            new_content = content
    if new_content is content:
        return message
    copy = dict(message)
    copy["content"] = new_content
    return copy


def _map_content(content: JSONValue, fn: TextFn, text_types: tuple[str, ...]) -> JSONValue:
    if isinstance(content, str):
        new = fn(content)
        return content if new == content else new
    if not isinstance(content, list):
        return content
    parts: list[JSONValue] = []
    changed = False
    for part in content:
        if isinstance(part, dict) and part.get("type") in text_types:
            text = part.get("text")
            if isinstance(text, str):
                new_text = fn(text)
                if new_text != text:
                    part = {**part, "text": new_text}
                    changed = True
        parts.append(part)
    return parts if changed else content


def _map_blocks(blocks: list[JSONValue], fn: TextFn, results_only: bool) -> JSONValue:
    out: list[JSONValue] = []
    changed = False
    for block in blocks:
        new_block = block
        if isinstance(block, dict):
            kind = block.get("type")
            text = block.get("text")
            if kind == "text" and not results_only and isinstance(text, str):
                new_text = fn(text)
                if new_text != text:
                    new_block = {**block, "text": new_text}
            elif kind == "tool_result":
                inner = block.get("content")
                new_inner = _map_content(inner, fn, ("text",))
                if new_inner is not inner:
                    new_block = {**block, "content": new_inner}
        if new_block is not block:
            changed = True
        out.append(new_block)
    return out if changed else blocks


def _map_texts(
    dialect: Dialect, messages: Messages, fn: TextFn, results_only: bool = False
) -> tuple[Messages, bool]:
    out = [_map_message(dialect, message, fn, results_only) for message in messages]
    changed = any(new is not old for new, old in zip(out, messages, strict=True))
    return (out, True) if changed else (messages, False)


def _role(message: JSONValue) -> str | None:
    if isinstance(message, dict):
        role = message.get("role")
        return role if isinstance(role, str) else None
    return None


def _blocks(message: JSONValue) -> list[JSONObject]:
    """The content blocks (objects) of a message; a string content is one text block."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def _texts(content: JSONValue) -> Iterator[str]:
    """Every text in a content value (string, parts, blocks, tool_result contents)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield text
                if part.get("type") == "tool_result":
                    yield from _texts(part.get("content"))


def _loads_container(text: str) -> tuple[bool, JSONValue]:
    """(True, value) when ``text`` is entirely one JSON object or array without duplicate keys."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[" or stripped[-1] not in "}]":
        return False, None
    duplicate = False

    def pairs(items: list[tuple[str, JSONValue]]) -> JSONObject:
        nonlocal duplicate
        obj = dict(items)
        duplicate = duplicate or len(obj) != len(items)
        return obj

    try:
        value: JSONValue = json.loads(stripped, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return False, None
    return (not duplicate), value


def _compact_json(value: JSONValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# 1. JSON minification


_JSON_FENCE = re.compile(r"(```[ \t]*json[ \t]*\n)(.*?)(\n[ \t]*```)", re.DOTALL | re.IGNORECASE)


def minify_json_text(text: str) -> str:
    """``text`` with its JSON (whole text, or ```json fences) re-serialised compactly."""
    ok, value = _loads_container(text)
    if ok:
        compact = _compact_json(value)
        return compact if len(compact) < len(text) else text

    def fence(match: re.Match[str]) -> str:
        ok, value = _loads_container(match.group(2))
        if not ok:
            return match.group(0)
        return match.group(1) + _compact_json(value) + match.group(3)

    return _JSON_FENCE.sub(fence, text) if "```" in text else text


def strategy_json_minify(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings
) -> tuple[Messages, bool]:
    """Minify the JSON in every text of every message."""
    return _map_texts(dialect, messages, minify_json_text)


# ---------------------------------------------------------------------------------------------
# 2. Whitespace

_FENCE_LINE = re.compile(r"^[ \t]*(```|~~~)")
_INNER_RUNS = re.compile(r"[ \t]{2,}")
_BLANK_RUNS = re.compile(r"\n{3,}")


def squeeze_whitespace(text: str) -> str:
    """``text`` with inner space runs, trailing spaces and blank-line runs squeezed; indentation
    and code blocks kept (inside fences only trailing spaces and blank-line runs change)."""
    if _loads_container(text)[0]:
        return text
    out: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        stripped = line.rstrip()
        if _FENCE_LINE.match(stripped):
            in_fence = not in_fence
            out.append(stripped)
        elif in_fence or not stripped:
            out.append(stripped)
        else:
            body = stripped.lstrip(" \t")
            indent = stripped[: len(stripped) - len(body)]
            out.append(indent + _INNER_RUNS.sub(" ", body))
    return _BLANK_RUNS.sub("\n\n", "\n".join(out))


def strategy_whitespace(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings
) -> tuple[Messages, bool]:
    """Squeeze the whitespace of every text of every message."""
    return _map_texts(dialect, messages, squeeze_whitespace)


# ---------------------------------------------------------------------------------------------
# 3. RAG filtering


def _rag_entries(value: JSONValue) -> list[JSONValue] | None:
    """The list of retrieved chunks in ``value``, or None when it is not a recognised shape."""
    entries: JSONValue = value
    if isinstance(value, dict):
        found = [value[key] for key in _RAG_WRAPPERS if isinstance(value.get(key), list)]
        if len(found) != 1:
            return None
        entries = found[0]
    if not isinstance(entries, list) or not entries:
        return None
    for entry in entries:
        if not isinstance(entry, dict) or _score(entry) is None:
            return None
        if not any(isinstance(entry.get(key), str) for key in _RAG_TEXT_KEYS):
            return None
    return entries


def _score(entry: JSONObject) -> float | None:
    for key in _RAG_SCORE_KEYS:
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def filter_rag_text(text: str, min_score: float | None, top_k: int | None) -> str:
    """``text`` with its retrieved chunks filtered (see the module docstring), else unchanged."""
    if min_score is None and top_k is None:
        return text
    ok, value = _loads_container(text)
    entries = _rag_entries(value) if ok else None
    if entries is None:
        return text
    scored = [
        (index, score)
        for index, entry in enumerate(entries)
        if isinstance(entry, dict)
        and (score := _score(entry)) is not None
        and (min_score is None or score >= min_score)
    ]
    if top_k is not None and len(scored) > top_k:
        # Best first, earlier first among equals; then back to the original order.
        best = sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:top_k]
        scored = sorted(best)
    if len(scored) == len(entries):
        return text
    survivors: list[JSONValue] = [entries[index] for index, _ in scored]
    filtered: JSONValue = survivors
    if isinstance(value, dict):
        filtered = {key: (survivors if item is entries else item) for key, item in value.items()}
    # Keep the text's own layout: pretty stays pretty, compact stays compact.
    if "\n" in text.strip():
        return json.dumps(filtered, ensure_ascii=False, indent=2)
    return _compact_json(filtered)


def strategy_rag_filter(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings
) -> tuple[Messages, bool]:
    """Filter retrieved chunks in every tool result and message text."""
    if settings.rag_min_score is None and settings.rag_top_k is None:
        return messages, False
    return _map_texts(
        dialect,
        messages,
        lambda text: filter_rag_text(text, settings.rag_min_score, settings.rag_top_k),
    )


# ---------------------------------------------------------------------------------------------
# The protected tail, shared by truncation and compaction


def _first_user(messages: Messages) -> int | None:
    return next((i for i, message in enumerate(messages) if _role(message) == "user"), None)


def _tail_start(dialect: Dialect, messages: Messages, keep: int) -> int:
    """Index of the first message of the kept tail: the last ``keep`` messages, widened
    backwards so the tail opens with no orphan tool result (OpenAI) and with an assistant
    message (Anthropic, so the summary can be merged into the user message before it)."""
    start = max(len(messages) - keep, 0)
    if dialect is Dialect.OPENAI_CHAT:
        while start > 0 and _role(messages[start]) in _CHAT_RESULT_ROLES:
            start -= 1
    elif start < len(messages) and _role(messages[start]) == "user":
        start -= 1
    return max(start, 0)


# ---------------------------------------------------------------------------------------------
# 4. Truncation of old tool results


def truncate_text(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters plus a marker saying how many were cut."""
    if len(text) <= max_chars:
        return text
    cut = len(text) - max_chars
    return f"{text[:max_chars]}\n[... {cut} characters truncated by a11i]"


def strategy_truncate_tool_results(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings
) -> tuple[Messages, bool]:
    """Cut the tool results before the protected tail to ``tool_result_max_chars``."""
    start = _tail_start(dialect, messages, settings.keep_last_turns)
    head, changed = _map_texts(
        dialect,
        messages[:start],
        lambda text: truncate_text(text, settings.tool_result_max_chars),
        results_only=True,
    )
    return ([*head, *messages[start:]], True) if changed else (messages, False)


# ---------------------------------------------------------------------------------------------
# 5. History compaction


def summarize(messages: Messages) -> str:
    """An extractive summary of ``messages``: tools called (with counts) and the first line of
    each assistant and user text. Local and deterministic: no model is asked."""
    calls: dict[str, int] = {}
    lines: list[str] = []
    for message in messages:
        role = _role(message)
        if not isinstance(message, dict) or role in _CHAT_RESULT_ROLES:
            continue
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                name = function.get("name") if isinstance(function, dict) else None
                if isinstance(name, str):
                    calls[name] = calls.get(name, 0) + 1
        for block in _blocks(message):
            name = block.get("name")
            if block.get("type") == "tool_use" and isinstance(name, str):
                calls[name] = calls.get(name, 0) + 1
            text = block.get("text")
            if block.get("type") == "text" and isinstance(text, str):
                first = next((line.strip() for line in text.splitlines() if line.strip()), "")
                if first and len(lines) < _SUMMARY_MAX_LINES:
                    if len(first) > _SUMMARY_LINE_CHARS:
                        first = first[: _SUMMARY_LINE_CHARS - 3] + "..."
                    lines.append(f"- {role}: {first}")
    parts = [f"[a11i] Earlier in this conversation ({len(messages)} messages summarised)"]
    if calls:
        named = ", ".join(name if n == 1 else f"{name} (x{n})" for name, n in calls.items())
        parts.append(f": the assistant called tools {named}")
    parts.append(".")
    if lines:
        parts.append(" Notes from those turns:\n" + "\n".join(lines))
    return "".join(parts)


def strategy_compact_history(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings
) -> tuple[Messages, bool]:
    """Replace the messages between the goal and the kept tail by one summary message."""
    if dialect is Dialect.OPENAI_CHAT:
        return _compact_chat(messages, settings)
    return _compact_anthropic(messages, settings)


def _compact_chat(messages: Messages, settings: OptimizerSettings) -> tuple[Messages, bool]:
    first = _first_user(messages)
    if first is None:
        return messages, False
    start = _tail_start(Dialect.OPENAI_CHAT, messages, settings.keep_last_turns)
    if start < len(messages) and _role(messages[start]) in _CHAT_RESULT_ROLES:
        return messages, False  # the tail would open with an orphan result: input is odd
    middle = range(first + 1, start)
    # System and developer messages are instructions, never history: they stay, in order.
    kept = [messages[i] for i in middle if _role(messages[i]) in _SYSTEM_ROLES]
    dropped = [messages[i] for i in middle if _role(messages[i]) not in _SYSTEM_ROLES]
    if len(dropped) < 2:
        return messages, False
    # A user message: consecutive user messages are valid, and the summary is context the
    # client supplies, not something the model said.
    summary: JSONValue = {"role": "user", "content": summarize(dropped)}
    return [*messages[: first + 1], *kept, summary, *messages[start:]], True


def _compact_anthropic(messages: Messages, settings: OptimizerSettings) -> tuple[Messages, bool]:
    # Valid input alternates user/assistant from index 0, so the tail opens with an assistant
    # message at an odd index. Kept: [0] the goal, [1] the first assistant turn, then ONE user
    # message holding [2]'s blocks (the results of [1]'s tool_use, which must stay next to it)
    # followed by the summary of [3 .. start-1], then the tail. Roles still alternate.
    start = _tail_start(Dialect.ANTHROPIC_MESSAGES, messages, settings.keep_last_turns)
    if start < 5 or start >= len(messages) or _role(messages[start]) != "assistant":
        return messages, False
    roles = [_role(m) for m in messages[:3]]
    if roles != ["user", "assistant", "user"] or _role(messages[start - 1]) != "user":
        return messages, False
    blocks: list[JSONValue] = list(_blocks(messages[2]))
    blocks.append({"type": "text", "text": summarize(messages[3:start])})
    summary: JSONValue = {"role": "user", "content": blocks}
    return [messages[0], messages[1], summary, *messages[start:]], True


# ---------------------------------------------------------------------------------------------
# 6. Exact-duplicate removal


def _result_text(content: JSONValue) -> str | None:
    """The text of a tool result content when it is text only (strings or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" for part in content
    ):
        return "".join(_texts(content))
    return None


def strategy_dedupe(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings
) -> tuple[Messages, bool]:
    """Replace tool results and long string contents seen earlier by a reference to them. The
    messages stay, with their tool_call_id / tool_use_id, so pairing stays valid."""
    seen_results: dict[str, str] = {}
    seen_texts: dict[str, int] = {}
    first = _first_user(messages)
    out: Messages = []
    changed = False
    for index, message in enumerate(messages):
        new = message
        if isinstance(message, dict):
            role = _role(message)
            content = message.get("content")
            if dialect is Dialect.OPENAI_CHAT and role == "tool":
                text = _result_text(content)
                call_id = message.get("tool_call_id")
                if text is not None and len(text) >= _MIN_DEDUPE_CHARS:
                    if text in seen_results:
                        new = {**message, "content": _result_reference(seen_results[text])}
                    elif isinstance(call_id, str):
                        seen_results[text] = call_id
            elif dialect is Dialect.ANTHROPIC_MESSAGES and isinstance(content, list):
                new_content = _dedupe_blocks(content, seen_results)
                if new_content is not content:
                    new = {**message, "content": new_content}
            # Long plain texts, but never the system prompt or the goal.
            if (
                new is message
                and isinstance(content, str)
                and role in ("user", "assistant")
                and index != first
                and len(content) >= _MIN_DEDUPE_CHARS
            ):
                if content in seen_texts:
                    new = {
                        **message,
                        "content": f"[identical to message {seen_texts[content]} above]",
                    }
                else:
                    seen_texts[content] = index
        changed = changed or new is not message
        out.append(new)
    return (out, True) if changed else (messages, False)


def _result_reference(call_id: str) -> str:
    return f"[identical to the tool result of call {call_id} above]"


def _dedupe_blocks(blocks: list[JSONValue], seen: dict[str, str]) -> list[JSONValue]:
    out: list[JSONValue] = []
    changed = False
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            text = _result_text(block.get("content"))
            use_id = block.get("tool_use_id")
            if text is not None and len(text) >= _MIN_DEDUPE_CHARS:
                if text in seen:
                    block = {**block, "content": _result_reference(seen[text])}
                    changed = True
                elif isinstance(use_id, str):
                    seen[text] = use_id
        out.append(block)
    return out if changed else blocks


_PIPELINE: Final[tuple[tuple[str, Strategy], ...]] = (
    (JSON_MINIFY, strategy_json_minify),
    (WHITESPACE, strategy_whitespace),
    (RAG_FILTER, strategy_rag_filter),
    (TRUNCATE_TOOL_RESULTS, strategy_truncate_tool_results),
    (COMPACT_HISTORY, strategy_compact_history),
    (DEDUPE, strategy_dedupe),
)


# ---------------------------------------------------------------------------------------------
# The validator: the rules the providers enforce on a conversation's structure


def validate_conversation(dialect: Dialect, body: JSONObject) -> list[str]:
    """The structural rule violations of ``body``'s messages ([] when the provider would accept
    the structure). Content itself is not checked: the provider's validation is authoritative."""
    messages = body.get("messages")
    if dialect not in (Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES):
        return []
    if not isinstance(messages, list):
        return ["'messages' must be an array"]
    return validate_messages(dialect, messages)


def validate_messages(dialect: Dialect, messages: Messages) -> list[str]:
    """:func:`validate_conversation` for a bare message list."""
    if dialect is Dialect.OPENAI_CHAT:
        return _validate_chat(messages)
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        return _validate_anthropic(messages)
    return []


def _call_ids(message: JSONValue) -> list[str]:
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(calls, list):
        return []
    return [i for c in calls if isinstance(c, dict) and isinstance(i := c.get("id"), str)]


def _validate_chat(messages: Messages) -> list[str]:
    problems: list[str] = []
    if not messages:
        return ["messages must not be empty"]
    open_calls: set[str] = set()  # calls of the current assistant group still unanswered
    in_group = False  # whether the previous messages are an assistant with tool_calls + results
    caller = -1
    for index, message in enumerate(messages):
        role = _role(message)
        if role == "tool":
            call_id = message.get("tool_call_id") if isinstance(message, dict) else None
            if not in_group:
                problems.append(f"messages[{index}]: tool message without a preceding tool call")
            elif call_id not in open_calls:
                problems.append(
                    f"messages[{index}]: tool_call_id {call_id!r} answers no open call of "
                    f"messages[{caller}]"
                )
            else:
                open_calls.discard(str(call_id))
            continue
        if open_calls:
            problems.append(
                f"messages[{caller}]: tool calls {sorted(open_calls)} have no tool message"
            )
        ids = _call_ids(message) if role == "assistant" else []
        open_calls = set(ids)
        in_group = bool(ids)
        caller = index
    if open_calls:
        problems.append(f"messages[{caller}]: tool calls {sorted(open_calls)} have no tool message")
    return problems


def _use_ids(message: JSONValue) -> list[str]:
    return [
        use_id
        for block in _blocks(message)
        if block.get("type") == "tool_use" and isinstance(use_id := block.get("id"), str)
    ]


def _validate_anthropic(messages: Messages) -> list[str]:
    problems: list[str] = []
    if not messages:
        return ["messages must not be empty"]
    if _role(messages[0]) != "user":
        problems.append("messages.0: the first message must have role 'user'")
    previous_role: str | None = None
    previous_uses: list[str] = []
    for index, message in enumerate(messages):
        role = _role(message)
        if role not in ("user", "assistant"):
            problems.append(f"messages.{index}: role must be 'user' or 'assistant'")
        elif role == previous_role:
            problems.append(f"messages.{index}: roles must alternate ({role} follows {role})")
        blocks = _blocks(message)
        results = [
            block.get("tool_use_id") for block in blocks if block.get("type") == "tool_result"
        ]
        if results and role != "user":
            problems.append(f"messages.{index}: tool_result blocks in a non-user message")
        for use_id in results:
            if use_id not in previous_uses:
                problems.append(
                    f"messages.{index}: tool_result {use_id!r} answers no tool_use of the "
                    "previous message"
                )
        seen_other = False
        for block in blocks:
            if block.get("type") == "tool_result" and seen_other:
                problems.append(f"messages.{index}: tool_result blocks must come first")
                break
            seen_other = seen_other or block.get("type") != "tool_result"
        unanswered = [use_id for use_id in previous_uses if use_id not in results]
        if unanswered:
            problems.append(
                f"messages.{index - 1}: tool_use {unanswered} not answered in the next message"
            )
        previous_role = role
        previous_uses = _use_ids(message) if role == "assistant" else []
    if previous_uses:
        problems.append(
            f"messages.{len(messages) - 1}: tool_use {previous_uses} not answered by a result"
        )
    return problems
