"""Which header column holds which line-item field: format candidates, user overrides and the tag lookup."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.bills.options import ImportOptions
from agent.bills.spec import Candidates, FormatSpec
from agent.errors import BillFormatError

# Plain columns holding the tag value, then JSON object columns; `{key}` is the tag key. CUR 2.0 flattened
# (Athena, some exports) names a tag's column resource_tags_user_{key}.
TAG_VALUE_COLUMNS = ("{key}", "tag:{key}", "user:{key}", "resourceTags/user:{key}", "resource_tags_user_{key}")
TAGS_JSON_COLUMNS = ("Tags", "tags", "resource_tags")


@dataclass(frozen=True)
class ColumnMap:
    """The header names a bill's line-item fields are read from; None where the bill has no such column."""

    cost: str
    currency: str | None
    tag: str | None
    tags_are_json: bool
    billing_period: str | None
    charge_period: str | None
    sub_account: str | None
    workspace: str | None
    api_key: str | None
    # Not kept in line items: read so that a record holding only a resource or a product is rejected, not taken
    # for a blank line.
    resource_id: str | None
    service_name: str | None
    # The column telling a line's charge kind, and its values that mean usage (FormatSpec.charge_kind).
    charge_kind: str | None
    usage_kinds: tuple[str, ...]

    def used(self) -> list[str]:
        """Every column the import reads, once each, so readers can skip the others."""
        names = [self.cost, self.currency, self.tag, self.billing_period, self.charge_period, self.sub_account,
                 self.workspace, self.api_key, self.resource_id, self.service_name, self.charge_kind]
        return list(dict.fromkeys(name for name in names if name is not None))


def find_column(columns: Sequence[str], candidates: Iterable[str]) -> str | None:
    """The first candidate present in the header: its exact spelling first, else ignoring case and spaces."""
    for candidate in candidates:
        if candidate in columns:
            return candidate
        wanted = candidate.strip().casefold()
        for column in columns:
            if column.strip().casefold() == wanted:
                return column
    return None


def resolve_columns(header: Sequence[str], *, spec: FormatSpec, options: ImportOptions, source: str) -> ColumnMap:
    """The column map of a bill; BillFormatError if a required column or an override is missing."""
    cost = _pick(header, options.cost_column, spec.cost, field="cost", source=source)
    if cost is None:
        raise BillFormatError(f"required cost column {' or '.join(spec.cost)} is missing", source=source,
                              column=spec.cost[0])
    currency = _pick(header, options.currency_column, spec.currency, field="currency", source=source)
    if currency is None and options.default_currency is None:
        raise BillFormatError(f"no currency column (looked for {_names(spec.currency)}) and no default currency",
                              source=source)
    billing_period = find_column(header, spec.billing_period)
    charge_period = find_column(header, spec.charge_period)
    if billing_period is None and charge_period is None and options.period is None:
        looked_for = _names(spec.billing_period + spec.charge_period)
        raise BillFormatError(f"the bill has no period column (looked for {looked_for}): give the period (--period)",
                              source=source)
    tag, tags_are_json = _tag_column(header, options=options, source=source)
    columns = ColumnMap(
        cost=cost,
        currency=currency,
        tag=tag,
        tags_are_json=tags_are_json,
        billing_period=billing_period,
        charge_period=charge_period,
        sub_account=_pick(header, options.sub_account_column, spec.sub_account, field="sub-account", source=source),
        workspace=_pick(header, options.workspace_column, spec.workspace, field="workspace", source=source),
        api_key=_pick(header, options.api_key_column, spec.api_key, field="API key", source=source),
        resource_id=find_column(header, spec.resource_id),
        service_name=find_column(header, spec.service_name),
        charge_kind=find_column(header, spec.charge_kind),
        usage_kinds=spec.usage_kinds,
    )
    _refuse_repeated(header, columns, source=source)
    return columns


def _refuse_repeated(header: Sequence[str], columns: ColumnMap, *, source: str) -> None:
    """A column the import reads must be named once: with two `cost` columns, which one is the bill?"""
    for name in columns.used():
        positions = [position for position, column in enumerate(header, start=1) if column == name]
        if len(positions) > 1:
            raise BillFormatError(f"the header names this column {len(positions)} times (columns "
                                  f"{', '.join(map(str, positions))}): which one to read is ambiguous",
                                  source=source, column=name)


def _pick(header: Sequence[str], override: str | None, candidates: Candidates, *, field: str,
          source: str) -> str | None:
    if override is None:
        return find_column(header, candidates)
    column = find_column(header, (override,))
    if column is None:
        raise BillFormatError(f"the {field} column given ({override!r}) is not in the header", source=source,
                              column=override)
    return column


def _tag_column(header: Sequence[str], *, options: ImportOptions, source: str) -> tuple[str | None, bool]:
    """The column the tag value comes from, and whether it holds JSON objects rather than the value."""
    if options.tag_column is not None:
        return _pick(header, options.tag_column, (), field="tag", source=source), False
    candidates = [name.format(key=options.tag_key) for name in TAG_VALUE_COLUMNS]
    plain = find_column(header, candidates)
    if plain is not None:
        return plain, False
    tags = find_column(header, TAGS_JSON_COLUMNS)
    if tags is None and not options.untagged:
        raise BillFormatError(f"no column holds the tag key {options.tag_key!r} (looked for {', '.join(candidates)} "
                              f"and a JSON column {' or '.join(TAGS_JSON_COLUMNS)}).{_closest(header, candidates)} "
                              "For a bill untagged on purpose (all its lines common cost), set `untagged: true` in "
                              "the rules' bill: section.", source=source)
    return tags, tags is not None


def _closest(header: Sequence[str], candidates: Sequence[str]) -> str:
    """" Did you mean ...?" naming the header columns closest to the names looked for, if any is close."""
    folded = {column.casefold(): column for column in header}
    close = dict.fromkeys(folded[match] for candidate in candidates
                          for match in difflib.get_close_matches(candidate.casefold(), folded, n=3, cutoff=0.75))
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def _names(candidates: Candidates) -> str:
    return ", ".join(candidates) if candidates else "none known for this format"
