"""Wallet backends: ``base`` (the interface the proxy needs and the snapshot every backend
reports), ``memory`` (one process), ``nested`` (an agent's own wallet inside its namespace's),
``sqlite`` (a file every sidecar on a machine shares; the embedded default) and ``redis`` (shared
by every sidecar of a namespace, across pods). Each backend applies the pure rules of
``a11i.core.wallets`` atomically; none imports another backend.
"""
