"""``a11i cost FILE``: count and price a request body offline, no provider called.

The same plan the sidecar makes before forwarding a call (``Meter.plan``), printed for a person
or as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from a11i.core.dialects import parse_json_body
from a11i.core.errors import A11iError
from a11i.core.model import Dialect, JSONObject, usd
from a11i.sidecar.meter import load_meter


def run(file: str, *, dialect_name: str | None, rate_card: Path | None, as_json: bool) -> int:
    """Price the body in ``file`` (``-``: standard input); exit 0, or 1 with the reason on
    standard error when the body cannot be priced."""
    raw = sys.stdin.buffer.read() if file == "-" else _read(Path(file))
    try:
        body = parse_json_body(raw)
        dialect = Dialect(dialect_name) if dialect_name else guess_dialect(body)
        meter = load_meter(rate_card_path=rate_card)
        plan = meter.plan(dialect, body)
    except A11iError as exc:
        print(f"a11i cost: {exc.message}", file=sys.stderr)
        return 1
    result = {
        "dialect": dialect.value,
        "model": plan.request.model,
        "priced_as": plan.price.matched or "fallback",
        "input_tokens": plan.input.tokens,
        "input_tokens_exact": plan.input.exact,
        "max_output_tokens": plan.output_bound,
        "projected_cost_usd": usd(plan.projected_usd),
        "context_saturation_percent": str(plan.saturation_percent),
        "tool_results": len(plan.tool_results),
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        width = max(len(key) for key in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        if plan.price.is_fallback:
            print(f"note: {plan.request.model!r} is not on the rate card; fallback price used")
    return 0


def guess_dialect(body: JSONObject) -> Dialect:
    """The dialect a body is most likely for, when the caller did not say."""
    model = str(body.get("model", "")).lower()
    if "messages" in body:
        if "claude" in model or ("max_tokens" in body and "system" in body):
            return Dialect.ANTHROPIC_MESSAGES
        return Dialect.OPENAI_CHAT
    if "embedding" in model:
        return Dialect.OPENAI_EMBEDDINGS
    # The Responses API's "prompt" is a template object; a legacy completion's is text or ids.
    if isinstance(body.get("prompt"), str | list) and "input" not in body:
        return Dialect.OPENAI_COMPLETIONS
    return Dialect.OPENAI_RESPONSES


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"a11i cost: cannot read {path}: {exc.strerror}") from exc
