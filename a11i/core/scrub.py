"""The PII scrubber: remove personal data and credentials from every text a11i exports.

Every span attribute, span event and log record passes through :class:`Scrubber` before it
reaches the export buffer; with ``A11I_CAPTURE_CONTENT`` on that includes whole prompts and
completions (agents resend 100k-token histories), so the scrubber is built for throughput.

Pure: no I/O, no logging, no environment. The telemetry adapter builds one :class:`Scrubber`
from :data:`BUILTIN_RULES` and the ``pii_rules`` of a11i.yaml (:func:`rules_from_config`, which
validates the already-parsed YAML) and reads its :class:`ScrubStats` for its own metrics. The
only clock is the one handed to the scrubber (``time.thread_time``, the scrubbing thread's CPU
time, unless a caller hands another): it splits the time budget of one call between the rules.
CPU time, not wall time: a thread that waits for the GIL or for a core on a busy node has
spent none of its budget (wall-clock budgets redacted whole calls' spans on loaded machines).

How a text is scrubbed, in order:

1. ``secrets`` (the provider keys the sidecar holds and those the agent sent) are replaced by
   ``[REDACTED:secret]`` wherever they appear, whatever the target, before any rule runs.
2. The rules that apply to the target run one after another, each over the result of the one
   before; a match is replaced by the rule's replacement (``[REDACTED:<name>]`` by default),
   unless the rule has a validator and the validator rejects it (the Luhn check of cards).
   A pattern may use ``\\K`` to keep the text before it (``password=\\K...`` replaces only the
   value).

Why one pattern per shape instead of one big alternation: the ``regex`` engine finds a pattern
with one required literal (``@``, ``sk-``, ``(``) at memory speed, but tries an alternation at
every position of the text; the built-ins are therefore several small rules, several of them
sharing one name (``phone`` is two E.164 and three North American layouts), and measured in
``bench/scrubber.py``. A rule name is what users see: overriding or disabling ``phone`` in
a11i.yaml acts on every built-in pattern of that name.

Fail closed: a user's regex can backtrack catastrophically, so a rule that does on short runs of
characters is refused when it is loaded, every value is bounded by ``time_budget_s`` (the
``regex`` module's ``timeout=``) and every call's values together by ``call_budget_s``
(:meth:`Scrubber.one_call`). A value that runs out of time becomes ``[REDACTED:scrub-timeout]``
whole and is counted: a telemetry value lost is better than a prompt leaked.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import regex

from a11i.core.errors import ConfigurationError
from a11i.core.model import JSONValue

__all__ = [
    "BUILTIN_RULES",
    "BUILTIN_RULE_NAMES",
    "CONFIGURABLE_TARGETS",
    "MIN_SECRET_LENGTH",
    "SECRET_REDACTION",
    "TIMEOUT_REDACTION",
    "Prefilter",
    "Rule",
    "ScrubRuleError",
    "ScrubStats",
    "Scrubber",
    "Target",
    "luhn_valid",
    "rules_from_config",
]

#: What an exact secret (a provider key) is replaced by.
SECRET_REDACTION: Final = "[REDACTED:secret]"
#: What a whole value is replaced by when scrubbing it ran out of its time budget.
TIMEOUT_REDACTION: Final = "[REDACTED:scrub-timeout]"
#: Shorter "secrets" are ignored: they cannot be provider keys, and replacing every occurrence
#: of a two-letter string would shred every exported text.
MIN_SECRET_LENGTH: Final = 8


class Target(StrEnum):
    """What kind of text is scrubbed; a rule's ``applies_to`` names the first three."""

    PROMPTS = "prompts"
    COMPLETIONS = "completions"
    TOOL_ARGS = "tool_args"
    #: Any other attribute or log text: every rule applies, whatever its ``applies_to``.
    OTHER = "other"


_TARGET_ORDER: Final = (Target.PROMPTS, Target.COMPLETIONS, Target.TOOL_ARGS)
#: The targets a rule may name in a11i.yaml (OTHER always gets every rule).
CONFIGURABLE_TARGETS: Final = frozenset(_TARGET_ORDER)


@dataclass(frozen=True, slots=True)
class Prefilter:
    """A cheap test a text must pass before a rule's pattern runs on it: the text contains one
    of ``any_of`` (compared with ``str.casefold`` of the text when ``casefold``; write them in
    lower case then). It is there for speed only and must never turn away a text the pattern
    would match."""

    any_of: tuple[str, ...]
    casefold: bool = False

    def __post_init__(self) -> None:
        if not self.any_of or not all(self.any_of):
            raise ValueError("a prefilter needs one non-empty string at least")


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern of PII and what replaces it.

    ``pattern`` must be compiled with the ``regex`` module (its matching can be bounded in time;
    the standard ``re`` cannot). An empty ``replacement`` means ``[REDACTED:<name>]``; the
    replacement is literal text (no group references). ``validator``, when given, sees the
    matched text and the match is replaced only if it returns True. ``prefilter``, when given,
    skips the pattern on texts that cannot match (most short texts, for most rules).
    """

    name: str
    pattern: regex.Pattern[str]
    replacement: str = ""
    applies_to: frozenset[Target] = CONFIGURABLE_TARGETS
    validator: Callable[[str], bool] | None = None
    prefilter: Prefilter | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a rule needs a name")
        if not isinstance(self.pattern, regex.Pattern):
            raise TypeError(
                f"rule {self.name!r}: pattern must be compiled with the `regex` module "
                f"(got {type(self.pattern).__name__}); its matching can be bounded in time"
            )
        if not self.replacement:
            object.__setattr__(self, "replacement", f"[REDACTED:{self.name}]")


@dataclass(slots=True)
class ScrubStats:
    """Cumulative counters of one :class:`Scrubber`, read by the telemetry adapter."""

    #: Replacements per rule name; exact secrets count as ``"secret"``.
    scrubbed: Counter[str] = field(default_factory=Counter)
    #: Values replaced whole by ``[REDACTED:scrub-timeout]`` because their budget ran out.
    timeouts: int = 0


class ScrubRuleError(ConfigurationError, ValueError):
    """``pii_rules`` in a11i.yaml cannot be used: where (file, entry) and what to fix."""

    def __init__(
        self, source: str, message: str, *, index: int | None = None, name: str | None = None
    ) -> None:
        self.source = source
        self.index = index
        self.name = name
        self.message = message
        where = "pii_rules"
        if index is not None:
            where += f"[{index}]"
            if name:
                where += f" ({name})"
        super().__init__(f"{source}: {where}: {message}")


# --------------------------------------------------------------------------- validators


def luhn_valid(candidate: str) -> bool:
    """True when the digits of ``candidate`` (separators ignored) pass the Luhn check and are
    as many as a payment card has (13 to 19)."""
    digits = [ord(char) - 48 for char in candidate if "0" <= char <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _phone_digits(candidate: str) -> bool:
    # Fewer than 8 digits is a signed number ("+1 234"), not a phone. More than E.164's 15 is
    # redacted all the same: a phone followed by more digit groups ("+44 20 7946 0958 1234")
    # cannot be told apart from them, and leaving the whole run would leak the phone.
    return sum(char.isdigit() for char in candidate) >= 8


def _ipv4_address(candidate: str) -> bool:
    # Octets of 0-255 without leading zeros ("010.1.1.1" is not an address, or an octal one).
    # Loopback (127/8) and the unspecified 0.0.0.0 name no one: they stay, like IPv6's ::1, so
    # a log line still says where a local server listens.
    try:
        address = ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def _ipv6_address(candidate: str) -> bool:
    # The pattern is loose: the standard parser decides. Two groups at least and a digit, so
    # that slices (x[::2]), the loopback ::1 and scope operators (a::b) stay.
    if sum(1 for group in candidate.split(":") if group) < 2:
        return False
    if not any(char.isdigit() for char in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- built-in rules


def _builtin(
    name: str,
    pattern: str,
    hints: str | tuple[str, ...],
    *,
    casefold: bool = False,
    validator: Callable[[str], bool] | None = None,
    flags: int = 0,
) -> Rule:
    any_of = (hints,) if isinstance(hints, str) else hints
    return Rule(
        name,
        regex.compile(pattern, flags),
        validator=validator,
        prefilter=Prefilter(any_of, casefold),
    )


_X: Final = regex.VERBOSE
# The value of a credential assignment: a quoted string up to its closing quote (a JSON string
# that is itself inside JSON has \" quotes), or a bare word. Never a value already redacted, so
# a second pass changes nothing.
_VALUE: Final = r"""
    \s* [:=] \s*
    (?: \\?" \K (?!\[REDACTED) [^"\\\r\n]+
      | ' \K (?!\[REDACTED) [^'\r\n]+
      | \K (?!\[REDACTED) (?!\\?["']) [^\s"',;&<>\\]+ )
"""
#: The key of a credential assignment may be quoted: "password": "...", \"token\": \"...\".
_KEY_END: Final = r"""(?:\\?["'])?"""

BUILTIN_RULES: Final[tuple[Rule, ...]] = (
    # Private keys in PEM: the whole block, before anything finds numbers or tokens inside it.
    _builtin(
        "private_key",
        r"-----BEGIN[A-Z ]{0,20} PRIVATE KEY-----"
        r"[\s\S]{1,16384}?-----END[A-Z ]{0,20} PRIVATE KEY-----",
        "-----BEGIN",
    ),
    # Provider keys, one pattern per prefix (see the module docstring for why).
    # OpenAI sk-, sk-proj-, sk-svcacct-, sk-admin- and Anthropic sk-ant-: a digit is required so
    # that a long kebab-case name starting with "sk-" is not taken for a key.
    _builtin("api_key", r"(?<![\w-])sk-(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{20,}", "sk-"),
    _builtin(
        "api_key",  # AWS access key ids
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        ("AKIA", "ASIA"),
    ),
    _builtin(
        "api_key",  # GitHub classic
        r"(?<![\w-])gh[pousr]_[A-Za-z0-9]{36,}",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    _builtin("api_key", r"(?<![\w-])github_pat_[A-Za-z0-9_]{22,}", "github_pat_"),
    _builtin("api_key", r"(?<![\w-])xox[abprs]-[A-Za-z0-9-]{10,}", "xox"),  # Slack
    _builtin("api_key", r"(?<![\w-])AIza[0-9A-Za-z_-]{35}", "AIza"),  # Google
    _builtin(
        "api_key",  # Stripe
        r"(?<![\w-])[sr]k_(?:live|test)_[0-9A-Za-z]{16,}",
        ("k_live_", "k_test_"),
    ),
    _builtin("api_key", r"(?<![\w-])hf_[A-Za-z0-9]{30,}", "hf_"),  # Hugging Face
    # Base64url JSON header and payload ("eyJ" is '{"'), signature possibly empty (alg none).
    _builtin("jwt", r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", "eyJ"),
    # "Bearer <token>": the token only. A token has a digit or symbol, or is long: "the bearer
    # of this document" keeps its words.
    _builtin(
        "bearer_token",
        r"""(?i:\bbearer) \s+ \K
            (?: (?=[A-Za-z]*[0-9_~+/=-]|[A-Za-z]+\.[A-Za-z0-9]) | (?=[A-Za-z]{20}) )
            [A-Za-z0-9_~+/=-]+ (?:\.[A-Za-z0-9_~+/=-]+)*""",
        "bearer",
        casefold=True,
        flags=_X,
    ),
    _builtin(
        "basic_auth",
        r"(?i:authorization)" + _KEY_END + r"\s*[:=]\s*(?i:basic)\s+\K[A-Za-z0-9+/]{6,}={0,2}",
        "authorization",
        casefold=True,
    ),
    # user:password@host in URLs: the password only (RFC 3986 userinfo has no raw [ or ]).
    _builtin(
        "url_credentials",
        r"://[^/\s:@\"'<>\[\]]{1,256}:\K[^/\s@\"'<>\[\]]{1,256}(?=@)",
        "://",
    ),
    # key = value, key: value, "key": "value" — the value only.
    _builtin(
        "credential_assignment",
        # "key" first and what precedes it looked behind: the engine then searches one literal.
        r"(?i:key)(?<=(?i:(?:api|secret|private|access)[_-]?key))" + _KEY_END + _VALUE,
        "key",
        casefold=True,
        flags=_X,
    ),
    _builtin(
        "credential_assignment",
        r"(?i:token)" + _KEY_END + _VALUE,
        "token",
        casefold=True,
        flags=_X,
    ),
    _builtin(
        "credential_assignment",
        r"(?i:secret)" + _KEY_END + _VALUE,
        "secret",
        casefold=True,
        flags=_X,
    ),
    _builtin(
        "credential_assignment",
        r"(?i:passw(?:or)?d)" + _KEY_END + _VALUE,
        "passw",
        casefold=True,
        flags=_X,
    ),
    _builtin(
        "email",
        r"""(?<![A-Za-z0-9_]) [A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}+ @
            (?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+ [A-Za-z]{2,63} (?![\w-])""",
        "@",
        flags=_X,
    ),
    # 13-19 digits, contiguous or in groups of 4 (4-6-5 and 4-6-4 for Amex and Diners) with one
    # kind of separator; Luhn-checked. The first digit is a payment network's (ISO/IEC 7812
    # major industry identifiers 2-6), which keeps epoch timestamps (17...) out.
    _builtin(
        "payment_card",
        r"""[2-6][0-9]{3} (?<![\w.+-][0-9]{4})
            (?: [0-9]{9,15}
              | (?:\ [0-9]{4}){3}\ [0-9]{3} | (?:\ [0-9]{4}){2}\ [0-9]{1,7} | \ [0-9]{6}\ [0-9]{4,5}
              | (?:-[0-9]{4}){3}-[0-9]{3}   | (?:-[0-9]{4}){2}-[0-9]{1,7}   | -[0-9]{6}-[0-9]{4,5} )
            (?![\w-]|\.[0-9])""",
        ("2", "3", "4", "5", "6"),
        validator=luhn_valid,
        flags=_X,
    ),
    # E.164: +14155552671, then with separators: +44 20 7946 0958, +1 (415) 555-2671,
    # +44 (0)20 7946 0958 (digits counted by the validator).
    _builtin("phone", r"(?<![A-Za-z_+])\+[1-9][0-9]{7,14}(?![\w-]|\.[0-9])", "+"),
    _builtin(
        "phone",
        r"(?<![A-Za-z_+])\+[1-9][0-9]{0,3}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-]?[0-9]{1,4}){1,5}"
        r"(?![\w-]|\.[0-9])",
        "+",
        validator=_phone_digits,
    ),
    # North American numbers always with separators, so that bare integers stay: 415-555-2671,
    # 415.555.2671, (415) 555-2671. A leading "1-" country code stays (1-[REDACTED:phone]):
    # matching it optionally would cost the engine its fast literal search. The look-behinds
    # (on what precedes the 12 characters) come last for the same reason.
    _builtin(
        "phone",
        r"[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}(?<![\w+.].{12})(?<!(?<!(?<![\w+.-])1)-.{12})"
        r"(?![\w-]|\.[0-9])",
        ("2", "3", "4", "5", "6", "7", "8", "9"),
    ),
    _builtin(
        "phone",
        r"[2-9][0-9]{2}\.[0-9]{3}\.[0-9]{4}(?<![\w+-].{12})(?<!(?<!(?<![\w+.-])1)\..{12})"
        r"(?![\w-]|\.[0-9])",
        ("2", "3", "4", "5", "6", "7", "8", "9"),
    ),
    _builtin(
        "phone",
        r"(?<![A-Za-z_+])(?:(?<![0-9.])1[ .-]?)?\([2-9][0-9]{2}\)[ .-]?[0-9]{3}[ .-][0-9]{4}"
        r"(?![\w-]|\.[0-9])",
        "(",
    ),
    # Four octets of 0-255, not a part of a longer dotted run (1.2.3.4.5 is an OID or version).
    _builtin(
        "ip_address",
        r"(?<![\w.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.[0-9])",
        ".",
        validator=_ipv4_address,
    ),
    # IPv6 after IPv4 (::ffff:192.0.2.1 keeps its ::ffff:): a candidate next to an IPv4 address
    # must see the redaction, as a second pass would. A candidate has "::" or 8 groups
    # (times like 10:00:00 never get that far); the standard library's parser decides.
    _builtin(
        "ip_address",
        r"""(?<![\w:.]) (?=[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){7})
            (?:[0-9A-Fa-f]{0,4}:){2,7}
            (?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})? (?![\w:]|\.\w)""",
        ":",
        validator=_ipv6_address,
        flags=_X,
    ),
)

#: Names of the built-in rules, in order, each once.
BUILTIN_RULE_NAMES: Final = tuple(dict.fromkeys(rule.name for rule in BUILTIN_RULES))


# --------------------------------------------------------------------------- configuration

_KEYS: Final = ("name", "regex", "replacement", "applies_to", "enabled")
_NAME: Final = regex.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# A regex that matches nothing at all in these texts yet matches empty elsewhere is possible
# (a lookaround); the scrubber also leaves empty matches alone at run time.
_EMPTY_PROBES: Final = ("", " ", "a", "0", "x y\n1.2@z_Q-")
_PROBE_TIMEOUT_S: Final = 0.1
#: Characters repeated (alone and in pairs) into the texts a user's rule is tried on at load.
_BACKTRACK_ALPHABET: Final = "a0 A.@-_:=/\n"
#: Long enough for an exponential pattern to run for ever, short enough that a linear or
#: mildly quadratic one finishes in a fraction of the time limit.
_BACKTRACK_LENGTH: Final = 256
_BACKTRACK_QUICK_S: Final = 0.05
_BACKTRACK_TIMEOUT_S: Final = 0.25


def _backtracks(pattern: regex.Pattern[str]) -> str | None:
    """A text on which ``pattern`` runs past the time limit, or None: runs of one character
    and of two alternating ones (from the pattern's own literals and common separators),
    each ended by a character that makes the match fail late (the classic ReDoS shape)."""
    literals = {c for c in pattern.pattern if c.isprintable() and not c.isspace()}
    alphabet = sorted(set(_BACKTRACK_ALPHABET) | literals)
    units = [*alphabet] + [a + b for a in alphabet for b in alphabet if a < b]
    for unit in units:
        for end in ("\x00", "!"):
            text = unit * (_BACKTRACK_LENGTH // len(unit)) + end
            # Quick first; a text that is slow is tried again with a long limit, so that a
            # busy machine never refuses a rule that is merely quadratic on this short text.
            if _runs_past(pattern, text, _BACKTRACK_QUICK_S) and _runs_past(
                pattern, text, _BACKTRACK_TIMEOUT_S
            ):
                return text
    return None


def _runs_past(pattern: regex.Pattern[str], text: str, limit_s: float) -> bool:
    try:
        for _ in pattern.finditer(text, timeout=limit_s):
            pass
    except TimeoutError:
        return True
    return False


def rules_from_config(entries: object, *, source: str) -> tuple[Rule, ...]:
    """The effective rules for ``pii_rules`` of a11i.yaml (the parsed YAML value).

    ``entries`` is None (the key is absent) or a list of mappings with ``name`` (required,
    unique), ``regex`` (required unless the entry disables a built-in), ``replacement``,
    ``applies_to`` (a list of prompts, completions, tool_args) and ``enabled`` (default true).
    The result is the built-ins, where an entry named like a built-in replaces it (in place)
    and ``enabled: false`` removes it, followed by the other entries in file order. Any mistake
    raises :class:`ScrubRuleError` naming ``source``, the entry and what to fix; nothing is half
    applied.
    """
    if entries is None:
        return BUILTIN_RULES
    if not isinstance(entries, list):
        raise ScrubRuleError(
            source, f"must be a list of rules (name, regex, ...), not {_kind(entries)}"
        )
    overrides: dict[str, Rule | None] = {}
    custom: list[Rule] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name, rule = _parse_entry(entry, index, source)
        if name in seen:
            raise ScrubRuleError(
                source,
                f"duplicate name: pii_rules[{seen[name]}] already defines {name!r}",
                index=index,
                name=name,
            )
        seen[name] = index
        if name in BUILTIN_RULE_NAMES:
            overrides[name] = rule
        elif rule is not None:
            custom.append(rule)
    effective: list[Rule] = []
    placed: set[str] = set()
    for builtin in BUILTIN_RULES:
        if builtin.name not in overrides:
            effective.append(builtin)
        elif builtin.name not in placed:
            # Where the first pattern of that name was; the others of the name go with it.
            placed.add(builtin.name)
            override = overrides[builtin.name]
            if override is not None:
                effective.append(override)
    return (*effective, *custom)


def _parse_entry(entry: object, index: int, source: str) -> tuple[str, Rule | None]:
    """One entry: its name, and its rule (None when it is disabled)."""
    if not isinstance(entry, Mapping):
        raise ScrubRuleError(
            source, f"must be a mapping with name and regex, not {_kind(entry)}", index=index
        )
    raw_name = entry.get("name")

    def error(message: str) -> ScrubRuleError:
        shown = raw_name if isinstance(raw_name, str) and raw_name.strip() else None
        return ScrubRuleError(source, message, index=index, name=shown)

    unknown = [str(key) for key in entry if key not in _KEYS]
    if unknown:
        raise error(
            f"unknown key(s) {', '.join(repr(key) for key in sorted(unknown))}; "
            f"allowed: {', '.join(_KEYS)}"
        )
    if raw_name is None:
        raise error("name is required")
    if not isinstance(raw_name, str):
        raise error(f"name must be a string, not {_kind(raw_name)}")
    if not raw_name.strip():
        raise error("name must not be empty")
    name = raw_name
    if not _NAME.fullmatch(name):
        raise error(
            "name must start with a letter and hold only letters, digits, '_', '.' and '-' "
            "(at most 64): it becomes [REDACTED:<name>] and a metric attribute"
        )

    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise error(f"enabled must be true or false, not {_kind(enabled)}")

    text = entry.get("regex")
    if text is None:
        if not enabled and name in BUILTIN_RULE_NAMES:
            return name, None
        if not enabled:
            raise error(
                f"there is no built-in rule of this name to disable; built-ins are "
                f"{', '.join(BUILTIN_RULE_NAMES)}"
            )
        raise error("regex is required (or enabled: false to disable a built-in rule)")
    if not isinstance(text, str):
        raise error(f"regex must be a string, not {_kind(text)}")
    if not text:
        raise error("regex must not be empty")
    try:
        pattern = regex.compile(text)
    except regex.error as exc:
        raise error(f"regex does not compile: {exc}") from exc
    try:
        empty = any(
            match.end() == match.start()
            for probe in _EMPTY_PROBES
            for match in pattern.finditer(probe, timeout=_PROBE_TIMEOUT_S)
        )
    except TimeoutError as exc:
        raise error("regex is too slow: it did not finish on a five-character text") from exc
    if empty:
        raise error(
            "regex matches the empty string (it would match between every two characters); "
            "use + instead of *, or make a part required"
        )
    slow = _backtracks(pattern)
    if slow is not None:
        raise error(
            f"regex is too slow: it did not finish within {_BACKTRACK_TIMEOUT_S:g} s on "
            f"{len(slow)} characters like {slow[:12]!r}... (catastrophic backtracking: nested "
            "or overlapping quantifiers such as (a+)+, (\\w|\\d)* or \\s*\\s*); rewrite it "
            "so that each character can be matched one way only"
        )

    replacement = entry.get("replacement", "")
    if not isinstance(replacement, str):
        raise error(f"replacement must be a string, not {_kind(replacement)}")
    if "replacement" in entry and not replacement:
        raise error(
            "replacement must not be empty: a reader should see that something was removed "
            "(leave it out for [REDACTED:<name>])"
        )

    applies_to = _parse_targets(entry.get("applies_to"), error)
    if not enabled:
        return name, None
    return name, Rule(name, pattern, replacement, applies_to)


def _parse_targets(value: object, error: Callable[[str], ScrubRuleError]) -> frozenset[Target]:
    if value is None:
        return CONFIGURABLE_TARGETS
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise error(
            "applies_to must be a non-empty list of prompts, completions, tool_args, "
            f"not {_kind(value)}"
        )
    targets: set[Target] = set()
    allowed = ", ".join(_TARGET_ORDER)
    for item in items:
        if not isinstance(item, str) or item not in CONFIGURABLE_TARGETS:
            raise error(f"applies_to: unknown target {item!r}; expected {allowed}")
        targets.add(Target(item))
    return frozenset(targets)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if type(value) in names:
        return f"{names[type(value)]} ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


# --------------------------------------------------------------------------- the scrubber


class Scrubber:
    """Scrubs texts with fixed rules and secrets; counts what it did in :attr:`stats`.

    Not thread-safe (the counters); the sidecar uses one per event loop. ``clock`` only splits
    the budget of one call between the rules: the ``regex`` engine watches its own time.
    """

    __slots__ = (
        "_budget_s",
        "_call_budget_s",
        "_call_deadline",
        "_clock",
        "_pending",
        "_plans",
        "_secrets",
        "_tally",
        "stats",
    )

    def __init__(
        self,
        rules: Sequence[Rule] = BUILTIN_RULES,
        secrets: Iterable[str] = (),
        time_budget_s: float = 0.05,
        *,
        call_budget_s: float = 0.25,
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive, not {time_budget_s!r}")
        if not call_budget_s > 0:
            raise ValueError(f"call_budget_s must be positive, not {call_budget_s!r}")
        self._budget_s = time_budget_s
        self._call_budget_s = call_budget_s
        #: The deadline every value of the call in progress shares (``one_call``), if any.
        self._call_deadline: float | None = None
        self._clock = clock
        #: Replacements of the call in progress, added to ``stats`` only when it succeeds.
        self._pending: Counter[str] = Counter()
        #: How many replacements were made since the scrubber was built (one cell, shared).
        self._tally = [0]
        unique = tuple(dict.fromkeys(rules))
        hints = {hint for rule in unique for hint in _hints_of(rule) or ()}
        passes = {rule: _Pass(rule, self._pending, self._tally, hints) for rule in unique}
        self._plans = {
            target: _Plan(
                tuple(
                    passes[rule]
                    for rule in unique
                    if target is Target.OTHER or target in rule.applies_to
                )
            )
            for target in Target
        }
        self._secrets: tuple[str, ...] = ()
        self.stats = ScrubStats()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also replace these exact strings from now on (a key an agent just sent)."""
        known = set(self._secrets)
        known.update(secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH)
        # Longest first: a key that contains another is replaced whole.
        self._secrets = tuple(sorted(known, key=lambda secret: (-len(secret), secret)))

    @contextmanager
    def one_call(self) -> Iterator[None]:
        """Every value scrubbed inside shares one budget, ``call_budget_s``: a call of 200
        messages under a slow rule costs that budget once, not 50 ms per message. Values
        scrubbed after it ran out become ``[REDACTED:scrub-timeout]``."""
        outer = self._call_deadline
        self._call_deadline = self._clock() + self._call_budget_s
        try:
            yield
        finally:
            self._call_deadline = outer

    def _deadline(self) -> float:
        own = self._clock() + self._budget_s
        call = self._call_deadline
        return own if call is None else min(own, call)

    def scrub(self, text: str, target: Target = Target.OTHER) -> str:
        """``text`` with every secret and every match of the target's rules replaced."""
        return self._scrub(text, target, self._deadline())

    def scrub_json(self, value: JSONValue, target: Target = Target.OTHER) -> JSONValue:
        """A copy of a JSON value with every string value scrubbed (keys are kept as they are).

        Integers are scrubbed as their decimal text and become the redaction string when a rule
        matches (a card number sent as a number). The whole walk shares one time budget.
        """
        return self._walk(value, target, self._deadline())

    def _walk(self, value: JSONValue, target: Target, deadline: float) -> JSONValue:
        if isinstance(value, str):
            return self._scrub(value, target, deadline)
        if isinstance(value, dict):
            return {key: self._walk(item, target, deadline) for key, item in value.items()}
        if isinstance(value, list):
            return [self._walk(item, target, deadline) for item in value]
        if isinstance(value, int) and not isinstance(value, bool):
            digits = str(value)
            scrubbed = self._scrub(digits, target, deadline)
            return value if scrubbed == digits else scrubbed
        return value

    def _scrub(self, text: str, target: Target, deadline: float) -> str:
        if not text:
            return text
        pending, tally, clock = self._pending, self._tally, self._clock
        pending.clear()
        for secret in self._secrets:
            if secret in text:
                pending["secret"] += text.count(secret)
                text = text.replace(secret, SECRET_REDACTION)
        plan = self._plans[target]
        present = plan.present(text)
        seen = tally[0]
        try:
            # Checked once even without rules: the strings of one JSON value share a deadline.
            if clock() >= deadline:
                raise TimeoutError
            for step in plan.passes:
                if step.hints is not None and step.hints.isdisjoint(present):
                    continue
                remaining = deadline - clock()
                if remaining <= 0:
                    raise TimeoutError
                text = step.pattern.sub(step.replace, text, timeout=remaining)
                if tally[0] != seen:
                    seen = tally[0]
                    # A replacement removes text and adds its marker: what the text holds now
                    # is what it held plus what the marker holds (a hint cannot straddle the
                    # brackets of a marker; other replacements are looked at afresh).
                    if step.marker_hints is None:
                        present = plan.present(text)
                    else:
                        present |= step.marker_hints
        except TimeoutError:
            pending.clear()
            self.stats.timeouts += 1
            return TIMEOUT_REDACTION
        self.stats.scrubbed.update(pending)
        return text


#: A prefilter's string and whether it is looked for in the casefolded text.
_Hint = tuple[str, bool]


def _hints_of(rule: Rule) -> frozenset[_Hint] | None:
    """The hints of a rule's prefilter; None when the rule must always run."""
    prefilter = rule.prefilter
    if prefilter is None or any("[" in hint or "]" in hint for hint in prefilter.any_of):
        # A hint with a bracket could straddle a marker's edge: no shortcut for it.
        return None
    return frozenset((hint, prefilter.casefold) for hint in prefilter.any_of)


class _Pass:
    """One rule as the scrubber runs it: its pattern, its hints and its replacement function."""

    __slots__ = ("hints", "marker_hints", "pattern", "replace")

    def __init__(
        self, rule: Rule, counts: Counter[str], tally: list[int], hints: set[_Hint]
    ) -> None:
        self.pattern = rule.pattern
        self.hints = _hints_of(rule)
        replacement = rule.replacement
        self.marker_hints: frozenset[_Hint] | None = None
        if replacement.startswith("[") and replacement.endswith("]"):
            folded = replacement.casefold()
            self.marker_hints = frozenset(
                (hint, fold) for hint, fold in hints if hint in (folded if fold else replacement)
            )
        name, validator = rule.name, rule.validator

        def replace(match: regex.Match[str]) -> str:
            found = match.group()
            # An empty match (a user regex that slipped past the probes) replaces nothing.
            if not found or (validator is not None and not validator(found)):
                return found
            counts[name] += 1
            tally[0] += 1
            return replacement

        self.replace = replace


class _Plan:
    """The passes of one target, and every hint they look for."""

    __slots__ = ("folded_hints", "passes", "plain_hints")

    def __init__(self, passes: tuple[_Pass, ...]) -> None:
        self.passes = passes
        hints = {hint for step in passes for hint in step.hints or ()}
        self.plain_hints = tuple(sorted(hint for hint, fold in hints if not fold))
        self.folded_hints = tuple(sorted(hint for hint, fold in hints if fold))

    def present(self, text: str) -> set[_Hint]:
        """The hints found in ``text``: one look per distinct hint, shared by the passes."""
        found = {(hint, False) for hint in self.plain_hints if hint in text}
        if self.folded_hints:
            folded = text.casefold()
            found.update((hint, True) for hint in self.folded_hints if hint in folded)
        return found
