"""What `cz-agent split` prints: row counts, each currency's reconciliation, and the rows set aside."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from decimal import Decimal

from agent.bills.totals import BillTotals
from agent.core.money import exact_arithmetic
from agent.core.split import BillSplit

_SHOWN_LINES = 5


def summary_lines(split: BillSplit, *, imports: Sequence[BillTotals], out: str) -> list[str]:
    """What the CLI prints: row counts, each currency's reconciliation, and the rows set aside."""
    rejected = [reject for bill in imports for reject in bill.rejected]
    lines = [f"split by {', '.join(split.columns)}: {len(split.rows)} rows written to {out}", _row_counts(imports),
             *_reconciliation_lines(split)]
    if rejected:
        lines.append(f"{len(rejected)} rejected row(s), excluded:")
        lines += [f"  {reject.message()}" for reject in rejected[:_SHOWN_LINES]]
        lines += [f"  ... and {len(rejected) - _SHOWN_LINES} more"] if len(rejected) > _SHOWN_LINES else []
    if any(bill.outside for bill in imports):
        lines += _out_of_period_lines(imports)
    return lines


def _reconciliation_lines(split: BillSplit) -> list[str]:
    row_totals = split.row_totals()
    row_counts = Counter(row.currency for row in split.rows)
    return [f"{currency}: bill {format(split.bill_totals[currency], 'f')} -> {format(rounded, 'f')} = sum of "
            f"{row_counts[currency]} rows {format(row_totals[currency], 'f')} "
            f"{'reconciled' if row_totals[currency] == rounded else 'DOES NOT RECONCILE'}"
            for currency, rounded in split.rounded_totals.items()]


def _row_counts(imports: Sequence[BillTotals]) -> str:
    total = sum(bill.input_rows for bill in imports)
    accepted = sum(bill.accepted_rows for bill in imports)
    rejected = sum(len(bill.rejected) for bill in imports)
    outside = sum(bill.out_of_period_rows for bill in imports)
    return (f"rows: {total} input = {accepted} accepted + {rejected} rejected + {outside} out of period "
            f"(excluded)")


def _out_of_period_lines(imports: Sequence[BillTotals]) -> list[str]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    with exact_arithmetic():
        for bill in imports:
            for currency, amount in bill.out_of_period_totals().items():
                totals[currency] += amount
    amounts = ", ".join(f"{currency} {format(amount, 'f')}" for currency, amount in sorted(totals.items()))
    count = sum(bill.out_of_period_rows for bill in imports)
    shown = [(bill.source, row, period) for bill in imports for row, period in bill.outside_rows][:_SHOWN_LINES]
    lines = [f"{count} row(s) outside the period, excluded ({amounts}):"]
    lines += [f"  {source}, row {row}: period {period}" for source, row, period in shown]
    if count > _SHOWN_LINES:
        lines.append(f"  ... and {count - _SHOWN_LINES} more")
    return lines
