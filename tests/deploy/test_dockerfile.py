"""The container image without a container engine: hadolint on the Dockerfile, its shape (multi-stage, pinned slim
base, non-root numeric user, `cz-agent serve`), and its builder's RUN lines replayed in a fresh virtualenv."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent import __version__
from tests.deploy.tools import REPO, ChartTools

pytestmark = pytest.mark.deploy

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


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
        assignments = [shlex.split(arguments) for arguments in self.all("ENV")]
        return dict(item.split("=", 1) for words in assignments for item in words)


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuation lines joined, comments dropped)."""
    found: list[Stage] = []
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        instruction, arguments = instruction.upper(), " ".join(arguments.split())
        if instruction == "FROM":
            base, _, name = arguments.partition(" AS ")
            found.append(Stage(base=base, name=name or None))
        else:
            found[-1].instructions.append((instruction, arguments))
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages(DOCKERFILE.read_text())


def test_hadolint_passes(chart_tools: ChartTools):
    result = subprocess.run([str(chart_tools.hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_the_image_is_multi_stage_on_a_pinned_slim_python(dockerfile: list[Stage]):
    builder, final = dockerfile
    assert builder.name == "builder"
    for stage in dockerfile:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", stage.base), stage.base
    assert final.all("COPY") == ["--from=builder /opt/venv /opt/venv"]


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
    """The builder's COPY and RUN lines replayed: the sources copied into a context directory, the RUN lines run by
    a shell in it, with the stage's ENV (the virtualenv path moved into tmp_path)."""
    builder = dockerfile[0]
    context = tmp_path / "src"
    context.mkdir()
    for source in copied_sources(builder):
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    assert builder.last("WORKDIR") == "/src"
    venv = tmp_path / "venv"
    env = {**os.environ, **builder.env(), "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    python_dir = str(Path(sys.executable).parent)
    for command in builder.all("RUN"):
        # `python` is the base image's; here the interpreter running the tests (3.11 too).
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=context, capture_output=True,
                              text=True, env={**env, "PATH": f"{python_dir}:{env['PATH']}"})
        assert done.returncode == 0, f"RUN {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    version = subprocess.run([str(venv / "bin" / "cz-agent"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"cz-agent {__version__}"
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import agent.service; print(agent.service.__file__)"],
                              capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(venv), "agent was imported from outside the virtualenv"
