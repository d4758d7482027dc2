"""The fast path's answer head: what aiohttp's ``Response`` would write for the same answer."""

from __future__ import annotations

import pytest

from a11i.sidecar.fastpath import _head


def _lines(head: bytes) -> list[str]:
    text = head.decode()
    assert text.endswith("\r\n\r\n")
    return text[:-4].split("\r\n")


def test_a_whole_answer_has_its_length_and_aiohttps_date_and_server() -> None:
    lines = _lines(_head(200, [("Content-Type", "application/json")], 12, close=False))
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Type: application/json" in lines
    assert "Content-Length: 12" in lines
    assert any(line.startswith("Date: ") and line.endswith(" GMT") for line in lines)
    assert any(line.startswith("Server: Python/") and "aiohttp/" in line for line in lines)
    assert not any(line.startswith(("Connection:", "Transfer-Encoding:")) for line in lines)


def test_a_stream_is_chunked() -> None:
    lines = _lines(_head(200, [("Content-Type", "text/event-stream")], None, close=False))
    assert "Transfer-Encoding: chunked" in lines
    assert not any(line.startswith("Content-Length:") for line in lines)


def test_the_providers_date_and_server_are_kept_not_doubled() -> None:
    headers = [("Date", "Sun, 06 Dec 2026 10:00:00 GMT"), ("Server", "provider")]
    lines = _lines(_head(200, headers, 0, close=False))
    assert [line for line in lines if line.startswith(("Date:", "Server:"))] == [
        "Date: Sun, 06 Dec 2026 10:00:00 GMT",
        "Server: provider",
    ]


@pytest.mark.parametrize(
    ("length", "typed"),
    [(5, True), (0, False), (None, True)],
    ids=["a-body", "empty", "a-stream"],
)
def test_an_untyped_answer_with_a_body_is_an_octet_stream(length: int | None, typed: bool) -> None:
    lines = _lines(_head(200, [], length, close=False))
    assert ("Content-Type: application/octet-stream" in lines) is typed


@pytest.mark.parametrize("status", [204, 304])
def test_a_bodiless_status_has_no_length_and_no_type(status: int) -> None:
    lines = _lines(_head(status, [], 0, close=False))
    assert not any(line.startswith(("Content-Length:", "Content-Type:")) for line in lines)


def test_closing_is_said() -> None:
    assert "Connection: close" in _lines(_head(402, [], 3, close=True))


def test_an_unknown_status_has_an_empty_reason() -> None:
    assert _lines(_head(599, [], 0, close=False))[0] == "HTTP/1.1 599 "


@pytest.mark.parametrize(
    "header",
    [("x-a11i-pricing", "fallback; model=x\r\nx-injected: 1"), ("x\nbad", "v"), ("v", "a\rb")],
    ids=["crlf-in-value", "lf-in-name", "cr-in-value"],
)
def test_a_newline_in_a_header_is_never_written(header: tuple[str, str]) -> None:
    """Response splitting: aiohttp refuses such a header, and so does the fast path."""
    with pytest.raises(ValueError, match="newline"):
        _head(200, [header], 0, close=False)
