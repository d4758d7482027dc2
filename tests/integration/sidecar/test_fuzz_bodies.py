"""Mutated request bodies against a running sidecar: it answers every one, never with a 500."""

from __future__ import annotations

import copy
import json
import random

import aiohttp
import pytest

from tests.integration.conftest import RunningSidecar
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

VALID = {
    "/v1/chat/completions": {
        "model": "gpt-4o",
        "max_tokens": 20,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    },
    "/v1/responses": {"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": ["a", "b"]},
    "/v1/messages": {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    },
}
ODD_VALUES: list[object] = [
    None,
    True,
    0,
    -1,
    2**63,
    1.5,
    float("1e308"),
    "",
    "x" * 10_000,
    "\u0000\ud7ff",
    [],
    {},
    [None],
    {"": None},
    [[[]]],
    "<|endoftext|>",
]


def mutate(value: object, rng: random.Random, depth: int = 0) -> object:
    """One random edit somewhere in a JSON value: replace, delete, or nest."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        choice = rng.random()
        if choice < 0.3:
            del value[key]
        elif choice < 0.6 or depth > 6:
            value[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            value[key] = mutate(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        value[index] = mutate(value[index], rng, depth + 1)
        return value
    return copy.deepcopy(rng.choice(ODD_VALUES))


@pytest.mark.parametrize("path", list(VALID), ids=lambda p: p.rsplit("/", 1)[-1])
async def test_mutated_bodies_never_crash_the_sidecar(
    sidecar: RunningSidecar, standin: StandIn, path: str
) -> None:
    rng = random.Random(f"a11i-{path}")
    headers = {"Authorization": "Bearer k", "x-api-key": "k", "anthropic-version": "2023-06-01"}
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(150):
            body = copy.deepcopy(VALID[path])
            for _ in range(rng.randint(1, 3)):
                body = mutate(body, rng)
            async with http.post(
                sidecar.url + path, data=json.dumps(body), headers=headers
            ) as response:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                payload = await response.json()
                if response.status == 400:
                    # Refused by a11i in the dialect's shape, or by the provider: either way it
                    # says what is wrong.
                    assert payload
    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 400, 401, 404, 413, 422}, statuses
    snapshot = await sidecar.sidecar.wallet.snapshot()
    assert snapshot.reserved_usd == 0
