"""What the injection webhook does to a pod: the pure part.

A pod (as the admission request carries it), the labels of its namespace and the
:class:`InjectionSettings` go in; either an :class:`Injection` (the JSONPatch operations that add
the ``a11i-proxy`` sidecar and point the app containers at it) or a :class:`Skip` (why the pod is
admitted unchanged) comes out, each with the warnings the user who created the pod should read.

The decision, in order:

1. never in ``kube-system`` or the operator's own namespace;
2. the pod's ``a11i.io/inject`` annotation: ``"false"`` always wins, ``"true"`` asks;
3. else the namespace label ``a11i.io/inject=enabled`` asks;
4. not twice (``a11i.io/status: injected``, or an ``a11i-proxy`` container already there);
5. not host-network pods (the proxy's loopback port would be the node's);
6. a spec this module cannot patch is admitted unchanged, with a warning (never refused).

A pod that a per-agent AgentBudget of its namespace selects (``agentSelector``) gets that
budget's ``perAgentLimit`` (or its ``limit``) as ``A11I_AGENT_BUDGET_USD``: its sidecar keeps a
wallet of its own inside the namespace's. Selected by several, the smallest limit applies.

Key custody: the ``keyCustody`` of the namespace's wallet owner (the oldest namespace-wide
AgentBudget), else the cluster-wide default of the settings, names a Secret of provider keys.
It is mounted into the ``a11i-proxy`` container alone (files, read-only; never an env var,
never in an app container) and named by ``A11I_OPENAI_API_KEY_FILE`` /
``A11I_ANTHROPIC_API_KEY_FILE``; the app containers get a placeholder key when they set none.

Admission (``spec.admission``: fit the output cap to the wallet, its floor, the wait for held
money) is resolved field by field: the per-agent AgentBudget that gives the pod its limit, else
the namespace's wallet owner, else the cluster-wide default of the settings; a field none of them
sets is left to the sidecar's own default. The result is the sidecar's ``A11I_BUDGET_*`` env.

What it may not do: I/O of any kind, kopf, a clock, or raise on any input (a bad pod is a
:class:`Skip`, never an exception: a webhook that raises refuses the pod).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, TypedDict

from a11i.operator.policy_config import is_object_name
from a11i.sidecar import contract
from a11i.sidecar.redis_clients import RedisMode

#: Pod annotation: ``"true"`` asks for the sidecar, ``"false"`` refuses it whatever the namespace.
INJECT: Final = "a11i.io/inject"
#: Namespace label value that asks for the sidecar in every pod of the namespace.
NAMESPACE_LABEL: Final = "a11i.io/inject"
ENABLED: Final = "enabled"
#: Pod annotation the webhook sets; ``injected`` makes a second admission change nothing.
STATUS: Final = "a11i.io/status"
INJECTED: Final = "injected"
#: Pod annotation: comma-separated names of the app containers that get the base URLs.
CONTAINERS: Final = "a11i.io/containers"
#: Pod annotation: ``"true"`` replaces base URLs the user set in a container's env.
OVERRIDE_ENV: Final = "a11i.io/override-env"
#: Pod annotations overriding the proxy's CPU request and memory (request and limit).
PROXY_CPU: Final = "a11i.io/proxy-cpu"
PROXY_MEMORY: Final = "a11i.io/proxy-memory"
#: Pod label naming the project the agent's spend is reported under (default: the namespace).
PROJECT: Final = "a11i.io/project"
#: Pod annotation the webhook sets: the AgentBudget whose per-agent limit the pod got, and it.
AGENT_BUDGET: Final = "a11i.io/agent-budget"
#: Pod annotation the webhook sets under key custody: the providers whose key the sidecar holds.
KEY_CUSTODY: Final = "a11i.io/key-custody"

SIDECAR: Final = "a11i-proxy"
CONFIG_VOLUME: Final = "a11i-config"
STATE_VOLUME: Final = "a11i-state"
TMP_VOLUME: Final = "a11i-tmp"
CONFIG_MAP: Final = "a11i-sidecar-config"
ENV_CONFIG_MAP: Final = "a11i-sidecar-env"
OTLP_HEADERS_SECRET: Final = "a11i-sidecar-otlp-headers"
KEYS_VOLUME: Final = "a11i-provider-keys"
CONFIG_DIR: Final = "/etc/a11i"
#: Where the provider keys' Secret is mounted, in the sidecar only: one file per held key.
KEYS_DIR: Final = "/var/run/secrets/a11i/provider-keys"
#: The value app containers get for a provider key they do not set (their SDK insists on one).
PLACEHOLDER_KEY: Final = "held-by-the-a11i-sidecar"
STATE_DIR: Final = "/var/lib/a11i"
WALLET_FILE: Final = f"{STATE_DIR}/wallets.sqlite"
#: The sidecar image's distroless "nonroot" user.
NONROOT_UID: Final = 65532
#: Namespaces never injected, whatever their labels say.
SYSTEM_NAMESPACES: Final = frozenset({"kube-system"})

# A Kubernetes resource quantity (k8s.io/apimachinery/pkg/api/resource), the forms people write.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_CONTAINER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# USD as the CRD writes it (a decimal string, at most 6 decimals).
_MONEY = re.compile(r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$")
# A key of a Secret's data (k8s.io/apimachinery IsConfigMapKey).
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


#: ``spec.admission`` bounds, as the CRD checks them (a value outside is read as unset).
MAX_MIN_OUTPUT_TOKENS: Final = 1_000_000
MAX_WAIT_S: Final = 60.0


def is_data_key(value: str) -> bool:
    """Whether ``value`` can be a key of a Secret's data."""
    return len(value) <= 253 and value not in (".", "..") and _DATA_KEY.match(value) is not None


#: ``METHOD /path-glob``: what ``A11I_ALLOW_UNMETERED`` takes, one entry (no comma: the list's
#: separator; no blank in the path).
_UNMETERED_PATTERN: Final = re.compile(
    r"^(\*|GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /[^\s,]{0,250}$"
)


def is_unmetered_pattern(value: str) -> bool:
    """Whether ``value`` is one ``METHOD /path-glob`` pattern of ``allowUnmetered``."""
    return _UNMETERED_PATTERN.match(value) is not None


@dataclass(frozen=True, slots=True)
class KeyCustodyRef:
    """Where the sidecars of a namespace find the provider keys they hold: a Secret of the pod's
    namespace and which of its keys holds each provider's API key ("" : not held)."""

    secret_name: str
    openai_key: str = ""
    anthropic_key: str = ""
    #: ``allowUnmetered``: ``METHOD /path-glob`` patterns the sidecars may forward unmetered
    #: with the held key (``A11I_ALLOW_UNMETERED``); empty: only what a11i meters, and free calls.
    allow_unmetered: tuple[str, ...] = ()

    @property
    def held(self) -> tuple[tuple[str, str, str], ...]:
        """(provider, key in the Secret, the sidecar's variable) for each held provider."""
        pairs = (
            ("openai", self.openai_key, contract.OPENAI_API_KEY_FILE),
            ("anthropic", self.anthropic_key, contract.ANTHROPIC_API_KEY_FILE),
        )
        return tuple((provider, key, variable) for provider, key, variable in pairs if key)

    @property
    def valid(self) -> bool:
        keys = (self.openai_key, self.anthropic_key)
        return (
            is_object_name(self.secret_name)
            and any(keys)
            and all(is_data_key(key) for key in keys if key)
            and all(is_unmetered_pattern(pattern) for pattern in self.allow_unmetered)
        )


@dataclass(frozen=True, slots=True)
class AdmissionSpec:
    """How the sidecar admits a call that does not fit the wallet as asked (an AgentBudget's
    ``spec.admission``, docs/budget.md); None where the source says nothing, so the next source
    (then the sidecar's own default) decides."""

    fit_output_cap: bool | None = None
    """``fitOutputCap`` → ``A11I_BUDGET_FIT_OUTPUT_CAP``: lower the forwarded output cap to what
    the wallet affords; False: strict, such a call is refused with 402."""
    min_output_tokens: int | None = None
    """``minOutputTokens`` → ``A11I_BUDGET_MIN_OUTPUT_TOKENS``: the smallest cap worth fitting."""
    wait_s: float | None = None
    """``waitSeconds`` → ``A11I_BUDGET_ADMISSION_WAIT``: how long a call waits for held money."""

    def over(self, fallback: AdmissionSpec) -> AdmissionSpec:
        """This spec, with ``fallback``'s value for each field it leaves unset."""
        return AdmissionSpec(
            self.fit_output_cap if self.fit_output_cap is not None else fallback.fit_output_cap,
            (
                self.min_output_tokens
                if self.min_output_tokens is not None
                else fallback.min_output_tokens
            ),
            self.wait_s if self.wait_s is not None else fallback.wait_s,
        )

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The sidecar's variables for the fields that are set, as its settings parse them."""
        pairs: list[tuple[str, str]] = []
        if self.fit_output_cap is not None:
            pairs.append((contract.BUDGET_FIT_OUTPUT_CAP, "on" if self.fit_output_cap else "off"))
        if self.min_output_tokens is not None:
            pairs.append((contract.BUDGET_MIN_OUTPUT_TOKENS, str(self.min_output_tokens)))
        if self.wait_s is not None:
            pairs.append((contract.BUDGET_ADMISSION_WAIT, seconds_text(self.wait_s)))
        return tuple(pairs)


def seconds_text(value: float) -> str:
    """Seconds as the sidecar reads them: ``0`` (never wait) exactly, whole seconds without a
    point, else the shortest decimal that round-trips."""
    return str(int(value)) if value == int(value) else repr(value)


def admission_spec(value: object) -> AdmissionSpec:
    """``spec.admission`` as an :class:`AdmissionSpec`; a field that is absent, or that the CRD
    would refuse (wrong type, out of bounds), is read as unset."""
    if not isinstance(value, Mapping):
        return AdmissionSpec()
    fit = value.get("fitOutputCap")
    return AdmissionSpec(
        fit if isinstance(fit, bool) else None,
        _whole(value.get("minOutputTokens"), 1, MAX_MIN_OUTPUT_TOKENS),
        _number(value.get("waitSeconds"), 0.0, MAX_WAIT_S),
    )


def _whole(value: object, low: int, high: int) -> int | None:
    # bool is an int in Python: a JSON true is no number.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _number(value: object, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if low <= value <= high else None  # NaN fails both comparisons


@dataclass(frozen=True, slots=True)
class InjectionSettings:
    """What the webhook injects; built once from the operator's environment."""

    image: str
    """``A11I_SIDECAR_IMAGE``: the a11i image the sidecar runs (``a11i sidecar``)."""
    redis_url: str = ""
    """``A11I_SIDECAR_REDIS_URL``: passed as ``A11I_REDIS_URL``; empty: each sidecar keeps its
    embedded wallet in an emptyDir."""
    redis_secret: str = ""
    """``A11I_SIDECAR_REDIS_SECRET``: a Secret in the pod's namespace whose key
    ``A11I_REDIS_URL`` the sidecar's ``A11I_REDIS_URL`` comes from (a password-protected Redis:
    the URL never appears in the pod spec, and only the proxy container gets it). The operator
    keeps it there (``A11I_OPERATOR_SIDECAR_REDIS_SECRET``). Wins over ``redis_url``."""
    redis_mode: RedisMode = RedisMode.STANDALONE
    """``A11I_REDIS_MODE``: passed on to the sidecars (a cluster's keys are hash-tagged, so
    every reader and writer of a wallet must agree on it)."""
    redis_master: str = "mymaster"
    """``A11I_REDIS_MASTER``: passed on with ``sentinel``."""

    @property
    def shared_wallet(self) -> bool:
        """Whether the sidecars share a Redis (else each keeps an embedded wallet)."""
        return bool(self.redis_url or self.redis_secret)

    key_custody: KeyCustodyRef | None = None
    """``A11I_KEY_CUSTODY_SECRET`` (with ``A11I_KEY_CUSTODY_OPENAI_KEY`` /
    ``A11I_KEY_CUSTODY_ANTHROPIC_KEY``): the cluster-wide default Secret of provider keys, for
    namespaces whose AgentBudget names none; None: no key custody by default."""
    admission: AdmissionSpec = AdmissionSpec()
    """``A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP``, ``A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS``,
    ``A11I_SIDECAR_BUDGET_ADMISSION_WAIT``: the cluster-wide default of ``spec.admission``, for
    the fields no AgentBudget of the pod sets; unset: the sidecar's own default."""
    operator_namespace: str = ""
    """``A11I_OPERATOR_NAMESPACE``: never injected (nor is ``kube-system``)."""
    native_sidecars: bool = True
    """Whether the API server runs init containers with ``restartPolicy: Always`` as sidecars
    (Kubernetes 1.29+); else the proxy is a regular container."""
    port: int = contract.DEFAULT_PORT
    metrics_port: int = contract.DEFAULT_METRICS_PORT
    """``A11I_SIDECAR_METRICS_PORT``: the sidecar's metrics-only listener on the pod IP, as the
    container port ``a11i-metrics`` the chart's PodMonitor scrapes; 0: none."""
    """The sidecar's port on the pod's loopback (its default ``A11I_PORT``)."""
    openai_upstream: str = ""
    """``A11I_SIDECAR_OPENAI_BASE``: passed as the sidecar's ``A11I_OPENAI_BASE``, where its
    OpenAI-compatible calls go (a self-hosted server, an egress proxy); empty: the sidecar's
    default, the provider's public API."""
    anthropic_upstream: str = ""
    """``A11I_SIDECAR_ANTHROPIC_BASE``: passed as the sidecar's ``A11I_ANTHROPIC_BASE``."""
    cpu_request: str = "50m"
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class PatchOp(TypedDict):
    """One RFC 6902 operation; only ``add`` and ``replace`` are ever produced."""

    op: Literal["add", "replace"]
    path: str
    value: object


@dataclass(frozen=True, slots=True)
class Injection:
    """Inject: apply ``patch`` (in order) to the pod."""

    patch: tuple[PatchOp, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Skip:
    """Admit the pod unchanged, because of ``reason``."""

    reason: str
    warnings: tuple[str, ...] = field(default=())


Decision = Injection | Skip


@dataclass(frozen=True, slots=True)
class AgentBudgetRule:
    """A per-agent AgentBudget of a namespace: which pods it selects and each one's limit."""

    name: str
    #: ``metadata.creationTimestamp`` (RFC 3339): the older budget wins a tie.
    created: str
    #: The ``agentSelector`` (``matchLabels``, ``matchExpressions``), as the API server checked it.
    selector: Mapping[str, object]
    #: ``perAgentLimit``, else ``limit``: USD as a decimal string.
    limit_usd: str
    #: ``spec.admission``: wins, field by field, over the namespace's for the pods it limits.
    admission: AdmissionSpec = AdmissionSpec()


def agent_budget_rule(budget: Mapping[str, object]) -> AgentBudgetRule | None:
    """The rule of an AgentBudget object, or None when it has no ``agentSelector`` (a
    namespace-wide budget), is being deleted, or is not shaped as the CRD says."""
    metadata, spec = budget.get("metadata"), budget.get("spec")
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        return None
    if metadata.get("deletionTimestamp"):
        return None
    selector = spec.get("agentSelector")
    name = metadata.get("name")
    limit = spec.get("perAgentLimit") or spec.get("limit")
    if not isinstance(selector, Mapping) or not isinstance(name, str) or not isinstance(limit, str):
        return None
    if not _MONEY.match(limit):
        return None
    return AgentBudgetRule(
        name,
        str(metadata.get("creationTimestamp") or ""),
        selector,
        limit,
        admission_spec(spec.get("admission")),
    )


@dataclass(frozen=True, slots=True, order=True)
class NamespaceBudget:
    """A namespace-wide AgentBudget (no ``agentSelector``), ordered oldest first as the
    reconciler orders them: the oldest owns the namespace's wallet, and its ``keyCustody``."""

    #: ``metadata.creationTimestamp`` (RFC 3339), then the name: the reconciler's order.
    created: str
    name: str
    #: ``spec.keyCustody``; None when the budget has none.
    key_custody: KeyCustodyRef | None = field(default=None, compare=False)
    #: ``spec.admission``: the namespace's, under a per-agent budget's.
    admission: AdmissionSpec = field(default=AdmissionSpec(), compare=False)


def namespace_budget(budget: Mapping[str, object]) -> NamespaceBudget | None:
    """The namespace-wide AgentBudget of an AgentBudget object, or None when it has an
    ``agentSelector``, is being deleted, or is not shaped as the CRD says. A ``keyCustody`` the
    CRD would refuse is read as none."""
    metadata, spec = budget.get("metadata"), budget.get("spec")
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        return None
    name = metadata.get("name")
    if metadata.get("deletionTimestamp") or "agentSelector" in spec or not isinstance(name, str):
        return None
    return NamespaceBudget(
        str(metadata.get("creationTimestamp") or ""),
        name,
        key_custody_ref(spec.get("keyCustody")),
        admission_spec(spec.get("admission")),
    )


def key_custody_ref(value: object) -> KeyCustodyRef | None:
    """``spec.keyCustody`` as a :class:`KeyCustodyRef`, or None when absent or malformed."""
    if not isinstance(value, Mapping):
        return None
    fields = [value.get(k, "") for k in ("secretName", "openaiKey", "anthropicKey")]
    allowed = value.get("allowUnmetered", [])
    if not all(isinstance(f, str) for f in fields) or not isinstance(allowed, list):
        return None
    if not all(isinstance(pattern, str) for pattern in allowed):
        return None
    secret, openai_key, anthropic_key = (str(f) for f in fields)
    ref = KeyCustodyRef(secret, openai_key, anthropic_key, allow_unmetered=tuple(allowed))
    return ref if ref.valid else None


def key_custody(
    budgets: Sequence[NamespaceBudget], default: KeyCustodyRef | None
) -> KeyCustodyRef | None:
    """The Secret of provider keys for a namespace: the ``keyCustody`` of the namespace's wallet
    owner (its oldest namespace-wide AgentBudget; a newer one is in conflict and ignored), else
    the cluster-wide default."""
    owner = min(budgets, default=None)
    if owner is not None and owner.key_custody is not None:
        return owner.key_custody
    return default


def admission(
    budgets: Sequence[NamespaceBudget], agent: AgentBudgetRule | None, default: AdmissionSpec
) -> AdmissionSpec:
    """How a pod's sidecar admits calls, field by field: the per-agent AgentBudget that gives
    the pod its limit, else the namespace's wallet owner (its oldest namespace-wide AgentBudget,
    as for key custody), else the cluster-wide default."""
    owner = min(budgets, default=None)
    namespace = owner.admission.over(default) if owner is not None else default
    return agent.admission.over(namespace) if agent is not None else namespace


def selects(selector: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``matchExpressions``, ANDed) selects
    ``labels``; an empty selector selects everything, a malformed one nothing."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        return False
    if any(labels.get(str(key)) != value for key, value in match_labels.items()):
        return False
    for expression in expressions:
        if not isinstance(expression, Mapping):
            return False
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if not isinstance(key, str) or not isinstance(values, list):
            return False
        if operator == "In":
            held = key in labels and labels[key] in values
        elif operator == "NotIn":
            held = key not in labels or labels[key] not in values
        elif operator == "Exists":
            held = key in labels
        elif operator == "DoesNotExist":
            held = key not in labels
        else:
            return False
        if not held:
            return False
    return True


def agent_limit(
    labels: Mapping[str, str], rules: Sequence[AgentBudgetRule], warnings: list[str]
) -> AgentBudgetRule | None:
    """The per-agent budget a pod with ``labels`` gets: the smallest limit of the rules that
    select it (the older budget on a tie); a warning names the others."""
    chosen = sorted(
        (rule for rule in rules if selects(rule.selector, labels)),
        key=lambda rule: (Decimal(rule.limit_usd), rule.created, rule.name),
    )
    if len(chosen) > 1:
        others = ", ".join(rule.name for rule in chosen[1:])
        warnings.append(
            f"a11i: the pod is selected by several per-agent AgentBudgets; the smallest limit "
            f"applies (${chosen[0].limit_usd} from {chosen[0].name}; also: {others})"
        )
    return chosen[0] if chosen else None


class _Malformed(Exception):
    """The pod spec has a shape this module cannot patch; the message says where."""


def decide(
    pod: object,
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    settings: InjectionSettings,
    agent_budgets: Sequence[AgentBudgetRule] = (),
    namespace_budgets: Sequence[NamespaceBudget] = (),
) -> Decision:
    """Whether and how to inject ``pod``, created in ``namespace`` (from the admission
    request: a pod made by a controller may carry neither name nor namespace yet), given the
    namespace's per-agent and namespace-wide AgentBudgets."""
    if not isinstance(pod, Mapping):
        return _malformed("the pod is not an object")
    metadata = pod.get("metadata", {})
    if not isinstance(metadata, Mapping):
        return _malformed("metadata is not an object")
    annotations = _strings(metadata.get("annotations"))
    labels = _strings(metadata.get("labels"))
    if annotations is None or labels is None:
        return _malformed("metadata.annotations or metadata.labels is not a map of strings")

    if namespace in SYSTEM_NAMESPACES or namespace == settings.operator_namespace:
        return Skip(f"namespace {namespace} is never injected")
    asked = annotations.get(INJECT)
    if asked == "false":
        return Skip(f"the pod says {INJECT}: false")
    if asked != "true" and namespace_labels.get(NAMESPACE_LABEL) != ENABLED:
        return Skip(f"not asked for: no {INJECT}: true, namespace not labelled")
    if annotations.get(STATUS) == INJECTED:
        return Skip(f"already injected ({STATUS}: {INJECTED})")

    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return _malformed("spec is not an object")
    if spec.get("hostNetwork") is True:
        return Skip(
            "host-network pod: the proxy's loopback port would be the node's",
            (f"a11i: pod not injected: {SIDECAR} does not run in host-network pods",),
        )
    try:
        custody = key_custody(namespace_budgets, settings.key_custody)
        return _inject(
            spec,
            annotations,
            labels,
            settings,
            agent_budgets,
            namespace_budgets,
            custody,
            has_metadata="metadata" in pod,
        )
    except _Malformed as problem:
        return _malformed(str(problem))


def _inject(
    spec: Mapping[str, object],
    annotations: Mapping[str, str],
    labels: Mapping[str, str],
    settings: InjectionSettings,
    agent_budgets: Sequence[AgentBudgetRule],
    namespace_budgets: Sequence[NamespaceBudget],
    custody: KeyCustodyRef | None,
    *,
    has_metadata: bool,
) -> Decision:
    containers = _objects(spec, "containers", required=True)
    init_containers = _objects(spec, "initContainers")
    volumes = _objects(spec, "volumes")
    names = [_name(c, "containers") for c in containers]
    init_names = [_name(c, "initContainers") for c in init_containers]
    if SIDECAR in names or SIDECAR in init_names:
        return Skip(f"already has a container named {SIDECAR}")
    taken = {v.get("name") for v in volumes}
    ours = [CONFIG_VOLUME, TMP_VOLUME, STATE_VOLUME]
    ours += [KEYS_VOLUME] if custody is not None else []
    clash = [name for name in ours if name in taken]
    if clash:
        raise _Malformed(f"the pod already has a volume named {clash[0]}")

    warnings: list[str] = []
    targets = _targets(annotations, names, warnings)
    override = annotations.get(OVERRIDE_ENV) == "true"
    ops: list[PatchOp] = []

    # The app containers first: their indices do not move when the sidecar is added.
    wanted = {
        "OPENAI_BASE_URL": settings.openai_base_url,
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url,
    }
    placeholders = _placeholders(custody)
    for index, container in enumerate(containers):
        if names[index] not in targets:
            continue
        ops += _env_ops(index, names[index], container, wanted, override, warnings, placeholders)
    if custody is not None and spec.get("shareProcessNamespace") is True:
        warnings.append(
            f"a11i: the pod shares one process namespace: a container running as uid "
            f"{NONROOT_UID} or with CAP_SYS_PTRACE can read the key {SIDECAR} holds through "
            "/proc; leave shareProcessNamespace off under key custody"
        )

    budget = agent_limit(labels, agent_budgets, warnings)
    admits = admission(namespace_budgets, budget, settings.admission)
    sidecar = _sidecar(annotations, labels, settings, warnings, budget, custody, admits)
    if settings.native_sidecars:
        sidecar["restartPolicy"] = "Always"
        if "initContainers" in spec:
            ops.append(_add("/spec/initContainers/0", sidecar))
        else:
            ops.append(_add("/spec/initContainers", [sidecar]))
    else:
        ops.append(_add("/spec/containers/-", sidecar))

    new_volumes = _volumes(settings, custody, _fs_group(spec))
    if "volumes" in spec:
        ops += [_add("/spec/volumes/-", volume) for volume in new_volumes]
    else:
        ops.append(_add("/spec/volumes", new_volumes))

    marks = {STATUS: INJECTED}
    if budget is not None:
        marks[AGENT_BUDGET] = f"{budget.name}=${budget.limit_usd}"
    if custody is not None:
        marks[KEY_CUSTODY] = ",".join(provider for provider, _, _ in custody.held)
    if not has_metadata:
        ops.append(_add("/metadata", {"annotations": marks}))
    elif annotations:
        ops += [_add(f"/metadata/annotations/{_escape(k)}", v) for k, v in marks.items()]
    else:
        ops.append(_add("/metadata/annotations", marks))
    return Injection(tuple(ops), tuple(warnings))


def _targets(annotations: Mapping[str, str], names: Sequence[str], warnings: list[str]) -> set[str]:
    """The app containers that get the base URLs: all, or those ``a11i.io/containers`` names."""
    raw = annotations.get(CONTAINERS)
    if raw is None:
        return set(names)
    chosen = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        warnings.append(
            f"a11i: {CONTAINERS} names {', '.join(unknown)}, not a container of this pod "
            f"(containers: {', '.join(names)})"
        )
    return {name for name in chosen if name in names}


def _env_ops(
    index: int,
    name: str,
    container: Mapping[str, object],
    wanted: Mapping[str, str],
    override: bool,
    warnings: list[str],
    placeholders: Sequence[str] = (),
) -> list[PatchOp]:
    base = f"/spec/containers/{index}/env"
    env = container.get("env")
    if env is not None and (
        not isinstance(env, list) or not all(isinstance(e, Mapping) for e in env)
    ):
        raise _Malformed(f"containers[{index}].env is not a list of objects")
    entries: list[Mapping[str, object]] = env or []
    positions = {e.get("name"): i for i, e in enumerate(entries)}
    # A key the container sets itself is kept (the sidecar replaces it on every call).
    wanted = {**wanted, **_placeholder_env(index, name, container, positions, placeholders)}
    for key in placeholders:
        position = positions.get(key)
        if position is not None and isinstance(entries[position].get("valueFrom"), Mapping):
            warnings.append(
                f"a11i: container {name} reads {key} from {_source(entries[position])}: under "
                f"key custody the agent needs no key of its own, and with one it can call the "
                f"provider directly, outside its budget (remove it)"
            )
    if env is None:
        return [_add(base, [{"name": k, "value": v} for k, v in wanted.items()])]
    ops: list[PatchOp] = []
    for key, value in wanted.items():
        position = positions.get(key)
        if position is None:
            ops.append(_add(f"{base}/-", {"name": key, "value": value}))
        elif override:
            ops.append(_replace(f"{base}/{position}", {"name": key, "value": value}))
        elif entries[position].get("value") != value:
            warnings.append(
                f"a11i: container {name} sets {key} itself; kept, so its calls bypass the "
                f'budget (set {OVERRIDE_ENV}: "true" to replace it)'
            )
    return ops


def _placeholders(custody: KeyCustodyRef | None) -> tuple[str, ...]:
    """The app containers' key variables that get a placeholder under key custody."""
    variables = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
    return tuple(variables[provider] for provider, _, _ in custody.held) if custody else ()


def _placeholder_env(
    index: int,
    name: str,
    container: Mapping[str, object],
    positions: Mapping[object, int],
    placeholders: Sequence[str],
) -> dict[str, str]:
    """The placeholder keys a container gets: those it does not set in ``env`` and no
    ``envFrom`` of it may set (their content is not visible at admission: a key from there is
    kept, never shadowed)."""
    sources = container.get("envFrom") or []
    if not isinstance(sources, list) or not all(isinstance(s, Mapping) for s in sources):
        raise _Malformed(f"containers[{index}].envFrom is not a list of objects")
    prefixes = [str(source.get("prefix") or "") for source in sources]
    return {
        key: PLACEHOLDER_KEY
        for key in placeholders
        if key not in positions and not any(key.startswith(prefix) for prefix in prefixes)
    }


def _source(entry: Mapping[str, object]) -> str:
    """Where an env entry's ``valueFrom`` reads, for a warning (never the value)."""
    value_from = entry.get("valueFrom")
    if isinstance(value_from, Mapping):
        for kind, label in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            reference = value_from.get(kind)
            if isinstance(reference, Mapping):
                return f"{label} {reference.get('name')}"
    return "a reference"


def _fs_group(spec: Mapping[str, object]) -> bool:
    context = spec.get("securityContext")
    return isinstance(context, Mapping) and isinstance(context.get("fsGroup"), int)


def _sidecar(
    annotations: Mapping[str, str],
    labels: Mapping[str, str],
    settings: InjectionSettings,
    warnings: list[str],
    budget: AgentBudgetRule | None = None,
    custody: KeyCustodyRef | None = None,
    admits: AdmissionSpec = AdmissionSpec(),
) -> dict[str, object]:
    env: list[dict[str, object]] = [
        {"name": contract.NAMESPACE, "valueFrom": _field("metadata.namespace")},
        {"name": contract.AGENT, "valueFrom": _field("metadata.name")},
    ]
    project = labels.get(PROJECT, "").strip()
    if project:
        env.append({"name": contract.PROJECT, "value": project})
    if settings.redis_secret:
        # Not optional: a pod whose namespace lacks the Secret waits for it (the operator
        # writes it) rather than run with a wallet of its own that no budget governs.
        reference = {"name": settings.redis_secret, "key": contract.REDIS_URL}
        env.append({"name": contract.REDIS_URL, "valueFrom": {"secretKeyRef": reference}})
    elif settings.redis_url:
        env.append({"name": contract.REDIS_URL, "value": settings.redis_url})
    if settings.shared_wallet and settings.redis_mode is not RedisMode.STANDALONE:
        env.append({"name": "A11I_REDIS_MODE", "value": settings.redis_mode.value})
        if settings.redis_mode is RedisMode.SENTINEL:
            env.append({"name": "A11I_REDIS_MASTER", "value": settings.redis_master})
            if settings.redis_secret:
                # Present only when the sentinels ask a password (the operator writes it then).
                password: dict[str, object] = {
                    "name": settings.redis_secret,
                    "key": "A11I_REDIS_SENTINEL_PASSWORD",
                    "optional": True,
                }
                env.append(
                    {
                        "name": "A11I_REDIS_SENTINEL_PASSWORD",
                        "valueFrom": {"secretKeyRef": password},
                    }
                )
    # The embedded wallet's file, or with Redis the journal of spend settled while Redis is
    # unreachable, beside it: in the pod's emptyDir, which survives a container restart.
    env.append({"name": contract.WALLET_FILE, "value": WALLET_FILE})
    # Always explicit: a Service named "a11i" in the namespace makes the kubelet put
    # A11I_PORT=tcp://... into every container (service links); an explicit value wins.
    env.append({"name": contract.PORT, "value": str(settings.port)})
    if settings.metrics_port:
        env.append({"name": contract.METRICS_PORT, "value": str(settings.metrics_port)})
    if settings.openai_upstream:
        env.append({"name": contract.OPENAI_BASE, "value": settings.openai_upstream})
    if settings.anthropic_upstream:
        env.append({"name": contract.ANTHROPIC_BASE, "value": settings.anthropic_upstream})
    if budget is not None:
        # The pod's own wallet (namespace/pod name) inside the namespace's.
        env.append({"name": contract.AGENT_BUDGET_USD, "value": budget.limit_usd})
    # Set here, these win over the same names in a11i-sidecar-env (envFrom).
    env += [{"name": name, "value": value} for name, value in admits.env]
    if custody is not None:
        # Paths, never the keys: the keys stay in the Secret and in the sidecar's files.
        env += [
            {"name": variable, "value": f"{KEYS_DIR}/{provider}"}
            for provider, _, variable in custody.held
        ]
        if custody.allow_unmetered:
            allowed = ",".join(custody.allow_unmetered)
            env.append({"name": contract.ALLOW_UNMETERED, "value": allowed})
    cpu = _quantity(annotations, PROXY_CPU, settings.cpu_request, warnings)
    memory = _quantity(annotations, PROXY_MEMORY, "", warnings)
    mounts: list[dict[str, object]] = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    ]
    mounts.append({"name": STATE_VOLUME, "mountPath": STATE_DIR})
    if custody is not None:
        mounts.append({"name": KEYS_VOLUME, "mountPath": KEYS_DIR, "readOnly": True})
    return {
        "name": SIDECAR,
        "image": settings.image,
        "args": ["sidecar"],
        "env": env,
        "ports": _metrics_ports(settings),
        # A11I_CONFIG comes from a11i-sidecar-env, which exists exactly when a TelemetryPolicy
        # generated a11i.yaml: set here, it would name a missing file and stop the sidecar.
        "envFrom": [
            {"configMapRef": {"name": ENV_CONFIG_MAP, "optional": True}},
            {"secretRef": {"name": OTLP_HEADERS_SECRET, "optional": True}},
        ],
        "volumeMounts": mounts,
        "resources": {
            "requests": {"cpu": cpu, "memory": memory or settings.memory_request},
            "limits": {"memory": memory or settings.memory_limit},
        },
        # The proxy listens on the pod's loopback only (nothing else in the cluster may spend
        # the pod's budget), where the kubelet's HTTP probes cannot reach: exec probes.
        "startupProbe": _probe(period=1, failures=60),
        "readinessProbe": _probe(period=10, failures=3),
        "livenessProbe": _probe(period=20, failures=3, path=contract.HEALTHZ),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NONROOT_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _metrics_ports(settings: InjectionSettings) -> list[dict[str, object]]:
    """The metrics-only listener's port: nothing on it proxies or spends (the proxy itself
    stays on loopback)."""
    if not settings.metrics_port:
        return []
    return [
        {
            "name": contract.METRICS_PORT_NAME,
            "containerPort": settings.metrics_port,
            "protocol": "TCP",
        }
    ]


def _field(path: str) -> dict[str, object]:
    """A value from the downward API: the pod's own metadata."""
    return {"fieldRef": {"fieldPath": path}}


def _probe(*, period: int, failures: int, path: str = "") -> dict[str, object]:
    command = ["a11i", "probe"] + (["--path", path] if path else [])
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _volumes(
    settings: InjectionSettings, custody: KeyCustodyRef | None, fs_group: bool
) -> list[dict[str, object]]:
    volumes: list[dict[str, object]] = [
        {"name": CONFIG_VOLUME, "configMap": {"name": CONFIG_MAP, "optional": True}},
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    volumes.append({"name": STATE_VOLUME, "emptyDir": {}})
    if custody is not None:
        volumes.append(_keys_volume(custody, fs_group))
    return volumes


def _keys_volume(custody: KeyCustodyRef, fs_group: bool) -> dict[str, object]:
    """The Secret of provider keys, one file per held key. Not optional: a pod whose namespace
    lacks the Secret (or a named key of it) stays Pending with a FailedMount event, rather than
    run with a sidecar that holds no key. The kubelet writes the files as root: 0440 when the
    pod has an fsGroup (the group is then the fsGroup, of which the sidecar is a member), else
    0444, or the non-root sidecar could not read them; the files exist in the sidecar's mount
    namespace only, no app container's."""
    return {
        "name": KEYS_VOLUME,
        "secret": {
            "secretName": custody.secret_name,
            "items": [{"key": key, "path": provider} for provider, key, _ in custody.held],
            "defaultMode": 0o440 if fs_group else 0o444,
            "optional": False,
        },
    }


def _quantity(annotations: Mapping[str, str], key: str, default: str, warnings: list[str]) -> str:
    raw = annotations.get(key)
    if raw is None:
        return default
    if _QUANTITY.match(raw.strip()):
        return raw.strip()
    warnings.append(f"a11i: {key}: {raw!r} is not a resource quantity; using the default")
    return default


def _objects(
    spec: Mapping[str, object], key: str, *, required: bool = False
) -> list[Mapping[str, object]]:
    value = spec.get(key)
    if value is None:
        if required:
            raise _Malformed(f"spec.{key} is missing")
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise _Malformed(f"spec.{key} is not a list of objects")
    if required and not value:
        raise _Malformed(f"spec.{key} is empty")
    return value


def _name(container: Mapping[str, object], where: str) -> str:
    name = container.get("name")
    if not isinstance(name, str) or not _CONTAINER_NAME.match(name):
        raise _Malformed(f"a container in spec.{where} has no valid name")
    return name


def _strings(value: object) -> dict[str, str] | None:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return dict(value)


def _malformed(problem: str) -> Skip:
    return Skip(
        f"cannot patch: {problem}",
        (f"a11i: {SIDECAR} not injected: {problem}; the pod is admitted unchanged",),
    )


def _add(path: str, value: object) -> PatchOp:
    return {"op": "add", "path": path, "value": value}


def _replace(path: str, value: object) -> PatchOp:
    return {"op": "replace", "path": path, "value": value}


def _escape(key: str) -> str:
    """A map key as one JSON Pointer segment (RFC 6901 §4)."""
    return key.replace("~", "~0").replace("/", "~1")


def apply(body: dict[str, object], patch: Sequence[PatchOp]) -> None:
    """Apply ``add``/``replace`` operations to ``body`` in place (RFC 6902 §4.1, §4.3): the
    webhook hands this to kopf, which diffs the result into the AdmissionReview's patch."""
    for op in patch:
        *parents, last = [
            part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]
        ]
        target: object = body
        for part in parents:
            if isinstance(target, list):
                target = target[int(part)]
            elif isinstance(target, dict):
                target = target[part]
            else:
                raise ValueError(f"{op['path']}: {part} is inside neither an object nor a list")
        if isinstance(target, list):
            if last == "-":
                target.append(op["value"])
            elif op["op"] == "add":
                target.insert(int(last), op["value"])
            else:
                target[int(last)] = op["value"]
        elif isinstance(target, dict):
            target[last] = op["value"]
        else:
            raise ValueError(f"{op['path']}: the parent is neither an object nor a list")
