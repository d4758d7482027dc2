"""a11i: a budget guard and observability for the LLM traffic of AI agents.

The package's folders are its layers, each importing only the ones below it (import-linter
contracts in pyproject.toml hold them):

- ``a11i.cli``, ``a11i.up``: the ``a11i`` command and ``a11i up``; parsing and dispatch.
- ``a11i.operator``, ``a11i.dashboard``: the Kubernetes operator and webhook, the live dashboard
  (their dependencies are the ``a11i[operator]`` extra).
- ``a11i.library``: library mode, the sidecar's pipeline in-process for the official SDKs.
- ``a11i.sidecar``: the data plane: the proxy, its settings, wallets and telemetry.
- ``a11i.core``: the pure core: parsing, counting, pricing, deciding. No I/O.

Importing ``a11i`` imports nothing else: the version lives here, and library mode's names
(``instrument``, ``uninstrument``, ``budget``, ``wallet``, ...) load ``a11i.library`` when
first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a11i.library import (
        WalletAdmin,
        budget,
        instrument,
        instrument_client,
        uninstrument,
        uninstrument_client,
    )

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "budget",
    "instrument",
    "instrument_client",
    "uninstrument",
    "uninstrument_client",
    "wallet",
]

wallet: WalletAdmin


def __getattr__(name: str) -> object:
    """Library mode's names, loaded on first use (``a11i.instrument()``)."""
    if name in __all__ and name != "__version__":
        from a11i import library

        return getattr(library, name)
    raise AttributeError(f"module 'a11i' has no attribute {name!r}")
