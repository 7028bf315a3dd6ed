"""Bills summed per tag value (the allocation's input) from imported bills or from a frame of line items, and per
tag value, charge day and kind (the forecast's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date

import pandas as pd

from agent.bills.totals import BillTotals, GroupTotal, RowSample
from agent.core.allocation import allocate_lines
from agent.core.attribution import attribute
from agent.core.model import Allocation, DailyCost, NamespaceUsage, TagLine, totals_per_tag
from agent.core.rules import Rules


def allocate(
    items: pd.DataFrame,
    *,
    rules: Rules,
    period: str,
    usage: Iterable[NamespaceUsage] = (),
    namespace_labels: Mapping[str, Mapping[str, str | None]] | None = None,
) -> Allocation:
    """Allocate the period's line items (agent.bills.lineitems); see `allocate_lines`."""
    return allocate_lines(summarise_tag_lines(items, rules=rules), rules=rules, period=period, usage=usage,
                          namespace_labels=namespace_labels)


def summarise_tag_lines(items: pd.DataFrame, *, rules: Rules) -> list[TagLine]:
    """The tag lines of canonical line items (see `tag_lines_of`)."""
    bills = []
    for source, lines in items.groupby("source", sort=True):
        bill = BillTotals(source=str(source))
        bill.add_items(lines, outside=lines.iloc[:0])
        bills.append(bill)
    return tag_lines_of(bills, rules=rules)


def tag_lines_of(bills: Iterable[BillTotals], *, rules: Rules) -> list[TagLine]:
    """One TagLine per (currency, tag value, attribution rule), in a stable order, with the bill rows behind it."""
    bills = list(bills)
    claims = _claims(bills, rules)
    merged: dict[tuple[str, str, str], tuple[GroupTotal, dict[str, RowSample]]] = {}
    for bill in bills:
        for key, group in bill.tag_groups.items():
            _, currency, tag, *dimensions = key
            rule = claims.get(tuple(dimensions), "") if tag is None else ""
            total, rows = merged.setdefault((currency, tag or "", rule), (GroupTotal(), {}))
            total.add(group.amount, group.lines, group.places)
            rows.setdefault(bill.source, RowSample()).merge(bill.tag_rows[key])
    return [
        TagLine(currency=currency, tag=tag, amount=total.exact(), line_count=total.lines,
                rows_by_source={source: sample.describe() for source, sample in sorted(rows.items())}, rule=rule)
        for (currency, tag, rule), (total, rows) in sorted(merged.items())
    ]


def daily_costs_of(bills: Iterable[BillTotals], *, tag_lines: Sequence[TagLine]) -> list[DailyCost]:
    """One DailyCost per (currency, tag value, charge day, charge kind), in a stable order. Per (currency, tag) they
    add up to `tag_lines` (summed over their rules), amounts and line counts, or this fails: the days are a second
    accumulator over the same lines, and a forecast must never start from another bill than the run's."""
    parts: dict[tuple[str, str, str, str], list[GroupTotal]] = {}
    for bill in bills:
        for (_, currency, tag, day, kind), group in bill.day_groups.items():
            parts.setdefault((currency, tag or "", day or "", kind), []).append(group)
    # A bill has tens of thousands of groups over a month's few days: each day is parsed once.
    days = {day: date.fromisoformat(day) for day in {key[2] for key in parts} if day}
    daily = []
    # The keys sorted alone: sorting the items would compare each key nested in a pair, at twice the cost.
    for key in sorted(parts):
        currency, tag, day, kind = key
        groups = parts[key]
        total = groups[0] if len(groups) == 1 else _merged(groups)
        daily.append(DailyCost(currency=currency, tag=tag, day=days.get(day), kind=kind, amount=total.exact(),
                               line_count=total.lines))
    _check_reconciled(daily, tag_lines)
    return daily


def _check_reconciled(daily: Sequence[DailyCost], tag_lines: Sequence[TagLine]) -> None:
    by_day, by_tag = totals_per_tag(daily), totals_per_tag(tag_lines)
    differing = sorted(key for key in by_day.keys() | by_tag.keys() if by_day.get(key) != by_tag.get(key))
    if differing:
        currency, tag = differing[0]
        raise RuntimeError(f"the bill by charge day does not add up to its tag lines for {currency} tag {tag!r} "
                           f"({by_day.get(differing[0])} against {by_tag.get(differing[0])}; {len(differing)} tags "
                           "differ): nothing is stored")


def _merged(groups: list[GroupTotal]) -> GroupTotal:
    total = GroupTotal()
    for group in groups:
        total.add(group.amount, group.lines, group.places)
    return total


def _claims(bills: list[BillTotals], rules: Rules) -> dict[tuple[str | None, ...], str]:
    """The attribution rule (label) claiming each (sub-account, workspace, API key) of untagged lines."""
    untagged = sorted({tuple(key[3:]) for bill in bills for key in bill.tag_groups if key[2] is None},
                      key=lambda dimensions: tuple(value or "" for value in dimensions))
    if not untagged or not rules.attribution:
        return {}
    return dict(zip(untagged, attribute(untagged, rules)))
