"""The texts a model reads, and the lossless rewrites of them.

Walkers visit the texts of a message list (string contents, text parts and blocks, Anthropic
``tool_result`` contents) and rebuild only the messages that change, skipping the messages the
optimizer must not rewrite. The lossless rewrites are meaning-preserving byte for byte:

- :func:`minify_json_text` re-serialises JSON only when it round-trips exactly: no duplicate
  keys, no ``NaN``/``Infinity``, every number written back as the agent wrote it;
- :func:`squeeze_whitespace` only touches prose (never tool results, code fences, leading or
  inner whitespace of a line): trailing blanks (a Markdown hard break is kept) and runs of
  blank lines (one blank line is a paragraph break in Markdown however many there are).

Every scan here is linear in the text: fences are found line by line, never by a backtracking
pattern. Pure: no I/O; a lone UTF-16 surrogate is text like any other (it is the encoder's
concern, not ours).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Set

from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.optimizer.rules import CHAT_RESULT_ROLES, Messages

TextFn = Callable[[str], str]


def map_texts(
    dialect: Dialect,
    messages: Messages,
    fn: TextFn,
    *,
    skip: Set[int] = frozenset(),
    results_only: bool = False,
    prose_only: bool = False,
) -> tuple[Messages, bool]:
    """``messages`` with ``fn`` applied to their texts, except the messages at ``skip``;
    ``results_only`` limits it to tool results, ``prose_only`` to everything else."""
    out = [
        message if index in skip else _map_message(dialect, message, fn, results_only, prose_only)
        for index, message in enumerate(messages)
    ]
    changed = any(new is not old for new, old in zip(out, messages, strict=True))
    return (out, True) if changed else (messages, False)


def _map_message(
    dialect: Dialect, message: JSONValue, fn: TextFn, results_only: bool, prose_only: bool
) -> JSONValue:
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    new_content: JSONValue
    if dialect is Dialect.OPENAI_CHAT:
        is_result = message.get("role") in CHAT_RESULT_ROLES
        if (results_only and not is_result) or (prose_only and is_result):
            return message
        new_content = _map_content(content, fn)
    elif isinstance(content, str):
        new_content = content if results_only else _apply(fn, content)
    elif isinstance(content, list):
        new_content = _map_blocks(content, fn, results_only, prose_only)
    else:
        new_content = content
    if new_content is content:
        return message
    copy = dict(message)
    copy["content"] = new_content
    return copy


def _apply(fn: TextFn, text: str) -> str:
    new = fn(text)
    return text if new == text else new


def _map_content(content: JSONValue, fn: TextFn) -> JSONValue:
    if isinstance(content, str):
        return _apply(fn, content)
    if not isinstance(content, list):
        return content
    parts: list[JSONValue] = []
    changed = False
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            text = part.get("text")
            if isinstance(text, str):
                new_text = fn(text)
                if new_text != text:
                    part = {**part, "text": new_text}
                    changed = True
        parts.append(part)
    return parts if changed else content


def _map_blocks(
    blocks: list[JSONValue], fn: TextFn, results_only: bool, prose_only: bool
) -> JSONValue:
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
            elif kind == "tool_result" and not prose_only:
                inner = block.get("content")
                new_inner = _map_content(inner, fn)
                if new_inner is not inner:
                    new_block = {**block, "content": new_inner}
        if new_block is not block:
            changed = True
        out.append(new_block)
    return out if changed else blocks


def texts(content: JSONValue) -> Iterator[str]:
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
                    yield from texts(part.get("content"))


# ---------------------------------------------------------------------------------------------
# JSON that round-trips exactly


class _Inexact(ValueError):
    """A JSON text that would not be written back as it was (a number, a constant)."""


def _exact_float(literal: str) -> float:
    value = float(literal)
    # json.dumps writes floats with repr(): anything else (1E5, 1e400, 17 significant
    # digits) would come back different, so the text is left alone.
    if repr(value) != literal:
        raise _Inexact(literal)
    return value


def _exact_int(literal: str) -> int:
    value = int(literal)
    if str(value) != literal:  # -0
        raise _Inexact(literal)
    return value


def _no_constant(literal: str) -> JSONValue:
    raise _Inexact(literal)


def loads_exact(text: str) -> tuple[bool, JSONValue]:
    """(True, value) when ``text`` is entirely one JSON object or array that
    :func:`compact_json` writes back with the same meaning and the same numbers."""
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
        value: JSONValue = json.loads(
            stripped,
            object_pairs_hook=pairs,
            parse_float=_exact_float,
            parse_int=_exact_int,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError):
        return False, None
    return (not duplicate), value


def compact_json(value: JSONValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_FENCE_OPEN_JSON = re.compile(r"[ \t]*```[ \t]*json[ \t]*", re.IGNORECASE)
_FENCE_CLOSE = re.compile(r"[ \t]*```[ \t]*")


def minify_json_text(text: str) -> str:
    """``text`` with its JSON (the whole text, or the body of ```json fences) re-serialised
    compactly, where that round-trips exactly."""
    ok, value = loads_exact(text)
    if ok:
        compact = compact_json(value)
        return compact if len(compact) < len(text) else text
    if "```" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    # One pass over the lines: an opener looks ahead for its closer from where it is, and the
    # scan resumes after the closer (or ends: an unclosed opener keeps the rest as it is).
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        if not _FENCE_OPEN_JSON.fullmatch(line):
            continue
        close = index
        while close < len(lines) and not _FENCE_CLOSE.fullmatch(lines[close]):
            close += 1
        if close == len(lines):
            out.extend(lines[index:])
            break
        inner = "\n".join(lines[index:close])
        ok, value = loads_exact(inner)
        out.append(compact_json(value) if ok and inner.strip() else inner)
        out.append(lines[close])
        index = close + 1
    result = "\n".join(out)
    return result if len(result) < len(text) else text


def strategy_json_minify(
    dialect: Dialect, messages: Messages, skip: Set[int]
) -> tuple[Messages, bool]:
    """Minify the JSON in every text of every message not in ``skip``."""
    return map_texts(dialect, messages, minify_json_text, skip=skip)


# ---------------------------------------------------------------------------------------------
# Whitespace of prose

_FENCE_LINE = re.compile(r"[ \t]*(```|~~~)")


def squeeze_whitespace(text: str) -> str:
    """Prose ``text`` with trailing blanks stripped (a Markdown hard break, two or more spaces
    before a line that goes on, is kept) and runs of blank lines cut to one; fenced code,
    leading and inner whitespace are left exactly as they are."""
    if loads_exact(text)[0]:
        return text
    lines = text.split("\n")
    out: list[str] = []
    in_fence = False
    blanks = 0
    for index, line in enumerate(lines):
        if _FENCE_LINE.match(line):
            in_fence = not in_fence
            out.append(line)
            blanks = 0
            continue
        if in_fence:
            out.append(line)
            continue
        stripped = line.rstrip(" \t")
        if not stripped:
            blanks += 1
            if blanks <= 1:
                out.append("")
            continue
        blanks = 0
        following = lines[index + 1] if index + 1 < len(lines) else ""
        hard_break = line.endswith("  ") and bool(following.strip())
        out.append(line if hard_break else stripped)
    return "\n".join(out)


def strategy_whitespace(
    dialect: Dialect, messages: Messages, skip: Set[int]
) -> tuple[Messages, bool]:
    """Squeeze the whitespace of the prose (never tool results) of messages not in ``skip``."""
    return map_texts(dialect, messages, squeeze_whitespace, skip=skip, prose_only=True)
