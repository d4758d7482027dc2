"""Keep the provider keys a sidecar holds out of everything it relays to the agent.

Key custody exists so that an agent cannot spend outside its budget; a provider (or a gateway
in front of it) that echoes the credential it received, in a 401 body, a header or a stream
chunk, would hand the agent the very key it must never see. Every held key is replaced by
``[REDACTED:secret]`` in the bytes and headers relayed back.

A stream is redacted as it goes (:class:`StreamRedactor`): a key may be split across two
chunks, so the end of a chunk that could begin a key is held back until the next chunk says
whether it does. SSE chunks end in a newline, which no key contains, so in practice nothing is
held and the agent's first token is not delayed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["REDACTED", "Redactor", "StreamRedactor"]

#: What a held key is replaced by (the scrubber's word for an exact secret).
REDACTED: Final = b"[REDACTED:secret]"
#: Shorter strings are no provider key; replacing them would shred the answer.
_MIN_KEY: Final = 8


class Redactor:
    """Replaces a fixed set of secrets in bytes and header values."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s.encode() for s in secrets if s is not None and len(s) >= _MIN_KEY}
        # Longest first: a key that contains another is replaced whole.
        self._secrets: tuple[bytes, ...] = tuple(sorted(found, key=len, reverse=True))
        self._text: tuple[str, ...] = tuple(s.decode() for s in self._secrets)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    @property
    def longest(self) -> int:
        return len(self._secrets[0]) if self._secrets else 0

    def apply(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        if not self._text:
            return list(headers)  # no key held (the usual case): nothing to look for
        redacted = REDACTED.decode()
        out: list[tuple[str, str]] = []
        for name, value in headers:
            for secret in self._text:
                value = value.replace(secret, redacted)
            out.append((name, value))
        return out

    def held_back(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` could begin a secret (0 when none)."""
        for size in range(min(self.longest - 1, len(data)), 0, -1):
            tail = data[-size:]
            if any(secret.startswith(tail) for secret in self._secrets):
                return size
        return 0

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts one stream chunk by chunk; ``flush`` at its end returns what was held back."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._redactor:
            return chunk
        data = self._redactor.apply(self._pending + chunk)
        keep = self._redactor.held_back(data)
        self._pending = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending
