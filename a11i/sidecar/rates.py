"""Loading rate cards: the packaged built-in card and a user's card file.

Adapter: the only place that reads rate card bytes (the package resource once, a user's file
when asked) and turns YAML or JSON into data for the pure ``a11i.core.pricing`` parser. Every
failure, from a missing file to a bad price, comes out as ``RateCardError`` naming the file, so
the caller can refuse to start, or keep the card it had, and say why.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import yaml

from a11i.core.pricing import RateCard, RateCardError, parse_rate_card

log = logging.getLogger(__name__)

BUILTIN_SOURCE: Final = "<built-in a11i/sidecar/data/rate_card.yaml>"
_YAML_SUFFIXES: Final = frozenset({".yaml", ".yml"})


@cache
def builtin_rate_card() -> RateCard:
    """The rate card shipped in the package (``a11i/sidecar/data/rate_card.yaml``), read once."""
    resource = resources.files("a11i.sidecar") / "data" / "rate_card.yaml"
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise RateCardError(BUILTIN_SOURCE, "", f"cannot read it: {exc}") from exc
    return parse_rate_card(
        parse_text(text, source=BUILTIN_SOURCE, suffix=".yaml"), source=BUILTIN_SOURCE
    )


def load_rate_card_file(path: Path) -> RateCard:
    """A rate card from a file: a11i's YAML or LiteLLM's JSON, told apart by the suffix
    (``.json``, ``.yaml``/``.yml``), else by the content (JSON starts with ``{``)."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RateCardError(source, "", f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RateCardError(
            source, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    card = parse_rate_card(
        parse_text(text, source=source, suffix=path.suffix.lower()), source=source
    )
    report_unmodelled(card)
    return card


def report_unmodelled(card: RateCard) -> str | None:
    """Log, once per loaded card, the price fields it states that a11i does not model (a
    LiteLLM card's audio or image token prices, per-session tool fees, ...): they are not
    silently ignored. Returns the message, or None when there is nothing to report."""
    if not card.unmodelled:
        return None
    fields = ", ".join(f"{name} ({count})" for name, count in sorted(card.unmodelled.items()))
    message = (
        f"rate card {card.source}: price fields a11i does not model, ignored "
        f"(number of models stating each): {fields}"
    )
    log.warning("%s", message)
    return message


def parse_text(text: str, *, source: str, suffix: str = "") -> object:
    """YAML or JSON text as plain data; JSON numbers with a fraction become ``Decimal``."""
    if suffix == ".json" or (suffix not in _YAML_SUFFIXES and text.lstrip().startswith("{")):
        return _load_json(text, source)
    return _load_yaml(text, source)


def _load_json(text: str, source: str) -> object:
    try:
        # parse_float=Decimal: "2.5e-06" becomes Decimal("0.0000025"), never a binary float.
        data: object = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise RateCardError(
            source, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise RateCardError(source, "", "invalid JSON: nested too deeply") from exc
    return data


def _load_yaml(text: str, source: str) -> object:
    try:
        data: object = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise RateCardError(source, "", f"invalid YAML{where}: {exc.problem}") from exc
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: a scalar that looks like a timestamp but is no date ("2025-13-45").
        raise RateCardError(source, "", f"invalid YAML: {exc}") from exc
    return data
