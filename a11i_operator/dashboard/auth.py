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
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

COOKIE: Final = "a11i_session"
CSRF_HEADER: Final = "X-A11I-CSRF"
#: Shortest token accepted: a guessable token would hand out the emergency stop.
MIN_TOKEN_LENGTH: Final = 16


class Role(StrEnum):
    VIEWER = "viewer"
    ADMIN = "admin"


class AuthError(Exception):
    """The access settings cannot be used (no token, a short token, an unreadable file)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a role and the fingerprint of the token that granted it."""

    role: Role
    fingerprint: str

    @property
    def who(self) -> str:
        """How actions are attributed in events: ``admin:1a2b3c4d``."""
        return f"{self.role.value}:{self.fingerprint}"

    @property
    def can_act(self) -> bool:
        return self.role is Role.ADMIN


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

    def __post_init__(self) -> None:
        if self.insecure_no_auth:
            return
        if self.admin_token is None and self.viewer_token is None:
            raise AuthError(
                "the dashboard needs A11I_DASHBOARD_ADMIN_TOKEN (or _FILE) and/or "
                "A11I_DASHBOARD_VIEWER_TOKEN (or _FILE); --insecure-no-auth opens it to "
                "anyone who can reach it (a laptop only)"
            )
        for name, token in (("admin", self.admin_token), ("viewer", self.viewer_token)):
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise AuthError(f"the {name} token must have at least {MIN_TOKEN_LENGTH} chars")
        if self.admin_token is not None and self.admin_token == self.viewer_token:
            raise AuthError("the admin and viewer tokens must differ")


def settings_from_env(env: Mapping[str, str], *, insecure_no_auth: bool = False) -> AuthSettings:
    """Tokens from ``A11I_DASHBOARD_{ADMIN,VIEWER}_TOKEN`` or the files ``..._TOKEN_FILE``
    name (surrounding whitespace stripped, as a mounted Secret often ends in a newline)."""
    return AuthSettings(
        admin_token=_token(env, "A11I_DASHBOARD_ADMIN_TOKEN"),
        viewer_token=_token(env, "A11I_DASHBOARD_VIEWER_TOKEN"),
        insecure_no_auth=insecure_no_auth,
        secure_cookie=env.get("A11I_DASHBOARD_SECURE_COOKIE", "").lower() in ("1", "true"),
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


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token, safe to show and to record."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class Authenticator:
    """Checks tokens, issues and verifies session cookies and CSRF tokens."""

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

    def issue(self, principal: Principal, now: float) -> str:
        """A session cookie value for ``principal``, valid for ``session_ttl_s``."""
        expires = int(now) + self.settings.session_ttl_s
        nonce = secrets.token_urlsafe(16)
        payload = f"{principal.role.value}.{principal.fingerprint}.{expires}.{nonce}"
        return f"{payload}.{self._sign(principal.role, payload)}"

    def session(self, cookie: str | None, now: float) -> Principal | None:
        """The principal of a valid, unexpired session cookie, else None."""
        if self.open:
            return Principal(Role.ADMIN, "no-auth")
        parsed = self._parse(cookie)
        if parsed is None:
            return None
        role, fp, expires, _nonce = parsed
        if expires < now:
            return None
        return Principal(role, fp)

    def csrf_token(self, cookie: str | None) -> str | None:
        """The CSRF token that goes with a session (None without a valid session)."""
        if self.open:
            return _b64(hmac.digest(self._open_key, b"csrf", "sha256"))
        parsed = self._parse(cookie)
        if parsed is None:
            return None
        role, _fp, _expires, nonce = parsed
        return _b64(hmac.digest(self._keys[role], f"csrf.{nonce}".encode(), "sha256"))

    def check_csrf(self, cookie: str | None, supplied: str | None) -> bool:
        expected = self.csrf_token(cookie)
        if expected is None or not supplied:
            return False
        return hmac.compare_digest(expected.encode(), supplied.encode())

    def _sign(self, role: Role, payload: str) -> str:
        return _b64(hmac.digest(self._keys[role], payload.encode(), "sha256"))

    def _parse(self, cookie: str | None) -> tuple[Role, str, int, str] | None:
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 5:
            return None
        role_text, fp, expires_text, nonce, signature = parts
        try:
            role = Role(role_text)
            expires = int(expires_text)
        except ValueError:
            return None
        if role not in self._keys:
            return None
        expected = self._sign(role, ".".join(parts[:4]))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return None
        return role, fp, expires, nonce


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
