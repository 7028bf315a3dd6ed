"""Plain HTTP GETs of a test server, and the value of one sample in a Prometheus exposition."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def http_get(url: str, *, timeout: float = 10) -> str:
    """The body of a 200 answer; any other status raises urllib's HTTPError (an OSError, so wait_for retries)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample `name` whose labels include `labels`, or None."""
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None
