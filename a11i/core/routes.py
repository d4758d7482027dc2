"""Which requests the sidecar meters, which it lets through free, and the one form of a path.

Pure: takes a method and the request target as the agent wrote them, returns a typed route.
Routing decides what the budget and the emergency stop can see, so it is deliberately strict:

- A path has **one canonical form** before anything looks at it (RFC 3986 section 6.2.2:
  percent-decoding, dot segments removed per section 5.2.4; plus what HTTP servers commonly
  also fold: repeated slashes, a trailing slash, backslashes, and the case of the fixed
  segments). The canonical form is what is matched *and* what is forwarded, so the provider
  never sees a spelling a11i did not recognise.
- A route is **metered** (priced, reserved, settled), **free** (an allow-list of calls the
  providers do not bill: model listing, token counting, reading stored results), or
  **unmetered** (everything else: refused under key custody unless allowed, see the proxy).
- A metered path asked with another method is a 405, never a pass-through.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import unquote, urlsplit

from a11i.core.dialects import METERED_PATHS
from a11i.core.errors import BadRequest
from a11i.core.model import Dialect, Provider


class Access(StrEnum):
    """What the sidecar may do with a request."""

    METERED = "metered"
    FREE = "free"
    UNMETERED = "unmetered"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes and how it is guarded."""

    access: Access
    #: The canonical path: what was matched and what is forwarded.
    path: str
    #: The dialect of a metered route.
    dialect: Dialect | None = None
    #: The provider a route belongs to, when the path says so (None: decided by the headers).
    provider: Provider | None = None
    #: Azure OpenAI's shape: the deployment named in the path (``/openai/deployments/{d}/…``).
    deployment: str | None = None
    #: Azure OpenAI: the provider takes its key in ``api-key``, not ``Authorization``.
    azure: bool = False
    #: The methods the path allows, for a 405's ``Allow`` (set only when the method is wrong).
    allowed: tuple[str, ...] = ()

    @property
    def method_not_allowed(self) -> bool:
        return bool(self.allowed)


#: Metered routes: path under ``/v1`` → dialect (from the dialects' own table).
_V1_METERED: Final[Mapping[str, Dialect]] = {
    path.removeprefix("/v1"): dialect for path, dialect in METERED_PATHS.items()
}

#: Azure OpenAI's deployment routes: ``/openai/deployments/{deployment}/<tail>``.
_AZURE_DEPLOYMENT_TAILS: Final[Mapping[str, Dialect]] = {
    tail: dialect for tail, dialect in _V1_METERED.items() if dialect.provider is Provider.OPENAI
}

#: Read-only calls the providers do not bill (their API references list no price for them):
#: (method, canonical pattern, provider). ``{}`` is one path segment.
_FREE: Final[tuple[tuple[str, str, Provider | None], ...]] = (
    # A client's connectivity check (Claude Code sends ``HEAD /`` before its first call).
    ("GET", "/", None),
    ("HEAD", "/", None),
    # Model listing: both providers.
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/{}", None),
    ("GET", "/openai/models", Provider.OPENAI),
    ("GET", "/openai/v1/models", Provider.OPENAI),
    ("GET", "/openai/v1/models/{}", Provider.OPENAI),
    # Token counting: free by both providers' price lists.
    ("POST", "/v1/messages/count_tokens", Provider.ANTHROPIC),
    ("POST", "/v1/responses/input_tokens", Provider.OPENAI),
    # Reading results that were billed when they were made.
    ("GET", "/v1/responses/{}", Provider.OPENAI),
    ("GET", "/v1/responses/{}/input_items", Provider.OPENAI),
    ("GET", "/v1/chat/completions", Provider.OPENAI),
    ("GET", "/v1/chat/completions/{}", Provider.OPENAI),
    ("GET", "/v1/chat/completions/{}/messages", Provider.OPENAI),
)

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def canonical_path(target: str) -> str:
    """The one form of a request target's path (query dropped), or BadRequest for a path no
    server could mean (control characters, a NUL, an absolute URI without a path)."""
    if target.startswith(("http://", "https://")):
        # Absolute form (RFC 9112 section 3.2.2): an agent using the sidecar as a forward proxy.
        target = urlsplit(target).path or "/"
    raw = target.split("?", 1)[0].split("#", 1)[0]
    # Decode repeatedly: %252F is %2F after one pass and a slash after two; some servers and
    # frameworks decode twice, so a11i must see what the last decoder would.
    decoded = raw
    for _ in range(4):
        once = unquote(decoded, errors="strict")
        if once == decoded:
            break
        decoded = once
    else:
        raise BadRequest("The request path is percent-encoded too many times.")
    if _CONTROL.search(decoded):
        raise BadRequest("The request path holds control characters.")
    decoded = decoded.replace("\\", "/")
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def route(
    method: str,
    target: str,
    *,
    allow_unmetered: Iterable[str] = (),
) -> Route:
    """The route of a request: ``target`` is the request target as sent (path and query),
    ``allow_unmetered`` the operator's ``METHOD /path-pattern`` exceptions (see
    :func:`allowed_unmetered`)."""
    return _route(method, target)


@functools.lru_cache(maxsize=1024)
def _route(method: str, target: str) -> Route:
    """``route``, remembered: an agent sends the same few targets again and again, and a
    ``Route`` is immutable (a target that is refused raises again each time)."""
    path = canonical_path(target)
    method = method.upper()
    lower = path.lower()
    free = _free(method, path, lower)
    if free is not None:
        return free
    metered = _metered(path, lower)
    if metered is not None:
        if method == "POST":
            return metered
        return Route(
            Access.UNMETERED,
            metered.path,
            provider=metered.provider,
            azure=metered.azure,
            allowed=("POST",),
        )
    provider = Provider.OPENAI if lower.startswith("/openai/") else None
    return Route(Access.UNMETERED, path, provider=provider, azure=provider is not None)


def allowed_unmetered(method: str, path: str, patterns: Iterable[str]) -> bool:
    """Whether the operator allowed this unmetered request: each pattern is ``METHOD /glob``
    (``*`` for any method; the glob matches the canonical path, ``*`` within and across
    segments), e.g. ``GET /v1/files*`` or ``* /v1/vector_stores/*``."""
    for pattern in patterns:
        want_method, _, glob = pattern.strip().partition(" ")
        glob = glob.strip()
        if want_method not in ("*", method.upper()) or not glob:
            continue
        if fnmatch.fnmatchcase(path.lower(), canonical_path(glob).lower()):
            return True
    return False


def _free(method: str, path: str, lower: str) -> Route | None:
    for want, pattern, provider in _FREE:
        if want == method and _matches(pattern, lower):
            return Route(Access.FREE, _spelled(pattern, path), provider=provider)
    return None


def _metered(path: str, lower: str) -> Route | None:
    if lower.startswith("/v1/"):
        dialect = _V1_METERED.get(lower[3:])
        if dialect is not None:
            return Route(Access.METERED, lower, dialect, dialect.provider)
    if lower.startswith("/openai/v1/"):
        # Azure OpenAI's v1 API: OpenAI's own paths under /openai; the model is the deployment.
        dialect = _AZURE_DEPLOYMENT_TAILS.get(lower[len("/openai/v1") :])
        if dialect is not None:
            return Route(Access.METERED, lower, dialect, Provider.OPENAI, azure=True)
    if lower.startswith("/openai/deployments/"):
        parts = path.split("/")  # ['', 'openai', 'deployments', '{d}', tail...]
        if len(parts) >= 5:
            tail = "/" + "/".join(parts[4:]).lower()
            dialect = _AZURE_DEPLOYMENT_TAILS.get(tail)
            if dialect is not None:
                deployment = parts[3]
                return Route(
                    Access.METERED,
                    f"/openai/deployments/{deployment}{tail}",
                    dialect,
                    Provider.OPENAI,
                    deployment=deployment,
                    azure=True,
                )
    if lower == "/openai/responses":
        return Route(Access.METERED, lower, Dialect.OPENAI_RESPONSES, Provider.OPENAI, azure=True)
    return None


def _matches(pattern: str, lower: str) -> bool:
    want = pattern.split("/")
    have = lower.split("/")
    if len(want) != len(have):
        return False
    return all(w == "{}" or w == h for w, h in zip(want, have, strict=True))


def _spelled(pattern: str, path: str) -> str:
    """The canonical spelling of a matched path: fixed segments as the pattern has them, the
    ``{}`` segments (model ids, response ids) as the agent wrote them."""
    want = pattern.split("/")
    have = path.split("/")
    return "/".join(h if w == "{}" else w for w, h in zip(want, have, strict=True))
