"""The upstream client's parser of an answer's head gives what the parser it replaced gave.

The oracle is ``_parse_head`` as it was before issue 19 made it cheaper (one regular expression
over every field line, each name lowercased on every answer), copied here as it was: for every
head, valid or not, both return the same head, or both refuse it with the same message."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from a11i.sidecar import upstream
from a11i.sidecar.upstream import MAX_FIELDS, MAX_LINE, _Malformed, _parse_head

# -- the oracle: a11i/sidecar/upstream.py's _parse_head at de700b1 ---------------------------------
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n")
_FIELD_LINES = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_FRAMING = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-encoding", "content-type"}
)


@dataclass(frozen=True, slots=True)
class _OldHead:
    status: int
    fields: list[tuple[str, str]]
    encoding: str | None
    content_type: str
    length: int | None
    codings: list[str]
    keep_alive: bool


def _old_parse_head(data: bytes, end: int) -> _OldHead | None:
    text = data[:end].decode("utf-8", "surrogateescape")
    status_line = _STATUS_LINE.match(text)
    if status_line is None:
        first = text.split("\r\n", 1)[0][:40]
        raise _Malformed(f"the answer does not start with an HTTP/1.x status line: {first!r}")
    start = status_line.end()
    if start - 2 > MAX_LINE:
        raise _Malformed(f"the status line is longer than {MAX_LINE} bytes")
    if _FIELD_LINES.fullmatch(text, start) is None:
        raise _Malformed("a header line is malformed")
    status = int(status_line.group(2))
    if status < 200:
        if status == 101 or status < 100:
            raise _Malformed(f"an unexpected {status} answer")
        return None
    lines = text[start:-2].split("\r\n") if len(text) > start else []
    if len(lines) > MAX_FIELDS:
        raise _Malformed(f"more than {MAX_FIELDS} headers")
    long_lines = end - start > MAX_LINE
    fields: list[tuple[str, str]] = []
    encoding: str | None = None
    content_type: str | None = None
    length: int | None = None
    codings: list[str] = []
    close = False
    keep_alive = status_line.group(1) != "0"
    for line in lines:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        if long_lines and (len(name) > MAX_LINE or len(value) > MAX_LINE):
            raise _Malformed(f"a header is longer than {MAX_LINE} bytes")
        fields.append((name, value))
        lower = name.lower()
        if lower not in _FRAMING:
            continue
        if lower == "content-length":
            length = _old_content_length(value, length)
        elif lower == "transfer-encoding":
            codings.extend(c.strip(" \t").lower() for c in value.split(","))
        elif lower == "connection":
            tokens = {t.strip(" \t").lower() for t in value.split(",")}
            close = close or "close" in tokens
            keep_alive = keep_alive or "keep-alive" in tokens
        elif lower == "content-encoding":
            encoding = value.lower() if encoding is None else encoding
        elif content_type is None:
            content_type = value.split(";", 1)[0].strip(" \t").lower()
    if encoding in ("br", "zstd"):
        raise _Malformed(f"cannot decode Content-Encoding {encoding}")
    return _OldHead(
        status=status,
        fields=fields,
        encoding=encoding if encoding in ("gzip", "deflate") else None,
        content_type=content_type or "application/octet-stream",
        length=length,
        codings=codings,
        keep_alive=keep_alive and not close,
    )


def _old_content_length(value: str, known: int | None) -> int:
    lengths = {part.strip(" \t") for part in value.split(",")}
    if len(lengths) != 1:
        raise _Malformed(f"conflicting Content-Length {value!r}")
    (digits,) = lengths
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise _Malformed(f"Content-Length {value!r} is not a length")
    length = int(digits)
    if known is not None and known != length:
        raise _Malformed("conflicting Content-Length fields")
    return length


# -- the comparison ------------------------------------------------------------------------------
Outcome = tuple[object, ...] | None | str


def outcome(parse: object, data: bytes, end: int) -> Outcome:
    """What a parser makes of a head: its fields in order, None (a 1xx), or the refusal."""
    assert callable(parse)
    try:
        head = parse(data, end)
    except _Malformed as exc:
        return f"refused: {exc}"
    if head is None:
        return None
    return (
        head.status,
        head.fields,
        head.encoding,
        head.content_type,
        head.length,
        head.codings,
        head.keep_alive,
    )


def assert_same(head: bytes, after: bytes = b"\r\nbody") -> Outcome:
    """``head`` ends with the CRLF of its last line, as ``_feed_head`` passes it; ``after`` is
    what follows in the buffer, which neither parser may look at."""
    data = head + after
    # Twice: the second time every name of the head is among the ones seen before.
    for _ in range(2):
        wanted = outcome(_old_parse_head, data, len(head))
        assert outcome(_parse_head, data, len(head)) == wanted, head[:300]
    return wanted


OPENAI = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Sun, 06 Dec 2026 14:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 812\r\n"
    b"Connection: keep-alive\r\n"
    b"access-control-expose-headers: X-Request-ID\r\n"
    b"openai-organization: user-abcdefghijklmnop\r\n"
    b"openai-processing-ms: 512\r\n"
    b"openai-version: 2020-10-01\r\n"
    b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
    b"Server: cloudflare\r\n"
)

CORPUS = {
    "openai": OPENAI,
    "status-only": b"HTTP/1.1 200 OK\r\n",
    "no-reason": b"HTTP/1.1 204\r\n",
    "empty-reason": b"HTTP/1.1 200 \r\n",
    "http-1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n",
    "http-1.0-keep-alive": b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n",
    "close": b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n",
    "connection-list": b"HTTP/1.1 200 OK\r\nConnection: Upgrade,\t close \r\n",
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n"
    ),
    "codings-list": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, CHUNKED,\r\n",
    "te-and-length": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: GZip\r\nContent-Encoding: br\r\n",
    "brotli": b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n",
    "zstd": b"HTTP/1.1 200 OK\r\ncontent-encoding: zstd\r\n",
    "identity": b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\n",
    "type-params": b"HTTP/1.1 200 OK\r\nContent-Type: Application/JSON ; charset=utf-8\r\n",
    "two-types": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n",
    "empty-type": b"HTTP/1.1 200 OK\r\nContent-Type:\r\n",
    "length-spaces": b"HTTP/1.1 200 OK\r\nContent-Length: \t 12 \t\r\n",
    "length-list-same": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5 ,5\r\n",
    "length-list-differs": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n",
    "lengths-same": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 005\r\n",
    "lengths-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n",
    "length-empty": b"HTTP/1.1 200 OK\r\nContent-Length:\r\n",
    "length-sign": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n",
    "length-not-digits": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n",
    "length-unicode-digits": "HTTP/1.1 200 OK\r\nContent-Length: ٣\r\n".encode(),
    "length-19-digits": b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n",
    "length-18-digits": b"HTTP/1.1 200 OK\r\nContent-Length: 123456789012345678\r\n",
    "length-then-bad": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: x\r\n",
    "continue": b"HTTP/1.1 100 Continue\r\n",
    "early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n",
    "1xx-bad-length": b"HTTP/1.1 100 Continue\r\nContent-Length: x\r\n",
    "1xx-many": b"HTTP/1.1 100 Continue\r\n" + b"X: y\r\n" * 200,
    "1xx-bad-line": b"HTTP/1.1 100 Continue\r\nBad Name: y\r\n",
    "upgrade": b"HTTP/1.1 101 Switching Protocols\r\n",
    "status-099": b"HTTP/1.1 099 Low\r\n",
    "status-999": b"HTTP/1.1 999 High\r\n",
    "http2": b"HTTP/2 200 OK\r\n",
    "http-1.x": b"HTTP/1.x 200 OK\r\n",
    "not-http": b"ICY 200 OK\r\n",
    "lower-http": b"http/1.1 200 OK\r\n",
    "four-digit-status": b"HTTP/1.1 2000 OK\r\n",
    "two-digit-status": b"HTTP/1.1 20 OK\r\n",
    "tab-after-status": b"HTTP/1.1 200\tOK\r\n",
    "two-spaces": b"HTTP/1.1  200 OK\r\n",
    "nul-in-reason": b"HTTP/1.1 200 O\x00K\r\n",
    "obs-text-reason": b"HTTP/1.1 200 \xe2\x9c\x93 \xff\r\nX: \xc3\xa9\xfe\r\n",
    "bare-lf-status": b"HTTP/1.1 200 OK\nX: y\r\n",
    "bare-cr-status": b"HTTP/1.1 200 OK\rX: y\r\n",
    "no-colon": b"HTTP/1.1 200 OK\r\nNo colon here\r\n",
    "known-name-no-colon": b"HTTP/1.1 200 OK\r\nServer: a\r\nServer\r\n",
    "space-in-name": b"HTTP/1.1 200 OK\r\nBad Name: x\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n",
    "empty-name": b"HTTP/1.1 200 OK\r\n: x\r\n",
    "non-ascii-name": "HTTP/1.1 200 OK\r\nNämé: x\r\n".encode(),
    "obs-text-name": b"HTTP/1.1 200 OK\r\nN\xffme: x\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n",
    "obs-fold-tab": b"HTTP/1.1 200 OK\r\nX: a\r\n\tfolded\r\n",
    "nul": b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n",
    "del": b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n",
    "vertical-tab": b"HTTP/1.1 200 OK\r\nX: a\x0bb\r\n",
    "bare-cr-value": b"HTTP/1.1 200 OK\r\nX: a\rb\r\n",
    "bare-lf-value": b"HTTP/1.1 200 OK\r\nX: a\nb\r\n",
    "bare-lf-end": b"HTTP/1.1 200 OK\r\nX: a\n\r\n",
    "cr-cr-lf": b"HTTP/1.1 200 OK\r\nX: a\r\r\n",
    "tabs-and-spaces": b"HTTP/1.1 200 OK\r\nX:\t a b \t\r\nY:   \r\nZ:\r\n",
    "colons-in-value": b"HTTP/1.1 200 OK\r\nLocation: http://h:1/a:b\r\n",
    "token-chars": b"HTTP/1.1 200 OK\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n",
    "empty-line-inside": b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nZ: w\r\n",
    "nothing": b"\r\n",
    "long-status": b"HTTP/1.1 200 " + b"O" * MAX_LINE + b"\r\n",
    "status-at-limit": b"HTTP/1.1 200 " + b"O" * (MAX_LINE - 13) + b"\r\n",
    "long-status-bad-field": b"HTTP/1.1 200 " + b"O" * MAX_LINE + b"\r\nBad Name: x\r\n",
    "long-value": b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * (MAX_LINE + 1) + b"\r\n",
    "value-at-limit": b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * MAX_LINE + b"\r\n",
    "long-value-spaces": b"HTTP/1.1 200 OK\r\nX-Big:   " + b"v" * MAX_LINE + b"   \r\n",
    "long-name": b"HTTP/1.1 200 OK\r\n" + b"N" * (MAX_LINE + 1) + b": v\r\n",
    "long-multibyte": b"HTTP/1.1 200 OK\r\nX: " + "é".encode() * 5000 + b"\r\n",
    "many-short-then-long": (
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 2000 + b"Y: " + b"v" * 9000 + b"\r\n"
    ),
    "bad-length-then-long": (
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nX: " + b"v" * (MAX_LINE + 1) + b"\r\n"
    ),
    "long-then-bad-length": (
        b"HTTP/1.1 200 OK\r\nX: " + b"v" * (MAX_LINE + 1) + b"\r\nContent-Length: x\r\n"
    ),
    "long-then-brotli": (
        b"HTTP/1.1 200 OK\r\nX: " + b"v" * (MAX_LINE + 1) + b"\r\nContent-Encoding: br\r\n"
    ),
    "at-max-fields": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * MAX_FIELDS,
    "too-many": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_FIELDS + 1),
    "too-many-bad-length": b"HTTP/1.1 200 OK\r\n" + b"Content-Length: x\r\n" * 129,
}


@pytest.mark.parametrize("head", CORPUS.values(), ids=CORPUS.keys())
def test_a_head_is_read_as_before(head: bytes) -> None:
    assert_same(head)


def test_the_corpus_holds_answers_and_refusals() -> None:
    """The comparison would pass for two parsers that refuse everything: this one does not."""
    outcomes = [assert_same(head) for head in CORPUS.values()]
    assert sum(isinstance(o, tuple) for o in outcomes) >= 20
    assert sum(o is None for o in outcomes) >= 3
    assert len({o for o in outcomes if isinstance(o, str)}) >= 10
    openai = assert_same(OPENAI)
    assert isinstance(openai, tuple)
    assert openai[0] == 200
    assert openai[3:5] == ("application/json", 812)


def test_the_names_seen_are_bounded() -> None:
    for i in range(upstream._MAX_NAMES + 100):
        assert_same(b"HTTP/1.1 200 OK\r\nX-Name-%d: v\r\nContent-Length: 0\r\n" % i)
    assert len(upstream._NAMES) <= upstream._MAX_NAMES
    assert_same(b"HTTP/1.1 200 OK\r\nX-Name-Never-Seen: v\r\nBad Name: x\r\n")


# -- generated heads -----------------------------------------------------------------------------
STATUS_LINES = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.0 200 OK",
            b"HTTP/1.1 204",
            b"HTTP/1.1 304 Not Modified",
            b"HTTP/1.1 100 Continue",
            b"HTTP/1.1 103 ",
            b"HTTP/1.1 101 Switching",
            b"HTTP/1.1 429 Too Many Requests",
            b"HTTP/1.1 500 \xff\xfe",
            b"HTTP/1.9 200 OK",
            b"HTTP/2 200",
            b"HTTP/1.1 20",
        ]
    ),
    st.builds(
        lambda version, status, reason: b"HTTP/1.%b %b%b" % (version, status, reason),
        st.sampled_from([b"0", b"1", b"x"]),
        st.binary(min_size=3, max_size=3).map(lambda b: bytes(48 + c % 11 for c in b)),
        st.one_of(st.just(b""), st.binary(max_size=20).map(lambda r: b" " + r)),
    ),
)
NAMES = st.one_of(
    st.sampled_from(
        [
            "Content-Length",
            "content-length",
            "CONTENT-LENGTH",
            "Transfer-Encoding",
            "Connection",
            "Content-Encoding",
            "Content-Type",
            "content-type",
            "Date",
            "x-request-id",
            "Server",
            "Bad Name",
            "",
            " Folded",
            "\tFolded",
            "Nämé",
            "X\x00",
        ]
    ).map(lambda n: n.encode("utf-8")),
    st.text(alphabet="!#$%&'*+-.^_`|~09azAZ", min_size=1, max_size=12).map(str.encode),
)
VALUE_PIECES = st.sampled_from(
    [
        b"5",
        b"0",
        b"12",
        b"005",
        b"123456789012345678",
        b"1234567890123456789",
        b",",
        b" ",
        b"\t",
        b"chunked",
        b"gzip",
        b"deflate",
        b"br",
        b"zstd",
        b"identity",
        b"close",
        b"keep-alive",
        b"Keep-Alive",
        b"application/json",
        b";",
        b"charset=utf-8",
        b"\xc3\xa9",
        b"\xff",
        b"\x00",
        b"\x7f",
        b"\r",
        b"\n",
        b":",
        b"x",
        "٣".encode(),
    ]
)
VALUES = st.one_of(
    st.lists(VALUE_PIECES, max_size=6).map(b"".join),
    st.binary(max_size=12),
    st.integers(MAX_LINE - 2, MAX_LINE + 2).map(lambda n: b"v" * n),
)
LINES = st.one_of(
    st.builds(lambda name, value: name + b":" + value, NAMES, VALUES),
    st.builds(lambda name, value: name + b" :" + value, NAMES, VALUES),
    NAMES,
    st.binary(max_size=16),
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    status = draw(STATUS_LINES)
    lines = draw(st.lists(LINES, max_size=12))
    if draw(st.integers(0, 9)) == 0:  # around the limit on the number of fields
        lines += [b"X: y"] * draw(st.integers(MAX_FIELDS - 12, MAX_FIELDS + 2))
    return b"".join(line + b"\r\n" for line in [status, *lines])


@given(heads())
@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(OPENAI)
def test_a_generated_head_is_read_as_before(head: bytes) -> None:
    assert_same(head)


@given(st.binary(max_size=200))
@settings(max_examples=1000, deadline=None)
def test_any_bytes_after_a_status_line_are_read_as_before(rest: bytes) -> None:
    assert_same(b"HTTP/1.1 200 OK\r\n" + rest + b"\r\n")
    assert_same(rest + b"\r\n")
