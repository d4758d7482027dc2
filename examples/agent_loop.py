"""A minimal SRE agent loop that runs unchanged behind a11i.

The agent uses the official openai SDK as it always would; pointing OPENAI_BASE_URL at the
sidecar is the only change:

    make run                                           # the sidecar on 127.0.0.1:11000
    OPENAI_BASE_URL=http://127.0.0.1:11000/v1 OPENAI_API_KEY=sk-... python examples/agent_loop.py

Each turn prints what a11i decided and what the call cost. When the budget runs out, the SDK
raises an APIStatusError with status 402 and code ``budget_exceeded``, and the loop stops.
"""

from __future__ import annotations

import json
import os
import sys

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_pods",
            "description": "List the pods of a namespace with their status",
            "parameters": {
                "type": "object",
                "properties": {"namespace": {"type": "string", "description": "namespace"}},
                "required": ["namespace"],
            },
        },
    }
]


def get_pods(namespace: str) -> str:
    return json.dumps([{"name": f"{namespace}-checkout-7d9f", "status": "CrashLoopBackOff"}])


def main() -> int:
    client = openai.OpenAI(max_retries=0)
    model = os.environ.get("AGENT_MODEL", "gpt-4o-mini")
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are an SRE agent. Use tools, then answer briefly."},
        {"role": "user", "content": "Why is checkout failing in the shop namespace?"},
    ]
    for turn in range(1, 6):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=messages,
                tools=TOOLS,
                max_tokens=200,  # type: ignore[arg-type]
            )
        except openai.APIStatusError as error:
            print(f"turn {turn}: refused by a11i ({error.status_code}): {error.message}")
            return 1
        completion = raw.parse()
        print(
            f"turn {turn}: decision={raw.headers.get('x-a11i-decision')} "
            f"input_tokens={raw.headers.get('x-a11i-input-tokens')} "
            f"cost_usd={raw.headers.get('x-a11i-cost-usd')} "
            f"remaining_usd={raw.headers.get('x-a11i-budget-remaining-usd')}"
        )
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            print(f"answer: {message.content}")
            return 0
        for call in message.tool_calls:
            arguments = json.loads(call.function.arguments or "{}")  # type: ignore[union-attr]
            result = get_pods(str(arguments.get("namespace", "default")))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
