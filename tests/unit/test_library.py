"""Library mode's adapters without a provider: which calls are metered, how settings are read,
how transports are wrapped and given back."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx2
import pytest

from a11i import library
from a11i.core.errors import SettingsError, WalletUnavailable
from a11i.core.model import Dialect
from a11i.sidecar.pipeline import StreamCut, UpstreamError


@pytest.mark.parametrize(
    ("method", "url", "dialect"),
    [
        pytest.param(
            "POST", "https://api.openai.com/v1/chat/completions", Dialect.OPENAI_CHAT, id="chat"
        ),
        pytest.param(
            "POST", "https://api.openai.com/v1/responses", Dialect.OPENAI_RESPONSES, id="responses"
        ),
        pytest.param(
            "POST",
            "https://api.openai.com/v1/embeddings",
            Dialect.OPENAI_EMBEDDINGS,
            id="embeddings",
        ),
        pytest.param(
            "POST",
            "https://api.anthropic.com/v1/messages",
            Dialect.ANTHROPIC_MESSAGES,
            id="messages",
        ),
        pytest.param(
            "POST", "http://127.0.0.1:9/v1//chat/completions/", Dialect.OPENAI_CHAT, id="spelling"
        ),
        pytest.param("GET", "https://api.openai.com/v1/models", None, id="models-free"),
        pytest.param(
            "POST", "https://api.anthropic.com/v1/messages/count_tokens", None, id="count-free"
        ),
        pytest.param("POST", "https://api.openai.com/v1/files", None, id="unmetered"),
        pytest.param("GET", "https://api.openai.com/v1/chat/completions", None, id="wrong-method"),
    ],
)
def test_only_metered_calls_go_through_the_pipeline(
    method: str, url: str, dialect: Dialect | None
) -> None:
    request = httpx2.Request(method, url, headers={"x-a11i-session": "loop-1"}, content=b"{}")
    inbound = library._inbound(request, b"{}")
    if dialect is None:
        assert inbound is None
        return
    assert inbound is not None
    assert inbound.route.dialect is dialect
    # The call goes where the client sends it, spelled as the client spelled it.
    assert inbound.url == url
    assert inbound.base == url.split("/v1", 1)[0]
    assert inbound.headers["X-A11I-Session"] == "loop-1"
    assert not inbound.hung_up()


def test_keyword_overrides_stand_for_a11i_variables() -> None:
    settings = library._settings(
        {"budget_usd": 5, "namespace": "ci", "agent": "nightly"},
        {"A11I_NAMESPACE": "from-env", "A11I_WALLET_FILE": ":memory:"},
    )
    assert settings.namespace == "ci"
    assert settings.agent == "nightly"
    assert str(settings.budget.limit_usd) == "5"


def test_an_upstream_failure_gives_back_the_httpx_error_behind_it() -> None:
    original = httpx2.ConnectTimeout("too slow")
    wrapped = library._upstream_error(original)
    assert wrapped.timeout
    wrapped.__cause__ = original  # as `raise ... from` sets it
    cut = StreamCut("cut")
    cut.__cause__ = wrapped
    assert library._transport_error(cut) is original
    assert library._transport_error(UpstreamError("no httpx behind it")) is None


def test_a_client_is_wrapped_once_and_given_back_its_transports() -> None:
    own = httpx2.HTTPTransport()
    proxied = httpx2.HTTPTransport()
    client = httpx2.Client(transport=own, mounts={"http://proxied.example": proxied})
    library.instrument_client(client)
    library.instrument_client(client)
    assert isinstance(client._transport, library.MeteredTransport)
    assert client._transport.wrapped is own
    (mounted,) = client._mounts.values()
    assert isinstance(mounted, library.MeteredTransport)
    assert mounted.wrapped is proxied
    library.uninstrument()  # not instrumented: only the transports are given back
    assert client._transport is own
    assert list(client._mounts.values()) == [proxied]
    client.close()


async def test_an_async_client_gets_the_async_transport() -> None:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(lambda _r: httpx2.Response(204)))
    library.instrument_client(client)
    assert isinstance(client._transport, library.AsyncMeteredTransport)
    # Not instrumented: the wrapped transport passes every call through untouched.
    assert (await client.post("http://x.example/v1/chat/completions", json={})).status_code == 204
    library.uninstrument()
    await client.aclose()


def test_what_has_no_httpx_client_is_refused() -> None:
    with pytest.raises(TypeError, match="no httpx client"):
        library.instrument_client(object())


def test_budget_before_instrument_says_so() -> None:
    with pytest.raises(library.LibraryError, match="instrument"):
        library.budget()


def test_a_client_left_unmetered_stays_so() -> None:
    own = httpx2.HTTPTransport()
    client = httpx2.Client(transport=own)
    library.instrument_client(client)
    library.uninstrument_client(client)
    assert client._transport is own
    library.instrument_client(client)  # what instrument() does to every client it finds
    assert client._transport is own
    library.uninstrument()
    library.instrument_client(client)  # a new instrumentation starts afresh
    assert isinstance(client._transport, library.MeteredTransport)
    library.uninstrument()
    client.close()


def test_settings_that_cannot_be_used_leave_nothing_running(tmp_path: Path) -> None:
    threads = set(threading.enumerate())
    with pytest.raises(SettingsError):
        library.instrument(env={"A11I_BUDGET_USD": "five dollars"})
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(WalletUnavailable):
        library.instrument(env={"A11I_WALLET_FILE": str(blocked / "wallets.sqlite")})
    assert set(threading.enumerate()) == threads
    with pytest.raises(library.LibraryError):
        library.budget()
