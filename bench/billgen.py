"""Seeded, reproducible bills of any size in three shapes: native CSV, FOCUS Parquet and AWS CUR CSV.gz.

The tag mix is what a group's bill looks like: most lines tagged with a few cluster, common-group and
service values, a long tail of rarely seen service codes, untagged lines, and credits (negative costs).
Costs are generated as integers of micro-units and written as exact decimal text, so the generator knows
the exact total of every (category, tag value, currency) and the benchmark can check every tool against
it. Lines are generated and written batch by batch: memory does not grow with the size of the bill.

    python bench/billgen.py --shape native --lines 1000000 --out /tmp/bill.csv
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SHAPES = ("native", "focus", "cur")
SUFFIXES = {"native": ".csv", "focus": ".parquet", "cur": ".csv.gz"}
PERIOD = "2026-10"
DAYS = 31
BATCH_LINES = 250_000
TAG_KEY = "cz_container_bill"
SCALE = 6  # costs carry micro-units

CLUSTERS = ("prod", "stage", "data")
COMMON_GROUPS = ("db", "mq")
MAIN_SERVICES = ("mobile", "web", "payments", "search", "ads", "mail", "maps", "video", "chat", "auth")
TAIL_SERVICES = tuple(f"svc-{n:04d}" for n in range(2000))
LOGINS = tuple(f"team-{n:02d}" for n in range(50))
WORKSPACES = tuple(f"ws-{n:03d}" for n in range(200))
API_KEYS = tuple(f"key-{n:04d}" for n in range(1000))
PRODUCTS = ("ECS", "OSS", "RDS", "SLB", "CDN", "NAT", "EIP", "Redis", "Kafka", "Log")
# (kind, share of lines): cluster 40 %, common group 10 %, main services 30 %, long tail 5 %, untagged 15 %.
TAG_KINDS = (("cluster", 0.40), ("common", 0.10), ("service", 0.30), ("tail", 0.05), ("untagged", 0.15))
CREDIT_SHARE = 0.02
EUR_SHARE = 0.01
# Lines of a fixed charge (a fee, a tax: CUR and FOCUS say so in a column; native bills do not).
FIXED_SHARE = 0.01


@dataclass(frozen=True)
class Batch:
    """One batch of generated lines, as Arrow arrays of text, with the first line's number."""

    first: int
    tag: pa.Array
    cost: pa.Array
    currency: pa.Array
    day: np.ndarray
    login: pa.Array
    workspace: pa.Array
    api_key: pa.Array
    product: pa.Array
    resource: pa.Array
    units: np.ndarray
    fixed: np.ndarray


def category_of(tag: str) -> str:
    """The category a tag value falls in, as the benchmark's peers classify it."""
    if not tag:
        return "common"
    if tag.startswith("cz_cluster_"):
        return "cluster"
    if tag.startswith("cz_common_"):
        return "service_common"
    return "service"


def batches(lines: int, *, seed: int) -> Iterator[Batch]:
    for first in range(0, lines, BATCH_LINES):
        yield _batch(first, min(BATCH_LINES, lines - first), np.random.default_rng([seed, first]))


def _batch(first: int, size: int, rng: np.random.Generator) -> Batch:
    kinds = rng.choice(len(TAG_KINDS), size=size, p=[share for _, share in TAG_KINDS])
    values = {
        "cluster": np.array([f"cz_cluster_{name}" for name in CLUSTERS]),
        "common": np.array([f"cz_common_{name}" for name in COMMON_GROUPS]),
        "service": np.array(MAIN_SERVICES),
        "tail": np.array(TAIL_SERVICES),
        "untagged": np.array([""]),
    }
    tags = np.empty(size, dtype=object)
    for position, (kind, _) in enumerate(TAG_KINDS):
        chosen = kinds == position
        tags[chosen] = rng.choice(values[kind], size=int(chosen.sum()))
    units = rng.integers(1, 50 * 10**SCALE, size=size, dtype=np.int64)
    units[rng.random(size) < CREDIT_SHARE] *= -1
    currency = np.where(rng.random(size) < EUR_SHARE, "EUR", "USD")
    # A workspace belongs to one sub-account and an API key to one workspace, as in the console.
    workspace = rng.integers(0, len(WORKSPACES), size=size)
    key = workspace + len(WORKSPACES) * rng.integers(0, len(API_KEYS) // len(WORKSPACES), size=size)
    api_keys = np.where(rng.random(size) < 0.5, "", np.array(API_KEYS)[key])
    day = rng.integers(1, DAYS + 1, size=size)
    product = pa.array(rng.choice(np.array(PRODUCTS), size=size))
    return Batch(
        first=first,
        tag=pa.array(tags, type=pa.string()),
        cost=_decimal_text(units),
        currency=pa.array(currency),
        day=day,
        login=pa.array(np.array(LOGINS)[workspace % len(LOGINS)]),
        workspace=pa.array(np.array(WORKSPACES)[workspace]),
        api_key=pa.array(api_keys),
        product=product,
        resource=_resource_ids(first, size),
        units=units,
        # Drawn last, so that the other columns are those of bills generated before it.
        fixed=rng.random(size) < FIXED_SHARE,
    )


def _decimal_text(units: np.ndarray) -> pa.Array:
    """Micro-units as exact decimal text: -1234567 -> '-1.234567'."""
    magnitude = np.abs(units)
    whole = pc.cast(pa.array(magnitude // 10**SCALE), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(magnitude % 10**SCALE), pa.string()), width=SCALE, padding="0")
    sign = pa.array(np.where(units < 0, "-", ""))
    return pc.binary_join_element_wise(sign, whole, ".", fraction, "")


def _resource_ids(first: int, size: int) -> pa.Array:
    numbers = pc.cast(pa.array(np.arange(first, first + size) % 50_000), pa.string())
    return pc.binary_join_element_wise("i-", pc.utf8_lpad(numbers, width=8, padding="0"), "")


def _dates(days: np.ndarray, *, time: str = "") -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(days), pa.string()), width=2, padding="0")
    return pc.binary_join_element_wise(f"{PERIOD}-", text, time, "")


def _native_table(batch: Batch) -> pa.Table:
    return pa.table({
        "billingCycle": pa.array([PERIOD] * len(batch.units)),
        "billingDate": _dates(batch.day),
        "loginName": batch.login,
        "workspaceName": batch.workspace,
        "apiKeyName": batch.api_key,
        "productName": batch.product,
        "resourceId": batch.resource,
        TAG_KEY: batch.tag,
        "unblendedCost": batch.cost,
        "currency": batch.currency,
    })


def _cur_table(batch: Batch) -> pa.Table:
    size = len(batch.units)
    ids = pc.cast(pa.array(np.arange(batch.first, batch.first + size)), pa.string())
    return pa.table({
        "identity/LineItemId": pc.binary_join_element_wise("li-", ids, ""),
        "bill/BillingPeriodStartDate": pa.array([f"{PERIOD}-01T00:00:00.000Z"] * size),
        "lineItem/UsageAccountId": batch.login,
        "lineItem/UsageStartDate": _dates(batch.day, time="T00:00:00.000Z"),
        "lineItem/LineItemType": pa.array(np.where(batch.fixed, "Tax", "Usage")),
        "lineItem/ProductCode": batch.product,
        "lineItem/CurrencyCode": batch.currency,
        "lineItem/UnblendedCost": batch.cost,
        "lineItem/ResourceId": batch.resource,
        f"resourceTags/user:{TAG_KEY}": batch.tag,
    })


def _focus_table(batch: Batch) -> pa.Table:
    size = len(batch.units)
    tags = pc.if_else(
        pc.equal(batch.tag, ""),
        pa.scalar('{"env": "prod"}'),
        pc.binary_join_element_wise(f'{{"{TAG_KEY}": "', batch.tag, '", "env": "prod"}', ""),
    )
    cost = pc.cast(batch.cost, pa.decimal128(18, SCALE))
    return pa.table({
        "BillingPeriodStart": pa.array([f"{PERIOD}-01T00:00:00Z"] * size),
        "ChargePeriodStart": _dates(batch.day, time="T00:00:00Z"),
        "ChargeCategory": pa.array(np.where(batch.fixed, "Purchase", "Usage")),
        "ChargeFrequency": pa.array(np.where(batch.fixed, "One-Time", "Usage-Based")),
        "SubAccountName": batch.login,
        "ServiceName": batch.product,
        "ResourceId": batch.resource,
        "BillingCurrency": batch.currency,
        "BilledCost": cost,
        "EffectiveCost": cost,
        "Tags": tags,
    })


_TABLES = {"native": _native_table, "cur": _cur_table, "focus": _focus_table}


def generate(shape: str, *, lines: int, out: Path, seed: int = 7) -> dict[str, str]:
    """Write the bill to `out`; return the exact total per 'category|tag|currency' (decimal text)."""
    totals: dict[str, int] = defaultdict(int)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(shape, out)
    try:
        for batch in batches(lines, seed=seed):
            writer.write(_TABLES[shape](batch))
            _add_totals(totals, batch)
    finally:
        writer.close()
    return {key: format(Decimal(units).scaleb(-SCALE), "f") for key, units in sorted(totals.items())}


def _add_totals(totals: dict[str, int], batch: Batch) -> None:
    frame = pa.table({"tag": batch.tag, "currency": batch.currency, "units": batch.units})
    for record in frame.group_by(["tag", "currency"]).aggregate([("units", "sum")]).to_pylist():
        tag = record["tag"]
        totals[f"{category_of(tag)}|{tag}|{record['currency']}"] += record["units_sum"]


class _Writer:
    """Appends tables to a CSV, gzip CSV or Parquet file."""

    def __init__(self, shape: str, out: Path) -> None:
        self._shape = shape
        self._out = out
        self._stream: pa.NativeFile | None = None
        self._writer: pacsv.CSVWriter | pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self._shape == "focus":
                self._writer = pq.ParquetWriter(self._out, table.schema)
            else:
                compression = "gzip" if self._shape == "cur" else None
                self._stream = pa.CompressedOutputStream(str(self._out), compression) if compression else \
                    pa.OSFile(str(self._out), "wb")
                options = pacsv.WriteOptions(quoting_style="needed")
                self._writer = pacsv.CSVWriter(self._stream, table.schema, write_options=options)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._stream is not None:
            self._stream.close()


def write_rules(path: Path) -> None:
    """Rules for the generated bills: five companies, the main services and half of the long tail (the
    other half stays unknown, so unallocated), the two common groups."""
    companies = ("acme", "globex", "initech", "umbrella", "hooli")
    lines = ["tag_key: cz_container_bill", "currency: USD",
             "companies: {" + ", ".join(f"{name}: {10 * (n + 1)}" for n, name in enumerate(companies)) + "}",
             "services:"]
    for n, service in enumerate(MAIN_SERVICES + TAIL_SERVICES[::2]):
        first, second = companies[n % 5], companies[(n + 2) % 5]
        lines.append(f"  {service}: {{{first}: {n % 7 + 1}, {second}: {n % 3 + 1}}}")
    lines += ["common_groups:", "  db: [mobile, web, payments]", "  mq: [chat, mail]"]
    path.write_text("\n".join(lines) + "\n")


def write_usage(path: Path) -> None:
    """Memory byte-seconds of 20 namespaces per cluster, each namespace running one main service."""
    rows = ["cluster,namespace,service,memory_byte_seconds"]
    for c, cluster in enumerate(CLUSTERS):
        for n in range(20):
            service = MAIN_SERVICES[(n + c) % len(MAIN_SERVICES)] if n < 18 else ""
            rows.append(f"{cluster},ns-{n:02d},{service},{(n + 1) * (c + 2) * 2**30 * 86400 * DAYS}")
    path.write_text("\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    totals = generate(args.shape, lines=args.lines, out=args.out, seed=args.seed)
    print(json.dumps(totals, indent=1))


if __name__ == "__main__":
    main()
