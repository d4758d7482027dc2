"""The a11i operator: kopf handlers that turn AgentBudgets into the namespaces' shared wallets in
Redis and report what was spent back into their status, and TelemetryPolicies into the
configuration the sidecars of a namespace mount.

Modules, and what each may do:

- ``settings``: ``OperatorSettings`` from the environment, built once in ``run.main``; no I/O.
- ``status``: the pure part. An AgentBudget's spec to a ``BudgetPolicy``, a wallet snapshot to a
  status, a phase transition to a Kubernetes Event. No kopf, no Redis, no clock of its own.
- ``budgets``: the AgentBudget handlers. The only module that talks to Redis; it talks to the
  Kubernetes API only through kopf (patches of the status, events).
- ``policy_config``: the pure part of TelemetryPolicy: a spec and the ConfigMaps and Secret it
  references to the generated sidecar configuration, or an error with a reason. No kopf, no I/O.
- ``policies``: the TelemetryPolicy handlers (and the watch of referenced ConfigMaps).
- ``kube``: the one client for Kubernetes objects kopf does not hand over (referenced
  ConfigMaps and Secrets, generated objects), over the official ``kubernetes`` client, off the
  event loop; its credentials (kubectl's: in-cluster, then the kubeconfig) are kopf's too.
- ``run``: configures kopf (progress storage under ``a11i.io``, finalizer, events, peering) and
  runs it with the handler modules, each registering its handlers with
  ``register(settings, registry)`` (none on import). ``__main__``: ``python -m a11i.operator``.

What the package may not do: read settings at import time, talk to the Kubernetes API except
through kopf and ``kube``, or own what the sidecars own (the wallet's spend: the operator
configures a wallet and reads it, it never charges or refunds it).
"""
