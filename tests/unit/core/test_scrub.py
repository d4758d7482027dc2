"""The PII scrubber: each built-in rule and its near misses, secrets, targets, a11i.yaml's
``pii_rules`` (every error message), the time budget, and properties over generated text."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
import regex
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from a11i.core.model import JSONValue
from a11i.core.scrub import (
    BUILTIN_RULE_NAMES,
    BUILTIN_RULES,
    MIN_SECRET_LENGTH,
    SECRET_REDACTION,
    TIMEOUT_REDACTION,
    Prefilter,
    Rule,
    Scrubber,
    ScrubRuleError,
    Target,
    luhn_valid,
    rules_from_config,
)

SOURCE = "/etc/a11i/a11i.yaml"
SCRUBBER = Scrubber()

EMAIL = "[REDACTED:email]"
CARD = "[REDACTED:payment_card]"
PHONE = "[REDACTED:phone]"
IP = "[REDACTED:ip_address]"
KEY = "[REDACTED:api_key]"
JWT_R = "[REDACTED:jwt]"
BEARER = "[REDACTED:bearer_token]"
CRED = "[REDACTED:credential_assignment]"

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
OPENAI_KEY = "sk-proj-" + "Ab3dEfGh1jKlMn0pQrStUvWx" * 4
ANTHROPIC_KEY = "sk-ant-api03-" + "x9Y8z7W6v5U4t3S2r1Q0" * 4 + "-AA"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq7BFUHkmgBXyVbNmOOq0Ut1\n"
    "rYH/8wHNUwqHsGm+vMz4nF1Ki92fY9E2xBz4p0c=\n-----END RSA PRIVATE KEY-----"
)


def scrub(text: str, target: Target = Target.OTHER) -> str:
    return SCRUBBER.scrub(text, target)


def with_check_digit(prefix: str) -> str:
    """``prefix`` followed by the digit that makes the whole Luhn-valid."""
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


# --------------------------------------------------------------------------- built-ins: found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # email
        pytest.param("mail jane.doe@example.com now", f"mail {EMAIL} now", id="email-plain"),
        pytest.param("a.b+tag@sub.example.co.uk", EMAIL, id="email-tag-subdomain"),
        pytest.param("<JANE_DOE@Example.ORG>", f"<{EMAIL}>", id="email-angle-brackets-caps"),
        pytest.param("write to ops@example.com.", f"write to {EMAIL}.", id="email-end-of-sentence"),
        pytest.param('{"to": "x@corp.io"}', f'{{"to": "{EMAIL}"}}', id="email-in-json"),
        # payment cards (Luhn-valid)
        pytest.param("card 4111111111111111", f"card {CARD}", id="card-visa-contiguous"),
        pytest.param("4111 1111 1111 1111", CARD, id="card-visa-spaces"),
        pytest.param("4111-1111-1111-1111.", f"{CARD}.", id="card-visa-dashes"),
        pytest.param("5555 5555 5555 4444", CARD, id="card-mastercard"),
        pytest.param("2223003122003222", CARD, id="card-mastercard-2-series"),
        pytest.param("amex 3782 822463 10005", f"amex {CARD}", id="card-amex-4-6-5"),
        pytest.param("378282246310005", CARD, id="card-amex-contiguous"),
        pytest.param("3056 930902 5904", CARD, id="card-diners-4-6-4"),
        pytest.param("6011111111111117", CARD, id="card-discover"),
        pytest.param("4111 1111 1111 1111 003", CARD, id="card-19-digits-grouped"),
        pytest.param("4111111111111111003", CARD, id="card-19-digits"),
        pytest.param('{"pan": "4111111111111111"}', f'{{"pan": "{CARD}"}}', id="card-in-json"),
        # phone numbers
        pytest.param("call +14155552671", f"call {PHONE}", id="phone-e164"),
        pytest.param("+44 20 7946 0958", PHONE, id="phone-e164-uk-spaces"),
        pytest.param("+1 (415) 555-2671", PHONE, id="phone-e164-parens"),
        pytest.param("+1-415-555-2671", PHONE, id="phone-e164-dashes"),
        pytest.param("+49 30 901820", PHONE, id="phone-e164-de"),
        pytest.param("(415) 555-2671", PHONE, id="phone-nanp-parens"),
        pytest.param("(415)555-2671", PHONE, id="phone-nanp-parens-tight"),
        pytest.param("at 415-555-2671.", f"at {PHONE}.", id="phone-nanp-dashes"),
        pytest.param("415.555.2671", PHONE, id="phone-nanp-dots"),
        pytest.param("1-800-555-1212", f"1-{PHONE}", id="phone-nanp-country-code-stays"),
        pytest.param("1.415.555.2671", f"1.{PHONE}", id="phone-nanp-dots-country-code"),
        pytest.param("555-123-4567", PHONE, id="phone-nanp-fictional-exchange"),
        # IP addresses
        pytest.param("from 10.0.0.1", f"from {IP}", id="ipv4-private"),
        pytest.param("192.168.1.254:8080", f"{IP}:8080", id="ipv4-port"),
        pytest.param("255.255.255.255", IP, id="ipv4-broadcast"),
        pytest.param("dns 8.8.8.8.", f"dns {IP}.", id="ipv4-end-of-sentence"),
        pytest.param("host=10.1.2.3,", f"host={IP},", id="ipv4-assignment"),
        pytest.param("http://127.0.0.1:11000 up", "http://127.0.0.1:11000 up", id="loopback-stays"),
        pytest.param("on 0.0.0.0:80", "on 0.0.0.0:80", id="unspecified-stays"),
        pytest.param("2001:db8::8a2e:370:7334", IP, id="ipv6-compressed"),
        pytest.param("2001:0db8:85a3:0000:0000:8a2e:0370:7334", IP, id="ipv6-full"),
        pytest.param("fe80::1 up", f"{IP} up", id="ipv6-link-local"),
        pytest.param("from 2001:db8::7334.", f"from {IP}.", id="ipv6-end-of-sentence"),
        pytest.param("::ffff:192.0.2.1", f"::ffff:{IP}", id="ipv6-mapped-ipv4"),
        pytest.param("[2001:db8::1]:443", f"[{IP}]:443", id="ipv6-bracketed-port"),
        # provider keys
        pytest.param(f"key {OPENAI_KEY} end", f"key {KEY} end", id="key-openai-project"),
        pytest.param("sk-" + "a1B2c3D4" * 6, KEY, id="key-openai-legacy"),
        pytest.param("sk-svcacct-" + "Zz9" * 20, KEY, id="key-openai-service-account"),
        pytest.param(f'"{ANTHROPIC_KEY}"', f'"{KEY}"', id="key-anthropic"),
        pytest.param("AKIAIOSFODNN7EXAMPLE", KEY, id="key-aws-akia"),
        pytest.param("id ASIAY34FZKBOKMUTVV7A,", f"id {KEY},", id="key-aws-asia"),
        pytest.param("ghp_" + "A1b2C3d4E5" * 4, KEY, id="key-github-classic"),
        pytest.param("gho_" + "0" * 36, KEY, id="key-github-oauth"),
        pytest.param("ghs_" + "Q" * 36, KEY, id="key-github-server"),
        pytest.param("github_pat_11ABCDEFG0" + "x" * 60, KEY, id="key-github-fine-grained"),
        pytest.param("xoxb-1234567890-abcdefghijKL", KEY, id="key-slack-bot"),
        pytest.param("xoxp-1234-5678-abcdef", KEY, id="key-slack-user"),
        pytest.param("AIzaSyD-1234567890abcdefghijklmnopqrstu", KEY, id="key-google"),
        pytest.param("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", KEY, id="key-stripe-live"),
        pytest.param("rk_live_" + "51HqLyjWDarjtT1zdp7dc0", KEY, id="key-stripe-restricted"),
        pytest.param("hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH", KEY, id="key-hugging-face"),
        # JWTs and bearer tokens
        pytest.param(f"token {JWT}", f"token {JWT_R}", id="jwt"),
        pytest.param(
            "Authorization: Bearer abc123def456ghi789",
            f"Authorization: Bearer {BEARER}",
            id="bearer-header",
        ),
        pytest.param("Bearer mF_9.B5f-4.1JqM", f"Bearer {BEARER}", id="bearer-rfc-6750-example"),
        pytest.param("Bearer " + "q" * 24, f"Bearer {BEARER}", id="bearer-long-letters"),
        pytest.param(f"Bearer {JWT}", f"Bearer {JWT_R}", id="bearer-jwt-is-a-jwt"),
        pytest.param(
            "Authorization: Basic dXNlcjpwYXNz",
            "Authorization: Basic [REDACTED:basic_auth]",
            id="basic-auth-header",
        ),
        pytest.param(
            "postgres://admin:hunter2@db.internal:5432/app",
            "postgres://admin:[REDACTED:url_credentials]@db.internal:5432/app",
            id="url-credentials",
        ),
        # credential assignments: the value only
        pytest.param("api_key=abc123", f"api_key={CRED}", id="cred-api-key"),
        pytest.param("apikey: abc123", f"apikey: {CRED}", id="cred-apikey-colon"),
        pytest.param("X-Api-Key: 0123456789abcdef", f"X-Api-Key: {CRED}", id="cred-header"),
        pytest.param("OPENAI_API_KEY=not-a-key", f"OPENAI_API_KEY={CRED}", id="cred-env-var"),
        pytest.param("token=xyz", f"token={CRED}", id="cred-token"),
        pytest.param("?access_token=abc&page=2", f"?access_token={CRED}&page=2", id="cred-query"),
        pytest.param("password = hunter2", f"password = {CRED}", id="cred-password-spaces"),
        pytest.param("PGPASSWORD=hunter2 psql", f"PGPASSWORD={CRED} psql", id="cred-pgpassword"),
        pytest.param("passwd: 'p w'", f"passwd: '{CRED}'", id="cred-passwd-single-quoted"),
        pytest.param(
            '{"password": "correct horse battery"}',
            f'{{"password": "{CRED}"}}',
            id="cred-json-quoted-with-spaces",
        ),
        pytest.param(
            '{\\"token\\": \\"s3cr3t\\"}', f'{{\\"token\\": \\"{CRED}\\"}}', id="cred-json-in-json"
        ),
        pytest.param("client_secret: s3cr3t", f"client_secret: {CRED}", id="cred-client-secret"),
        pytest.param(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"aws_secret_access_key = {CRED}",
            id="cred-aws-secret",
        ),
        pytest.param(f"api_key={OPENAI_KEY}", f"api_key={KEY}", id="cred-value-already-a-key"),
        # private keys
        pytest.param(f"id_rsa:\n{PEM}\n", "id_rsa:\n[REDACTED:private_key]\n", id="private-key"),
    ],
)
def test_builtin_rule_finds(text: str, expected: str) -> None:
    assert scrub(text) == expected


# --------------------------------------------------------------------------- built-ins: kept


@pytest.mark.parametrize(
    "text",
    [
        # numbers that are not phones, cards or addresses
        pytest.param("context window 128000 tokens, used 127999", id="token-counts"),
        pytest.param("at 2026-11-23T10:00:00Z and 2026-11-23T10:00:00.123+01:00", id="timestamps"),
        pytest.param("on 2026-11-23, 23.11.2026, 11/23/2026", id="dates"),
        pytest.param("at 10:00:00 and 23:59:59.999", id="times"),
        pytest.param("version 1.34.2, v1.34.2, 0.1.0-rc.1, node@20.11.1", id="versions"),
        pytest.param("semver 1.2.3 and python3.11.7", id="three-part-versions"),
        pytest.param("OID 1.3.6.1.4.1.2021 and 1.2.3.4.5", id="dotted-runs-longer-than-ip"),
        pytest.param("256.1.1.1 and 10.0.0.300 and 010.001.002.003", id="invalid-octets"),
        pytest.param("id 123e4567-e89b-12d3-a456-426614174000", id="uuid"),
        pytest.param("id 550e8400-e29b-41d4-a716-446655440000", id="uuid-digit-groups"),
        pytest.param("epoch 1732356000000 and 1732356000000000", id="epoch-ms-and-us"),
        pytest.param("415 555 2671", id="phone-spaces-only-is-not-taken"),
        pytest.param("4155552671 and 14155552671", id="bare-ten-and-eleven-digits"),
        pytest.param("+128000 and UTC+01:00 and +0530", id="signed-numbers-and-offsets"),
        pytest.param("ports 8080-8090, pages 100-200", id="ranges"),
        pytest.param(
            "11-415-555-2671 and a-415-555-2671 and 2.415.555.2671", id="not-a-country-code"
        ),
        pytest.param("sha 9f86d081884c7d659a2feaa0c55ad015", id="hex-digest"),
        # cards that fail Luhn, or are not cards
        pytest.param("1234 5678 9012 3456", id="card-fails-luhn-1234"),
        pytest.param("4111 1111 1111 1112", id="card-fails-luhn-visa-like"),
        pytest.param("4111 1111 1111", id="card-too-short"),
        pytest.param("41111111111111111111", id="card-too-long"),
        pytest.param("4111 1111-1111 1111", id="card-mixed-separators"),
        pytest.param("1234567812345670", id="luhn-valid-but-not-a-payment-network"),
        pytest.param("x=4111111111111111.5", id="card-digits-in-a-decimal"),
        # colons that are not IPv6
        pytest.param("MAC 00:1a:2b:3c:4d:5e", id="mac-address"),
        pytest.param("xs[::2] and xs[::-1]", id="python-slices"),
        pytest.param("std::vector<int> and a::b and dead::beef", id="scope-operators"),
        pytest.param("loopback ::1", id="ipv6-loopback-kept"),
        # e-mail look-alikes
        pytest.param("@dataclass and @types/node and @here", id="at-signs"),
        pytest.param("lodash@4.17.21 and pkg@latest", id="package-pins"),
        pytest.param("root@localhost", id="email-without-tld"),
        # key look-alikes
        pytest.param("sk-learn and sk-payments-worker-deployment-abc", id="sk-names"),
        pytest.param("task-runner-0123456789abcdefghijkl", id="sk-inside-a-word"),
        pytest.param("AKIA1234 is short", id="aws-too-short"),
        pytest.param("hf_hub_download and ghp_short", id="prefix-without-token"),
        pytest.param("risk_live_updates_0123456789abcdef", id="stripe-inside-a-word"),
        pytest.param("eyJhbGciOiJIUzI1NiJ9 alone", id="jwt-header-only"),
        # bearer and credential look-alikes
        pytest.param("the bearer of this document", id="bearer-in-prose"),
        pytest.param("Bearer tokens are documented", id="bearer-word-then-word"),
        pytest.param("a basic understanding", id="basic-in-prose"),
        pytest.param('"max_tokens": 64, "prompt_tokens": 12', id="token-counts-json"),
        pytest.param("token_type: bearer, tokenizer: o200k_base", id="token-like-keys"),
        pytest.param("kind: Secret\nsecretName: db", id="k8s-secret-kinds"),
        pytest.param("passwordless: true; password_hash: x", id="password-like-keys"),
        pytest.param("api_key is required", id="key-without-assignment"),
        pytest.param("https://example.com/a:b@c", id="url-path-with-at"),
        pytest.param("", id="empty"),
    ],
)
def test_builtin_rules_keep(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("192.168.100.200", IP, id="ip-is-not-a-phone"),
        pytest.param("10.100.200.3000", "10.100.200.3000", id="dotted-run-is-neither"),
        pytest.param("4111-1111-1111-1111", CARD, id="card-dashes-are-not-a-phone"),
        pytest.param("+1 415 555 2671", PHONE, id="e164-with-spaces-is-a-phone"),
        pytest.param("::ffff:10.0.0.1", f"::ffff:{IP}", id="mapped-address-keeps-its-prefix"),
        pytest.param(
            "https://bob@example.com/x", f"https://{EMAIL}/x", id="url-user-without-password"
        ),
    ],
)
def test_which_rule_wins(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_builtin_names() -> None:
    assert BUILTIN_RULE_NAMES == (
        "private_key",
        "api_key",
        "jwt",
        "bearer_token",
        "basic_auth",
        "url_credentials",
        "credential_assignment",
        "email",
        "payment_card",
        "phone",
        "ip_address",
    )
    assert all(rule.replacement == f"[REDACTED:{rule.name}]" for rule in BUILTIN_RULES)


def test_stats_count_replacements_per_rule_name() -> None:
    scrubber = Scrubber()
    scrubber.scrub("a@example.com b@example.com 415-555-2671 +14155552671 4111 1111 1111 1112")
    scrubber.scrub("+44 20 7946 0958")
    assert scrubber.stats.scrubbed == {"email": 2, "phone": 3}
    assert scrubber.stats.timeouts == 0


# --------------------------------------------------------------------------- Luhn


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        pytest.param("4111111111111111", True, id="visa-test-number"),
        pytest.param("4111 1111 1111 1111", True, id="separators-ignored"),
        pytest.param("378282246310005", True, id="amex-15"),
        pytest.param("30569309025904", True, id="diners-14"),
        pytest.param("4111111111111111003", True, id="19-digits"),
        pytest.param("4111111111111112", False, id="last-digit-off"),
        pytest.param("1234567890123456", False, id="sequence"),
        pytest.param("79927398713", False, id="luhn-valid-but-11-digits"),
        pytest.param("41111111111111110000", False, id="20-digits"),
        pytest.param("", False, id="empty"),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("target", list(Target), ids=str)
def test_secrets_are_replaced_in_every_target_before_any_rule(target: Target) -> None:
    scrubber = Scrubber(rules=(), secrets=[OPENAI_KEY])
    text = f"Authorization: Bearer {OPENAI_KEY}\nkey={OPENAI_KEY}"
    assert scrubber.scrub(text, target) == (
        f"Authorization: Bearer {SECRET_REDACTION}\nkey={SECRET_REDACTION}"
    )
    assert scrubber.stats.scrubbed == {"secret": 2}


def test_secret_wins_over_the_rule_that_would_find_it() -> None:
    scrubber = Scrubber(secrets=[OPENAI_KEY])
    assert scrubber.scrub(f"x {OPENAI_KEY} y") == f"x {SECRET_REDACTION} y"


@pytest.mark.parametrize(
    ("secrets", "text", "expected"),
    [
        pytest.param(
            ["abcdefgh12345678", "abcdefgh12345678-longer"],
            "k=abcdefgh12345678-longer",
            f"k={SECRET_REDACTION}",
            id="longest-first",
        ),
        pytest.param(["short"], "short stays", "short stays", id="too-short-is-ignored"),
        pytest.param([""], "anything", "anything", id="empty-is-ignored"),
        pytest.param(
            ["my-internal-key-1"],
            "my-internal-key-1my-internal-key-1",
            SECRET_REDACTION * 2,
            id="adjacent-occurrences",
        ),
    ],
)
def test_secret_matching(secrets: list[str], text: str, expected: str) -> None:
    assert Scrubber(rules=(), secrets=secrets).scrub(text) == expected


def test_add_secrets_applies_from_then_on() -> None:
    scrubber = Scrubber(rules=())
    key = "agent-sent-key-0001"
    assert scrubber.scrub(key) == key
    scrubber.add_secrets([key, "x"])
    assert scrubber.scrub(f"[{key}]") == f"[{SECRET_REDACTION}]"
    assert MIN_SECRET_LENGTH == 8


# --------------------------------------------------------------------------- targets


def employee_rule(**changes: object) -> Rule:
    entry: dict[str, object] = {"name": "employee_id", "regex": r"EMP-[0-9]{6}", **changes}
    return rules_from_config([entry], source=SOURCE)[-1]


@pytest.mark.parametrize(
    ("applies_to", "target", "scrubbed"),
    [
        pytest.param(None, Target.PROMPTS, True, id="default-prompts"),
        pytest.param(None, Target.COMPLETIONS, True, id="default-completions"),
        pytest.param(None, Target.TOOL_ARGS, True, id="default-tool-args"),
        pytest.param(["prompts"], Target.PROMPTS, True, id="prompts-only-prompts"),
        pytest.param(["prompts"], Target.COMPLETIONS, False, id="prompts-only-completions"),
        pytest.param(["prompts"], Target.TOOL_ARGS, False, id="prompts-only-tool-args"),
        pytest.param(["prompts"], Target.OTHER, True, id="prompts-only-other-gets-all"),
        pytest.param("tool_args", Target.TOOL_ARGS, True, id="single-string-target"),
        pytest.param(["completions", "tool_args"], Target.PROMPTS, False, id="two-not-prompts"),
    ],
)
def test_applies_to(applies_to: object, target: Target, scrubbed: bool) -> None:
    changes = {} if applies_to is None else {"applies_to": applies_to}
    scrubber = Scrubber([employee_rule(**changes)])
    expected = "[REDACTED:employee_id]" if scrubbed else "EMP-123456"
    assert scrubber.scrub("EMP-123456", target) == expected


def test_custom_replacement_is_literal() -> None:
    rule = employee_rule(replacement=r"<employee \1 \g<0>>")
    assert Scrubber([rule]).scrub("id EMP-123456.") == r"id <employee \1 \g<0>>."


def test_rule_defaults_and_checks() -> None:
    rule = Rule("badge", regex.compile("B[0-9]+"))
    assert rule.replacement == "[REDACTED:badge]"
    assert rule.applies_to == {Target.PROMPTS, Target.COMPLETIONS, Target.TOOL_ARGS}
    with pytest.raises(TypeError, match="`regex` module"):
        Rule("badge", re.compile("B[0-9]+"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Rule("", regex.compile("B"))
    with pytest.raises(ValueError, match="time_budget_s"):
        Scrubber(time_budget_s=0)


def test_validator_rejects_matches() -> None:
    rule = Rule("even", regex.compile("[0-9]+"), validator=lambda found: int(found) % 2 == 0)
    assert Scrubber([rule]).scrub("1 2 3 44") == "1 [REDACTED:even] 3 [REDACTED:even]"


def test_prefilter_skips_the_pattern() -> None:
    # The prefilter here is deliberately wrong: it shows the pattern never ran.
    rule = Rule("word", regex.compile("secret"), prefilter=Prefilter(("absent",)))
    assert Scrubber([rule]).scrub("secret") == "secret"
    folded = Rule("word", regex.compile("(?i)secret"), prefilter=Prefilter(("secret",), True))
    assert Scrubber([folded]).scrub("SECRET") == "[REDACTED:word]"


# --------------------------------------------------------------------------- scrub_json


def test_scrub_json_walks_values_not_keys() -> None:
    value: dict[str, JSONValue] = {
        "to": "jane@example.com",
        "jane@example.com": "key kept",
        "cc": ["bob@example.com", {"phone": "415-555-2671"}],
        "card": 4111111111111111,
        "count": 128000,
        "ratio": 0.5,
        "ok": True,
        "none": None,
    }
    assert SCRUBBER.scrub_json(value, Target.TOOL_ARGS) == {
        "to": EMAIL,
        "jane@example.com": "key kept",
        "cc": [EMAIL, {"phone": PHONE}],
        "card": CARD,
        "count": 128000,
        "ratio": 0.5,
        "ok": True,
        "none": None,
    }
    assert value["to"] == "jane@example.com"  # the input is not changed


# --------------------------------------------------------------------------- configuration


def test_no_pii_rules_means_the_builtins() -> None:
    assert rules_from_config(None, source=SOURCE) is BUILTIN_RULES
    assert rules_from_config([], source=SOURCE) == BUILTIN_RULES


def test_custom_rules_come_after_the_builtins() -> None:
    rules = rules_from_config(
        [
            {"name": "employee_id", "regex": r"EMP-[0-9]{6}"},
            {"name": "ticket", "regex": r"TCK[0-9]+", "replacement": "<ticket>"},
        ],
        source=SOURCE,
    )
    assert rules[: len(BUILTIN_RULES)] == BUILTIN_RULES
    assert [rule.name for rule in rules[len(BUILTIN_RULES) :]] == ["employee_id", "ticket"]
    assert Scrubber(rules).scrub("EMP-123456 TCK9 a@b.io") == (
        f"[REDACTED:employee_id] <ticket> {EMAIL}"
    )


def test_a_custom_rule_replaces_the_builtin_of_its_name_in_place() -> None:
    rules = rules_from_config(
        [{"name": "phone", "regex": r"\b[0-9]{3} [0-9]{3} [0-9]{4}\b", "applies_to": ["prompts"]}],
        source=SOURCE,
    )
    phones = [index for index, rule in enumerate(rules) if rule.name == "phone"]
    assert len(phones) == 1
    assert rules[phones[0] - 1].name == "payment_card"
    scrubber = Scrubber(rules)
    assert scrubber.scrub("415 555 2671 or 415-555-2671", Target.PROMPTS) == (
        f"{PHONE} or 415-555-2671"
    )
    assert scrubber.scrub("415 555 2671", Target.COMPLETIONS) == "415 555 2671"


def test_disabling_a_builtin_removes_every_pattern_of_that_name() -> None:
    rules = rules_from_config([{"name": "phone", "enabled": False}], source=SOURCE)
    assert "phone" not in {rule.name for rule in rules}
    text = "+14155552671 and (415) 555-2671 and a@b.io"
    assert Scrubber(rules).scrub(text) == f"+14155552671 and (415) 555-2671 and {EMAIL}"


def test_a_disabled_custom_rule_is_checked_then_dropped() -> None:
    rules = rules_from_config(
        [{"name": "employee_id", "regex": "EMP-[0-9]+", "enabled": False}], source=SOURCE
    )
    assert rules == BUILTIN_RULES
    with pytest.raises(ScrubRuleError, match="does not compile"):
        rules_from_config([{"name": "x", "regex": "(", "enabled": False}], source=SOURCE)


def error_cases() -> list[object]:
    allowed = "allowed: name, regex, replacement, applies_to, enabled"
    builtins = ", ".join(BUILTIN_RULE_NAMES)
    cases: list[tuple[str, object, str]] = [
        (
            "not-a-list",
            {"name": "x"},
            "pii_rules: must be a list of rules (name, regex, ...), not a mapping",
        ),
        (
            "a-string",
            "email",
            "pii_rules: must be a list of rules (name, regex, ...), not a string ('email')",
        ),
        (
            "entry-not-a-mapping",
            ["EMP-[0-9]+"],
            "pii_rules[0]: must be a mapping with name and regex, not a string ('EMP-[0-9]+')",
        ),
        (
            "unknown-key",
            [{"name": "employee_id", "regx": "EMP"}],
            f"pii_rules[0] (employee_id): unknown key(s) 'regx'; {allowed}",
        ),
        ("name-missing", [{"regex": "EMP"}], "pii_rules[0]: name is required"),
        (
            "name-not-a-string",
            [{"name": 7, "regex": "EMP"}],
            "pii_rules[0]: name must be a string, not a number (7)",
        ),
        ("name-empty", [{"name": "  ", "regex": "EMP"}], "pii_rules[0]: name must not be empty"),
        (
            "name-with-space",
            [{"name": "employee id", "regex": "EMP"}],
            "pii_rules[0] (employee id): name must start with a letter and hold only letters, "
            "digits, '_', '.' and '-' (at most 64): it becomes [REDACTED:<name>] and a metric "
            "attribute",
        ),
        (
            "duplicate-name",
            [{"name": "a", "regex": "x"}, {"name": "b", "regex": "y"}, {"name": "a", "regex": "z"}],
            "pii_rules[2] (a): duplicate name: pii_rules[0] already defines 'a'",
        ),
        (
            "regex-missing",
            [{"name": "employee_id"}],
            "pii_rules[0] (employee_id): regex is required (or enabled: false to disable a "
            "built-in rule)",
        ),
        (
            "regex-not-a-string",
            [{"name": "employee_id", "regex": ["EMP"]}],
            "pii_rules[0] (employee_id): regex must be a string, not a list",
        ),
        (
            "regex-empty",
            [{"name": "employee_id", "regex": ""}],
            "pii_rules[0] (employee_id): regex must not be empty",
        ),
        (
            "regex-does-not-compile",
            [{"name": "ok", "regex": "x"}, {"name": "employee_id", "regex": "EMP-([0-9]+"}],
            "pii_rules[1] (employee_id): regex does not compile: missing ) at position 11",
        ),
        (
            "regex-matches-empty",
            [{"name": "employee_id", "regex": "[0-9]*"}],
            "pii_rules[0] (employee_id): regex matches the empty string (it would match between "
            "every two characters); use + instead of *, or make a part required",
        ),
        (
            "regex-matches-empty-lookahead",
            [{"name": "boundary", "regex": r"\b"}],
            "pii_rules[0] (boundary): regex matches the empty string (it would match between "
            "every two characters); use + instead of *, or make a part required",
        ),
        (
            "replacement-not-a-string",
            [{"name": "employee_id", "regex": "EMP", "replacement": None}],
            "pii_rules[0] (employee_id): replacement must be a string, not null",
        ),
        (
            "replacement-empty",
            [{"name": "employee_id", "regex": "EMP", "replacement": ""}],
            "pii_rules[0] (employee_id): replacement must not be empty: a reader should see that "
            "something was removed (leave it out for [REDACTED:<name>])",
        ),
        (
            "unknown-target",
            [{"name": "employee_id", "regex": "EMP", "applies_to": ["prompts", "logs"]}],
            "pii_rules[0] (employee_id): applies_to: unknown target 'logs'; expected prompts, "
            "completions, tool_args",
        ),
        (
            "target-other-is-not-configurable",
            [{"name": "employee_id", "regex": "EMP", "applies_to": ["other"]}],
            "pii_rules[0] (employee_id): applies_to: unknown target 'other'; expected prompts, "
            "completions, tool_args",
        ),
        (
            "targets-empty",
            [{"name": "employee_id", "regex": "EMP", "applies_to": []}],
            "pii_rules[0] (employee_id): applies_to must be a non-empty list of prompts, "
            "completions, tool_args, not a list",
        ),
        (
            "targets-a-mapping",
            [{"name": "employee_id", "regex": "EMP", "applies_to": {"prompts": True}}],
            "pii_rules[0] (employee_id): applies_to must be a non-empty list of prompts, "
            "completions, tool_args, not a mapping",
        ),
        (
            "enabled-not-a-boolean",
            [{"name": "phone", "enabled": "no"}],
            "pii_rules[0] (phone): enabled must be true or false, not a string ('no')",
        ),
        (
            "disable-unknown-builtin",
            [{"name": "phones", "enabled": False}],
            f"pii_rules[0] (phones): there is no built-in rule of this name to disable; "
            f"built-ins are {builtins}",
        ),
    ]
    return [
        pytest.param(entries, f"{SOURCE}: {message}", id=case_id)
        for case_id, entries, message in cases
    ]


@pytest.mark.parametrize(("entries", "message"), error_cases())
def test_config_errors_say_what_to_fix(entries: object, message: str) -> None:
    with pytest.raises(ScrubRuleError) as caught:
        rules_from_config(entries, source=SOURCE)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)
    assert caught.value.source == SOURCE


def test_config_error_carries_index_and_name() -> None:
    with pytest.raises(ScrubRuleError) as caught:
        rules_from_config([{"name": "ok", "regex": "x"}, {"name": "bad", "regex": "("}], source="f")
    assert (caught.value.index, caught.value.name) == (1, "bad")
    assert isinstance(caught.value.__cause__, regex.error)


# --------------------------------------------------------------------------- time budget


def catastrophic(pattern: str) -> Rule:
    """A slow rule as if it had passed the load check (which refuses the worst ones)."""
    return Rule("slow", regex.compile(pattern))


@pytest.mark.parametrize("pattern", [r"(a|aa)+$", r"(a|a)+$", r"(?:a|a)+b"], ids=str)
def test_load_refuses_catastrophic_backtracking(pattern: str) -> None:
    with pytest.raises(ScrubRuleError, match="catastrophic backtracking") as caught:
        rules_from_config([{"name": "slow", "regex": pattern}], source=SOURCE)
    assert caught.value.name == "slow"


@pytest.mark.parametrize(
    "pattern",
    [r"(a+)+$", r"\w+\s+\w+", r"(?i)api[_-]?key\s*[:=]\s*\S+", r"^(\w+\s?)+$", r"\S+@\S+"],
    ids=str,
)
def test_load_accepts_rules_the_engine_runs_in_time(pattern: str) -> None:
    assert rules_from_config([{"name": "ok", "regex": pattern}], source=SOURCE)[-1].name == "ok"


def test_one_budget_is_shared_by_every_value_of_a_call() -> None:
    # Each read of the clock moves it 1 ms: a value costs a few reads, so 200 values fit
    # their own 50 ms budgets one by one but not one 20 ms budget together.
    values = [f"message {i} from jane@example.com" for i in range(200)]
    separate = Scrubber(time_budget_s=0.05, clock=SteppingClock(0.001))
    assert TIMEOUT_REDACTION not in [separate.scrub(value) for value in values]
    shared = Scrubber(time_budget_s=0.05, call_budget_s=0.02, clock=SteppingClock(0.001))
    with shared.one_call():
        scrubbed = [shared.scrub(value) for value in values]
    assert scrubbed[0] == "message 0 from [REDACTED:email]"
    assert scrubbed[-1] == TIMEOUT_REDACTION
    assert shared.stats.timeouts == scrubbed.count(TIMEOUT_REDACTION) > 150
    # After the call, values get their own budget again.
    assert shared.scrub(values[0]) == "message 0 from [REDACTED:email]"


@pytest.mark.parametrize("pattern", [r"(a|aa)+$", r"(a|a)+$", r"(?:a|a)+b"], ids=str)
def test_catastrophic_regex_fails_closed_within_the_budget(pattern: str) -> None:
    scrubber = Scrubber([*BUILTIN_RULES, catastrophic(pattern)], time_budget_s=0.05)
    text = "mail jane@example.com " + "a" * 40 + "!"
    started = time.perf_counter()
    assert scrubber.scrub(text) == TIMEOUT_REDACTION
    # Bounded, not exact: the engine checks its clock between steps. Without the bound this
    # call runs for longer than the universe has existed.
    assert time.perf_counter() - started < 2
    assert scrubber.stats.timeouts == 1
    assert scrubber.stats.scrubbed == {}  # nothing half-counted from the rules before it


def test_nested_quantifier_is_defused_by_the_engine_itself() -> None:
    # The classic (a+)+$ is linear in the `regex` module: no match, no timeout.
    scrubber = Scrubber([catastrophic(r"(a+)+$")], time_budget_s=0.05)
    text = "a" * 40 + "!"
    started = time.perf_counter()
    assert scrubber.scrub(text) == text
    assert time.perf_counter() - started < 2
    assert scrubber.stats.timeouts == 0


class SteppingClock:
    """A clock that moves by ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_budget_is_shared_by_the_rules_of_one_call() -> None:
    scrubber = Scrubber(time_budget_s=0.05, clock=SteppingClock(0.02))
    assert scrubber.scrub("mail jane@example.com at 415-555-2671") == TIMEOUT_REDACTION
    assert scrubber.stats.timeouts == 1


def test_scrub_json_shares_one_budget() -> None:
    scrubber = Scrubber(rules=(), time_budget_s=1.0, clock=SteppingClock(0.3))
    value: JSONValue = ["a", "b", "c", "d", "e"]
    # Read at the start (0.3, so the deadline is 1.3), then once per string: 0.6, 0.9, 1.2, 1.5.
    assert scrubber.scrub_json(value) == ["a", "b", "c", TIMEOUT_REDACTION, TIMEOUT_REDACTION]
    assert scrubber.stats.timeouts == 2


# --------------------------------------------------------------------------- properties

# Fragments that put the rules to work, and the characters that sit around PII in real text.
FRAGMENTS = [
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "4111111111111111",
    "378282246310005",
    "+14155552671",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "10.0.0.1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "10:00:00",
    OPENAI_KEY,
    "AKIAIOSFODNN7EXAMPLE",
    JWT,
    "Bearer abc123def456",
    "Authorization: Basic dXNlcjpwYXNz",
    "https://u:p@h.io",
    "api_key=",
    "token: ",
    '"password": "',
    "secret=",
    "[REDACTED:email]",
    "2026-11-23T10:00:00Z",
    "1.34.2",
]
NOISE = st.text(alphabet=st.sampled_from(list("aZ09 .:-+@()=\"'_/\n[]")), max_size=12)
TEXTS = st.lists(st.one_of(st.sampled_from(FRAGMENTS), NOISE), max_size=12).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_scrubbing_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_prefilters_never_turn_away_a_match(text: str) -> None:
    for rule in BUILTIN_RULES:
        if rule.prefilter is None or not rule.pattern.search(text):
            continue
        haystack = text.casefold() if rule.prefilter.casefold else text
        assert any(hint in haystack for hint in rule.prefilter.any_of), rule.pattern.pattern


WITHOUT_PREFILTERS = Scrubber([dataclasses.replace(rule, prefilter=None) for rule in BUILTIN_RULES])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_prefilters_change_nothing_but_speed(text: str) -> None:
    assert scrub(text) == WITHOUT_PREFILTERS.scrub(text)


# Prose without digits, '@', ':' or '=' (so no address, number or assignment), in lower case
# (no AKIA, AIza, eyJ) and without '-' or '_' (no sk-, hf_, xox...-).
PROSE = st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz \n,.;!?'\"()")))


@settings(max_examples=300, deadline=None)
@given(PROSE)
def test_prose_passes_unchanged(text: str) -> None:
    assume("bearer" not in text)
    assert scrub(text) == text


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from("23456"),
    st.text(alphabet="0123456789", min_size=14, max_size=14),
    st.sampled_from(["", " ", "-"]),
    PROSE,
    PROSE,
)
def test_any_luhn_valid_card_is_removed(
    first: str, middle: str, separator: str, before: str, after: str
) -> None:
    digits = with_check_digit(first + middle)
    number = separator.join(digits[i : i + 4] for i in range(0, 16, 4))
    text = f"{before} {number} {after}"
    scrubbed = scrub(text)
    assert number not in scrubbed
    assert "[REDACTED:" in scrubbed  # as a card, or as a bearer token after "bearer"


KEYLIKE = st.text(
    alphabet=st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    ),
    min_size=MIN_SECRET_LENGTH,
    max_size=64,
)


@settings(max_examples=300, deadline=None)
@given(KEYLIKE, TEXTS, TEXTS, st.sampled_from(list(Target)))
def test_a_secret_embedded_anywhere_is_removed(
    secret: str, before: str, after: str, target: Target
) -> None:
    assume(secret not in SECRET_REDACTION)
    scrubber = Scrubber(secrets=[secret])
    assert secret not in scrubber.scrub(before + secret + after, target)


def test_time_spent_waiting_is_not_spent_from_the_budget() -> None:
    # The telemetry thread waits for the interpreter's lock and for a core on a busy node: a
    # call whose scrubbing was held up longer than its whole budget still gets its values
    # scrubbed, not redacted whole (the budget is the thread's CPU time).
    scrubber = Scrubber(time_budget_s=0.05, call_budget_s=0.1)
    with scrubber.one_call():
        first = scrubber.scrub("mail jane@example.com")
        time.sleep(0.15)
        second = scrubber.scrub("call 415-555-2671")
    assert (first, second) == ("mail [REDACTED:email]", "call [REDACTED:phone]")
    assert scrubber.stats.timeouts == 0
