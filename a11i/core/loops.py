"""Which agent loop a call belongs to, so that consecutive turns of one loop share one trace.

Pure: reads a validated request and returns a stable key and the turn's position; no I/O, no
clocks. An agent that sends ``x-a11i-session`` names its loop; otherwise the loop is the
conversation's stable prefix: the system prompt (or instructions) and the first user message,
which an agent resends unchanged on every turn of one task. The history only grows within one
loop, so a call whose history is not longer than the loop's last one starts a new loop even when
its prefix is the same (the same task run again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

from a11i.core.dialects import ParsedRequest
from a11i.core.model import Dialect, JSONObject, JSONValue

#: Session ids longer than this are hashed; they are only ever used as a key.
_MAX_SESSION_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class LoopKey:
    """Where a call sits in its agent loop."""

    #: Stable within one loop: ``session:<id>`` or ``prefix:<sha256 of the prefix>``.
    key: str
    #: Entries in the conversation (messages or input items): grows with every turn.
    length: int
    #: The agent named the loop (``x-a11i-session``); such a loop never restarts on its own.
    named: bool


def loop_key(request: ParsedRequest, session: str | None = None) -> LoopKey | None:
    """The loop of a call; None for calls that belong to no conversation (embeddings)."""
    length = len(_conversation(request))
    if session:
        session = session.strip()
    if session:
        if len(session) > _MAX_SESSION_CHARS:
            session = hashlib.sha256(session.encode()).hexdigest()
        return LoopKey(f"session:{session}", length, named=True)
    prefix = _stable_prefix(request)
    if prefix is None:
        return None
    digest = hashlib.sha256(
        json.dumps(prefix, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()[:32]
    return LoopKey(f"prefix:{digest}", length, named=False)


def _conversation(request: ParsedRequest) -> list[JSONValue]:
    body = request.body
    if request.dialect is Dialect.OPENAI_RESPONSES:
        items = body.get("input")
        if isinstance(items, str):
            return [items]
        return list(items) if isinstance(items, list) else []
    if request.dialect in (Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES):
        messages = body.get("messages")
        return list(messages) if isinstance(messages, list) else []
    return []


def _stable_prefix(request: ParsedRequest) -> list[JSONValue] | None:
    """The system prompt and the first user message, with the model's family: what an agent
    resends unchanged on every turn of one task."""
    body = request.body
    conversation = _conversation(request)
    first_user = next(
        (item for item in conversation if _role(item) == "user"),
        None,
    )
    if first_user is None:
        return None
    system: JSONValue = None
    if request.dialect is Dialect.ANTHROPIC_MESSAGES:
        system = body.get("system")
    elif request.dialect is Dialect.OPENAI_RESPONSES:
        system = body.get("instructions")
    if system is None:
        system = next(
            (_content(item) for item in conversation if _role(item) in ("system", "developer")),
            None,
        )
    return [request.dialect.provider.value, system, _content(first_user)]


def _role(item: JSONValue) -> str | None:
    if isinstance(item, str):
        return "user"  # a bare string input of the Responses API is the user's
    if isinstance(item, dict):
        role = item.get("role")
        if isinstance(role, str):
            return role
        if item.get("type") == "message":
            return "user"
    return None


def _content(item: JSONValue) -> JSONValue:
    if isinstance(item, dict):
        message: JSONObject = item
        return message.get("content")
    return item
