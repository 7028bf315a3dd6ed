"""The import-linter contracts of .importlinter: imports point down only, and the core stays pure."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "agent", tmp_path / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("module", "statement", "broken"), [
    ("money.py", "from agent.store.runs import list_runs",
     ["agent.core is not allowed to import agent.store", "agent.core.money -> agent.store.runs"]),
    ("split.py", "import pandas", ["agent.core is not allowed to import pandas"]),
], ids=["an upward import breaks the layers", "pandas in the core breaks its purity"])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, statement: str, broken: list[str]) -> None:
    tree = copy_of_the_package(tmp_path)
    with (tree / "agent" / "core" / module).open("a") as source:
        source.write(f"\n{statement}  # noqa: E402\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    for message in broken:
        assert message in result.stdout


@pytest.mark.parametrize("module", ["agent.service.serve", "agent.cli"])
def test_an_idle_agent_and_the_command_line_load_no_data_frames(module: str) -> None:
    # pandas, numpy and Arrow are most of a process's memory: an idle `cz-agent serve` (under 150 MiB,
    # bench/serve_footprint.py) and `cz-agent --help` load them only when a bill is read or split.
    probe = subprocess.run([sys.executable, "-c", f"import sys, {module}; "
                            "print(sorted({'pandas', 'numpy', 'pyarrow'} & set(sys.modules)))"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
