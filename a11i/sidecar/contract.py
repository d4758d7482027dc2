"""What the sidecar and whoever starts it agree on: the variables it reads, its port and its own
endpoints. The injection webhook and the TelemetryPolicy reconciler write these names into pod
specs and ConfigMaps; the sidecar's settings read them. Defined once, here.

Constants only: no parsing (``a11i.sidecar.settings``), no I/O.
"""

from __future__ import annotations

from typing import Final

#: The port the proxy listens on (on the pod's loopback), and its variable.
PORT: Final = "A11I_PORT"
DEFAULT_PORT: Final = 11000
#: The metrics-only listener (no proxying, nothing that spends) a cluster's Prometheus scrapes.
METRICS_PORT: Final = "A11I_METRICS_PORT"
DEFAULT_METRICS_PORT: Final = 11090
#: The name of that port on the injected container (the chart's PodMonitor selects it).
METRICS_PORT_NAME: Final = "a11i-metrics"
#: Whose wallet and whose attribution (the injector sets them from the downward API).
NAMESPACE: Final = "A11I_NAMESPACE"
AGENT: Final = "A11I_AGENT"
#: The project a call is attributed to (default: the namespace).
PROJECT: Final = "A11I_PROJECT"
#: The shared wallet and event stream; absent: the embedded SQLite file at ``WALLET_FILE``.
REDIS_URL: Final = "A11I_REDIS_URL"
WALLET_FILE: Final = "A11I_WALLET_FILE"
#: An agent's own budget inside its namespace's (USD, a decimal string).
AGENT_BUDGET_USD: Final = "A11I_AGENT_BUDGET_USD"
#: Admission (docs/budget.md): fit the output cap to the wallet (a switch), the smallest cap worth
#: forwarding (tokens), the seconds a call waits for held money (0: never). An AgentBudget's
#: ``spec.admission`` reaches the sidecar through these.
BUDGET_FIT_OUTPUT_CAP: Final = "A11I_BUDGET_FIT_OUTPUT_CAP"
BUDGET_MIN_OUTPUT_TOKENS: Final = "A11I_BUDGET_MIN_OUTPUT_TOKENS"
BUDGET_ADMISSION_WAIT: Final = "A11I_BUDGET_ADMISSION_WAIT"
#: Key custody: files holding the provider keys (a Secret mounted into the sidecar alone).
OPENAI_API_KEY_FILE: Final = "A11I_OPENAI_API_KEY_FILE"
ANTHROPIC_API_KEY_FILE: Final = "A11I_ANTHROPIC_API_KEY_FILE"
#: ``METHOD /path-glob`` patterns, comma separated, forwarded unmetered under key custody.
ALLOW_UNMETERED: Final = "A11I_ALLOW_UNMETERED"
#: Where the sidecar sends each dialect's calls (the chart's ``sidecar.upstreams.*``).
OPENAI_BASE: Final = "A11I_OPENAI_BASE"
ANTHROPIC_BASE: Final = "A11I_ANTHROPIC_BASE"
#: a11i.yaml and the rate card, mounted from ConfigMaps.
CONFIG: Final = "A11I_CONFIG"
RATE_CARD: Final = "A11I_RATE_CARD"
#: Prompt and completion text in the telemetry (scrubbed), and decision logs: switches.
CAPTURE_CONTENT: Final = "A11I_CAPTURE_CONTENT"
DECISION_LOGS: Final = "A11I_DECISION_LOGS"

#: The sidecar's own endpoints.
HEALTHZ: Final = "/a11i/healthz"
READYZ: Final = "/a11i/readyz"
BUDGET: Final = "/a11i/budget"
EVENTS: Final = "/a11i/events"
METRICS: Final = "/a11i/metrics"
