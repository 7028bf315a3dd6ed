"""Pure allocation (DESIGN section 5): tag lines + usage + namespace map + rules -> Allocation.

No I/O and no clock here: the same inputs always give the same Allocation. Amounts stay exact
(`Fraction`) until the report rows are rounded with the largest-remainder method.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from agent.core.attribution import rule_by_label
from agent.core.model import (CATEGORIES, IDLE_NAMESPACE, NO_COMPANY, Allocation, Contribution, NamespaceUsage,
                              ReportRow, TagLine)
from agent.core.money import largest_remainder, minor_unit, round_amount
from agent.core.rules import AttributionRule, Rules

CLUSTER_PREFIX = "cz_cluster_"
COMMON_PREFIX = "cz_common_"


@dataclass(frozen=True)
class Target:
    """Where a fraction of one bill line goes before the company split."""

    category: str
    fraction: Fraction
    service: str = ""
    cluster: str = ""
    namespace: str = ""
    reason: str = ""


def allocate_lines(
    tag_lines: list[TagLine],
    *,
    rules: Rules,
    period: str,
    usage: Iterable[NamespaceUsage] = (),
    namespace_labels: Mapping[str, Mapping[str, str | None]] | None = None,
) -> Allocation:
    """Allocate the period's bill lines, summed per tag value; `namespace_labels` is the live
    cluster -> namespace -> service map."""
    usage = list(usage)
    namespace_map = resolve_namespace_map(usage, rules=rules, namespace_labels=namespace_labels or {})
    shares = cluster_shares(usage, rules=rules)
    rule_targets = rule_by_label(rules)
    contributions: list[Contribution] = []
    for line in tag_lines:
        rule = rule_targets.get(line.rule)
        if rule is not None:
            targets = [_attributed(rule)]
        else:
            targets = classify(line.tag, rules=rules, shares=shares, namespace_map=namespace_map)
        contributions += split_to_companies(line, targets, rules=rules,
                                            direct_company=rule.company if rule is not None else None)
    return Allocation(
        period=period,
        rows=round_rows(contributions, rules=rules, period=period),
        contributions=contributions,
        tag_lines=tag_lines,
        namespace_map=namespace_map,
        namespace_shares={name: cluster.shares for name, cluster in shares.items()},
        bill_totals=_bill_totals(tag_lines),
    )


def resolve_namespace_map(
    usage: list[NamespaceUsage],
    *,
    rules: Rules,
    namespace_labels: Mapping[str, Mapping[str, str | None]],
) -> dict[str, dict[str, str | None]]:
    """cluster -> namespace -> service: the rules' `namespaces:` first, then the live labels, then the usage table."""
    resolved: dict[str, dict[str, str | None]] = defaultdict(dict)
    for record in usage:
        if record.namespace == IDLE_NAMESPACE:
            continue
        labelled = namespace_labels.get(record.cluster, {}).get(record.namespace)
        service = rules.namespaces.get(record.namespace) or labelled or record.service or None
        resolved[record.cluster][record.namespace] = service
    return {cluster: dict(sorted(namespaces.items())) for cluster, namespaces in sorted(resolved.items())}


@dataclass(frozen=True)
class ClusterShares:
    """A cluster's namespaces' shares of its cost, and the part no usage could share out."""

    shares: dict[str, Fraction]  # namespace -> share; they add up to 1 less the missing part
    missing: dict[str, Fraction]  # resource of the usage basis -> its weight, where the cluster used none of it


def cluster_shares(usage: list[NamespaceUsage], *, rules: Rules) -> dict[str, ClusterShares]:
    """Each cluster's namespace shares under its usage basis: a namespace's share of each resource, weighted by
    the resource's weight in the blend. The idle capacity row counts as a namespace unless `idle: spread`."""
    records: dict[str, list[NamespaceUsage]] = defaultdict(list)
    for record in usage:
        if record.namespace != IDLE_NAMESPACE or rules.idle != "spread":
            records[record.cluster].append(record)
    result = {}
    for cluster, cluster_records in sorted(records.items()):
        shares: dict[str, Fraction] = defaultdict(Fraction)
        missing: dict[str, Fraction] = {}
        for resource, weight in rules.usage_basis(cluster).items():
            used: dict[str, Decimal] = defaultdict(Decimal)
            for record in cluster_records:
                used[record.namespace] += record.used(resource) or 0
            total = sum(used.values(), Decimal(0))
            if total <= 0:
                missing[resource] = weight
                continue
            for namespace, amount in used.items():
                shares[namespace] += weight * Fraction(amount) / Fraction(total)
        result[cluster] = ClusterShares(shares=dict(sorted(shares.items())), missing=missing)
    return result


def classify(
    tag: str,
    *,
    rules: Rules,
    shares: Mapping[str, ClusterShares],
    namespace_map: Mapping[str, Mapping[str, str | None]],
) -> list[Target]:
    """Where each fraction of a line with this tag value goes (before the split to companies)."""
    if not tag:
        return [Target(category="common", fraction=Fraction(1))]
    if tag.startswith(CLUSTER_PREFIX):
        cluster = tag.removeprefix(CLUSTER_PREFIX)
        return _cluster_targets(cluster, rules=rules, shares=shares.get(cluster),
                                services=namespace_map.get(cluster, {}))
    if tag.startswith(COMMON_PREFIX):
        group = tag.removeprefix(COMMON_PREFIX)
        members = rules.common_groups.get(group)
        if not members:
            return [_unattributable(rules, reason=f"unknown common group {group!r}")]
        return [Target(category="service_common", fraction=Fraction(1, len(members)), service=s) for s in members]
    if tag in rules.services:
        return [Target(category="service_exclusive", fraction=Fraction(1), service=tag)]
    return [_unattributable(rules, reason=f"unknown service {tag!r}", service=tag)]


def _attributed(rule: AttributionRule) -> Target:
    """An attribution rule's target: a service's exclusive cost, or a company's own (service empty)."""
    return Target(category="service_exclusive", fraction=Fraction(1), service=rule.service or "")


def _cluster_targets(
    cluster: str,
    *,
    rules: Rules,
    shares: ClusterShares | None,
    services: Mapping[str, str | None],
) -> list[Target]:
    if not cluster:
        return [_unattributable(rules, reason="cluster tag without a cluster name")]
    missing = [] if shares is None else [
        _unattributable(rules, reason=f"no {resource} usage for cluster {cluster!r}", cluster=cluster, fraction=weight)
        for resource, weight in shares.missing.items()]
    if shares is None or shares.missing.keys() == rules.usage_basis(cluster).keys():
        resources = " or ".join(rules.usage_basis(cluster))
        return [_unattributable(rules, reason=f"no {resources} usage for cluster {cluster!r}", cluster=cluster)]
    weights = shares.shares
    if rules.unmapped_namespaces == "proportional":
        mapped = {ns: w for ns, w in weights.items() if services.get(ns) or ns == IDLE_NAMESPACE}
        mapped_total = sum(mapped.values())
        if mapped_total <= 0:
            return [_unattributable(rules, reason=f"no namespace of cluster {cluster!r} maps to a service",
                                    cluster=cluster)]
        # The mapped namespaces take the unmapped ones' shares; a resource nothing used stays unattributable.
        scale = sum(weights.values()) / mapped_total
        weights = {ns: w * scale for ns, w in mapped.items()}
    targets = []
    for namespace, fraction in weights.items():
        if fraction == 0:
            continue
        if namespace == IDLE_NAMESPACE:
            targets.append(Target(category="idle", fraction=fraction, cluster=cluster, namespace=namespace,
                                  reason=f"idle capacity of cluster {cluster!r}"))
            continue
        service = services.get(namespace) or ""
        if service and service not in rules.services:
            # A mislabelled namespace (usage table or live label): its share is unattributable, the rest of
            # the cluster is allocated as usual.
            target = _unattributable(rules, reason=f"unknown service {service!r} of namespace {namespace!r}",
                                     service=service, cluster=cluster)
            targets.append(Target(category=target.category, fraction=fraction, service=target.service,
                                  cluster=cluster, namespace=namespace, reason=target.reason))
            continue
        category = "cluster" if service else "common"
        targets.append(Target(category=category, fraction=fraction, service=service, cluster=cluster,
                              namespace=namespace))
    return targets + missing


def _unattributable(rules: Rules, *, reason: str, service: str = "", cluster: str = "",
                    fraction: Fraction = Fraction(1)) -> Target:
    if rules.unattributable == "common":
        return Target(category="common", fraction=fraction, cluster=cluster, reason=reason)
    return Target(category="unallocated", fraction=fraction, service=service, cluster=cluster, reason=reason)


def split_to_companies(line: TagLine, targets: list[Target], *, rules: Rules,
                       direct_company: str | None = None) -> list[Contribution]:
    """Each target's cost to companies: all to `direct_company` when an attribution rule names one, the
    service's weights for service cost, the `companies` weights for the common pool."""
    contributions = []
    for target in targets:
        if direct_company is not None:
            company_shares = {direct_company: Fraction(1)}
        elif target.category == "unallocated" or (target.category == "idle" and rules.idle == "unallocated"):
            company_shares = {NO_COMPANY: Fraction(1)}
        elif target.category in ("common", "idle"):
            company_shares = _shares(rules.companies)
        else:
            company_shares = _shares(rules.services[target.service])
        for company, company_share in company_shares.items():
            if company_share == 0:
                continue
            contributions.append(
                Contribution(
                    currency=line.currency,
                    tag=line.tag,
                    category=target.category,
                    company=company,
                    service=target.service if target.category not in ("common", "idle") else "",
                    cluster=target.cluster,
                    namespace=target.namespace,
                    reason=target.reason,
                    target_share=target.fraction,
                    company_share=company_share,
                    amount=Fraction(line.amount) * target.fraction * company_share,
                    rule=line.rule,
                )
            )
    return contributions


def _shares(weights: Mapping[str, Decimal | int]) -> dict[str, Fraction]:
    total = sum(Fraction(w) for w in weights.values())
    if total == 0:
        return {}
    return {name: Fraction(w) / total for name, w in weights.items()}


def round_rows(contributions: list[Contribution], *, rules: Rules, period: str) -> list[ReportRow]:
    """Sum contributions per report key and round each currency's rows to its precision."""
    exact: dict[tuple[str, str, str, str, str], Fraction] = defaultdict(Fraction)
    for c in contributions:
        exact[(c.company, c.service, c.category, c.cluster, c.currency)] += c.amount
    rows: list[ReportRow] = []
    for currency in sorted({key[4] for key in exact}):
        precision = report_precision(rules, currency)
        keys = sorted((k for k in exact if k[4] == currency), key=_row_order)
        rounded = largest_remainder([exact[k] for k in keys], precision)
        rows += [
            ReportRow(period=period, company=k[0], service=k[1], category=k[2], cluster=k[3],
                      amount=amount, currency=currency)
            for k, amount in zip(keys, rounded)
        ]
    return rows


def _row_order(key: tuple[str, str, str, str, str]) -> tuple:
    company, service, category, cluster, currency = key
    return (currency, CATEGORIES.index(category), company, service, cluster)


def report_precision(rules: Rules, currency: str) -> int:
    return rules.precision if rules.precision is not None else minor_unit(currency)


def _bill_totals(tag_lines: list[TagLine]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in tag_lines:
        totals[line.currency] += line.amount
    return dict(totals)


def rounded_bill_totals(allocation: Allocation, rules: Rules) -> dict[str, Decimal]:
    return {
        currency: round_amount(total, report_precision(rules, currency))
        for currency, total in allocation.bill_totals.items()
    }
