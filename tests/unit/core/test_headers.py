"""The header allow-list and key custody."""

from __future__ import annotations

from a11i.core.headers import (
    KeyCustody,
    downstream_headers,
    provider_for_unmetered,
    upstream_headers,
)
from a11i.core.model import Provider

AGENT = [
    ("Authorization", "Bearer sk-agent-own"),
    ("Content-Type", "application/json"),
    ("Content-Length", "42"),
    ("Connection", "keep-alive"),
    ("Cookie", "session=secret"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("OpenAI-Organization", "org-1"),
    ("X-Stainless-Lang", "python"),
    ("Host", "127.0.0.1:11000"),
]


def test_only_allowed_headers_go_upstream() -> None:
    names = [name for name, _ in upstream_headers(AGENT, Provider.OPENAI, KeyCustody())]
    assert names == [
        "Authorization",
        "Content-Type",
        "OpenAI-Organization",
        "X-Stainless-Lang",
    ]


def test_custody_replaces_the_agents_key() -> None:
    custody = KeyCustody(openai_key="sk-held", anthropic_key="sk-ant-held")
    headers = dict(upstream_headers(AGENT, Provider.OPENAI, custody))
    assert headers["Authorization"] == "Bearer sk-held"
    anthropic = dict(
        upstream_headers(
            [("x-api-key", "own"), ("anthropic-version", "2023-06-01")], Provider.ANTHROPIC, custody
        )
    )
    assert anthropic == {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-held"}


def test_custody_repr_never_shows_a_key() -> None:
    custody = KeyCustody(openai_key="sk-secret-1", anthropic_key=None)
    assert "sk-secret" not in repr(custody)
    assert "openai" in repr(custody)


def test_hop_by_hop_and_framing_headers_do_not_come_back() -> None:
    upstream = [
        ("Content-Type", "text/event-stream"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "10"),
        ("Keep-Alive", "timeout=5"),
        ("x-request-id", "req_1"),
    ]
    assert downstream_headers(upstream) == [
        ("Content-Type", "text/event-stream"),
        ("x-request-id", "req_1"),
    ]


def test_provider_of_an_unmetered_call() -> None:
    assert provider_for_unmetered({"anthropic-version": "2023-06-01"}) is Provider.ANTHROPIC
    assert provider_for_unmetered({"X-Api-Key": "k"}) is Provider.ANTHROPIC
    assert provider_for_unmetered({"Authorization": "Bearer k"}) is Provider.OPENAI
