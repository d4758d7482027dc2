"""Images in a request: their size from a data URL's header, and OpenAI's documented image costs
(tiles or patches per model family). Nothing is fetched: an http URL gets the low-detail cost.

Pure: only the first bytes of a base64 payload are decoded, in memory.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from typing import Final

from a11i.core.tokens.encoding import bare_model

# Only the first bytes of a data URL are decoded to read an image's size from its header.
_IMAGE_HEADER_CHARS: Final = 65_536


@dataclass(frozen=True, slots=True)
class ImageRules:
    """OpenAI's image accounting for a model family (vision guide, "Calculating costs").

    Tile models: ``base`` at low detail; at high detail the image is fit into 2048x2048, its
    short side scaled to 768, and every 512px tile costs ``per_tile`` more. Patch models: the
    32px patches (at most 1,536) times ``multiplier``.
    """

    key: str
    base: int = 85
    per_tile: int = 170
    multiplier: float | None = None


_IMAGES_DEFAULT: Final = ImageRules("4o")
_IMAGE_FAMILIES: Final = (
    ("gpt-4o-mini", ImageRules("4o-mini", base=2_833, per_tile=5_667)),
    ("gpt-4.1-mini", ImageRules("4.1-mini", multiplier=1.62)),
    ("gpt-4.1-nano", ImageRules("4.1-nano", multiplier=2.46)),
    ("gpt-5-mini", ImageRules("5-mini", multiplier=1.62)),
    ("gpt-5-nano", ImageRules("5-nano", multiplier=2.46)),
    ("o4-mini", ImageRules("o4-mini", multiplier=1.72)),
    ("gpt-5", ImageRules("5", base=70, per_tile=140)),
    ("o1", ImageRules("o1", base=75, per_tile=150)),
    ("o3", ImageRules("o3", base=75, per_tile=150)),
)


def image_rules(model: str) -> ImageRules:
    bare = bare_model(model)
    for prefix, rules in _IMAGE_FAMILIES:
        if bare.startswith(prefix):
            return rules
    return _IMAGES_DEFAULT


def openai_image_tokens(model: str, width: int | None, height: int | None, detail: str) -> int:
    """OpenAI's documented image cost for ``model``; the low-detail cost when the size is
    unknown (an http URL: the counter never fetches it)."""
    return image_tokens(image_rules(model), width, height, detail)


def image_tokens(rules: ImageRules, width: int | None, height: int | None, detail: str) -> int:
    known = width is not None and height is not None and width > 0 and height > 0
    if rules.multiplier is not None:
        if not known or width is None or height is None:
            width = height = 512
        return math.ceil(_patches(width, height) * rules.multiplier)
    if detail == "low" or not known or width is None or height is None:
        return rules.base
    # "auto" is counted as "high": the API picks by size, and the projection should err high.
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return rules.base + rules.per_tile * tiles


def _patches(width: int, height: int, budget: int = 1_536) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches <= budget:
        return patches
    shrink = math.sqrt(32 * 32 * budget / (width * height))
    across, down = width * shrink / 32, height * shrink / 32
    shrink *= min(math.floor(across) / across, math.floor(down) / down)
    return math.ceil(int(width * shrink) / 32) * math.ceil(int(height * shrink) / 32)


def decode_prefix(data: str, chars: int = _IMAGE_HEADER_CHARS) -> bytes:
    """The first bytes of a base64 payload (invalid base64 gives no bytes)."""
    head = "".join(data[: chars + chars // 16].split())[:chars]
    head = head[: len(head) - len(head) % 4]
    try:
        return base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return b""


def data_url_payload(url: str) -> str | None:
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    return payload if sep and header.endswith(";base64") else None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header, or None."""
    try:
        return _image_size(data)
    except (struct.error, IndexError, ValueError):
        return None


def _image_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:4] == b"GIF8":
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X":
            return (
                int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1,
            )
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the segments to the first start-of-frame marker (SOF0-SOF15 but DHT, JPG and DAC).
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        i += 2 + int(length)
    return None


def base64_size(payload: str) -> int:
    """Decoded byte size of a base64 payload, without decoding it."""
    return len(payload) * 3 // 4
