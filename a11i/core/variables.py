"""Typed readers of an environment: how every a11i component parses its variables.

The sidecar, the operator, the webhook and the dashboard read ``A11I_*`` (and ``OTEL_*``) with
these, so a variable is spelled, defaulted and refused the same way everywhere: an empty value
is the default, a switch is ``on/true/yes/1`` or ``off/false/no/0`` in any case, a number that
is not one is a ``SettingsError`` naming the variable and what it must be.

Pure: reads only the mapping it is handed (``os.environ`` in an entry point), never a file or
the process's environment itself, never at import time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Final, TypeVar
from urllib.parse import urlsplit

from a11i.core.errors import SettingsError

E = TypeVar("E", bound=Enum)

#: How a switch is written, in a11i.yaml and in the environment (compared case-insensitively).
TRUE_WORDS: Final = ("on", "true", "yes", "1")
FALSE_WORDS: Final = ("off", "false", "no", "0")


def text(env: Mapping[str, str], name: str, default: str = "") -> str:
    """The variable without surrounding blanks; ``default`` when unset or blank."""
    return env.get(name, "").strip() or default


def parse_flag(value: object, name: str) -> bool:
    """A switch as a11i.yaml or the environment writes it: a YAML boolean, or one of
    ``TRUE_WORDS`` / ``FALSE_WORDS`` in any case."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{name} must be on or off (true/false, yes/no, 1/0), not {value!r}")


def flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """A switch; ``default`` when unset or blank."""
    raw = text(env, name)
    return default if not raw else parse_flag(raw, name)


def whole(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int | None = None
) -> int:
    """A whole number between ``minimum`` and ``maximum`` (inclusive)."""
    raw = text(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        floor = "positive" if minimum == 1 else f"at least {minimum}"
        raise SettingsError(f"{name} must be {floor}, not {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, not {value}")
    return value


def port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port (1-65535)."""
    raw = text(env, name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"{name} must be a TCP port (1-65535), not {raw!r}")
    return int(raw)


def seconds(
    env: Mapping[str, str], name: str, default: float, *, maximum: float | None = None
) -> float:
    """A positive, finite number of seconds (at most ``maximum``)."""
    raw = text(env, name)
    if not raw:
        return default
    return _positive(raw, name, "a positive number of seconds", maximum)


def milliseconds(env: Mapping[str, str], name: str, default_ms: float) -> float:
    """A positive number of milliseconds (the ``OTEL_*`` unit), returned in seconds."""
    raw = text(env, name)
    if not raw:
        return default_ms / 1000
    return _positive(raw, name, "a positive number of milliseconds", None) / 1000


def money(raw: str, name: str) -> Decimal:
    """A non-negative, finite amount of USD, exactly as written (no float on the way)."""
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise SettingsError(
            f"{name} must be a decimal amount of USD such as 25.00, not {raw!r}"
        ) from None
    if not value.is_finite() or value < 0:
        raise SettingsError(f"{name} must be a non-negative amount of USD, not {raw!r}")
    return value


def percent(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    """A percentage of a limit (0-100), exactly as written."""
    raw = text(env, name)
    if not raw:
        return default
    value = money(raw, name)
    if value > 100:
        raise SettingsError(f"{name} is a percentage of the limit (0-100), not {raw}")
    return value


def choice(env: Mapping[str, str], name: str, kind: type[E], default: E) -> E:
    """A member of the string enum ``kind``, by its value in any case."""
    raw = text(env, name)
    if not raw:
        return default
    for member in kind:
        if str(member.value).lower() == raw.lower():
            return member
    allowed = " | ".join(str(member.value) for member in kind)
    raise SettingsError(f"{name} must be one of {allowed}, not {raw!r}")


def one_of(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    """One of ``allowed``, in any case; returned as ``allowed`` spells it."""
    raw = text(env, name)
    if not raw:
        return default
    for word in allowed:
        if word.lower() == raw.lower():
            return word
    raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")


def url(
    env: Mapping[str, str], name: str, default: str, *, schemes: tuple[str, ...] = ("http", "https")
) -> str:
    """A URL with one of ``schemes`` and a host (unix:// needs none)."""
    value = text(env, name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes or (parts.scheme != "unix" and not parts.netloc):
        spelled = [f"{scheme}://" for scheme in schemes]
        wanted = " or ".join(spelled) if len(spelled) < 3 else ", ".join(spelled[:-1])
        wanted += f" or {spelled[-1]}" if len(spelled) >= 3 else ""
        article = "an" if wanted[0] in "aeioh" else "a"  # an http://, a redis://
        example = f" such as {default}" if default else ""
        raise SettingsError(f"{name} must be {article} {wanted} URL{example}, not {value!r}")
    return value


def names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, each entry stripped, empty entries dropped."""
    return tuple(entry.strip() for entry in env.get(name, "").split(",") if entry.strip())


def _positive(raw: str, name: str, what: str, maximum: float | None) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value) or (maximum is not None and value > maximum):
        bound = f" up to {maximum:g}" if maximum is not None else ""
        raise SettingsError(f"{name} must be {what}{bound}, not {raw!r}")
    return value
