"""Writes the values table of a chart's README from the `# --` comments of its values.yaml (as helm-docs does).

    python deploy/helm/values_table.py deploy/helm/cz-allocation-agent           # rewrite the table
    python deploy/helm/values_table.py --check deploy/helm/cz-allocation-agent   # exit 1 if it is out of date

A value is documented by a `# --` comment (continued by the `#` lines after it) right above its key; a map whose
every leaf is documented needs none itself. An undocumented value is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?:\s|$)")
TYPES = {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}


class UndocumentedValues(Exception):
    pass


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def descriptions(values_text: str) -> dict[str, str]:
    """Dotted key -> its `# --` description, from the comments of values.yaml."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        comment = line.strip()
        if comment.startswith("# --"):
            pending = [comment.removeprefix("# --").strip()]
            continue
        if comment.startswith("#") and pending is not None:
            pending.append(comment.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if match is None:
            pending = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            found[".".join(key for _, key in stack)] = " ".join(pending)
        pending = None
    return found


def rows(values_text: str) -> list[Row]:
    documented = descriptions(values_text)
    values = yaml.safe_load(values_text)
    table: list[Row] = []
    missing: list[str] = []

    def walk(node: object, path: str, covered: bool) -> None:
        if path in documented:
            table.append(Row(path, TYPES[type(node)], json.dumps(node, separators=(", ", ": ")), documented[path]))
            covered = True
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else key, covered)
        elif not covered:
            missing.append(path)

    walk(values, "", False)
    if missing:
        raise UndocumentedValues(f"values without a `# --` comment: {', '.join(missing)}")
    return table


def markdown(table: list[Row]) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for row in table:
        cells = (f"`{row.key}`", row.type, f"`{row.default}`", row.description)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def updated_readme(readme: str, table: list[Row]) -> str:
    before, found_start, rest = readme.partition(START)
    _, found_end, after = rest.partition(END)
    if not (found_start and found_end):
        raise ValueError(f"the README needs the markers {START} and {END}")
    return f"{before}{START}\n{markdown(table)}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the README's table is out of date")
    args = parser.parse_args(argv)
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    try:
        expected = updated_readme(readme, rows((args.chart / "values.yaml").read_text(encoding="utf-8")))
    except (UndocumentedValues, ValueError) as e:
        print(f"{args.chart}: {e}", file=sys.stderr)
        return 1
    if args.check:
        if expected != readme:
            print(f"{readme_path}: the values table is out of date; run {sys.argv[0]} {args.chart}", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
