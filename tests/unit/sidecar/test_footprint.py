"""What a starting sidecar keeps in memory: the modules it imports and the encodings it builds.

Resident memory is paid once per agent pod (bench/memory.py measures it); these tests pin the
deterministic part of it. Each case builds the sidecar as ``a11i sidecar`` does, in a fresh
interpreter (this one has imported half the package already), and reports what it loaded.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from a11i.core.tokens.encoding import CL100K_BASE, O200K_BASE

_BUILD = """
    import json, sys
    import a11i.cli
    from a11i.sidecar.app import sidecar_app

    env = {{"A11I_WALLET_FILE": ":memory:", "A11I_LOG_LEVEL": "WARNING", **{env!r}}}
    _settings, sidecar, _app = sidecar_app(env)
    counter = sidecar.meter.counter
    {then}
    print(json.dumps({{
        "modules": sorted(m for m in sys.modules if m.partition(".")[0] == "grpc"
                          or m.startswith("opentelemetry.exporter.otlp")),
        "loaded": list(counter.encodings.loaded),
        "missing": list(counter.missing_encodings),
        "tiktoken": sorted(m for m in sys.modules if m.partition(".")[0] == "tiktoken"),
        "encoders": [type(counter.encodings.get(name)).__module__ + "." +
                     type(counter.encodings.get(name)).__name__
                     for name in counter.encodings.loaded],
    }}))
"""


def start(env: dict[str, str], then: str = "") -> dict[str, list[str]]:
    script = textwrap.dedent(_BUILD.format(env=env, then=then))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, list[str]] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_a_sidecar_at_rest_has_built_no_encoding() -> None:
    report = start({})
    assert report["loaded"] == []
    assert report["missing"] == []  # found and verified, only not built yet
    assert report["modules"] == []


@pytest.mark.parametrize(
    ("count", "loaded"),
    [
        ('counter.count_chat("gpt-4o-mini", [{"role": "user", "content": "hi"}])', [O200K_BASE]),
        ('counter.count_chat("gpt-4", [{"role": "user", "content": "hi"}])', [CL100K_BASE]),
        (
            'counter.count_anthropic("claude-sonnet-4-5", None, '
            '[{"role": "user", "content": "hi"}])',
            [CL100K_BASE],
        ),
    ],
    ids=["gpt-4o-mini", "gpt-4", "claude"],
)
def test_an_encoding_is_built_when_a_model_needing_it_is_counted(
    count: str, loaded: list[str]
) -> None:
    assert start({}, then=count)["loaded"] == loaded


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("http/protobuf", "opentelemetry.exporter.otlp.proto.http"),
        ("grpc", "opentelemetry.exporter.otlp.proto.grpc"),
    ],
)
def test_only_the_configured_otlp_transport_is_imported(protocol: str, expected: str) -> None:
    modules = start(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
    )["modules"]
    assert expected in modules
    other = "grpc" if protocol != "grpc" else "opentelemetry.exporter.otlp.proto.http"
    assert not [m for m in modules if m.partition(".")[0] == other or m.startswith(other)]


_BOTH = (
    'counter.count_chat("gpt-4o-mini", [{"role": "user", "content": "hi"}]); '
    'counter.count_anthropic("claude-sonnet-4-5", None, [{"role": "user", "content": "hi"}])'
)


@pytest.mark.skipif(
    importlib.util.find_spec("a11i_bpe") is None, reason="the compact tokenizer is not installed"
)
def test_the_compact_tokenizer_counts_and_tiktoken_is_never_imported() -> None:
    """tiktoken's module and Rust library (3.7 MiB mapped) stay out of a sidecar that counts
    with a11i_bpe; both encodings built are a11i_bpe's."""
    report = start({}, then=_BOTH)
    assert report["loaded"] == [CL100K_BASE, O200K_BASE]
    assert report["encoders"] == ["a11i_bpe.Encoding", "a11i_bpe.Encoding"]
    assert report["tiktoken"] == []


def test_a11i_tokenizer_tiktoken_counts_with_tiktoken() -> None:
    report = start({"A11I_TOKENIZER": "tiktoken"}, then=_BOTH)
    assert report["loaded"] == [CL100K_BASE, O200K_BASE]
    assert report["encoders"] == ["tiktoken.core.Encoding", "tiktoken.core.Encoding"]
    assert "tiktoken" in report["tiktoken"]
