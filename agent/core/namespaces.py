"""The namespace drill-down: each report row split by the Kubernetes namespaces whose memory brought its cost."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from fractions import Fraction

from agent.core.model import Contribution, NamespaceRow, ReportRow
from agent.core.money import largest_remainder

NO_NAMESPACE = ""


def namespace_rows(rows: Sequence[ReportRow], contributions: Iterable[Contribution]) -> list[NamespaceRow]:
    """Each row's namespaces (by name; "" for cost that came through none), their exact amounts rounded with the
    largest-remainder method to the row's own decimals so that they add up to the row. `contributions` must hold
    every contribution to `rows`."""
    exact: dict[tuple[str, str, str, str, str], dict[str, Fraction]] = {}
    shares: dict[tuple[str, str, str], set[Fraction]] = defaultdict(set)
    for c in contributions:
        parts = exact.setdefault((c.company, c.service, c.category, c.cluster, c.currency), {})
        # Most parts have one contribution: adding it to a zero would make a Fraction for nothing.
        parts[c.namespace] = parts[c.namespace] + c.amount if c.namespace in parts else c.amount
        if c.namespace != NO_NAMESPACE:
            shares[(c.currency, c.cluster, c.namespace)].add(c.target_share)
    split: list[NamespaceRow] = []
    for row in rows:
        parts = exact.get(row.key())
        if not parts:
            raise ValueError(f"no contribution to the report row {row.key()}")
        names = sorted(parts)
        # Most rows have one namespace (or none): the row's amount is theirs, with no rounding to do.
        amounts = [row.amount] if len(names) == 1 else largest_remainder(
            [parts[n] for n in names], -int(row.amount.as_tuple().exponent), total=row.amount)
        for namespace, amount in zip(names, amounts):
            split.append(NamespaceRow(period=row.period, company=row.company, service=row.service,
                                      category=row.category, cluster=row.cluster, namespace=namespace, amount=amount,
                                      currency=row.currency,
                                      memory_share=_one(shares.get((row.currency, row.cluster, namespace), set()))))
    return split


def _one(shares: set[Fraction]) -> Fraction | None:
    # A namespace's contributions in one currency all come from its cluster's one bill line of that currency, so
    # they carry one share; None rather than a wrong one otherwise.
    return next(iter(shares)) if len(shares) == 1 else None
