"""The tiktoken encodings, offline: fetched once from PyPI, loaded and verified at start.

Adapter: reads encoding files (and, for the ``fetch`` command only, runs ``pip download`` and
writes files). It never downloads anything at run time: ``load_encodings`` only reads files,
checks their SHA-256 against the hashes tiktoken itself expects, and builds the encoders that
the pure counter (``a11i.core.tokens``) is handed. A missing or corrupt file is not fatal: the
returned ``Encodings`` names it, and counts become estimates.

Which encoder (``A11I_TOKENIZER``, ``Tokenizer``): ``compact`` is ``a11i_bpe`` (native/bpe, a
Rust extension installed beside the package): tiktoken's tokens from one copy of the vocabulary,
5 MiB resident for o200k_base where tiktoken's ``CoreBPE`` takes 41.5 MiB. ``tiktoken`` is
tiktoken itself. ``auto`` (the default) is ``compact`` when ``a11i_bpe`` is installed.

Where the files come from: tiktoken downloads them from openaipublic.blob.core.windows.net on
first use, which a sidecar without internet cannot do. The ``litellm`` wheel on PyPI ships the
same files under tiktoken's cache names (the SHA-1 of their URL); ``fetch`` takes them out of
the wheel with ``zipfile`` (litellm is never installed), and the hash check proves they are the
official files byte for byte.

    python -m a11i.sidecar.encodings fetch [--dest DIR] [--wheel-dir DIR] [--wheel FILE]
    python -m a11i.sidecar.encodings check [--dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from a11i.core.errors import SettingsError
from a11i.core.tokens.encoding import Encoder, EncodingLoader, Encodings, EncodingUnavailable

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)


class Tokenizer(StrEnum):
    """``A11I_TOKENIZER``: which library encodes (the tokens are the same)."""

    AUTO = "auto"
    COMPACT = "compact"
    TIKTOKEN = "tiktoken"


class TokenizerUnavailable(SettingsError):
    """``A11I_TOKENIZER=compact`` where ``a11i_bpe`` is not installed (exit code 2)."""


def resolve_tokenizer(choice: Tokenizer) -> Tokenizer:
    """``COMPACT`` or ``TIKTOKEN``: ``AUTO`` becomes ``COMPACT`` when ``a11i_bpe`` imports.
    Raises ``TokenizerUnavailable`` when ``COMPACT`` is asked for and cannot be had."""
    if choice is Tokenizer.TIKTOKEN:
        return choice
    try:
        import a11i_bpe  # noqa: F401  (only whether it is there)
    except ImportError as error:
        if choice is Tokenizer.COMPACT:
            raise TokenizerUnavailable(
                "A11I_TOKENIZER=compact but the a11i_bpe extension is not installed "
                f"({error}); install native/bpe (make install does) or use tiktoken"
            ) from error
        return Tokenizer.TIKTOKEN
    return Tokenizer.COMPACT


#: The litellm release whose wheel carries the encoding files (checked: 1.109.1).
LITELLM_VERSION: Final = "1.109.1"
#: Where the wheel keeps them, under tiktoken's cache names.
WHEEL_MEMBER_DIR: Final = "litellm/litellm_core_utils/tokenizers"
#: The packaged folder (git-ignored, shipped as package data).
PACKAGE_DIR: Final = Path(__file__).resolve().parent / "data" / "encodings"
#: Where ``fetch`` keeps the downloaded wheel: ``<repo>/.cache/wheels``.
DEFAULT_WHEEL_DIR: Final = Path(__file__).resolve().parents[2] / ".cache" / "wheels"

_BLOB_BASE: Final = "https://openaipublic.blob.core.windows.net/encodings/"
# The largest official file is 3.6 MB; refuse to read anything far bigger.
_MAX_FILE_BYTES: Final = 64 * 1024 * 1024

_ENDOFTEXT: Final = "<|endoftext|>"
_FIM_PREFIX: Final = "<|fim_prefix|>"
_FIM_MIDDLE: Final = "<|fim_middle|>"
_FIM_SUFFIX: Final = "<|fim_suffix|>"
_ENDOFPROMPT: Final = "<|endofprompt|>"


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """The constructor arguments of one encoding, as in ``tiktoken_ext.openai_public``.

    They are copied here because tiktoken's own constructors load the file from its URL;
    tests/unit/sidecar/test_encodings.py checks the copy against the installed tiktoken.
    """

    name: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int]

    @property
    def url(self) -> str:
        return f"{_BLOB_BASE}{self.name}.tiktoken"

    @property
    def cache_name(self) -> str:
        """tiktoken's cache file name (``read_file_cached``): the SHA-1 of the URL."""
        return hashlib.sha1(self.url.encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.name}.tiktoken"


_CL100K_PATTERN: Final = "|".join(
    [
        r"""'(?i:[sdmt]|ll|ve|re)""",
        r"""[^\r\n\p{L}\p{N}]?+\p{L}++""",
        r"""\p{N}{1,3}+""",
        r""" ?[^\s\p{L}\p{N}]++[\r\n]*+""",
        r"""\s++$""",
        r"""\s*[\r\n]""",
        r"""\s+(?!\S)""",
        r"""\s""",
    ]
)
_O200K_PATTERN: Final = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

SPECS: Final[Mapping[str, EncodingSpec]] = MappingProxyType(
    {
        "cl100k_base": EncodingSpec(
            name="cl100k_base",
            sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            pat_str=_CL100K_PATTERN,
            special_tokens=MappingProxyType(
                {
                    _ENDOFTEXT: 100257,
                    _FIM_PREFIX: 100258,
                    _FIM_MIDDLE: 100259,
                    _FIM_SUFFIX: 100260,
                    _ENDOFPROMPT: 100276,
                }
            ),
        ),
        "o200k_base": EncodingSpec(
            name="o200k_base",
            sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            pat_str=_O200K_PATTERN,
            special_tokens=MappingProxyType({_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018}),
        ),
    }
)


class EncodingError(Exception):
    """Root error of this module: an encoding file could not be fetched, read or trusted."""


class HashMismatch(EncodingError):
    """A file's SHA-256 is not the official one: truncated, corrupt or not the file named."""


# --------------------------------------------------------------------------------------------
# Reading and verifying


def verify(data: bytes, spec: EncodingSpec, source: str) -> None:
    """Raise ``HashMismatch`` unless ``data`` is the official file of ``spec``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise HashMismatch(
            f"{source}: SHA-256 {actual} is not the official {spec.name} hash {spec.sha256} "
            f"({len(data)} bytes); the file is corrupt, truncated or not {spec.name}"
        )


def read_verified(path: Path, spec: EncodingSpec) -> bytes:
    """The bytes of an encoding file, verified; ``EncodingError`` if unreadable or wrong."""
    try:
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise EncodingError(f"{path}: {size} bytes is too large for {spec.name}")
        data = path.read_bytes()
    except OSError as error:
        raise EncodingError(f"{path}: cannot read: {error}") from error
    verify(data, spec, str(path))
    return data


def parse_ranks(data: bytes, source: str) -> dict[bytes, int]:
    """tiktoken's file format: one ``<base64 token> <rank>`` per line."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as error:
            raise EncodingError(f"{source}: malformed line {line[:80]!r}") from error
    return ranks


def _release_python_ranks(encoding: tiktoken.Encoding) -> None:
    """Drop tiktoken's Python copy of the merge ranks (~40 MiB for both encodings): encoding is
    done by its Rust core, which holds its own copy; only ``token_byte_values`` and pickling
    read the Python one, and the sidecar uses neither. Every agent pod pays for this memory."""
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}


def build_encoding(
    spec: EncodingSpec,
    data: bytes,
    source: str = "<bytes>",
    tokenizer: Tokenizer = Tokenizer.AUTO,
) -> Encoder:
    """An encoder from verified file bytes, without tiktoken's downloader: ``a11i_bpe``'s
    (``compact``) or a ``tiktoken.Encoding``, per ``tokenizer`` (``resolve_tokenizer``)."""
    verify(data, spec, source)
    if resolve_tokenizer(tokenizer) is Tokenizer.COMPACT:
        import a11i_bpe

        try:
            return a11i_bpe.Encoding(spec.name, data, spec.pat_str)
        except ValueError as error:
            raise EncodingError(f"{source}: {error}") from error
    import tiktoken

    encoding = tiktoken.Encoding(
        spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=parse_ranks(data, source),
        special_tokens=dict(spec.special_tokens),
    )
    _release_python_ranks(encoding)
    return encoding


def tiktoken_cache_dir(environ: Mapping[str, str]) -> Path | None:
    """tiktoken's own cache folder, by its rules (``tiktoken.load.read_file_cached``)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in environ:
            value = environ[variable]
            return Path(value) if value else None  # "" disables tiktoken's cache
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def search_path(
    search_dirs: Sequence[Path] | None = None,
    *,
    include_defaults: bool = True,
    environ: Mapping[str, str] | None = None,
) -> list[Path]:
    """The folders ``load_encodings`` looks in, in order: ``search_dirs`` (the caller passes
    ``A11I_ENCODINGS_DIR``), the packaged folder, tiktoken's cache folder."""
    dirs = [Path(d) for d in search_dirs or ()]
    if include_defaults:
        dirs.append(PACKAGE_DIR)
        cache = tiktoken_cache_dir(os.environ if environ is None else environ)
        if cache is not None:
            dirs.append(cache)
    return list(dict.fromkeys(dirs))


def load_encodings(
    search_dirs: Sequence[Path] | None = None,
    *,
    include_defaults: bool = True,
    environ: Mapping[str, str] | None = None,
    lazy: bool = False,
    tokenizer: Tokenizer = Tokenizer.AUTO,
) -> Encodings:
    """Every encoding from the first folder holding a valid copy (``<name>.tiktoken`` or
    tiktoken's cache name), its hash verified. Never raises for a missing or corrupt file: the
    result lists it in ``missing`` and says why in ``problems``.

    Eager (the default) builds both at once (~1 s, ~64 MiB resident). ``lazy`` (the sidecar and
    library mode) only finds and verifies the files now, streaming them through the hash, and
    builds each encoding when a model that needs it is first counted (``Encodings.deferred``).
    ``tokenizer`` picks the library (``TokenizerUnavailable`` for ``compact`` without it)."""
    tokenizer = resolve_tokenizer(tokenizer)
    dirs = search_path(search_dirs, include_defaults=include_defaults, environ=environ)
    available: dict[str, Encoder] = {}
    deferred: dict[str, EncodingLoader] = {}
    problems: dict[str, str] = {}
    for spec in SPECS.values():
        rejected: list[str] = []
        for directory in dirs:
            for path in (directory / spec.file_name, directory / spec.cache_name):
                if spec.name in available or spec.name in deferred or not path.is_file():
                    continue
                try:
                    if lazy:
                        verify_file(path, spec)
                        deferred[spec.name] = partial(_load_on_first_use, path, spec, tokenizer)
                    else:
                        available[spec.name] = _load(path, spec, tokenizer)
                except EncodingError as error:
                    # A bad copy must not hide a good one further down the search path.
                    log.warning("ignoring tiktoken encoding file: %s", error)
                    rejected.append(str(error))
        if spec.name not in available and spec.name not in deferred:
            where = ", ".join(str(d) for d in dirs) or "(no folder)"
            problems[spec.name] = "; ".join(rejected) or f"not found in {where}"
    return Encodings(available=available, problems=problems, deferred=deferred)


def verify_file(path: Path, spec: EncodingSpec) -> None:
    """``read_verified`` without holding the file in memory: the hash over 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > _MAX_FILE_BYTES:
                raise EncodingError(f"{path}: {size} bytes is too large for {spec.name}")
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise EncodingError(f"{path}: cannot read: {error}") from error
    if digest.hexdigest() != spec.sha256:
        raise HashMismatch(
            f"{path}: SHA-256 {digest.hexdigest()} is not the official {spec.name} hash "
            f"{spec.sha256} ({size} bytes); the file is corrupt, truncated or not {spec.name}"
        )


def _load(path: Path, spec: EncodingSpec, tokenizer: Tokenizer) -> Encoder:
    encoding = build_encoding(spec, read_verified(path, spec), str(path), tokenizer)
    _return_freed_memory()
    return encoding


def _load_on_first_use(path: Path, spec: EncodingSpec, tokenizer: Tokenizer) -> Encoder:
    """A deferred encoding's loader: the file is read and verified again (it may have changed
    since the start), then built; ``EncodingUnavailable`` when it no longer can be."""
    started = time.perf_counter()
    try:
        encoding = _load(path, spec, tokenizer)
    except EncodingError as error:
        log.warning("tiktoken encoding %s unavailable, counts are estimates: %s", spec.name, error)
        raise EncodingUnavailable(str(error)) from error
    log.info(
        "tiktoken encoding %s loaded on first use from %s in %.0f ms (%s)",
        spec.name,
        path,
        (time.perf_counter() - started) * 1000,
        tokenizer,
    )
    return encoding


def _return_freed_memory() -> None:
    """Hand the parse's freed heap (the ranks as Python bytes, ~4-8 MiB that glibc keeps in its
    free lists) back to the system: resident memory is what every agent pod pays for."""
    if sys.platform != "linux":
        return
    import ctypes  # only here: a cold path, once per encoding

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to trim
        return
    libc.malloc_trim(0)


# --------------------------------------------------------------------------------------------
# Fetching (the ``fetch`` command; never called at run time)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What ``fetch`` did: files written, and files already present with the right hash."""

    written: tuple[Path, ...]
    present: tuple[Path, ...]


def _valid(path: Path, spec: EncodingSpec) -> bool:
    try:
        read_verified(path, spec)
    except EncodingError:
        return False
    return True


def find_wheel(wheel_dir: Path) -> Path | None:
    found = sorted(wheel_dir.glob(f"litellm-{LITELLM_VERSION}-*.whl"))
    return found[0] if found else None


def download_wheel(wheel_dir: Path) -> Path:
    """``pip download`` the pinned litellm wheel, without dependencies, into ``wheel_dir``."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(wheel_dir),
        f"litellm=={LITELLM_VERSION}",
    ]
    try:
        completed = subprocess.run(command, check=False)
    except OSError as error:
        raise EncodingError(f"cannot run pip: {error}") from error
    if completed.returncode != 0:
        raise EncodingError(
            f"`pip download litellm=={LITELLM_VERSION}` failed (exit {completed.returncode}); "
            "see pip's output above. Offline? Put the wheel in "
            f"{wheel_dir} or pass --wheel, or set A11I_ENCODINGS_DIR to a folder holding "
            "cl100k_base.tiktoken and o200k_base.tiktoken."
        )
    wheel = find_wheel(wheel_dir)
    if wheel is None:
        raise EncodingError(f"pip reported success but no litellm wheel is in {wheel_dir}")
    return wheel


def extract(wheel: Path, specs: Sequence[EncodingSpec]) -> dict[str, bytes]:
    """The verified bytes of each encoding file inside the wheel (nothing is installed)."""
    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for spec in specs:
                member = f"{WHEEL_MEMBER_DIR}/{spec.cache_name}"
                try:
                    info = archive.getinfo(member)
                except KeyError as error:
                    raise EncodingError(f"{wheel}: has no {member} ({spec.name})") from error
                if info.file_size > _MAX_FILE_BYTES:
                    raise EncodingError(f"{wheel}: {member} is {info.file_size} bytes")
                data = archive.read(info)
                verify(data, spec, f"{wheel}!{member}")
                out[spec.name] = data
    except (OSError, zipfile.BadZipFile) as error:
        raise EncodingError(f"{wheel}: not a readable wheel: {error}") from error
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def fetch(
    dest: Path = PACKAGE_DIR, wheel_dir: Path = DEFAULT_WHEEL_DIR, wheel: Path | None = None
) -> FetchResult:
    """Install the official encoding files into ``dest``. Idempotent: files already there with
    the right hash are left alone, and then nothing is downloaded. Raises ``EncodingError``
    (``HashMismatch`` for a file that is not the official one)."""
    present = [
        dest / spec.file_name for spec in SPECS.values() if _valid(dest / spec.file_name, spec)
    ]
    todo = [spec for spec in SPECS.values() if dest / spec.file_name not in present]
    if not todo:
        return FetchResult(written=(), present=tuple(present))
    source = wheel or find_wheel(wheel_dir) or download_wheel(wheel_dir)
    files = extract(source, todo)
    written: list[Path] = []
    try:
        for spec in todo:
            target = dest / spec.file_name
            _write_atomically(target, files[spec.name])
            written.append(target)
    except OSError as error:
        raise EncodingError(f"cannot write into {dest}: {error}") from error
    return FetchResult(written=tuple(written), present=tuple(present))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m a11i.sidecar.encodings",
        description="Install (fetch) or verify (check) the offline tiktoken encodings.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_command = commands.add_parser(
        "fetch", help=f"extract them from the litellm {LITELLM_VERSION} wheel on PyPI"
    )
    fetch_command.add_argument(
        "--dest", type=Path, default=PACKAGE_DIR, help=f"where to install them ({PACKAGE_DIR})"
    )
    fetch_command.add_argument(
        "--wheel-dir",
        type=Path,
        default=DEFAULT_WHEEL_DIR,
        help=f"where the downloaded wheel is kept and reused ({DEFAULT_WHEEL_DIR})",
    )
    fetch_command.add_argument("--wheel", type=Path, help="a local litellm wheel to use")
    check_command = commands.add_parser("check", help="load and verify them as the sidecar does")
    check_command.add_argument("--dir", type=Path, action="append", help="a folder to try first")
    args = parser.parse_args(argv)

    if args.command == "fetch":
        try:
            result = fetch(args.dest, args.wheel_dir, args.wheel)
        except EncodingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        for path in result.present:
            print(f"ok       {path} (already present, hash verified)")
        for path in result.written:
            print(f"written  {path} (hash verified)")
        return 0

    tokenizer = resolve_tokenizer(Tokenizer.AUTO)
    encodings = load_encodings(args.dir, tokenizer=tokenizer)
    for name in encodings.available:
        print(f"ok       {name} ({tokenizer})")
    for name in encodings.missing:
        print(f"missing  {name}: {encodings.problems.get(name, 'not found')}", file=sys.stderr)
    return 1 if encodings.missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
