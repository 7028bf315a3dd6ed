"""The import-linter contracts of .importlinter: imports point down only, and the core stays pure."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    tree = copy_of_the_package(tmp_path)
    with (tree / "agent" / "core" / "money.py").open("a") as module:
        module.write("\nfrom agent.store.runs import list_runs  # noqa: E402\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "agent.core is not allowed to import agent.store" in result.stdout
    assert "agent.core.money -> agent.store.runs" in result.stdout


def test_pandas_in_the_core_breaks_its_purity(tmp_path: Path) -> None:
    tree = copy_of_the_package(tmp_path)
    with (tree / "agent" / "core" / "split.py").open("a") as module:
        module.write("\nimport pandas  # noqa: E402\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "agent.core is not allowed to import pandas" in result.stdout
