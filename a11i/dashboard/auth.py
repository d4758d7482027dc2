"""Who may see the dashboard and who may act: tokens, signed session cookies, CSRF tokens.

The dashboard can stop every agent, so it is never open by default: an admin token, a viewer
token or both (from the environment or mounted files, e.g. a Secret) must be configured, or
``--insecure-no-auth`` given explicitly. A token posted to the login form becomes a session
cookie (HttpOnly, SameSite=Strict) signed with a key derived from that role's token: a viewer
cannot forge an admin session, and rotating a token ends its sessions. Actions carry a CSRF
token bound to the session (synchronizer token, stateless: an HMAC of the session's nonce)
and pass an Origin check in the server.

What it may not do: log or return a token (only a short fingerprint of it), or do I/O beyond
reading the token files named in the environment (``settings_from_env``, called from ``main``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from a11i.core import variables as var
from a11i.core.errors import ConfigurationError

COOKIE: Final = "a11i_session"
CSRF_HEADER: Final = "X-A11I-CSRF"
#: Shortest token accepted: a guessable token would hand out the emergency stop.
MIN_TOKEN_LENGTH: Final = 16
#: Shortest session signing key accepted (A11I_DASHBOARD_SESSION_KEY).
MIN_SESSION_KEY_LENGTH: Final = 32
#: Largest session cookie issued: browsers drop cookies over 4 KiB (an identity with very
#: many groups); such a user must send the token in the Authorization header instead.
MAX_COOKIE_LENGTH: Final = 3800
#: The first field of a Kubernetes user's session cookie (a role's cookie has the role there).
_KUBERNETES: Final = "k8s"


class Role(StrEnum):
    VIEWER = "viewer"
    ADMIN = "admin"


class AuthError(ConfigurationError):
    """The access settings cannot be used (no token, a short token, an unreadable file)."""


class SessionTooLarge(Exception):
    """A Kubernetes identity does not fit into a session cookie."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A Kubernetes user as a TokenReview authenticated it: what a SubjectAccessReview needs."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    #: ``user.extra`` of the review (e.g. the pod a ServiceAccount token was bound to).
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
            "extra": {key: list(values) for key, values in self.extra},
        }

    @classmethod
    def from_json(cls, raw: object) -> Identity | None:
        """The identity in a review's ``status.user`` (or a cookie), None when malformed."""
        if not isinstance(raw, Mapping):
            return None
        username, uid = raw.get("username"), raw.get("uid", "")
        groups, extra = raw.get("groups") or [], raw.get("extra") or {}
        if not isinstance(username, str) or not username or not isinstance(uid, str):
            return None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            return None
        if not isinstance(extra, Mapping):
            return None
        pairs: list[tuple[str, tuple[str, ...]]] = []
        for key, values in sorted(extra.items()):
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                return None
            pairs.append((str(key), tuple(values)))
        return cls(username, uid, tuple(groups), tuple(pairs))

    @property
    def key(self) -> str:
        """A stable digest of the whole identity (what RBAC decides by): a cache key."""
        encoded = json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a role, and the fingerprint of the static token that granted it or the
    Kubernetes identity RBAC granted it to."""

    role: Role
    fingerprint: str
    identity: Identity | None = field(default=None, compare=False)

    @property
    def who(self) -> str:
        """How actions are attributed in events: ``admin:1a2b3c4d`` for a static token,
        ``k8s:<username>`` for a Kubernetes user."""
        if self.identity is not None:
            return f"{_KUBERNETES}:{self.identity.username}"
        return f"{self.role.value}:{self.fingerprint}"

    @property
    def can_act(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class KubernetesAuthSettings:
    """How Kubernetes users are reviewed."""

    #: Seconds a TokenReview or an RBAC answer is reused (a revoked binding or token takes
    #: effect within this time).
    review_ttl_s: float = 60.0
    #: Seconds a rejected token is remembered as rejected (spares the API server a retry loop).
    rejected_ttl_s: float = 10.0
    #: Answers cached at most, per kind (tokens, identities); the oldest are forgotten first.
    max_entries: int = 1024


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Access to the dashboard."""

    #: The token that grants the admin role (stop, resume, top-up), or None.
    admin_token: str | None = None
    #: The token that grants the read-only viewer role, or None.
    viewer_token: str | None = None
    #: No tokens at all: every visitor is admin. Only for a laptop; logged loudly.
    insecure_no_auth: bool = False
    #: Seconds a session cookie stays valid.
    session_ttl_s: int = 12 * 3600
    #: Mark the cookie ``Secure`` (set behind TLS; an https request gets it anyway).
    secure_cookie: bool = False
    #: Bearer tokens that are not one of the static tokens are reviewed by the Kubernetes API
    #: (``--kubernetes-auth``, ``A11I_DASHBOARD_KUBERNETES_AUTH``).
    kubernetes: bool = False
    #: The key Kubernetes users' session cookies are signed with
    #: (``A11I_DASHBOARD_SESSION_KEY[_FILE]``); None: a random key per process, so those
    #: sessions end when the dashboard restarts and are not shared between replicas.
    session_key: str | None = None
    #: Seconds a Kubernetes user's session cookie stays valid; its role is re-checked with
    #: RBAC far more often (``KubernetesAuthSettings.review_ttl_s``), this bounds how long a
    #: revoked token keeps a session it opened.
    kubernetes_session_ttl_s: int = 3600

    def __post_init__(self) -> None:
        if self.session_key is not None and len(self.session_key) < MIN_SESSION_KEY_LENGTH:
            raise AuthError(
                f"the session key must have at least {MIN_SESSION_KEY_LENGTH} characters "
                "(e.g. openssl rand -hex 32)"
            )
        if self.insecure_no_auth:
            return
        if self.admin_token is None and self.viewer_token is None and not self.kubernetes:
            raise AuthError(
                "the dashboard needs A11I_DASHBOARD_ADMIN_TOKEN (or _FILE) and/or "
                "A11I_DASHBOARD_VIEWER_TOKEN (or _FILE), or Kubernetes authentication "
                "(--kubernetes-auth); --insecure-no-auth opens it to anyone who can reach it "
                "(a laptop only)"
            )
        for name, token in (("admin", self.admin_token), ("viewer", self.viewer_token)):
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise AuthError(f"the {name} token must have at least {MIN_TOKEN_LENGTH} chars")
        if self.admin_token is not None and self.admin_token == self.viewer_token:
            raise AuthError("the admin and viewer tokens must differ")


def settings_from_env(
    env: Mapping[str, str], *, insecure_no_auth: bool = False, kubernetes: bool = False
) -> AuthSettings:
    """Tokens from ``A11I_DASHBOARD_{ADMIN,VIEWER}_TOKEN`` or the files ``..._TOKEN_FILE``
    name (surrounding whitespace stripped, as a mounted Secret often ends in a newline);
    Kubernetes authentication from ``kubernetes`` (the flag) or
    ``A11I_DASHBOARD_KUBERNETES_AUTH``, its session key from ``A11I_DASHBOARD_SESSION_KEY``."""
    return AuthSettings(
        admin_token=_token(env, "A11I_DASHBOARD_ADMIN_TOKEN"),
        viewer_token=_token(env, "A11I_DASHBOARD_VIEWER_TOKEN"),
        insecure_no_auth=insecure_no_auth,
        secure_cookie=var.flag(env, "A11I_DASHBOARD_SECURE_COOKIE", default=False),
        kubernetes=kubernetes or var.flag(env, "A11I_DASHBOARD_KUBERNETES_AUTH", default=False),
        session_key=_token(env, "A11I_DASHBOARD_SESSION_KEY"),
    )


def _token(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value and path:
        raise AuthError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
    value = (value or "").strip()
    return value or None


#: Logged-out sessions remembered at most (each until its cookie expires).
MAX_REVOKED: Final = 100_000


class FailureLimiter:
    """Failed token attempts per client, as a token bucket: ``burst`` failures at once, then
    one more every ``refill_s``. A client with no failures left is refused before its token is
    looked at, so guessing runs at a few per minute; other clients, and sessions already
    opened (cookies are not tokens), are never affected. Clients remembered at most:
    ``max_clients`` (the oldest forgotten first)."""

    def __init__(
        self,
        burst: int = 10,
        refill_s: float = 6.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._refill_s = refill_s
        self._max = max_clients
        self._clock = clock
        #: client -> (failures left, when they were counted)
        self._clients: dict[str, tuple[float, float]] = {}

    def _left(self, client: str, now: float) -> float:
        left, at = self._clients.get(client, (float(self._burst), now))
        return min(float(self._burst), left + (now - at) / self._refill_s)

    def allowed(self, client: str) -> bool:
        return self._left(client, self._clock()) >= 1

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client`` may try again."""
        left = self._left(client, self._clock())
        return max(1, math.ceil((1 - left) * self._refill_s))

    def failed(self, client: str) -> None:
        now = self._clock()
        left = self._left(client, now) - 1
        self._clients.pop(client, None)
        self._clients[client] = (left, now)
        if len(self._clients) > self._max:
            del self._clients[next(iter(self._clients))]


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token, safe to show and to record."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class Authenticator:
    """Checks static tokens, issues and verifies session cookies and CSRF tokens."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._tokens: dict[Role, str] = {}
        if settings.admin_token is not None:
            self._tokens[Role.ADMIN] = settings.admin_token
        if settings.viewer_token is not None:
            self._tokens[Role.VIEWER] = settings.viewer_token
        # One signing key per role, derived from its token; without auth a key for this
        # process only (its CSRF tokens still keep other sites' pages from acting).
        self._keys: dict[Role, bytes] = {
            role: hmac.digest(token.encode(), b"a11i-dashboard-session-v1", "sha256")
            for role, token in self._tokens.items()
        }
        self._open_key = secrets.token_bytes(32)
        #: Nonces of sessions ended by a logout, with the time their cookie expires.
        self._revoked: dict[str, int] = {}
        # Kubernetes sessions: the configured key, else one for this process only.
        self._kubernetes_key: bytes | None = None
        if settings.kubernetes:
            key = settings.session_key
            raw = key.encode() if key is not None else secrets.token_bytes(32)
            self._kubernetes_key = hmac.digest(raw, b"a11i-dashboard-k8s-session-v1", "sha256")

    @property
    def open(self) -> bool:
        return self.settings.insecure_no_auth

    def check_token(self, token: str) -> Principal | None:
        """The principal a token grants, or None (constant-time comparisons)."""
        found: Principal | None = None
        candidate = token.strip().encode()
        for role, expected in self._tokens.items():
            if hmac.compare_digest(candidate, expected.encode()):
                found = Principal(role, fingerprint(expected))
        return found

    def session_ttl(self, principal: Principal) -> int:
        """Seconds the session cookie of ``principal`` is valid."""
        if principal.identity is not None:
            return self.settings.kubernetes_session_ttl_s
        return self.settings.session_ttl_s

    def issue(self, principal: Principal, now: float) -> str:
        """A session cookie value for ``principal``, valid for ``session_ttl``. A Kubernetes
        user's cookie holds the identity, not the role: RBAC is asked again
        (``SessionTooLarge`` when the identity does not fit into a cookie)."""
        expires = int(now) + self.session_ttl(principal)
        nonce = secrets.token_urlsafe(16)
        if principal.identity is not None:
            identity = json.dumps(principal.identity.as_json(), separators=(",", ":"))
            payload = f"{_KUBERNETES}.{_b64(identity.encode())}.{expires}.{nonce}"
            cookie = f"{payload}.{self._sign(_KUBERNETES, payload)}"
            if len(cookie) > MAX_COOKIE_LENGTH:
                raise SessionTooLarge(
                    f"the Kubernetes identity of {principal.identity.username} (its groups) is "
                    "too large for a session cookie: send the token in an Authorization header"
                )
            return cookie
        payload = f"{principal.role.value}.{principal.fingerprint}.{expires}.{nonce}"
        return f"{payload}.{self._sign(principal.role, payload)}"

    def session(self, cookie: str | None, now: float) -> Principal | Identity | None:
        """The principal of a valid, unexpired session cookie; for a Kubernetes user's
        session the identity, whose role the caller must ask RBAC for; else None."""
        if self.open:
            return Principal(Role.ADMIN, "no-auth")
        parsed = self._parse(cookie)
        if parsed is None:
            return None
        kind, data, expires, _nonce = parsed
        if expires < now:
            return None
        if kind == _KUBERNETES:
            try:
                raw: object = json.loads(_unb64(data))
            except (ValueError, binascii.Error):
                return None
            return Identity.from_json(raw)
        return Principal(Role(kind), data)

    def csrf_token(self, cookie: str | None) -> str | None:
        """The CSRF token that goes with a session (None without a valid session)."""
        if self.open:
            return _b64(hmac.digest(self._open_key, b"csrf", "sha256"))
        parsed = self._parse(cookie)
        if parsed is None:
            return None
        kind, _data, _expires, nonce = parsed
        return _b64(hmac.digest(self._key(kind), f"csrf.{nonce}".encode(), "sha256"))

    def revoke(self, cookie: str | None, now: float) -> bool:
        """End a session server-side (logout): a copy of its cookie stops working here too.
        Kept until the cookie would have expired anyway; False when it was no session."""
        parsed = None if self.open else self._parse(cookie)
        if parsed is None:
            return False
        _kind, _data, expires, nonce = parsed
        self._revoked[nonce] = expires
        if len(self._revoked) > MAX_REVOKED:
            self._revoked = {n: e for n, e in self._revoked.items() if e >= now}
            while len(self._revoked) > MAX_REVOKED:
                # Still too many live ones: the earliest to expire go first.
                del self._revoked[min(self._revoked, key=self._revoked.__getitem__)]
        return True

    def check_csrf(self, cookie: str | None, supplied: str | None) -> bool:
        expected = self.csrf_token(cookie)
        if expected is None or not supplied:
            return False
        return hmac.compare_digest(expected.encode(), supplied.encode())

    def _key(self, kind: str) -> bytes:
        if kind == _KUBERNETES and self._kubernetes_key is not None:
            return self._kubernetes_key
        return self._keys[Role(kind)]

    def _sign(self, kind: str, payload: str) -> str:
        return _b64(hmac.digest(self._key(kind), payload.encode(), "sha256"))

    def _parse(self, cookie: str | None) -> tuple[str, str, int, str] | None:
        """(kind, data, expires, nonce) of a cookie signed by one of our keys: kind is a role
        (data: the token's fingerprint) or ``k8s`` (data: the identity, base64 JSON)."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 5:
            return None
        kind, data, expires_text, nonce, signature = parts
        if nonce in self._revoked:
            return None
        try:
            expires = int(expires_text)
        except ValueError:
            return None
        known = kind in self._keys if kind != _KUBERNETES else self._kubernetes_key is not None
        if not known:
            return None
        expected = self._sign(kind, ".".join(parts[:4]))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return None
        return kind, data, expires, nonce


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
