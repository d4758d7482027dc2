"""The one form of a path, and which requests are metered, free or unmetered."""

from __future__ import annotations

import pytest

from a11i.core.errors import BadRequest
from a11i.core.model import Dialect, Provider
from a11i.core.routes import Access, allowed_unmetered, canonical_path, route


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("//v1/chat/completions", "/v1/chat/completions"),
        ("/v1//chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions/", "/v1/chat/completions"),
        ("/v1/./chat/completions", "/v1/chat/completions"),
        ("/v1/x/../chat/completions", "/v1/chat/completions"),
        ("/../../v1/messages", "/v1/messages"),
        ("/v1%2Fchat%2Fcompletions", "/v1/chat/completions"),
        ("/v1/chat%2fcompletions", "/v1/chat/completions"),
        ("/v1%252Fchat%252Fcompletions", "/v1/chat/completions"),
        ("/v1/%2E%2E/v1/messages", "/v1/messages"),
        ("\\v1\\messages", "/v1/messages"),
        ("/v1/chat/completions?api-version=1&x=/../", "/v1/chat/completions"),
        ("http://api.openai.com/v1/chat/completions?x=1", "/v1/chat/completions"),
        ("https://api.anthropic.com", "/"),
        ("", "/"),
        ("/", "/"),
        ("/v1/models/gpt-4o%3Amini", "/v1/models/gpt-4o:mini"),
    ],
    ids=[
        "plain",
        "leading-double-slash",
        "inner-double-slash",
        "trailing-slash",
        "dot-segment",
        "dot-dot-segment",
        "dot-dot-above-root",
        "encoded-slashes",
        "lower-case-encoded-slash",
        "double-encoded-slashes",
        "encoded-dot-dot",
        "backslashes",
        "query-dropped",
        "absolute-form",
        "absolute-form-no-path",
        "empty",
        "root",
        "encoded-colon-kept-decoded",
    ],
)
def test_canonical_path(target: str, canonical: str) -> None:
    assert canonical_path(target) == canonical


@pytest.mark.parametrize(
    "target",
    ["/v1/chat/completions%00", "/v1/chat%0acompletions", "/v1%25252525252Fx"],
    ids=["nul", "newline", "encoded-five-times"],
)
def test_a_path_no_server_could_mean_is_400(target: str) -> None:
    with pytest.raises(BadRequest):
        canonical_path(target)
    # Routes are remembered; a refusal is not: the same target is refused every time.
    for _ in range(2):
        with pytest.raises(BadRequest):
            route("POST", target)


def test_a_remembered_route_is_the_route() -> None:
    first = route("POST", "/v1/chat/completions?x=1")
    assert route("POST", "/v1/chat/completions?x=1") is first
    assert first.dialect is Dialect.OPENAI_CHAT
    # Another method on the same target is routed on its own.
    assert route("GET", "/v1/chat/completions?x=1").access is Access.FREE


@pytest.mark.parametrize(
    ("method", "target", "dialect", "forwarded"),
    [
        ("POST", "/v1/chat/completions", Dialect.OPENAI_CHAT, "/v1/chat/completions"),
        ("POST", "//v1/chat/completions/", Dialect.OPENAI_CHAT, "/v1/chat/completions"),
        ("POST", "/V1/Chat/Completions", Dialect.OPENAI_CHAT, "/v1/chat/completions"),
        ("post", "/v1/responses", Dialect.OPENAI_RESPONSES, "/v1/responses"),
        ("POST", "/v1/embeddings", Dialect.OPENAI_EMBEDDINGS, "/v1/embeddings"),
        ("POST", "/v1//completions/", Dialect.OPENAI_COMPLETIONS, "/v1/completions"),
        ("POST", "//v1/messages", Dialect.ANTHROPIC_MESSAGES, "/v1/messages"),
        ("POST", "/openai/v1/chat/completions", Dialect.OPENAI_CHAT, "/openai/v1/chat/completions"),
        ("POST", "/openai/responses?api-version=x", Dialect.OPENAI_RESPONSES, "/openai/responses"),
    ],
    ids=["chat", "chat-variant", "chat-upper-case", "responses", "embeddings", "completions",
         "messages",
         "azure-v1", "azure-responses"],
)  # fmt: skip
def test_metered_routes(method: str, target: str, dialect: Dialect, forwarded: str) -> None:
    found = route(method, target)
    assert found.access is Access.METERED
    assert found.dialect is dialect
    assert found.path == forwarded
    assert not found.method_not_allowed


def test_an_azure_deployment_route_names_its_deployment_as_written() -> None:
    found = route("POST", "/openai//deployments/Prod-4o/Chat/Completions?api-version=2024-10-21")
    assert found.access is Access.METERED
    assert found.dialect is Dialect.OPENAI_CHAT
    assert found.deployment == "Prod-4o"
    assert found.azure
    assert found.path == "/openai/deployments/Prod-4o/chat/completions"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("PUT", "/v1/chat/completions"),
        ("DELETE", "//v1/messages"),
        ("GET", "/v1/messages"),
        ("PATCH", "/v1/responses/"),
        ("GET", "/v1/embeddings"),
        ("PUT", "/openai/deployments/d/chat/completions"),
    ],
    ids=["put-chat", "delete-messages", "get-messages", "patch-responses", "get-embeddings",
         "put-azure"],
)  # fmt: skip
def test_a_metered_path_with_another_method_is_405(method: str, target: str) -> None:
    found = route(method, target)
    assert found.access is Access.UNMETERED
    assert found.method_not_allowed
    assert found.allowed == ("POST",)


@pytest.mark.parametrize(
    ("method", "target", "forwarded", "provider"),
    [
        ("GET", "/v1/models", "/v1/models", None),
        ("GET", "/v1/models/gpt-4o", "/v1/models/gpt-4o", None),
        ("GET", "//V1/Models/Claude-X/", "/v1/models/Claude-X", None),
        ("HEAD", "/", "/", None),
        ("POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens", Provider.ANTHROPIC),
        ("POST", "/v1/responses/input_tokens", "/v1/responses/input_tokens", Provider.OPENAI),
        ("GET", "/v1/responses/resp_1", "/v1/responses/resp_1", Provider.OPENAI),
        ("GET", "/v1/chat/completions", "/v1/chat/completions", Provider.OPENAI),
    ],
    ids=["models", "model", "model-variant", "head-root", "count-tokens", "input-tokens",
         "stored-response", "stored-completions"],
)  # fmt: skip
def test_free_routes(method: str, target: str, forwarded: str, provider: Provider | None) -> None:
    found = route(method, target)
    assert found.access is Access.FREE
    assert found.path == forwarded
    assert found.provider is provider


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/v1/batches"),
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/audio/speech"),
        ("POST", "/v1/messages/batches"),
        ("POST", "/v1/chat/completions/../../batches"),
        ("POST", "/v1/responses/resp_1/cancel"),
        ("DELETE", "/v1/models/gpt-4o"),
        ("POST", "/v1/models"),
        ("POST", "/openai/deployments/d/images/generations"),
        ("GET", "/v1/files"),
        ("POST", "/v2/chat/completions"),
    ],
    ids=["batches", "images", "speech", "anthropic-batches", "dot-dot-to-batches",
         "cancel", "delete-model", "post-models", "azure-images", "files", "other-version"],
)  # fmt: skip
def test_everything_else_is_unmetered(method: str, target: str) -> None:
    found = route(method, target)
    assert found.access is Access.UNMETERED
    assert not found.method_not_allowed


@pytest.mark.parametrize(
    ("method", "path", "patterns", "allowed"),
    [
        ("GET", "/v1/files", ["GET /v1/files*"], True),
        ("GET", "/v1/files/file-1/content", ["GET /v1/files*"], True),
        ("POST", "/v1/files", ["GET /v1/files*"], False),
        ("DELETE", "/v1/files/f", ["* /v1/files/*"], True),
        ("POST", "/v1/batches", ["GET /v1/files*", "POST /v1/batches"], True),
        ("POST", "/v1/batches", [], False),
        ("POST", "/v1/batches", ["POST //v1//batches/"], True),
        ("POST", "/v1/batches/x", ["POST /v1/batches"], False),
    ],
    ids=["glob", "glob-deep", "other-method", "any-method", "second-pattern", "none",
         "pattern-canonicalised", "exact-only"],
)  # fmt: skip
def test_allowed_unmetered(method: str, path: str, patterns: list[str], allowed: bool) -> None:
    assert allowed_unmetered(method, path, patterns) is allowed
