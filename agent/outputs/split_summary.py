"""What `cz-agent split` prints: row counts, each currency's reconciliation, and the rows set aside; and a stored
run's split totals as the line items a split reads."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from agent.core.money import exact_arithmetic
from agent.core.model import StoredRun
from agent.core.split import NO_VALUE, BillSplit

# Annotations only: the API imports this module, and an idle agent does without pandas and Arrow.
if TYPE_CHECKING:
    import pandas as pd

    from agent.bills.totals import BillTotals

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


def stored_summary_lines(split: BillSplit, *, stored: StoredRun, out: str) -> list[str]:
    """What the CLI prints for the split of a stored run: its rows as the run counted them, and the reconciliation."""
    rows = stored.summary.manifest.rows
    return [f"split by {', '.join(split.columns)}: {len(split.rows)} rows written to {out}",
            f"run {stored.summary.id} ({stored.summary.period}): {rows.input} input rows = {rows.accepted} accepted + "
            f"{rows.rejected} rejected + {rows.out_of_period} out of period (excluded)",
            *_reconciliation_lines(split)]


def split_items(stored: StoredRun) -> pd.DataFrame:
    """A run's stored split totals as line items, so that they are split exactly as a bill's lines are."""
    # Imported here: pandas is by far the largest part of an idle agent's memory, and only a split needs it.
    import pandas as pd

    def value(text: str) -> str | None:
        return None if text == NO_VALUE else text

    return pd.DataFrame({
        "period": [stored.summary.period] * len(stored.splits),
        "currency": [t.currency for t in stored.splits],
        "cost": [t.amount for t in stored.splits],
        "sub_account": [value(t.sub_account) for t in stored.splits],
        "workspace": [value(t.workspace) for t in stored.splits],
        "api_key": [value(t.api_key) for t in stored.splits],
    })


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
