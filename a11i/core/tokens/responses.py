"""OpenAI Responses API input items, counted by the chat rules (OpenAI published none for them),
so every count here is an estimate.

Pure: one item at a time, adding to a ``Tally``.
"""

from __future__ import annotations

from a11i.core.model import JSONValue
from a11i.core.tokens.encoding import Tally, Text, str_or_none
from a11i.core.tokens.images import ImageRules
from a11i.core.tokens.openai_chat import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    message_content,
    one_call,
)


def responses_item(item: JSONValue, text: Text, images: ImageRules) -> Tally:
    tally = Tally()
    tally.exact = False
    if isinstance(item, str):
        tally.add(TOKENS_PER_MESSAGE + text.count("user") + text.count(item))
        return tally
    if not isinstance(item, dict):
        tally.add(TOKENS_PER_MESSAGE + text.json(item))
        return tally
    kind = item.get("type", "message")
    if kind == "message" or (kind is None and "role" in item):
        tally.add(TOKENS_PER_MESSAGE)
        role = item.get("role")
        tally.add(text.count(role) if isinstance(role, str) else 0)
        name = item.get("name")
        if isinstance(name, str):
            tally.add(text.count(name) + TOKENS_PER_NAME)
        message_content(tally, text, images, item.get("content"))
    elif kind in ("function_call", "custom_tool_call"):
        tally.add(TOKENS_PER_MESSAGE + text.count("assistant"))
        one_call(tally, text, item)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        tally.add(TOKENS_PER_MESSAGE + text.count("tool"))
        output = item.get("output")
        call_id = item.get("call_id")
        if isinstance(call_id, str):
            tally.add(text.count(call_id))
        message_content(tally, text, images, output)
    elif kind == "reasoning":
        # Earlier reasoning passed back: its summary text (the encrypted content is opaque).
        summary = item.get("summary")
        if isinstance(summary, list):
            for part in summary:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    tally.add(text.count(str_or_none(part.get("text")) or ""))
    else:
        tally.add(TOKENS_PER_MESSAGE + text.json(item))
    return tally
