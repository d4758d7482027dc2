"""a11i sidecar: the data plane and the library.

Subpackage ``sidecar.core`` is the pure core (parsing, counting, pricing, deciding): no I/O.
The modules beside it are thin adapters (the aiohttp proxy, settings, the command line).
"""

__version__ = "0.1.0"
