"""The compact tokenizer (native/bpe, the a11i_bpe extension) gives tiktoken's tokens.

tiktoken is the reference: every text here is encoded by both, with the official files."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from a11i.core.model import TokenCount
from a11i.core.tokens.encoding import (
    CL100K_BASE,
    ENCODING_NAMES,
    O200K_BASE,
    Text,
    chunked_count,
)
from a11i.sidecar.encodings import (
    PACKAGE_DIR,
    SPECS,
    EncodingError,
    Tokenizer,
    TokenizerUnavailable,
    build_encoding,
    load_encodings,
    read_verified,
    resolve_tokenizer,
)
from a11i.sidecar.meter import load_meter

# make install builds it with cargo; without cargo it is absent (CI requires it: .ci/run).
a11i_bpe = pytest.importorskip("a11i_bpe", reason="the compact tokenizer is not installed")

REPO = Path(__file__).resolve().parents[3]


def _pair(name: str) -> tuple[a11i_bpe.Encoding, tiktoken.Encoding]:
    spec = SPECS[name]
    data = read_verified(PACKAGE_DIR / spec.file_name, spec)
    ours = build_encoding(spec, data, tokenizer=Tokenizer.COMPACT)
    theirs = build_encoding(spec, data, tokenizer=Tokenizer.TIKTOKEN)
    assert isinstance(ours, a11i_bpe.Encoding)
    assert isinstance(theirs, tiktoken.Encoding)
    return ours, theirs


#: Both encoders of each encoding, built once for the module.
_PAIRS = {name: _pair(name) for name in ENCODING_NAMES}


@pytest.fixture(scope="module", params=ENCODING_NAMES)
def pair(request: pytest.FixtureRequest) -> tuple[a11i_bpe.Encoding, tiktoken.Encoding]:
    return _PAIRS[request.param]


def _same(pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding], text: str) -> None:
    ours, theirs = pair
    expected = theirs.encode_ordinary(text)
    assert ours.encode_ordinary(text) == expected, text[:200]
    assert ours.count_ordinary(text) == len(expected)


CASES = [
    "",
    "hello world",
    "antidisestablishmentarianism",
    "お誕生日おめでとう",
    "Грузовик ехал по дороге, 東京は大きな都市です。 مرحبا بالعالم",
    "def f(x):\n    return x ** 2  # <|endoftext|> <|fim_prefix|>\n",
    " \t\n\r\n  trailing   ",
    "😀🎉👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ZWJ\u200d",
    "I'm, you're, they'LL, WE'VE, it's 's 't 're",
    "1234567890 3.14159 1e-10 0xdeadbeef ١٢٣",
    "a" * 5000,
    " " * 3000 + "x",
    "\n" * 2000,
    "ab" * 3000,
    '{"role":"user","content":[{"type":"text","text":"Why is checkout returning 503?"}]}',
    "\x00\x01\x7f control\x1b[31m colours",
    "CamelCaseIdentifiersLikeThisOne and snake_case_ones_too",
]


@pytest.mark.parametrize("text", CASES, ids=range(len(CASES)))
def test_the_same_tokens_as_tiktoken(
    pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding], text: str
) -> None:
    _same(pair, text)


def test_the_same_tokens_on_this_repository(
    pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding],
) -> None:
    """Code, prose and YAML: every file of the package, the docs and the charts, one by one."""
    files = sorted(
        path
        for pattern in ("a11i/**/*.py", "docs/*.md", "charts/**/*.yaml", "native/bpe/src/*.rs")
        for path in REPO.glob(pattern)
    )
    assert len(files) > 50
    for path in files:
        _same(pair, path.read_text(encoding="utf-8"))


def test_the_same_tokens_on_random_text(
    pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding],
) -> None:
    """Random code points from every plane in use, mixed with the pattern's hard cases (runs of
    spaces and newlines, apostrophes, digits, letters against marks)."""
    rng = random.Random(19)
    pieces = [" ", "  ", "\n", "\n\n", "'s", "'T", "123", "\u0301", "ß", "ǅ", "\t", "x"]
    for _ in range(400):
        chars = []
        for _ in range(rng.randint(1, 80)):
            kind = rng.random()
            if kind < 0.3:
                chars.append(rng.choice(pieces))
            elif kind < 0.6:
                chars.append(chr(rng.randint(0x20, 0x7E)))
            elif kind < 0.9:
                chars.append(
                    chr(rng.choice([rng.randint(0xA0, 0x2FFF), rng.randint(0x3000, 0x9FFF)]))
                )
            else:
                chars.append(chr(rng.randint(0x1F000, 0x1FAFF)))
        _same(pair, "".join(chars))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_the_same_tokens_for_any_text(text: str) -> None:
    for name in ENCODING_NAMES:
        _same(_PAIRS[name], text)


def test_the_same_tokens_for_long_pieces(
    pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding],
) -> None:
    """Pieces of 100 bytes and more are merged with a heap, as tiktoken does: long runs of
    letters, punctuation, spaces and newlines, each one piece."""
    rng = random.Random(21)
    for _ in range(60):
        length = rng.randint(100, 4000)
        for alphabet in ("abcdefghijklmnopqrstuvwxyzéß", "!@#$%^&*()-=+[]{};:,.<>/?", "ЖжЯяЁё"):
            _same(pair, "".join(rng.choice(alphabet) for _ in range(length)))
        _same(pair, " " * length + "x")
        _same(pair, "\n" * length)
        _same(pair, "\t " * length)


@pytest.mark.parametrize(
    "text",
    ["a\ud800b", "\ud83d" + "\ude00" + " split pair", "\udfff", "ok \udc80\udc81 twice"],
    ids=["lone-high", "split-pair", "lone-low", "two-lone"],
)
def test_lone_surrogates_as_tiktoken_mends_them(
    pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding], text: str
) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate, which UTF-8 cannot hold: both go through
    UTF-16 and back (U+FFFD for a lone one, the character for a split pair)."""
    _same(pair, text)


def test_long_texts_counted_in_chunks_are_exact(
    pair: tuple[a11i_bpe.Encoding, tiktoken.Encoding],
) -> None:
    ours, theirs = pair
    text = (REPO / "README.md").read_text(encoding="utf-8") * 12
    assert len(text) > 65_536
    count, exact = chunked_count(ours, text)
    assert exact
    assert count == len(theirs.encode_ordinary(text))


def test_a_text_the_split_regex_gives_up_on_is_estimated_not_failed() -> None:
    real, _ = _PAIRS[O200K_BASE]
    giving_up = " " * 1_000_000 + "x"
    with pytest.raises(ValueError, match="cannot split the text"):
        real.count_ordinary(giving_up)

    class GivesUp:
        name = O200K_BASE

        def encode_ordinary(self, text: str) -> list[int]:
            return real.encode_ordinary(giving_up)

    text = Text(O200K_BASE, GivesUp())
    assert text.count("hello world") == 3  # 11 characters at 4 per token, rounded up
    assert text.cuts == 1  # the call's count is marked an estimate


# ---- memory: the reason it exists ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tokens", "limit_mib"), [(CL100K_BASE, 100_256, 3), (O200K_BASE, 199_998, 6)]
)
def test_one_compact_copy_of_the_vocabulary(name: str, tokens: int, limit_mib: int) -> None:
    """tiktoken's CoreBPE holds 22.4 (cl100k) and 41.5 MiB (o200k) resident; the compact
    vocabulary and its table, counted from their allocations, fit in a few."""
    ours, _ = _PAIRS[name]
    assert len(ours) == tokens
    assert ours.heap_bytes < limit_mib * 2**20


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"aGVsbG8= 0\nd29ybGQ=\n", "line 2: malformed"),
        (b"aGVsbG8= 0\n!!!! 1\n", "line 2: malformed"),
        (b"aGVsbG8 0\n", "line 1: malformed"),
        (b"aGVsbG8= x\n", "line 1: malformed"),
        (b"aGVsbG8= 0 1\n", "line 1: malformed"),
        (b"aGVsbG8= 0\naGVsbG8= 1\n", "listed twice"),
        (b"aG=9bG8= 0\n", "line 1: malformed"),
        (b"\n\n", "no tokens"),
    ],
    ids=[
        "no-rank",
        "bad-base64",
        "no-padding",
        "bad-rank",
        "three-fields",
        "twice",
        "inner-pad",
        "empty",
    ],
)
def test_a_malformed_ranks_file_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        a11i_bpe.Encoding("test", data, r"\S+|\s+")


def test_a_bad_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="bad split pattern"):
        a11i_bpe.Encoding("test", b"YQ== 0\n", "(unclosed")


def test_a_vocabulary_without_every_byte_says_which_bytes() -> None:
    encoding = a11i_bpe.Encoding("test", b"YQ== 0\nYg== 1\n", r"\S+|\s+")
    assert encoding.encode_ordinary("abba") == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="no token for the bytes"):
        encoding.encode_ordinary("abc")


def test_build_encoding_names_the_file_for_a_bad_one() -> None:
    spec = SPECS[CL100K_BASE]
    with pytest.raises(EncodingError, match="SHA-256"):
        build_encoding(spec, b"YQ== 0\n", "/tmp/bad.tiktoken", tokenizer=Tokenizer.COMPACT)


# ---- choosing the tokenizer (A11I_TOKENIZER) ----------------------------------------------------


def test_auto_is_compact_when_installed() -> None:
    assert resolve_tokenizer(Tokenizer.AUTO) is Tokenizer.COMPACT
    lazy = load_encodings([PACKAGE_DIR], include_defaults=False, lazy=True)
    encoder = lazy.get(O200K_BASE)
    assert isinstance(encoder, a11i_bpe.Encoding)


def test_tiktoken_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_encodings([PACKAGE_DIR], include_defaults=False, tokenizer=Tokenizer.TIKTOKEN)
    assert all(isinstance(e, tiktoken.Encoding) for e in loaded.available.values())


def test_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto falls back to tiktoken; compact refuses to start, naming the setting."""
    monkeypatch.setitem(sys.modules, "a11i_bpe", None)  # import raises ImportError
    assert resolve_tokenizer(Tokenizer.AUTO) is Tokenizer.TIKTOKEN
    with pytest.raises(TokenizerUnavailable, match="A11I_TOKENIZER=compact"):
        load_meter(tokenizer=Tokenizer.COMPACT)
    meter = load_meter(tokenizer=Tokenizer.AUTO)
    assert meter.counter.count_text("gpt-4o", "hello world") == TokenCount(2, exact=True)
    assert isinstance(meter.counter.encodings.get(O200K_BASE), tiktoken.Encoding)
