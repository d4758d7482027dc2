"""The strategies that work on the history as a whole: RAG filtering, truncation of old tool
results, compaction into a summary, and exact-duplicate removal.

Each takes the messages, the settings and a :class:`~a11i.core.optimizer.rules.Scope` (which
messages are never rewritten) and returns the new messages and whether anything changed. Pure:
no I/O, no model calls, never mutates its input; every pattern here is linear in its text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final

from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.optimizer.rules import (
    CHAT_RESULT_ROLES,
    Messages,
    Scope,
    blocks,
    cache_prefix_end,
    role,
)
from a11i.core.optimizer.settings import OptimizerSettings
from a11i.core.optimizer.text import compact_json, loads_exact, map_texts, texts

_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
SUMMARY_HEADER: Final = "[a11i] Earlier turns of this conversation, summarised to save tokens"
#: Below this many characters a duplicate is not worth a reference (the reference is ~60 chars).
_MIN_DEDUPE_CHARS: Final = 120

# ---------------------------------------------------------------------------------------------
# RAG filtering

_RAG_TEXT_KEYS: Final = ("content", "text", "page_content")
_RAG_SCORE_KEYS: Final = ("score", "relevance_score", "similarity", "distance", "_distance")
_LOWER_IS_BETTER: Final = frozenset({"distance", "_distance"})
_RAG_WRAPPERS: Final = ("results", "documents", "matches", "data")


def _rag_entries(value: JSONValue) -> tuple[list[JSONValue], bool] | None:
    """The retrieved chunks in ``value`` and whether their scores are distances (lower is
    better), or None when it is not a recognised shape: every entry an object with a text and
    a score, all scores pointing the same way."""
    entries: JSONValue = value
    if isinstance(value, dict):
        found = [value[key] for key in _RAG_WRAPPERS if isinstance(value.get(key), list)]
        if len(found) != 1:
            return None
        entries = found[0]
    if not isinstance(entries, list) or not entries:
        return None
    directions: set[bool] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            return None
        key = _score_key(entry)
        if key is None or not any(isinstance(entry.get(k), str) for k in _RAG_TEXT_KEYS):
            return None
        directions.add(key in _LOWER_IS_BETTER)
    return (entries, directions.pop()) if len(directions) == 1 else None


def _score_key(entry: JSONObject) -> str | None:
    for key in _RAG_SCORE_KEYS:
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return key
    return None


def filter_rag_text(
    text: str, min_score: float | None, top_k: int | None, order: str = "auto"
) -> str:
    """``text`` with its retrieved chunks filtered, else unchanged. ``order`` says which way the
    score points ("higher", "lower", or "auto": distances are lower-is-better); ``min_score``
    is the worst score kept. Survivors keep their original order."""
    if min_score is None and top_k is None:
        return text
    ok, value = loads_exact(text)
    found = _rag_entries(value) if ok else None
    if found is None:
        return text
    entries, distances = found
    lower = order == "lower" or (order == "auto" and distances)
    sign = -1.0 if lower else 1.0
    scored: list[tuple[int, float]] = []
    for index, entry in enumerate(entries):
        key = _score_key(entry) if isinstance(entry, dict) else None
        raw = entry.get(key) if isinstance(entry, dict) and key is not None else None
        if not isinstance(raw, int | float):
            return text
        goodness = sign * float(raw)
        if min_score is None or goodness >= sign * min_score:
            scored.append((index, goodness))
    if top_k is not None and len(scored) > top_k:
        # Best first, earlier first among equals; then back to the original order.
        scored = sorted(sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:top_k])
    if len(scored) == len(entries):
        return text
    survivors: list[JSONValue] = [entries[index] for index, _ in scored]
    filtered: JSONValue = survivors
    if isinstance(value, dict):
        filtered = {k: (survivors if item is entries else item) for k, item in value.items()}
    # Keep the text's own layout: pretty stays pretty, compact stays compact.
    if "\n" in text.strip():
        return json.dumps(filtered, ensure_ascii=False, indent=2)
    return compact_json(filtered)


def strategy_rag_filter(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings, scope: Scope | None = None
) -> tuple[Messages, bool]:
    """Filter retrieved chunks in tool results and texts, never in the current exchange (the
    retrieval the agent just made)."""
    if settings.rag_min_score is None and settings.rag_top_k is None:
        return messages, False
    scope = scope or Scope.of(dialect, messages)
    return map_texts(
        dialect,
        messages,
        lambda text: filter_rag_text(
            text, settings.rag_min_score, settings.rag_top_k, settings.rag_score_order
        ),
        skip=scope.frozen,
    )


# ---------------------------------------------------------------------------------------------
# The protected tail, shared by truncation and compaction


def first_user(messages: Messages) -> int | None:
    return next((i for i, message in enumerate(messages) if role(message) == "user"), None)


def tail_start(dialect: Dialect, messages: Messages, keep: int) -> int:
    """Index of the first message of the kept tail: the last ``keep`` messages, widened
    backwards so the tail opens with no orphan tool result (OpenAI) and with an assistant
    message (Anthropic)."""
    start = max(len(messages) - keep, 0)
    if dialect is Dialect.OPENAI_CHAT:
        while start > 0 and role(messages[start]) in CHAT_RESULT_ROLES:
            start -= 1
    elif start < len(messages) and role(messages[start]) == "user":
        start -= 1
    return max(start, 0)


# ---------------------------------------------------------------------------------------------
# Truncation of old tool results


def truncate_text(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters plus a marker saying how many were cut; a
    compaction summary that compaction put into a tool result is kept whole."""
    at = text.find(SUMMARY_HEADER)
    if at > 0:
        return truncate_text(text[:at], max_chars) + text[at:]
    if len(text) <= max_chars:
        return text
    cut = len(text) - max_chars
    return f"{text[:max_chars]}\n[... {cut} characters truncated by a11i]"


def strategy_truncate_tool_results(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings, scope: Scope | None = None
) -> tuple[Messages, bool]:
    """Cut the tool results before the protected tail to ``tool_result_max_chars``."""
    scope = scope or Scope.of(dialect, messages)
    start = tail_start(dialect, messages, settings.keep_last_turns)
    skip = scope.frozen | frozenset(range(start, len(messages)))
    return map_texts(
        dialect,
        messages,
        lambda text: truncate_text(text, settings.tool_result_max_chars),
        skip=skip,
        results_only=True,
    )


# ---------------------------------------------------------------------------------------------
# History compaction

_ERROR_LINE: Final = re.compile(
    r"error|exception|fail|fatal|panic|denied|refused|timed out|timeout|traceback|"
    r"oomkilled|crashloop|not found|invalid|cannot|unable",
    re.IGNORECASE,
)
# Identifiers worth keeping: names with a digit and a separator (pod names, request ids,
# versions, hashes with a prefix). Each repetition starts with a separator: linear time.
_IDENTIFIER: Final = re.compile(r"(?<![\w.-])[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)+")
_PATH: Final = re.compile(r"(?:~|\.\.?)?(?:/[\w.@+-]+){2,}|[\w.-]+/[\w./-]*\.\w{1,8}")
_UUID: Final = re.compile(r"(?<![\w-])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# ``request_id=…``, ``trace-id: …``, ``id=…``: the value is an identifier whatever it looks like.
_KEYED_ID: Final = re.compile(r"\b[A-Za-z_-]*id[=:] ?([\w-]{4,})", re.IGNORECASE)
_DIGITS: Final = re.compile(r"\d+")
_DIGIT: Final = re.compile(r"\d")
_TIMESTAMP: Final = re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.]+Z?|\b\d\d:\d\d:\d\d(?:\.\d+)?")
_LINE_CHARS: Final = 200
_USER_CHARS: Final = 1500


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split()) if len(text) > limit else text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _identifiers(text: str) -> Iterable[str]:
    for match in _KEYED_ID.finditer(text):
        yield match.group(1)
    for pattern in (_PATH, _UUID, _IDENTIFIER):
        for match in pattern.finditer(text):
            found = match.group(0).rstrip(".:")
            if pattern is _IDENTIFIER and not _DIGIT.search(found):
                continue
            yield found


def summarize(messages: Messages, budget: int = 3000) -> str:
    """A summary of ``messages`` that keeps what an agent needs: every user instruction and
    correction, the tools called with their arguments (file paths, names), error lines and
    identifiers from tool results and inputs, the first line of each assistant text; all but the
    user's words within ``budget`` characters. Local and deterministic: no model is asked."""
    users: list[str] = []
    calls: list[str] = []
    errors: dict[str, list[str | int]] = {}
    names: dict[str, None] = {}
    notes: list[str] = []
    for message in messages:
        kind = role(message)
        if not isinstance(message, dict) or kind in _SYSTEM_ROLES:
            continue
        if kind in CHAT_RESULT_ROLES:
            _scan_result(texts(message.get("content")), errors, names)
            continue
        tool_calls = message.get("tool_calls")
        for call in tool_calls if isinstance(tool_calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                arguments = function.get("arguments")
                args = arguments if isinstance(arguments, str) else ""
                calls.append(_clip(f"{function['name']}({args})", _LINE_CHARS))
                names.update(dict.fromkeys(_identifiers(args)))
        for block in blocks(message):
            kind_of = block.get("type")
            text = block.get("text")
            if kind_of == "tool_use" and isinstance(block.get("name"), str):
                args = compact_json(block.get("input"))
                calls.append(_clip(f"{block['name']}({args})", _LINE_CHARS))
                names.update(dict.fromkeys(_identifiers(args)))
            elif kind_of == "tool_result":
                _scan_result(texts(block.get("content")), errors, names)
            elif kind_of == "text" and isinstance(text, str) and text.strip():
                if kind == "user":
                    users.append(_clip(text, _USER_CHARS))
                else:
                    first = next(line for line in text.splitlines() if line.strip())
                    notes.append(_clip(first, _LINE_CHARS))
    lines = [f"{SUMMARY_HEADER} ({len(messages)} messages):"]
    lines += ["The user said:", *(f"- {text}" for text in users)] if users else []
    used = 0
    sections = (
        ("The assistant noted:", notes),
        ("Tools called:", calls),
        ("Errors seen:", _error_lines(errors)),
    )
    for title, items in sections:
        if not items or used >= budget:
            continue
        lines.append(title)
        for item in items:
            if used + len(item) > budget:
                lines.append(f"- (... {len(items) - items.index(item)} more)")
                used = budget
                break
            lines.append(f"- {item}")
            used += len(item) + 3
    if names and used < budget:
        shown: list[str] = []
        for name in names:
            if used + len(name) + 2 > budget:
                break
            shown.append(name)
            used += len(name) + 2
        more = f" (+{len(names) - len(shown)} more)" if len(shown) < len(names) else ""
        lines.append("Identifiers seen: " + ", ".join(shown) + more)
    return "\n".join(lines)


def _shape(line: str) -> str:
    """An error line without its timestamp and identifiers: repeats of one error share it."""
    line = _TIMESTAMP.sub("", line)
    line = _KEYED_ID.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + "*", line)
    return _DIGITS.sub("#", line).strip()


def _scan_result(
    found: Iterable[str], errors: dict[str, list[str | int]], names: dict[str, None]
) -> None:
    for text in found:
        for line in text.splitlines():
            if _ERROR_LINE.search(line):
                entry = errors.setdefault(_shape(line), [line.strip(), 0])
                entry[1] = int(entry[1]) + 1
        names.update(dict.fromkeys(_identifiers(text)))


def _error_lines(errors: dict[str, list[str | int]]) -> list[str]:
    # One line per kind of error, as first seen, with how often it recurred (the ids of the
    # repeats are among the identifiers).
    return [
        _clip(str(first), _LINE_CHARS) + (f" (x{count})" if int(count) > 1 else "")
        for first, count in errors.values()
    ]


def _boundary(dialect: Dialect, messages: Messages, index: int) -> bool:
    """Whether the kept tail may open at ``index`` (no orphan result; Anthropic: an assistant
    message, so the summary's user message comes before it)."""
    if dialect is Dialect.OPENAI_CHAT:
        return role(messages[index]) not in CHAT_RESULT_ROLES
    return role(messages[index]) == "assistant"


def block_cuts(
    dialect: Dialect, messages: Messages, start: int, limit: int, size: int
) -> list[int]:
    """Where the summarised blocks end: from ``start``, each cut is the first valid boundary
    at least ``size`` messages after the previous one, none beyond ``limit``. History only
    grows, so the cuts of turn k are the cuts of turn k+1: the summary stays byte-identical
    until a new block is complete."""
    cuts: list[int] = []
    index = start + size
    while index <= limit:
        if _boundary(dialect, messages, index):
            cuts.append(index)
            index += size
        else:
            index += 1
    return cuts


def _summary(messages: Messages, start: int, cuts: list[int], settings: OptimizerSettings) -> str:
    bounds = zip([start, *cuts[:-1]], cuts, strict=True)
    return "\n\n".join(summarize(messages[a:b], settings.summary_block_chars) for a, b in bounds)


def strategy_compact_history(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings, scope: Scope | None = None
) -> tuple[Messages, bool]:
    """Replace whole blocks of messages between the goal and the kept tail by one summary."""
    scope = scope or Scope.of(dialect, messages)
    if dialect is Dialect.OPENAI_CHAT:
        return _compact_chat(messages, settings, scope)
    return _compact_anthropic(messages, settings, scope)


def _limit(messages: Messages, settings: OptimizerSettings, scope: Scope, after: int) -> int:
    """The last index the summarised range may end at: before the kept tail and before any
    message that must not be rewritten."""
    limit = len(messages) - settings.keep_last_turns
    frozen_after = [i for i in scope.frozen if i > after]
    return min([limit, *frozen_after])


def _compact_chat(
    messages: Messages, settings: OptimizerSettings, scope: Scope
) -> tuple[Messages, bool]:
    first = first_user(messages)
    if first is None:
        return messages, False
    start = first + 1
    cuts = block_cuts(
        Dialect.OPENAI_CHAT,
        messages,
        start,
        _limit(messages, settings, scope, first),
        settings.summary_block_messages,
    )
    if not cuts:
        return messages, False
    end = cuts[-1]
    middle = range(start, end)
    # System and developer messages are instructions, never history: they stay, in order.
    kept = [messages[i] for i in middle if role(messages[i]) in _SYSTEM_ROLES]
    if end - start - len(kept) < 2:
        return messages, False
    # A user message: consecutive user messages are valid, and the summary is context the
    # client supplies, not something the model said.
    summary: JSONValue = {"role": "user", "content": _summary(messages, start, cuts, settings)}
    return [*messages[:start], *kept, summary, *messages[end:]], True


def _compact_anthropic(
    messages: Messages, settings: OptimizerSettings, scope: Scope
) -> tuple[Messages, bool]:
    # Valid input alternates user/assistant from index 0. The summary joins the user message
    # at ``host`` (the first one after the cached prefix, past the goal and the first answer),
    # then the tail opens with an assistant message: roles still alternate, and results stay
    # next to their calls.
    host = max(2, cache_prefix_end(messages))
    host += host % 2
    if host >= len(messages) or role(messages[host]) != "user" or host in scope.frozen:
        return messages, False
    start = host + 1
    cuts = block_cuts(
        Dialect.ANTHROPIC_MESSAGES,
        messages,
        start,
        _limit(messages, settings, scope, host),
        settings.summary_block_messages,
    )
    if not cuts:
        return messages, False
    end = cuts[-1]
    joined = _with_summary(messages[host], _summary(messages, start, cuts, settings))
    return [*messages[:host], joined, *messages[end:]], True


def _with_summary(message: JSONValue, summary: str) -> JSONValue:
    """``message`` (a user message) carrying ``summary``. A message of tool results only takes
    it inside its last result: a text block would make it a user turn of its own, and with
    extended thinking the provider then wants a thinking block where the loop has none."""
    assert isinstance(message, dict)
    found: list[JSONValue] = list(blocks(message))
    results = [
        i for i, b in enumerate(found) if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    if results and len(results) == len(found):
        last = found[results[-1]]
        assert isinstance(last, dict)
        inner = last.get("content")
        content: JSONValue
        if isinstance(inner, list):
            content = [*inner, {"type": "text", "text": summary}]
        elif isinstance(inner, str) and inner:
            content = f"{inner}\n\n{summary}"
        else:
            content = summary
        found[results[-1]] = {**last, "content": content}
    else:
        found.append({"type": "text", "text": summary})
    return {**message, "content": found}


# ---------------------------------------------------------------------------------------------
# Exact-duplicate removal


def _result_text(content: JSONValue) -> str | None:
    """The text of a tool result content when it is text only (strings or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" for part in content
    ):
        return "".join(texts(content))
    return None


def _result_reference(call_id: str) -> str:
    return f"[identical to the tool result of call {call_id} above]"


def _text_reference(role_name: str, text: str) -> str:
    # The model sees no message numbers: name the earlier message by who said it and how it
    # begins.
    opening = _clip(text.split("\n", 1)[0], 60)
    return f'[identical to the earlier {role_name} message that begins "{opening}"]'


def strategy_dedupe(
    dialect: Dialect, messages: Messages, settings: OptimizerSettings, scope: Scope | None = None
) -> tuple[Messages, bool]:
    """Replace tool results and long string contents seen earlier by a reference to them. The
    messages stay, with their tool_call_id / tool_use_id, so pairing stays valid."""
    scope = scope or Scope.of(dialect, messages)
    seen_results: dict[str, str] = {}
    seen_texts: set[str] = set()
    first = first_user(messages)
    out: Messages = []
    changed = False
    for index, message in enumerate(messages):
        new = message
        if isinstance(message, dict):
            kind = role(message)
            content = message.get("content")
            if dialect is Dialect.OPENAI_CHAT and kind == "tool":
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
                and kind in ("user", "assistant")
                and index != first
                and len(content) >= _MIN_DEDUPE_CHARS
            ):
                if content in seen_texts:
                    new = {**message, "content": _text_reference(kind or "", content)}
                else:
                    seen_texts.add(content)
        if index in scope.frozen:
            new = message
        changed = changed or new is not message
        out.append(new)
    return (out, True) if changed else (messages, False)


def _dedupe_blocks(blocks_in: list[JSONValue], seen: dict[str, str]) -> list[JSONValue]:
    out: list[JSONValue] = []
    changed = False
    for block in blocks_in:
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
    return out if changed else blocks_in
