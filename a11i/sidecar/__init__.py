"""The sidecar: the data plane around the pure core.

``proxy`` (the aiohttp reverse proxy) and ``app`` (its wiring from the settings), ``call`` (the
record of one metered call, built up as the call goes), ``settings`` (the environment) and
``config`` (a11i.yaml), ``rates``, ``encodings`` and ``meter`` (the rate card, the tokenizer files
and the meter made of them), ``wallets/`` (memory, SQLite, Redis) and ``telemetry/`` (traces,
metrics, events, attributes, the conventions' names).

What the package may not do: import the operator, the dashboard or the command line, or read
the environment anywhere but ``settings`` (called once by an entry point).
"""
