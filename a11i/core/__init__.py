"""The pure core of a11i: request parsing, token counting, pricing, analysis and decisions.

Nothing in this package performs I/O: no sockets, no files read per call, no servers, no
exporters, no clocks it was not handed. Adapters around it (``a11i.sidecar.proxy``,
``a11i.sidecar.settings``) feed it typed values and apply what it returns. An import-linter contract
in pyproject.toml keeps it that way.
"""
