"""`a11i cost`: which dialect a body is priced as when the caller does not say."""

from __future__ import annotations

import pytest

from a11i.core.model import Dialect, JSONObject
from a11i.sidecar.cost import guess_dialect


@pytest.mark.parametrize(
    ("body", "dialect"),
    [
        ({"model": "gpt-4o", "messages": []}, Dialect.OPENAI_CHAT),
        (
            {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": []},
            Dialect.ANTHROPIC_MESSAGES,
        ),
        ({"model": "text-embedding-3-small", "input": "x"}, Dialect.OPENAI_EMBEDDINGS),
        ({"model": "gpt-3.5-turbo-instruct", "prompt": "x"}, Dialect.OPENAI_COMPLETIONS),
        ({"model": "davinci-002", "prompt": [[1, 2], [3]]}, Dialect.OPENAI_COMPLETIONS),
        # The Responses API's "prompt" is a reusable template object, not text.
        ({"model": "gpt-5", "prompt": {"id": "pmpt_1"}}, Dialect.OPENAI_RESPONSES),
        ({"model": "gpt-5", "input": "x"}, Dialect.OPENAI_RESPONSES),
    ],
    ids=[
        "chat",
        "anthropic",
        "embeddings",
        "completion",
        "completion-token-ids",
        "responses-template",
        "responses",
    ],
)
def test_guess_dialect(body: JSONObject, dialect: Dialect) -> None:
    assert guess_dialect(body) is dialect
