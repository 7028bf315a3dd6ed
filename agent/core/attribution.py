"""Attribution rules (pure): which rule, if any, claims each untagged bill line by its sub-account,
workspace or API key."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from agent.core.rules import AttributionRule, Rules

# The dimensions of an untagged line, in the order `attribute` reads them.
DIMENSIONS = ("sub_account", "workspace", "api_key")


def ordered_rules(rules: Rules) -> list[tuple[int, AttributionRule]]:
    """The rules with their file positions, in the order they are tried (see AttributionRule.precedence)."""
    return sorted(enumerate(rules.attribution), key=lambda item: item[1].precedence(item[0]))


def attribute(untagged: Sequence[tuple[str | None, ...]], rules: Rules) -> list[str]:
    """Per untagged line, given as its (sub-account, workspace, API key): the label of the rule that claims
    it, "" when none does. Tagged lines never reach here: the tag always wins."""
    ordered = [(rule.label(position), rule.match.patterns()) for position, rule in ordered_rules(rules)]
    return [_claim(dict(zip(DIMENSIONS, values)), ordered) for values in untagged]


def _claim(line: dict[str, str | None], ordered: list[tuple[str, dict[str, str]]]) -> str:
    for label, patterns in ordered:
        if all(line[dimension] is not None and fnmatchcase(line[dimension], pattern)
               for dimension, pattern in patterns.items()):
            return label
    return ""


def rule_by_label(rules: Rules) -> dict[str, AttributionRule]:
    return {rule.label(position): rule for position, rule in enumerate(rules.attribution)}
