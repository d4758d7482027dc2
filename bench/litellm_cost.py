"""LiteLLM's own cost calculator over answers a11i settled: the peer's figure for bench.cost.

Runs in a separate interpreter whose path holds the ``litellm`` package (bench.cost starts it
with ``A11I_BENCH_LITELLM_PATH`` as ``PYTHONPATH``); it never imports a11i. Reads JSON on
stdin, ``{"card": {...LiteLLM entries...}, "calls": [{"api", "model", "body"}]}``, registers
the card (so both sides price from the same numbers and only the calculators differ) and
prints one cost per call (a decimal string, or null where LiteLLM computes none) as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    import litellm  # type: ignore[import-not-found]
    from litellm.llms.anthropic.chat.transformation import (  # type: ignore[import-not-found]
        AnthropicConfig,
    )

    request = json.load(sys.stdin)
    litellm.register_model(request["card"])
    costs: list[str | None] = []
    for call in request["calls"]:
        body: dict[str, Any] = call["body"]
        try:
            if call["api"] == "anthropic":
                usage = AnthropicConfig().calculate_usage(
                    usage_object=body["usage"], reasoning_content=None
                )
                response = litellm.ModelResponse(model=call["model"], usage=usage)
                provider = "anthropic"
            elif call["api"] == "chat":
                response = litellm.ModelResponse(**body)
                provider = "openai"
            else:
                response = litellm.ResponsesAPIResponse(**body)
                provider = "openai"
            cost = litellm.completion_cost(
                completion_response=response, model=call["model"], custom_llm_provider=provider
            )
            costs.append(repr(float(cost)))
        except Exception as exc:  # a figure LiteLLM cannot compute is reported, not fatal
            print(f"litellm: {call['model']} ({call['api']}): {exc}", file=sys.stderr)
            costs.append(None)
    json.dump(costs, sys.stdout)


if __name__ == "__main__":
    main()
