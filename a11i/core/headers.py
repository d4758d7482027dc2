"""Which headers cross the proxy, in each direction, and how the provider key is held.

Pure: takes and returns header pairs. Upstream, only an allow-list passes: anything else an
agent sends (cookies, forwarding headers, tracing baggage with secrets) stays in the pod.
Hop-by-hop headers are never forwarded in either direction (RFC 9110 section 7.6.1), nor are
framing headers the proxy re-computes (Content-Length, Transfer-Encoding, Content-Encoding).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from a11i.core.model import Provider

#: RFC 9110 section 7.6.1 hop-by-hop headers, plus the legacy ones proxies still see.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: Re-computed by the proxy for the body it actually sends.
_FRAMING = frozenset({"content-length", "content-encoding", "host"})
#: Never passed on, either way.
_NOT_RELAYED = HOP_BY_HOP | _FRAMING

#: Request headers the providers' APIs and SDKs use; nothing else goes upstream.
UPSTREAM_ALLOW = frozenset(
    {
        "accept",
        "authorization",
        "content-type",
        "user-agent",
        "idempotency-key",
        "x-request-id",
        # OpenAI
        "openai-organization",
        "openai-project",
        "openai-beta",
        "api-key",
        # Anthropic
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
    }
)
_UPSTREAM_ALLOW_PREFIXES = ("x-stainless-",)

#: Headers that carry a provider credential: replaced under key custody, never logged.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


@dataclass(frozen=True, slots=True)
class KeyCustody:
    """Provider keys held by the sidecar (from a Secret mounted into it alone). When a key is
    held for a provider, whatever key the agent sent is replaced, so an agent cannot spend
    outside its budget with a key of its own through the sidecar."""

    openai_key: str | None = None
    anthropic_key: str | None = None

    @property
    def holds_any(self) -> bool:
        """Whether the sidecar holds a key: then only what it can meter (or is allowed
        explicitly) may leave the pod, since anything else would spend that key unmetered."""
        return bool(self.openai_key or self.anthropic_key)

    def key_for(self, provider: Provider) -> str | None:
        return self.anthropic_key if provider is Provider.ANTHROPIC else self.openai_key

    def __repr__(self) -> str:
        # Keys never leave the sidecar in any form, not even in a debug log of the settings.
        held = [
            name
            for name, key in (("openai", self.openai_key), ("anthropic", self.anthropic_key))
            if key
        ]
        return f"KeyCustody(held={held})"


def upstream_headers(
    headers: Iterable[tuple[str, str]],
    provider: Provider,
    custody: KeyCustody,
    *,
    azure: bool = False,
) -> list[tuple[str, str]]:
    """The headers to send to the provider for an agent's request headers; a held key goes in
    the provider's own header (Azure OpenAI's API keys in ``api-key``)."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in _NOT_RELAYED:
            continue
        if lower not in UPSTREAM_ALLOW and not lower.startswith(_UPSTREAM_ALLOW_PREFIXES):
            continue
        out.append((name, value))
    key = custody.key_for(provider)
    if key is not None:
        out = [(name, value) for name, value in out if name.lower() not in CREDENTIAL_HEADERS]
        if provider is Provider.ANTHROPIC:
            out.append(("x-api-key", key))
        elif azure:
            out.append(("api-key", key))
        else:
            out.append(("Authorization", f"Bearer {key}"))
    return out


def downstream_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The provider's answer headers to relay to the agent."""
    return [(name, value) for name, value in headers if name.lower() not in _NOT_RELAYED]


def provider_for_unmetered(headers: Mapping[str, str]) -> Provider:
    """Which provider an unmetered request is for: Anthropic's SDK always sends
    ``anthropic-version`` and ``x-api-key``; everything else is OpenAI-compatible."""
    lowered = {name.lower() for name in headers}
    if "anthropic-version" in lowered or "x-api-key" in lowered:
        return Provider.ANTHROPIC
    return Provider.OPENAI
