"""The container image without a container engine: hadolint on the Dockerfile, its shape (multi-stage, a slim base
pinned by digest, non-root numeric user, `cz-agent serve`, the OCI labels), and its builder's COPY and RUN lines
replayed in a fresh virtualenv: the hashed lock installs, and exactly its packages with the agent."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker

from agent import __version__
from tests.deploy.tools import REPO, ChartTools

pytestmark = pytest.mark.deploy

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
RUNTIME_LOCK = REPO / "requirements.lock"
TEST_LOCK = REPO / "requirements-test.lock"
# A slim Python 3.11 image named by tag and pinned by the digest of what the tag named when it was chosen.
PINNED_SLIM_PYTHON = re.compile(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}")
OCI = "org.opencontainers.image."


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"stage {self.name or self.base} has no {instruction}"
        return found[-1]

    def env(self) -> dict[str, str]:
        return self._assignments("ENV")

    def labels(self) -> dict[str, str]:
        return self._assignments("LABEL")

    def args(self) -> dict[str, str | None]:
        """Each ARG with its default (None without one)."""
        declared = (item.partition("=") for arguments in self.all("ARG") for item in shlex.split(arguments))
        return {name: default if equals else None for name, equals, default in declared}

    def _assignments(self, instruction: str) -> dict[str, str]:
        assignments = [shlex.split(arguments) for arguments in self.all(instruction)]
        return dict(item.split("=", 1) for words in assignments for item in words)


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuation lines joined, comments dropped) and its
    base with the defaults of the ARGs declared before the first FROM substituted (what a build without
    --build-arg uses)."""
    found: list[Stage] = []
    global_args = Stage(base="", name=None)
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        instruction, arguments = instruction.upper(), " ".join(arguments.split())
        if instruction == "FROM":
            base, _, name = arguments.partition(" AS ")
            for arg, default in global_args.args().items():
                base = base.replace(f"${{{arg}}}", default or "")
            found.append(Stage(base=base, name=name or None))
        else:
            (found[-1] if found else global_args).instructions.append((instruction, arguments))
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages(DOCKERFILE.read_text())


def test_hadolint_passes(chart_tools: ChartTools):
    result = subprocess.run([str(chart_tools.hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_the_image_is_multi_stage_on_a_slim_python_pinned_by_digest(dockerfile: list[Stage]):
    builder, final = dockerfile
    assert builder.name == "builder"
    for stage in dockerfile:
        assert PINNED_SLIM_PYTHON.fullmatch(stage.base), f"FROM {stage.base}: not a slim Python 3.11 pinned by digest"
    assert final.base == builder.base, "the stages build and run on different bases"
    assert final.all("COPY") == ["--from=builder /opt/venv /opt/venv"]


def test_the_image_carries_the_oci_labels(dockerfile: list[Stage]):
    final = dockerfile[-1]
    labels, args = final.labels(), final.args()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert labels[OCI + "title"] == project["name"]
    assert labels[OCI + "description"] == project["description"]
    license = project["license"]  # a table ({text = ...}) or, as setuptools now wants, an SPDX string
    assert labels[OCI + "licenses"] == (license if isinstance(license, str) else license["text"]) == "Apache-2.0"
    assert labels[OCI + "source"] == "${SOURCE_URL}" and "SOURCE_URL" in args
    # Version and revision are build arguments; the version's default is the package's.
    assert labels[OCI + "version"] == "${VERSION}" and args["VERSION"] == __version__ == project["version"]
    assert labels[OCI + "revision"] == "${REVISION}" and "REVISION" in args


def test_the_image_runs_cz_agent_serve_as_a_numeric_non_root_user(dockerfile: list[Stage]):
    final = dockerfile[-1]
    user = final.last("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    assert json.loads(final.last("ENTRYPOINT")) == ["cz-agent"]
    assert json.loads(final.last("CMD")) == ["serve"]
    assert final.last("EXPOSE") == "8080"
    env = final.env()
    # The agent writes only under /data (store, inbox) and /tmp: the chart's read-only root filesystem holds.
    assert env["CZ_AGENT_STORE_URL"] == "sqlite:////data/runs.db"
    assert env["CZ_AGENT_INBOX_DIR"] == "/data/inbox"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"


def test_dockerignore_keeps_what_the_build_copies(dockerfile: list[Stage]):
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in copied_sources(dockerfile[0]):
        excluded = False
        for pattern in patterns:  # Later patterns win, as in Docker; `!` re-includes.
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(source.rstrip("/"), pattern.removeprefix("!").rstrip("/")):
                excluded = not negated
        assert not excluded, f".dockerignore drops {source}, which the Dockerfile copies"


def copied_sources(stage: Stage) -> list[str]:
    return [source for arguments in stage.all("COPY") if not arguments.startswith("--from")
            for source in shlex.split(arguments)[:-1]]


def test_the_builder_steps_install_a_working_agent(dockerfile: list[Stage], tmp_path: Path):
    """The builder's COPY and RUN lines replayed in their order: each COPY puts its sources into a context directory
    (the stage's WORKDIR), each RUN runs there in a shell, with the stage's ENV (the virtualenv path moved into
    tmp_path). The dependencies come from the hashed lock alone: the agent is installed without them."""
    builder = dockerfile[0]
    assert builder.all("WORKDIR") == ["/src"]
    runs = " && ".join(builder.all("RUN"))
    assert 'pip" install --require-hashes -r requirements.lock' in runs and 'pip" install --no-deps .' in runs, runs
    context = tmp_path / "src"
    context.mkdir()
    venv = tmp_path / "venv"
    env = {**os.environ, **builder.env(), "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    # `python` is the base image's; here the interpreter running the tests (3.11 too).
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    for instruction, arguments in builder.instructions:
        if instruction == "COPY":
            assert not arguments.startswith("--"), f"COPY {arguments}: the builder copies only from the context"
            *sources, destination = shlex.split(arguments)
            for source in sources:
                copy_into(context, REPO / source, destination)
        elif instruction == "RUN":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", arguments], cwd=context, capture_output=True,
                                  text=True, env=env)
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    version = subprocess.run([str(venv / "bin" / "cz-agent"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"cz-agent {__version__}"
    imported = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import agent.service.serve as serve; print(serve.__file__)"],
                              capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(venv), "agent was imported from outside the virtualenv"

    checked = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert checked.returncode == 0, f"the lock misses what the agent needs:\n{checked.stdout}{checked.stderr}"
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, cwd=tmp_path, check=True)
    installed = {canonical(package["name"]): package["version"] for package in json.loads(listed.stdout)}
    installed.pop("pip")
    installed.pop("setuptools", None)  # what the venv module seeds Python 3.11's virtualenvs with
    assert installed.pop("cz-allocation-agent") == __version__
    wanted = {name: version for (name, marker), (version, _) in locked(RUNTIME_LOCK).items()
              if marker is None or Marker(marker).evaluate()}
    assert installed == wanted


def copy_into(context: Path, source: Path, destination: str) -> None:
    """COPY's rules for one source: a directory's contents go into the destination directory; a file goes into it
    when the destination ends with a slash, else becomes it."""
    target = context / destination
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    else:
        if destination.endswith("/"):
            target = target / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def test_the_image_lock_pins_what_the_tests_ran_with():
    """requirements.lock (the image's) is the runtime part of requirements-test.lock (the tests'): the same versions
    and the same hashes, so the image runs the packages the tests ran with."""
    runtime, tested = locked(RUNTIME_LOCK), locked(TEST_LOCK)
    assert runtime and set(runtime) < set(tested)
    differ = {requirement: (pin, tested.get(requirement)) for requirement, pin in runtime.items()
              if tested.get(requirement) != pin}
    assert not differ, f"the locks disagree (runtime, test): {differ}"


def locked(path: Path) -> dict[tuple[str, str | None], tuple[str, frozenset[str]]]:
    """A lock's requirements: (name, environment marker) -> (version, hashes). Each is pinned with == and hashed."""
    text = re.sub(r"\\\n", " ", "\n".join(line.partition("#")[0] for line in path.read_text().splitlines()))
    found = {}
    for line in filter(str.strip, text.splitlines()):
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)==(\S+)\s*(?:;\s*(.*?))?\s*((?:--hash=sha256:[0-9a-f]{64}\s*)+)",
                             line)
        assert match, f"{path.name}: not a pinned, hashed requirement: {line.strip()}"
        name, version, marker, hashes = match.groups()
        found[canonical(name), marker] = (version, frozenset(hashes.split()))
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
