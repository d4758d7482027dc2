"""``CallOrigin``: what the agent said about its loop and trace, read from the request headers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from a11i.sidecar.call import H_CLAUDE_CODE_SESSION, H_REQUEST_IDS, H_SESSION, CallOrigin

_NAMES = st.sampled_from(
    [
        H_SESSION,
        H_CLAUDE_CODE_SESSION,
        *H_REQUEST_IDS,
        "traceparent",
        "tracestate",
        "X-Request-ID",
        "X-Client-Request-Id",
        "content-type",
        "authorization",
    ]
)


def _old_origin(headers: CIMultiDictProxy[str], started_ns: int) -> CallOrigin:
    """``CallOrigin.of`` as it was (a generator over the request id headers): the oracle."""
    return CallOrigin(
        started_ns=started_ns,
        session=headers.get(H_SESSION),
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        client_session=headers.get(H_CLAUDE_CODE_SESSION),
        request_id=next((headers[h] for h in H_REQUEST_IDS if h in headers), None),
    )


@given(pairs=st.lists(st.tuples(_NAMES, st.text(max_size=4)), max_size=8), started=st.integers())
@settings(max_examples=300, deadline=None)
def test_origin_reads_the_headers_as_before(pairs: list[tuple[str, str]], started: int) -> None:
    """Whatever headers are present, repeated or in any case (an empty request id counts)."""
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    assert CallOrigin.of(headers, started) == _old_origin(headers, started)


def test_origin_prefers_x_request_id() -> None:
    headers = CIMultiDictProxy(CIMultiDict([("X-Client-Request-Id", "b"), ("x-request-id", "a")]))
    assert CallOrigin.of(headers, 0).request_id == "a"
