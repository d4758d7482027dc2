"""a11i: a budget guard and observability for the LLM traffic of AI agents.

The package's folders are its layers, each importing only the ones below it (import-linter
contracts in pyproject.toml hold them):

- ``a11i.cli``, ``a11i.up``: the ``a11i`` command and ``a11i up``; parsing and dispatch.
- ``a11i.operator``, ``a11i.dashboard``: the Kubernetes operator and webhook, the live dashboard
  (their dependencies are the ``a11i[operator]`` extra).
- ``a11i.sidecar``: the data plane: the proxy, its settings, wallets and telemetry.
- ``a11i.core``: the pure core: parsing, counting, pricing, deciding. No I/O.

Importing ``a11i`` imports nothing else: the version lives here, and library mode hands its
names on from here.
"""

__version__ = "0.1.0"
