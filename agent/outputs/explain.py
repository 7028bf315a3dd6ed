"""What explains a company's amounts in a stored run: its report rows, the contributions behind them and their bill
lines. `cz-agent explain` prints it; the API's explain endpoint returns it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from agent.core.model import Contribution, NamespaceRow, ReportRow, StoredRun, TagLine
from agent.core.namespaces import namespace_rows
from agent.errors import NoCostError

# A tag line's key in a run: (currency, tag value, attribution rule).
TagLineKey = tuple[str, str, str]
# What a row without a service holds, by its category.
NO_SERVICE_LABELS = {"common": "(common pool)", "idle": "(idle capacity)"}


def service_label(row: ReportRow | NamespaceRow | Contribution) -> str:
    return row.service or NO_SERVICE_LABELS.get(row.category, "(no service)")


@dataclass(frozen=True)
class Explanation:
    """The report rows of one company (for one service, or for all), the contributions to them, and the run's
    tag lines by key."""

    rows: list[ReportRow]
    contributions: list[Contribution]
    lines: dict[TagLineKey, TagLine]

    def contributions_to(self, row: ReportRow) -> list[Contribution]:
        return [c for c in self.contributions
                if (c.service, c.category, c.cluster, c.currency) == (row.service, row.category, row.cluster,
                                                                        row.currency)]

    def line_of(self, contribution: Contribution) -> TagLine:
        return self.lines[(contribution.currency, contribution.tag, contribution.rule)]

    def lines_behind(self, row: ReportRow) -> list[TagLine]:
        """The bill lines of the row's contributions, by tag value and rule."""
        return [self.lines[(row.currency, tag, rule)]
                for tag, rule in sorted({(c.tag, c.rule) for c in self.contributions_to(row)})]

    def namespaces(self) -> list[NamespaceRow]:
        """The rows split by the namespaces behind them, rounded so that each row's add up to it."""
        return namespace_rows(self.rows, self.contributions)

    def bill_lines(self) -> list[TagLine]:
        """The bill lines of every contribution, by currency, tag value and rule."""
        used = sorted({(c.currency, c.tag, c.rule) for c in self.contributions})
        return [self.lines[key] for key in used if key in self.lines]


def select_explanation(stored: StoredRun, *, company: str, service: str | None) -> Explanation:
    """The company's rows (of `service` only, unless None) and what makes them up; NoCostError, naming the
    companies the run has, when the run has no cost for them."""
    def concerned(item: ReportRow | Contribution) -> bool:
        return item.company == company and (service is None or item.service == service)

    contributions = [c for c in stored.contributions if concerned(c)]
    if not contributions:
        raise NoCostError(f"run {stored.summary.id} has no cost for company {company!r}"
                          f"{'' if service is None else f' and service {service!r}'}",
                          companies=sorted({c.company for c in stored.contributions}))
    return Explanation(rows=[row for row in stored.rows if concerned(row)], contributions=contributions,
                       lines={(t.currency, t.tag, t.rule): t for t in stored.tag_lines})


def exact_amount_text(amount: Fraction) -> str:
    """A contribution's exact amount as explanations show it: six decimals (of the 28-digit quotient, rounded
    half to even by the format)."""
    return f"{Decimal(amount.numerator) / Decimal(amount.denominator):.6f}"
