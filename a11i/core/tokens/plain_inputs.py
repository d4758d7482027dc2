"""Inputs without a message format: a string, strings, token ids or lists of token ids (the
embeddings input and the legacy completions prompt). Texts are encoded, token ids counted as
given: OpenAI bills exactly these tokens, with no per-message overhead.

Pure: adds to a ``Tally``.
"""

from __future__ import annotations

from a11i.core.model import JSONValue
from a11i.core.tokens.encoding import Tally, Text


def count_plain_input(tally: Tally, text: Text, input: JSONValue) -> None:
    """Tokens of a string, strings, token ids or lists of token ids; other shapes by their JSON."""
    if isinstance(input, str):
        tally.add(text.count(input))
    elif isinstance(input, list):
        for item in input:
            if isinstance(item, str):
                tally.add(text.count(item))
            elif _is_token_id(item):
                tally.add(1)
            elif isinstance(item, list) and all(_is_token_id(i) for i in item):
                tally.add(len(item))
            else:
                tally.add(text.json(item), exact=False)
    elif input is not None:
        tally.add(text.json(input), exact=False)


def _is_token_id(value: JSONValue) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
