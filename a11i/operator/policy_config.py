"""TelemetryPolicy → the sidecars' configuration: the pure part of the policy reconciler.

Turns a policy's spec and the data of the ConfigMaps and Secret it references into the data of
the objects the operator generates for the namespace (docs/telemetry-policy.md), or into a
:class:`PolicyConfigError` whose ``reason`` becomes the Ready condition's reason and whose
message says what to fix. Everything is validated with the sidecar's own parsers (PII rules,
rate card, a11i.yaml, the ``OTEL_*`` variables), so what the operator publishes is what a sidecar
accepts.

It may not do I/O: no kopf, no Kubernetes API, no files. ``policies.py`` reads the referenced
objects and writes the generated ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Final, NoReturn
from urllib.parse import quote, urlsplit

import yaml

from a11i.core.errors import SettingsError
from a11i.core.pricing import RateCardError, parse_rate_card
from a11i.core.scrub import ScrubRuleError, rules_from_config
from a11i.sidecar import contract
from a11i.sidecar.config import ConfigError, telemetry_config
from a11i.sidecar.rates import parse_text
from a11i.sidecar.settings import telemetry_from_env

#: The generated ConfigMap the sidecars mount at :data:`MOUNT_DIR` (a11i.yaml, rate card).
CONFIG_MAP_NAME: Final = "a11i-sidecar-config"
#: The generated ConfigMap whose keys are environment variables (``envFrom``).
ENV_CONFIG_MAP_NAME: Final = "a11i-sidecar-env"
#: The generated Secret with ``OTEL_EXPORTER_OTLP_HEADERS`` (``envFrom``), only with headers.
HEADERS_SECRET_NAME: Final = "a11i-sidecar-otlp-headers"
#: Where the injector mounts :data:`CONFIG_MAP_NAME` in the sidecar.
MOUNT_DIR: Final = "/etc/a11i"
CONFIG_KEY: Final = "a11i.yaml"
RATE_CARD_YAML_KEY: Final = "rate-card.yaml"
#: A LiteLLM (JSON) card keeps a .json name: the sidecar picks its parser by the suffix.
RATE_CARD_JSON_KEY: Final = "rate-card.json"
HEADERS_KEY: Final = "OTEL_EXPORTER_OTLP_HEADERS"

DEFAULT_PII_RULES_KEY: Final = "pii_rules.yaml"
DEFAULT_RATE_CARD_KEY: Final = "rate-card.yaml"

_OBJECT_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DATA_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")
_RATIO: Final = re.compile(r"0(\.[0-9]+)?|1(\.0+)?")
_SPEC_KEYS: Final = frozenset(
    {
        "otlp",
        "sampling",
        "captureContent",
        "decisionLogs",
        "piiRulesRef",
        "rateCardRef",
        "skills",
        "contextSaturationWarningPercent",
    }
)


class Reason(StrEnum):
    """Why a policy is not Ready: the Ready condition's ``reason``."""

    CONFIG_MAP_MISSING = "ConfigMapMissing"
    KEY_MISSING = "KeyMissing"
    INVALID_PII_RULES = "InvalidPIIRules"
    INVALID_RATE_CARD = "InvalidRateCard"
    SECRET_MISSING = "SecretMissing"
    INVALID_SECRET = "InvalidSecret"
    INVALID_SPEC = "InvalidSpec"


class PolicyConfigError(Exception):
    """The policy cannot become a sidecar configuration: why (``reason``) and what to fix."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A ConfigMap key or a Secret the policy references, in the policy's namespace."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    #: The ConfigMap key; None for the headers Secret (all of its keys are used).
    key: str | None = None


@dataclass(frozen=True, slots=True)
class OtlpSpec:
    """``spec.otlp``."""

    endpoint: str
    #: ``grpc`` or ``http`` as in the policy.
    protocol: str = "http"
    timeout_seconds: int = 10
    headers_secret: str | None = None


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A TelemetryPolicy's spec, parsed and checked (the CRD's defaults where absent)."""

    otlp: OtlpSpec | None = None
    #: ``sampling.ratio`` as written ("0.25"): it is passed on as a string, never via float.
    sampling_ratio: str = "1.0"
    capture_content: bool = False
    decision_logs: bool = False
    pii_rules: ObjectRef | None = None
    rate_card: ObjectRef | None = None
    skills: tuple[str, ...] = ()
    saturation_warning_percent: int = 90

    @property
    def references(self) -> tuple[ObjectRef, ...]:
        """Every object the policy reads: what the operator fetches and watches."""
        refs = [ref for ref in (self.pii_rules, self.rate_card) if ref is not None]
        if self.otlp is not None and self.otlp.headers_secret is not None:
            refs.append(ObjectRef("Secret", self.otlp.headers_secret))
        return tuple(refs)


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """The data of the generated objects."""

    #: :data:`CONFIG_MAP_NAME`'s data: a11i.yaml and, with a rateCardRef, the rate card.
    config: Mapping[str, str]
    #: :data:`ENV_CONFIG_MAP_NAME`'s data: variable name → value.
    env: Mapping[str, str]
    #: :data:`HEADERS_SECRET_NAME`'s data (plain text, not base64); None without headers.
    headers: Mapping[str, str] | None = None
    #: Content hashes (``a11i.io/content-hash``) of each generated object, by object name.
    hashes: Mapping[str, str] = field(default_factory=dict)


def content_hash(data: Mapping[str, str]) -> str:
    """A short, stable hash of an object's data: equal data, equal hash."""
    canonical = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- the spec


def parse_spec(spec: Mapping[str, object] | None) -> PolicySpec:
    """The spec as stored; the CRD's schema checked most of it already, this checks again
    (a policy written while the CRD was older, a client that skipped validation) and applies
    the defaults. Raises :class:`PolicyConfigError` (``InvalidSpec``)."""
    if spec is None:
        return PolicySpec()
    unknown = sorted(set(map(str, spec)) - _SPEC_KEYS)
    if unknown:
        _invalid(f"spec has unknown fields {unknown}; known: {', '.join(sorted(_SPEC_KEYS))}")
    sampling = _mapping(spec.get("sampling"), "spec.sampling") or {}
    ratio = sampling.get("ratio", "1.0")
    if not isinstance(ratio, str) or not _RATIO.fullmatch(ratio):
        _invalid(
            f'spec.sampling.ratio must be a quoted decimal string from "0" to "1.0", such as '
            f'"0.25", not {ratio!r}'
        )
    skills = spec.get("skills") or []
    if not isinstance(skills, list) or not all(
        isinstance(skill, str) and 1 <= len(skill.strip()) <= 128 for skill in skills
    ):
        _invalid("spec.skills must be a list of tool names of 1 to 128 characters, e.g. [get_pods]")
    if len(set(skills)) != len(skills):
        _invalid("spec.skills must not name a tool twice")
    percent = spec.get("contextSaturationWarningPercent", 90)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        _invalid(
            f"spec.contextSaturationWarningPercent must be a whole number from 1 to 100, "
            f"not {percent!r}"
        )
    return PolicySpec(
        otlp=_otlp(spec.get("otlp")),
        sampling_ratio=ratio,
        capture_content=_bool(spec, "captureContent"),
        decision_logs=_bool(spec, "decisionLogs"),
        pii_rules=_ref(spec.get("piiRulesRef"), "spec.piiRulesRef", DEFAULT_PII_RULES_KEY),
        rate_card=_ref(spec.get("rateCardRef"), "spec.rateCardRef", DEFAULT_RATE_CARD_KEY),
        skills=tuple(skill.strip() for skill in skills),
        saturation_warning_percent=percent,
    )


def _otlp(value: object) -> OtlpSpec | None:
    otlp = _mapping(value, "spec.otlp")
    if otlp is None:
        return None
    endpoint = otlp.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        _invalid(
            "spec.otlp.endpoint must be an http:// or https:// URL with a host, such as "
            f"http://otel-collector.monitoring:4318, not {endpoint!r}"
        )
    assert isinstance(endpoint, str)
    protocol = otlp.get("protocol", "http")
    if protocol not in ("grpc", "http"):
        _invalid(f"spec.otlp.protocol must be grpc or http, not {protocol!r}")
    assert isinstance(protocol, str)
    timeout = otlp.get("timeoutSeconds", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 60:
        _invalid(f"spec.otlp.timeoutSeconds must be a whole number from 1 to 60, not {timeout!r}")
    secret = _mapping(otlp.get("headersSecretRef"), "spec.otlp.headersSecretRef")
    secret_name = None
    if secret is not None:
        secret_name = _name(secret.get("name"), "spec.otlp.headersSecretRef.name", "Secret")
    return OtlpSpec(
        endpoint=endpoint, protocol=protocol, timeout_seconds=timeout, headers_secret=secret_name
    )


def _ref(value: object, where: str, default_key: str) -> ObjectRef | None:
    ref = _mapping(value, where)
    if ref is None:
        return None
    name = _name(ref.get("name"), f"{where}.name", "ConfigMap")
    key = ref.get("key", default_key)
    if not isinstance(key, str) or not _DATA_KEY.fullmatch(key) or len(key) > 253:
        _invalid(
            f"{where}.key must be a ConfigMap key (letters, digits, '-', '_', '.'), not {key!r}"
        )
    assert isinstance(key, str)
    return ObjectRef("ConfigMap", name, key)


def is_object_name(value: str) -> bool:
    """Whether ``value`` can name a ConfigMap or Secret (a DNS subdomain, ≤ 253 characters)."""
    return len(value) <= 253 and _OBJECT_NAME.fullmatch(value) is not None


def _name(value: object, where: str, kind: str) -> str:
    if not isinstance(value, str) or not is_object_name(value):
        _invalid(f"{where} must be the name of a {kind} in this namespace, not {value!r}")
    assert isinstance(value, str)
    return value


def _mapping(value: object, where: str) -> Mapping[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _invalid(f"{where} must be an object, not {type(value).__name__}")
    return {str(key): item for key, item in value.items()}


def _bool(spec: Mapping[str, object], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        _invalid(f"spec.{key} must be true or false, not {value!r}")
    return bool(value)


def _invalid(message: str) -> NoReturn:
    raise PolicyConfigError(Reason.INVALID_SPEC, message)


# --------------------------------------------------------------------------- the configuration


def sidecar_config(
    spec: PolicySpec,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, bytes]],
    *,
    policy: str = "",
) -> SidecarConfig:
    """The generated objects' data for ``spec``.

    ``config_maps`` and ``secrets`` hold the referenced objects that exist (name → data, the
    Secret's values decoded from base64); a referenced name that is absent is missing. ``policy``
    (``namespace/name``) is named in the generated a11i.yaml's header. Raises
    :class:`PolicyConfigError`.
    """
    pii_entries: list[object] = []
    if spec.pii_rules is not None:
        pii_entries = _pii_rules(spec.pii_rules, _text(spec.pii_rules, config_maps))
    document: dict[str, object] = {
        "skills": list(spec.skills),
        "context_saturation_warning_percent": spec.saturation_warning_percent,
        "capture_content": spec.capture_content,
        "pii_rules": pii_entries,
    }
    sources = f" and ConfigMap {spec.pii_rules.name}" if spec.pii_rules is not None else ""
    a11i_yaml = (
        f"# Generated by the a11i operator from TelemetryPolicy {policy or '(unnamed)'}"
        f"{sources}.\n# Do not edit: edit those instead; the sidecars reload this file.\n"
        + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    )
    # The sidecar's own loader must accept what it will be given (a bug here, not the user's).
    try:
        telemetry_config(yaml.safe_load(a11i_yaml), source=CONFIG_KEY)
    except ConfigError as error:
        raise PolicyConfigError(Reason.INVALID_SPEC, f"the generated {error}") from error
    config = {CONFIG_KEY: a11i_yaml}
    env = {
        contract.CONFIG: f"{MOUNT_DIR}/{CONFIG_KEY}",
        contract.CAPTURE_CONTENT: _flag(spec.capture_content),
        contract.DECISION_LOGS: _flag(spec.decision_logs),
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": spec.sampling_ratio,
    }
    if spec.rate_card is not None:
        key, text = _rate_card(spec.rate_card, _text(spec.rate_card, config_maps))
        config[key] = text
        env[contract.RATE_CARD] = f"{MOUNT_DIR}/{key}"
    headers: dict[str, str] | None = None
    if spec.otlp is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = spec.otlp.endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = (
            "grpc" if spec.otlp.protocol == "grpc" else "http/protobuf"
        )
        env["OTEL_EXPORTER_OTLP_TIMEOUT"] = str(spec.otlp.timeout_seconds * 1000)
        if spec.otlp.headers_secret is not None:
            headers = {HEADERS_KEY: _headers(spec.otlp.headers_secret, secrets)}
    try:
        telemetry_from_env({**env, **(headers or {})})
    except SettingsError as error:
        raise PolicyConfigError(
            Reason.INVALID_SPEC, f"the generated environment is refused by the sidecar: {error}"
        ) from error
    hashes = {CONFIG_MAP_NAME: content_hash(config), ENV_CONFIG_MAP_NAME: content_hash(env)}
    if headers is not None:
        hashes[HEADERS_SECRET_NAME] = content_hash(headers)
    return SidecarConfig(config=config, env=env, headers=headers, hashes=hashes)


def _text(ref: ObjectRef, config_maps: Mapping[str, Mapping[str, str]]) -> str:
    assert ref.key is not None
    data = config_maps.get(ref.name)
    if data is None:
        raise PolicyConfigError(
            Reason.CONFIG_MAP_MISSING,
            f"ConfigMap {ref.name} does not exist in this namespace; create it with the key "
            f"{ref.key}, or fix the reference",
        )
    if ref.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise PolicyConfigError(
            Reason.KEY_MISSING,
            f"ConfigMap {ref.name} has no key {ref.key} (its keys: {keys}); add it, or set the "
            "reference's key to the one that holds the content",
        )
    return data[ref.key]


def _pii_rules(ref: ObjectRef, text: str) -> list[object]:
    source = f"ConfigMap {ref.name} key {ref.key}"
    try:
        loaded: object = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyConfigError(
            Reason.INVALID_PII_RULES, f"{source}: not valid YAML: {error}"
        ) from error
    entries: object = loaded
    if isinstance(loaded, dict):
        extra = sorted(map(str, set(loaded) - {"pii_rules"}))
        if extra:
            raise PolicyConfigError(
                Reason.INVALID_PII_RULES,
                f"{source}: unexpected keys {extra}: expected a list of rules, or a mapping "
                "with only pii_rules: [...]",
            )
        entries = loaded.get("pii_rules")
    if entries is None:
        return []
    try:
        rules_from_config(entries, source=source)
    except ScrubRuleError as error:
        raise PolicyConfigError(Reason.INVALID_PII_RULES, str(error)) from error
    assert isinstance(entries, list)  # rules_from_config accepts nothing else
    return entries


def _rate_card(ref: ObjectRef, text: str) -> tuple[str, str]:
    """The generated key and the card, copied verbatim once the sidecar's parser accepts it."""
    assert ref.key is not None
    source = f"ConfigMap {ref.name} key {ref.key}"
    suffix = PurePosixPath(ref.key).suffix.lower()
    try:
        parse_rate_card(parse_text(text, source=source, suffix=suffix), source=source)
    except RateCardError as error:
        raise PolicyConfigError(Reason.INVALID_RATE_CARD, str(error)) from error
    is_json = suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip()[:1] == "{")
    return (RATE_CARD_JSON_KEY if is_json else RATE_CARD_YAML_KEY), text


def _headers(name: str, secrets: Mapping[str, Mapping[str, bytes]]) -> str:
    """``key=value,...`` with URL-encoded values, the form of ``OTEL_EXPORTER_OTLP_HEADERS``.
    Messages name keys only: the values are credentials."""
    data = secrets.get(name)
    if data is None:
        raise PolicyConfigError(
            Reason.SECRET_MISSING,
            f"Secret {name} does not exist in this namespace; create it (each data key becomes "
            "an OTLP request header), or fix spec.otlp.headersSecretRef",
        )
    if not data:
        raise PolicyConfigError(
            Reason.INVALID_SECRET,
            f"Secret {name} has no data: each data key should be an OTLP header name and its "
            "value the header's value",
        )
    pairs = []
    for key in sorted(data):
        try:
            value = data[key].decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyConfigError(
                Reason.INVALID_SECRET,
                f"Secret {name} key {key}: the value is not UTF-8 text, so it cannot be an HTTP "
                "header value",
            ) from None
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            raise PolicyConfigError(
                Reason.INVALID_SECRET,
                f"Secret {name} key {key}: the value holds a control character (a trailing "
                "newline from `echo`?); header values must be one line: use `echo -n` or "
                "--from-literal",
            )
        pairs.append(f"{quote(key, safe='')}={quote(value, safe='')}")
    return ",".join(pairs)


def _flag(value: bool) -> str:
    return "true" if value else "false"
