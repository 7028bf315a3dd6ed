"""Live inputs of a run: each cluster's usage from Prometheus and its namespace map from Kubernetes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from agent.core.model import IDLE_NAMESPACE, NamespaceUsage
from agent.core.periods import Period
from agent.core.rules import ClusterSource, Rules
from agent.errors import AgentError
from agent.settings import Settings
from agent.sources.kube import namespace_services
from agent.sources.prom import ClusterUsage, PrometheusTarget, query_usage

log = logging.getLogger(__name__)

NamespaceMap = dict[str, dict[str, str | None]]


@dataclass(frozen=True)
class LiveUsage:
    """Usage with each namespace's service resolved, the coverage of each cluster, and the map used."""

    usage: list[NamespaceUsage]
    coverage: dict[str, float]
    namespace_map: NamespaceMap


def collect_live_usage(
    *,
    rules: Rules,
    settings: Settings,
    period: str,
    previous_maps: Mapping[str, Mapping[str, str | None]],
    now: datetime,
) -> LiveUsage:
    """Query every cluster of the rules; the namespace map is the rules' override, then the namespace label,
    then what earlier runs saw (a namespace deleted mid-month keeps its service). Without a `clusters:`
    section there is nothing to query, and cluster cost stays unattributable."""
    month = Period.parse(period)
    usage: list[NamespaceUsage] = []
    coverage: dict[str, float] = {}
    namespace_map: NamespaceMap = {}
    for cluster, source in rules.clusters.items():
        # The namespace list first: one cheap request, so an unreachable API server fails the run before
        # a month of usage queries is spent.
        labels = namespace_services(label=rules.namespace_label, kubeconfig=settings.kubeconfig,
                                    context=source.kube_context, timeout_seconds=settings.kube_timeout_seconds)
        measured = query_usage(cluster=cluster, target=prometheus_target(source, settings=settings),
                               start=month.start, end=month.end, basis=settings.usage_basis,
                               resources=tuple(rules.usage_basis(cluster)), idle=rules.idle != "spread",
                               step_seconds=settings.usage_step_seconds,
                               gpu_label_prefix=settings.gpu_label_prefix, now=now)
        namespaces = [record for record in measured.usage if record.namespace != IDLE_NAMESPACE]
        services = resolve_services(namespaces, rules=rules, labels=labels, previous=previous_maps.get(cluster, {}))
        usage += [replace(record, service=services.get(record.namespace)) for record in measured.usage]
        coverage[cluster] = measured.coverage
        namespace_map[cluster] = services
        _log_coverage(cluster, measured, threshold=settings.coverage_warning_threshold)
    return LiveUsage(usage=usage, coverage=coverage, namespace_map=namespace_map)


def _log_coverage(cluster: str, measured: ClusterUsage, *, threshold: float) -> None:
    """A warning below the threshold: the run is stored, but its usage shares rest on a part of the period."""
    if measured.coverage < threshold:
        log.warning("cluster %s: usage data covers %.1f%% of the period (threshold %.0f%%); its usage shares "
                    "may be skewed", cluster, measured.coverage * 100, threshold * 100)
    else:
        log.info("cluster %s: %d namespaces, coverage %.3f", cluster, len(measured.usage), measured.coverage)


def prometheus_target(source: ClusterSource, *, settings: Settings) -> PrometheusTarget:
    url = source.prometheus_url or settings.prometheus_url
    if not url:
        raise AgentError("a cluster in the rules has no prometheus_url and CZ_AGENT_PROMETHEUS_URL is not set")
    return PrometheusTarget(
        url=url,
        selector=source.selector,
        bearer_token_file=settings.prometheus_bearer_token_file,
        username=settings.prometheus_username,
        password=settings.prometheus_password,
        ca_file=settings.prometheus_ca_file,
        timeout_seconds=settings.prometheus_timeout_seconds,
        retries=settings.prometheus_retries,
    )


def resolve_services(
    usage: list[NamespaceUsage],
    *,
    rules: Rules,
    labels: Mapping[str, str | None],
    previous: Mapping[str, str | None],
) -> dict[str, str | None]:
    return {
        record.namespace: rules.namespaces.get(record.namespace)
        or labels.get(record.namespace)
        or previous.get(record.namespace)
        for record in sorted(usage, key=lambda r: r.namespace)
    }
