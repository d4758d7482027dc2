"""The Anthropic estimate: Anthropic publishes no tokenizer, so text is counted with
``cl100k_base`` and scaled by ``ANTHROPIC_TEXT_FACTOR``; images, PDFs and the tool-use system
prompt use Anthropic's documented sizes.

Pure: one system prompt, message or tool list at a time, decoded in memory.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Final

from a11i.core.model import JSONObject, JSONValue
from a11i.core.tokens.encoding import Tally, Text, str_or_none
from a11i.core.tokens.images import decode_prefix, image_size

#: Claude's tokenizer yields more tokens than cl100k_base for the same English text (about 10-20%
#: in published comparisons). The projection should err high: the settled cost always comes from
#: the provider's reported usage, so an overestimate only makes a near-empty budget stricter.
ANTHROPIC_TEXT_FACTOR: Final = 1.2
ANTHROPIC_TOKENS_PER_MESSAGE: Final = 4
ANTHROPIC_REQUEST_OVERHEAD: Final = 4
#: Anthropic's documented tool-use system prompt for tool_choice auto (Claude 3.7/4 models).
ANTHROPIC_TOOL_SYSTEM_PROMPT: Final = 346
#: Anthropic: images are scaled to at most ~1.15 megapixels, about 1,600 tokens.
ANTHROPIC_IMAGE_MAX_TOKENS: Final = 1_600
ANTHROPIC_IMAGE_MAX_PIXELS: Final = 1_150_000
ANTHROPIC_IMAGE_MAX_EDGE: Final = 1_568
#: Anthropic: "each page typically uses 1,500-3,000 text tokens" plus its image; the upper end.
ANTHROPIC_PDF_PAGE_TOKENS: Final = 3_000


def anthropic_image(width: int | None, height: int | None) -> int:
    if not width or not height or width <= 0 or height <= 0:
        return ANTHROPIC_IMAGE_MAX_TOKENS
    scale = min(
        1.0,
        ANTHROPIC_IMAGE_MAX_EDGE / max(width, height),
        math.sqrt(ANTHROPIC_IMAGE_MAX_PIXELS / (width * height)),
    )
    return min(math.ceil(width * height * scale * scale / 750), ANTHROPIC_IMAGE_MAX_TOKENS)


class _Claude:
    """Anthropic counts: cl100k text scaled by the factor at the end; images and overheads not."""

    __slots__ = ("fixed", "text", "text_tokens")

    def __init__(self, text: Text) -> None:
        self.text = text
        self.text_tokens = 0
        self.fixed = 0

    def add_text(self, value: str) -> None:
        self.text_tokens += self.text.count(value)

    def add_json(self, value: JSONValue) -> None:
        self.text_tokens += self.text.json(value)

    def tally(self) -> Tally:
        tally = Tally()
        tally.add(math.ceil(self.text_tokens * ANTHROPIC_TEXT_FACTOR) + self.fixed, exact=False)
        return tally


def anthropic_system(system: JSONValue, text: Text) -> Tally:
    claude = _Claude(text)
    claude.fixed += ANTHROPIC_TOKENS_PER_MESSAGE
    if isinstance(system, str):
        claude.add_text(system)
    elif isinstance(system, list):
        for block in system:
            _anthropic_block(claude, block)
    else:
        claude.add_json(system)
    return claude.tally()


def anthropic_message(message: JSONValue, text: Text) -> Tally:
    claude = _Claude(text)
    claude.fixed += ANTHROPIC_TOKENS_PER_MESSAGE
    if not isinstance(message, dict):
        claude.add_json(message)
        return claude.tally()
    content = message.get("content")
    if isinstance(content, str):
        claude.add_text(content)
    elif isinstance(content, list):
        for block in content:
            _anthropic_block(claude, block)
    elif content is not None:
        claude.add_json(content)
    return claude.tally()


def _anthropic_block(claude: _Claude, block: JSONValue) -> None:
    if isinstance(block, str):
        claude.add_text(block)
        return
    if not isinstance(block, dict):
        claude.add_json(block)
        return
    kind = block.get("type")
    if kind == "text":
        claude.add_text(str_or_none(block.get("text")) or "")
    elif kind == "thinking":
        claude.add_text(str_or_none(block.get("thinking")) or "")
    elif kind == "tool_use" or kind == "server_tool_use":
        claude.add_text(str_or_none(block.get("name")) or "")
        claude.add_json(block.get("input"))
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            for inner in content:
                _anthropic_block(claude, inner)
        elif isinstance(content, str):
            claude.add_text(content)
        elif content is not None:
            claude.add_json(content)
    elif kind == "image":
        claude.fixed += _anthropic_image_block(block)
    elif kind == "document":
        _anthropic_document(claude, block)
    elif kind == "search_result":
        for key in ("title", "source"):
            claude.add_text(str_or_none(block.get(key)) or "")
        content = block.get("content")
        for inner in content if isinstance(content, list) else []:
            _anthropic_block(claude, inner)
    else:
        claude.add_json(block)


def _anthropic_image_block(block: JSONObject) -> int:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        data = source.get("data")
        if isinstance(data, str):
            size = image_size(decode_prefix(data))
            if size is not None:
                return anthropic_image(*size)
    return ANTHROPIC_IMAGE_MAX_TOKENS


_PDF_PAGE: Final = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def _anthropic_document(claude: _Claude, block: JSONObject) -> None:
    for key in ("title", "context"):
        claude.add_text(str_or_none(block.get(key)) or "")
    source = block.get("source")
    if not isinstance(source, dict):
        claude.fixed += ANTHROPIC_PDF_PAGE_TOKENS
        return
    kind = source.get("type")
    data = source.get("data")
    if kind == "text" and isinstance(data, str):
        claude.add_text(data)
    elif kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            claude.add_text(content)
        elif isinstance(content, list):
            for inner in content:
                _anthropic_block(claude, inner)
    elif kind == "base64" and isinstance(data, str):
        claude.fixed += ANTHROPIC_PDF_PAGE_TOKENS * _pdf_pages(data)
    else:
        claude.fixed += ANTHROPIC_PDF_PAGE_TOKENS


def _pdf_pages(data: str) -> int:
    """Pages of a base64 PDF by its page objects; at least one (compressed object streams hide
    them, and then one page per 100 kB is assumed)."""
    try:
        pdf = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return 1
    found = len(_PDF_PAGE.findall(pdf))
    return found if found else max(1, -(-len(pdf) // 100_000))


def anthropic_tools(tools: JSONValue, text: Text) -> Tally:
    claude = _Claude(text)
    claude.fixed += ANTHROPIC_TOOL_SYSTEM_PROMPT
    for tool in tools if isinstance(tools, list) else [tools]:
        if isinstance(tool, dict) and "input_schema" in tool:
            claude.add_text(str_or_none(tool.get("name")) or "")
            claude.add_text(str_or_none(tool.get("description")) or "")
            claude.add_json(tool.get("input_schema"))
        else:
            # Server tools (web search, code execution...) and odd shapes: their JSON text.
            claude.add_json(tool)
    return claude.tally()
