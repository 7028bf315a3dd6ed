"""The error tree: every exception class of the package is drawn in agent/errors.py, under AgentError."""

from __future__ import annotations

import ast
from pathlib import Path

import agent.errors
from agent.errors import AgentError

PACKAGE = Path(agent.errors.__file__).parent


def test_no_exception_class_is_defined_outside_the_errors_module() -> None:
    defined_elsewhere = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
        for path in sorted(PACKAGE.rglob("*.py")) if path != Path(agent.errors.__file__)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(ast.unparse(base).endswith(("Error", "Exception", "Conflict")) for base in node.bases)
    ]
    assert defined_elsewhere == []


def test_every_error_is_an_agent_error() -> None:
    classes = [value for value in vars(agent.errors).values()
               if isinstance(value, type) and issubclass(value, BaseException)]
    assert len(classes) > 10
    assert all(issubclass(cls, AgentError) for cls in classes)
