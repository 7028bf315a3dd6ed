"""Attribution rules (pure): which rule, if any, claims each untagged bill line by its sub-account,
workspace or API key."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from agent.core.rules import AttributionRule, Rules

if TYPE_CHECKING:
    import pandas as pd


def ordered_rules(rules: Rules) -> list[tuple[int, AttributionRule]]:
    """The rules with their file positions, in the order they are tried (see AttributionRule.precedence)."""
    return sorted(enumerate(rules.attribution), key=lambda item: item[1].precedence(item[0]))


def attribute(items: pd.DataFrame, rules: Rules) -> pd.Series:
    """Per line: the label of the rule that claims it, "" when none does. Tagged lines are never claimed:
    the tag always wins."""
    import pandas as pd

    claimed = pd.Series("", index=items.index, dtype=object)
    if not rules.attribution or items.empty:
        return claimed
    untagged = items["tag"].isna()
    for position, rule in ordered_rules(rules):
        matches = untagged & (claimed == "")
        for dimension, pattern in rule.match.patterns().items():
            matches &= _matching(items[dimension], pattern)
        claimed = claimed.mask(matches, rule.label(position))
    return claimed


def _matching(values: pd.Series, pattern: str) -> pd.Series:
    # Match each distinct value once: bills repeat a few names over millions of lines.
    verdicts = {value: fnmatchcase(value, pattern) for value in values.dropna().unique()}
    return values.map(verdicts).fillna(False).astype(bool)


def rule_by_label(rules: Rules) -> dict[str, AttributionRule]:
    return {rule.label(position): rule for position, rule in enumerate(rules.attribution)}
