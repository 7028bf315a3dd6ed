"""A bill table too large for one machine, reduced where it lives (Trino, Athena) to exact group sums.

One query, generated from the same format specs and column map as the embedded import, returns:

- the group sums of the lines whose cost is a plain decimal, grouped by the *text* of every other field the
  import judges (currency, tag, dates, sub-account, workspace, API key). Dates written as ISO dates are reduced
  to their month in SQL (hourly bills would otherwise give a group per hour); any other text is sent as written;
- in a second grouping set, the same sums per currency, tag, billing period, charge day and charge kind (the
  forecast's daily costs): an ISO charge date reduced to its day;
- every other line as it is written, for the row-by-row converter (agent.bills.convert) to accept or reject.

The agent then judges each distinct text with the very cell functions the embedded import uses, so a cell gets
the same verdict whichever way it is read. The lines of groups whose text is rejected (a currency `US D`) are
fetched by a second query, only when there are some, so that each is reported with its reason. The agent's
memory follows the number of groups, never the number of lines; sums are DECIMAL in the engine, which raises on
overflow rather than wraps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

import pandas as pd

from agent.bills.columns import ColumnMap, resolve_columns
from agent.bills.convert import (convert_chunk, currency_cells, day_cells, kind_cells, month_cells, tag_cells,
                                 text_cells)
from agent.bills.detect import SPECS
from agent.bills.importer import check_options, format_of
from agent.bills.options import ImportOptions
from agent.bills.tags import TagReader
from agent.bills.totals import BillTotals
from agent.core.sql import quote_identifier, quote_literal, table_parts
from agent.errors import BillFormatError

# Costs summed in the engine: a plain decimal of at most 15 digits before the point and 12 after, so that a
# DECIMAL(38, 12) sum stays exact over 10**11 lines (the engine raises past that, never wraps). Other costs
# (exponents, more digits, a leading +, non-ASCII digits) are judged row by row, as in the embedded import.
SQL_COST = "DECIMAL(38, 12)"
PLAIN_COST = r"^ *(-?[0-9]{1,15}(\.[0-9]{1,12})?) *$"
# A cost in scientific notation (`1.25E1`, `1.0E-5`: how Trino and Athena write every double) is written out in
# SQL as the plain decimal it is, digit for digit (`12.5`, `0.000010`), so that a bill of doubles is summed in the
# engine rather than sent line by line. Groups: sign, first digit, fraction digits, exponent sign, exponent.
SCIENTIFIC = r"^ *(-?)([0-9])(?:\.([0-9]+))?[eE]([+-]?)([0-9]{1,2}) *$"
# An ISO date or timestamp whose month the SQL may take as is: the embedded import gives it the same month.
ISO_DATE = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([T ][ -~]*)?$"
KEY_FIELDS = ("currency", "tag", "billing_period", "charge_period", "sub_account", "workspace", "api_key",
              "charge_kind")
DATE_FIELDS = ("billing_period", "charge_period")
# The two grouping sets: the lines' groups (the allocation's and the split's), and their days (the forecast's).
LINE_KEYS = KEY_FIELDS[:7]
DAY_KEYS = ("currency", "tag", "billing_period", "charge_day", "charge_kind")
# What a result row starts with: a line group, a single line as written, a day group.
GROUP, LINE, DAY = 0, 1, 2
# Where a result row holds the charge day, the cost text, the cost's decimals and the line count, after the row's
# kind and the key fields.
CHARGE_DAY = len(KEY_FIELDS) + 1
COST, PLACES, LINES = CHARGE_DAY + 1, CHARGE_DAY + 2, CHARGE_DAY + 3
# Ordered by every column up to the cost (SQL counts from 1), so that equal tables give equal answers.
_ORDER = ", ".join(str(position) for position in range(1, COST + 2))
# Lines handed to the row-by-row converter at a time.
LINES_PER_CHUNK = 50_000
# The key values a follow-up query may name; past this, the bill is refused rather than the query grown.
MAX_REJECTED_VALUES = 10_000
TEXT_TYPES = ("varchar", "char")
# Types a JSON text is made of, as the import reads tag objects: a JSON column, or a map (CUR 2.0 in Athena).
JSON_TYPES = ("json",)
NESTED_TYPES = ("map", "array", "row")


class TableQueries(Protocol):
    """What the engine's client does: name a table's columns, and run a query giving its rows in batches."""

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, SQL type) of each column, in order."""

    def batches(self, sql: str) -> Iterator[list[tuple]]:
        """The query's result rows, a batch at a time."""


@dataclass(frozen=True)
class BillTable:
    """A bill held in a table of a query engine: `engine` names it in sources, `table` is catalog.schema.table."""

    engine: str
    table: str

    @property
    def source(self) -> str:
        return f"{self.engine}:{self.table}"

    def quoted(self) -> str:
        try:
            return ".".join(quote_identifier(part) for part in table_parts(self.table))
        except ValueError as e:
            raise BillFormatError(str(e), source=self.table) from e


@dataclass(frozen=True)
class BillQuery:
    """The SQL of one bill table: its columns as read, and the expressions of each field."""

    table: BillTable
    columns: ColumnMap
    types: dict[str, str]

    def _text(self, column: str) -> str:
        """The column as text: JSON text for JSON and nested columns, which the import reads as tag objects."""
        expression = quote_identifier(column)
        kind = self.types[column].split("(")[0].strip().lower()
        if kind in TEXT_TYPES:
            return expression
        if kind in JSON_TYPES:
            return f"json_format({expression})"
        if kind in NESTED_TYPES:
            return f"json_format(CAST({expression} AS JSON))"
        return f"CAST({expression} AS varchar)"

    def _raw(self, field: str) -> str:
        column = getattr(self.columns, field)
        return "CAST(NULL AS varchar)" if column is None else self._text(column)

    def _key(self, field: str, *, length: int = 7) -> str:
        """The text a group is keyed by: empty for a missing cell (the import judges both alike), an ISO date's
        first `length` characters (its month, or its day) for dates."""
        raw = self._raw(field)
        if field in DATE_FIELDS and getattr(self.columns, field) is not None:
            raw = (f"CASE WHEN regexp_like({raw}, {quote_literal(ISO_DATE)}) THEN substr({raw}, 1, {length}) "
                   f"ELSE {raw} END")
        return f"coalesce({raw}, '')"

    def _lines(self) -> str:
        cost = self._text(self.columns.cost)
        keys = ", ".join([*(f"{self._key(field)} AS k_{field}" for field in KEY_FIELDS),
                          f"{self._key('charge_period', length=10)} AS k_charge_day"])
        raws = ", ".join(f"{self._raw(field)} AS r_{field}" for field in KEY_FIELDS)
        plain = f"trim(regexp_extract({_written_out('cost_text')}, {quote_literal(PLAIN_COST)}, 1))"
        return (f"written AS (SELECT {keys}, {raws}, {cost} AS cost_text FROM {self.table.quoted()}), "
                f"lines AS (SELECT *, {plain} AS plain_cost FROM written)")

    def reduce(self) -> str:
        """Group sums of the plain lines (GROUP), their sums per day (DAY), and every other line as written (LINE)."""
        keys = ", ".join(f"k_{field}" for field in (*KEY_FIELDS, "charge_day"))
        raws = ", ".join(f"r_{field}" for field in KEY_FIELDS)
        places = "CASE WHEN strpos(plain_cost, '.') > 0 THEN length(plain_cost) - strpos(plain_cost, '.') ELSE 0 END"
        sets = ", ".join(f"({', '.join(f'k_{field}' for field in fields)})" for fields in (LINE_KEYS, DAY_KEYS))
        return (f"WITH {self._lines()} "
                f"SELECT CASE WHEN grouping(k_sub_account) = 1 THEN {DAY} ELSE {GROUP} END AS kind, {keys}, "
                f"CAST(sum(CAST(plain_cost AS {SQL_COST})) AS varchar) AS cost, "
                f"max({places}) AS places, count(*) AS line_count FROM lines WHERE plain_cost IS NOT NULL "
                f"GROUP BY GROUPING SETS ({sets}) "
                f"UNION ALL SELECT {LINE}, {raws}, NULL, cost_text, 0, 1 FROM lines WHERE plain_cost IS NULL "
                f"ORDER BY {_ORDER}")

    def lines_of(self, rejected: dict[str, set[str]], periodless: set[tuple[str, str]]) -> str:
        """Every plain line of the groups whose key texts were rejected, as written."""
        raws = ", ".join(f"r_{field}" for field in KEY_FIELDS)
        conditions = [f"k_{field} IN ({', '.join(map(quote_literal, sorted(values)))})"
                      for field, values in rejected.items() if values]
        if periodless:
            pairs = ", ".join(f"({quote_literal(billing)}, {quote_literal(charge)})"
                              for billing, charge in sorted(periodless))
            conditions.append(f"(k_billing_period, k_charge_period) IN (VALUES {pairs})")
        return (f"WITH {self._lines()} SELECT {LINE}, {raws}, NULL, cost_text, 0, 1 FROM lines "
                f"WHERE plain_cost IS NOT NULL AND ({' OR '.join(conditions)}) "
                f"ORDER BY {_ORDER}")


def _written_out(cost: str) -> str:
    """The cost's text with a cost in scientific notation written out in full; any other text as it is."""
    pattern = quote_literal(SCIENTIFIC)
    sign = f"regexp_extract({cost}, {pattern}, 1)"
    digits = f"(regexp_extract({cost}, {pattern}, 2) || coalesce(regexp_extract({cost}, {pattern}, 3), ''))"
    exponent = f"CAST(regexp_extract({cost}, {pattern}, 5) AS integer)"
    below_one = f"{sign} || '0.' || lpad({digits}, {exponent} - 1 + length({digits}), '0')"
    whole = f"substr(rpad({digits}, {exponent} + 1, '0'), 1, {exponent} + 1)"
    fraction = f"CASE WHEN length({digits}) > {exponent} + 1 THEN '.' || substr({digits}, {exponent} + 2) ELSE '' END"
    return (f"CASE WHEN NOT regexp_like({cost}, {pattern}) THEN {cost} "
            f"WHEN regexp_extract({cost}, {pattern}, 4) = '-' AND {exponent} > 0 THEN {below_one} "
            f"ELSE {sign} || {whole} || {fraction} END")


def total_table(queries: TableQueries, table: BillTable, *, options: ImportOptions) -> BillTotals:
    """The bill table reduced to exact group totals, as `agent.bills.total_bill` reduces a file."""
    check_options(options, source=table.source)
    types = dict(queries.columns(table.table))
    header = list(types)
    bill_format = format_of(header, options=options, source=table.source)
    columns = resolve_columns(header, spec=SPECS[bill_format], options=options, source=table.source)
    # Totals keep neither a line's resource nor its product.
    columns = replace(columns, resource_id=None, service_name=None)
    query = BillQuery(table=table, columns=columns, types=types)
    totals = BillTotals(source=table.source, bill_format=bill_format, cost_column=columns.cost)
    reducer = _Reducer(columns=columns, options=options, totals=totals)
    for batch in queries.batches(query.reduce()):
        reducer.add(batch)
    reducer.flush()
    rejected, periodless = reducer.rejected_keys()
    if any(rejected.values()) or periodless:
        if sum(map(len, rejected.values())) + len(periodless) > MAX_REJECTED_VALUES:
            raise BillFormatError(f"more than {MAX_REJECTED_VALUES} distinct rejected values: the bill table is not "
                                  "a bill of this format (check the rules' bill: section)", source=table.source)
        for batch in queries.batches(query.lines_of(rejected, periodless)):
            reducer.add(batch)
        reducer.flush()
    totals.sha256 = reducer.digest()
    return totals


class _Reducer:
    """Folds the query's rows into BillTotals: groups whose texts are all accepted directly, single lines
    through the row-by-row converter."""

    def __init__(self, *, columns: ColumnMap, options: ImportOptions, totals: BillTotals):
        self._columns = columns
        self._options = options
        self._totals = totals
        self._tag_reader = TagReader(options.tag_key)
        self._verdicts: dict[str, dict[str, tuple[str | None, bool]]] = {field: {} for field in KEY_FIELDS}
        # The day of each charge date text (convert.day_cells), beside its month.
        self._days: dict[str, str | None] = {}
        self._rejected_groups: set[tuple[str, ...]] = set()
        self._lines: list[tuple] = []
        self._next_row = 1
        # A digest of the query's answer in the place of a file's: equal answers give equal digests, so that a
        # run's manifest and its "unchanged" rule work alike for tables.
        self._digest = hashlib.sha256()

    def add(self, batch: Iterable[tuple]) -> None:
        rows: dict[int, list[tuple]] = {GROUP: [], LINE: self._lines, DAY: []}
        for row in batch:
            self._digest.update(repr(row).encode())
            rows[row[0]].append(row)
        if rows[GROUP]:
            self._add_groups(rows[GROUP])
        if rows[DAY]:
            self._add_days(rows[DAY])
        if len(self._lines) >= LINES_PER_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Judge the single lines gathered so far."""
        if not self._lines:
            return
        frame = pd.DataFrame({column: pd.Series([line[i] for line in self._lines], dtype="str")
                              for i, field in enumerate(KEY_FIELDS, start=1)
                              if (column := getattr(self._columns, field)) is not None})
        frame[self._columns.cost] = pd.Series([line[COST] for line in self._lines], dtype="str")
        frame.index = pd.RangeIndex(self._next_row, self._next_row + len(self._lines))
        self._next_row += len(self._lines)
        self._totals.input_rows += len(self._lines)
        self._lines = []
        result = convert_chunk(frame, columns=self._columns, options=self._options, source=self._totals.source,
                               tag_reader=self._tag_reader)
        self._totals.add_items(result.items, outside=result.out_of_period)
        self._totals.rejected += result.rejected

    def rejected_keys(self) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
        """The key texts rejected per field, and the (billing, charge) texts of groups without a period."""
        rejected = {field: {text for text, (_, refused) in verdicts.items() if refused}
                    for field, verdicts in self._verdicts.items()}
        periodless = {(key[2], key[3]) for key in self._rejected_groups
                      if not any(key[i] in rejected[field] for i, field in enumerate(LINE_KEYS))}
        return rejected, periodless

    def digest(self) -> str:
        return self._digest.hexdigest()

    def _add_groups(self, groups: list[tuple]) -> None:
        for i, field in enumerate(LINE_KEYS, start=1):
            self._judge(field, {group[i] for group in groups})
        for group in groups:
            key = group[1:len(LINE_KEYS) + 1]
            values = [self._verdicts[field][text] for field, text in zip(LINE_KEYS, key)]
            period = self._period(values)
            if any(refused for _, refused in values) or period is None:
                self._rejected_groups.add(key)
                continue
            currency, tag, _, _, sub_account, workspace, api_key = (value for value, _ in values)
            outside = self._options.period is not None and period != self._options.period
            self._totals.add_group((period, currency, sub_account, workspace, api_key), tag=tag,
                                   amount=Decimal(group[COST]), lines=int(group[LINES]), places=int(group[PLACES]),
                                   outside=outside)
            self._totals.input_rows += int(group[LINES])

    def _add_days(self, days: list[tuple]) -> None:
        """The day groups of accepted lines in the period; the lines of a rejected text or without a period are
        rejected in their line groups too, and fetched as written."""
        positions = {"currency": 1, "tag": 2, "billing_period": 3, "charge_period": CHARGE_DAY,
                     "charge_kind": 1 + KEY_FIELDS.index("charge_kind")}
        for field, position in positions.items():
            self._judge(field, {group[position] for group in days})
        for group in days:
            values = [self._verdicts[field][group[position]] for field, position in positions.items()]
            period = self._period(values)
            if any(refused for _, refused in values) or period is None or (
                    self._options.period is not None and period != self._options.period):
                continue
            currency, tag, _, _, kind = (value for value, _ in values)
            self._totals.add_day_group((period, currency, tag, self._days[group[CHARGE_DAY]], kind),
                                       amount=Decimal(group[COST]), lines=int(group[LINES]),
                                       places=int(group[PLACES]))

    def _period(self, values: list[tuple[str | None, bool]]) -> str | None:
        """The period of a group's judged (currency, tag, billing, charge, ...) texts, as convert.py takes it."""
        return values[2][0] or values[3][0] or self._options.period

    def _judge(self, field: str, texts: set[str]) -> None:
        """Each new text's value and whether the import rejects it, by the embedded import's cell functions."""
        verdicts = self._verdicts[field]
        new = sorted(text for text in texts if text not in verdicts)
        if not new:
            return
        column = getattr(self._columns, field)
        frame = pd.DataFrame({column: pd.Series(new, dtype="str")}) if column else pd.DataFrame(index=range(len(new)))
        values, reasons = _cells(field, frame, columns=self._columns, options=self._options,
                                 tag_reader=self._tag_reader)
        for text, value, reason in zip(new, values, reasons):
            verdicts[text] = (value if isinstance(value, str) else None, isinstance(reason, str))
        if field == "charge_period":
            days = day_cells(frame, column)
            self._days.update((text, day if isinstance(day, str) else None) for text, day in zip(new, days))


def _cells(field: str, frame: pd.DataFrame, *, columns: ColumnMap, options: ImportOptions,
           tag_reader: TagReader) -> tuple[Sequence[object], Sequence[object]]:
    """convert.py's value and rejection reason (None if accepted) of each cell of one field."""
    if field == "currency":
        values, check = currency_cells(frame, columns=columns, default=options.default_currency)
    elif field == "tag":
        values, check = tag_cells(frame, columns=columns, tag_reader=tag_reader)
    elif field in DATE_FIELDS:
        values, check = month_cells(frame, getattr(columns, field))
    elif field == "charge_kind":
        values = kind_cells(frame, columns=columns)
        return values.tolist(), [None] * len(values)
    else:
        values = text_cells(frame, getattr(columns, field))
        return values.tolist(), [None] * len(values)
    return values.tolist(), check.reasons.tolist()

