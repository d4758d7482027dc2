"""The live dashboard (``a11i dashboard``): spend per namespace and agent, the emergency stop.

Modules, and what each may do:

- ``state``: the pure part. Events and wallet fields in, the page's view out (aggregates, burn
  rate, projected exhaustion), bounded in memory. No I/O, no clock, no aiohttp or Redis.
- ``auth``: tokens, signed session cookies, CSRF tokens. No I/O beyond reading token files.
- ``source``: the only module that talks to Redis (stream, wallets, actions).
- ``hub``: follows the stream through a source, folds it into the state, fans out to pages.
- ``server``: the aiohttp routes, the WebSocket, ``main`` (settings are built there only).
- ``static/``: the page (plain JS modules); ``static/vendor/`` is filled by
  ``build-assets.sh`` with the pinned chart library (uPlot).
"""
