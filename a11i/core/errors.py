"""a11i's two error roots: ``A11iError`` for what a call's caller must be answered (each with
its HTTP status), ``ConfigurationError`` for what a person must fix before a program starts
(each with its exit code, 2).

Pure: the proxy's one error middleware turns ``A11iError`` into dialect-shaped HTTP answers
(``a11i.core.dialects.error_body``), library users catch them as exceptions; every entry point
turns ``ConfigurationError`` into one line on standard error and exit code 2.
"""

from __future__ import annotations


class ConfigurationError(Exception):
    """Root of every error in a11i's own configuration: the environment, a11i.yaml, a rate
    card, PII rules, the operator's and the dashboard's settings. The message names the
    setting (or file and key) and what to set instead."""

    exit_code = 2


class SettingsError(ConfigurationError, ValueError):
    """An environment variable (or the flag that overrides it) is missing or malformed."""


class A11iError(Exception):
    """Root of every error a11i reports to the agent: ``status`` and a ``kind`` for its body."""

    status = 500
    kind = "a11i_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequest(A11iError):
    """The body is not JSON, or not of the shape the dialect requires (400)."""

    status = 400
    kind = "invalid_request_error"


class BodyTooLarge(A11iError):
    """The body is larger than ``A11I_MAX_BODY_BYTES`` (413)."""

    status = 413
    kind = "request_too_large"


class RequestTimeout(A11iError):
    """The agent sent its body slower than ``A11I_BODY_READ_TIMEOUT`` allows (408)."""

    status = 408
    kind = "request_timeout"


class BudgetExceeded(A11iError):
    """The projected cost does not fit in what is left of the wallet (402)."""

    status = 402
    kind = "budget_exceeded"


class EmergencyStop(A11iError):
    """The emergency stop of the namespace or the cluster is on (403)."""

    status = 403
    kind = "emergency_stop"


class UpstreamUnavailable(A11iError):
    """The provider could not be reached or broke the connection (502)."""

    status = 502
    kind = "upstream_unavailable"


class UpstreamTimeout(A11iError):
    """The provider did not answer within the configured timeout (504)."""

    status = 504
    kind = "upstream_timeout"


class InternalError(A11iError):
    """a11i itself failed (a bug): the call is answered 500 and logged with its traceback."""

    status = 500
    kind = "a11i_internal_error"


class WalletUnavailable(A11iError):
    """The wallet cannot be read or written (its store is down) and the wallet fails closed
    (503): the call is refused rather than let through unaccounted."""

    status = 503
    kind = "wallet_unavailable"


class UnmeteredEndpoint(A11iError):
    """A call a11i cannot meter, refused because the sidecar holds the provider key (403):
    forwarding it would spend the held key outside the budget."""

    status = 403
    kind = "unmetered_endpoint"


class MethodNotAllowed(A11iError):
    """A metered path asked with a method other than its own (405): never passed through."""

    status = 405
    kind = "method_not_allowed"

    def __init__(self, message: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class UpgradeRefused(A11iError):
    """A WebSocket upgrade (OpenAI Realtime, the Responses API's WebSocket mode), which a11i
    cannot meter yet (426: the status on which clients such as the Codex CLI fall back to
    HTTP at once)."""

    status = 426
    kind = "websocket_unsupported"
