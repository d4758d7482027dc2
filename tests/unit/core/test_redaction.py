"""Held keys never reach the agent: whole bodies, headers, and streams split anywhere."""

from __future__ import annotations

import pytest

from a11i.core.redaction import REDACTED, Redactor

KEY = "sk-held-0123456789abcdef"
OTHER = "sk-ant-held-9876543210"


def test_bodies_and_headers_lose_every_held_key() -> None:
    redactor = Redactor((KEY, OTHER, None, "short"))
    body = f'{{"message": "Incorrect API key provided: {KEY}; also {OTHER}"}}'.encode()
    assert redactor.apply(body) == (
        b'{"message": "Incorrect API key provided: ' + REDACTED + b"; also " + REDACTED + b'"}'
    )
    assert redactor.headers([("x-echo", f"Bearer {KEY}"), ("x-ok", "short")]) == [
        ("x-echo", f"Bearer {REDACTED.decode()}"),
        ("x-ok", "short"),
    ]


def test_without_held_keys_nothing_changes() -> None:
    redactor = Redactor((None, None))
    assert not redactor
    stream = redactor.stream()
    assert stream.feed(b"data: sk-held\n\n") == b"data: sk-held\n\n"
    assert stream.flush() == b""


@pytest.mark.parametrize("split", range(1, 60), ids=lambda n: f"split-at-{n}")
def test_a_key_split_across_chunks_is_redacted(split: int) -> None:
    text = f'data: {{"content": "ok {KEY} ok"}}\n\n'.encode()
    stream = Redactor((KEY,)).stream()
    out = stream.feed(text[:split]) + stream.feed(text[split:]) + stream.flush()
    assert out == text.replace(KEY.encode(), REDACTED)


def test_chunks_that_end_an_event_are_relayed_whole() -> None:
    # Nothing is held back when a chunk cannot be the start of a key: no added delay.
    stream = Redactor((KEY,)).stream()
    assert stream.feed(b'data: {"a": 1}\n\n') == b'data: {"a": 1}\n\n'
    assert stream.feed(b"data: sk-he") == b"data: "
    assert stream.feed(b"llo\n\n") == b"sk-hello\n\n"
