"""The rules file (DESIGN section 4): companies, services, groups and policies, validated."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Annotated, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator,
                      model_validator)

from agent.core.bill_formats import AUTO_DETECT, BILL_FORMAT_CHOICES
from agent.core.model import RESOURCE_UNITS
from agent.core.money import is_currency_code, parse_amount
from agent.core.sql import table_parts
from agent.core.text import one_line
from agent.errors import RulesError

# Bounded so exact arithmetic stays cheap: a weight like 1e-999999999 would make every share a
# billion-digit fraction.
Weight = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=30, decimal_places=12)]
# A YAML document expands its aliases when validated: more nodes than this is an alias bomb, not rules.
MAX_RULES_NODES = 100_000
# Collections nested deeper than this are refused before they are composed.
MAX_RULES_DEPTH = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSource(_Strict):
    """Where a cluster's usage lives (live mode), and what its cost is split by."""

    prometheus_url: str | None = None
    selector: str = ""
    # The kubeconfig context of the cluster's API server; None: the agent's own cluster (or current context).
    kube_context: str | None = None
    # One resource (memory, cpu, gpu), or a blend of the namespaces' shares of several: {memory: 0.5, cpu: 0.5}.
    usage_basis: str | dict[str, Weight] = "memory"

    @field_validator("usage_basis", mode="before")
    @classmethod
    def _known_resources(cls, basis: object) -> object:
        resources = list(basis) if isinstance(basis, dict) else [basis]
        unknown = [r for r in resources if not isinstance(r, str) or r not in RESOURCE_UNITS]
        if unknown or not resources:
            problem = f"unknown resource {unknown[0]!r}" if resources else "an empty blend"
            raise ValueError(f"{problem}; expected {', '.join(RESOURCE_UNITS)} or a blend such as "
                             "{memory: 0.5, cpu: 0.5}")
        return basis

    @field_validator("usage_basis")
    @classmethod
    def _blend_weights(cls, basis: str | dict[str, Decimal]) -> str | dict[str, Decimal]:
        return basis if isinstance(basis, str) else _check_weights(basis)

    def basis_weights(self) -> dict[str, Fraction]:
        """Each resource's weight in the blend, adding up to 1; a resource of weight 0 is left out."""
        if isinstance(self.usage_basis, str):
            return {self.usage_basis: Fraction(1)}
        total = sum(Fraction(w) for w in self.usage_basis.values())
        return {resource: Fraction(w) / total for resource, w in self.usage_basis.items() if w}


class BillColumns(_Strict):
    """Overrides of the bill columns the importer would otherwise guess."""

    format: Literal[BILL_FORMAT_CHOICES] = AUTO_DETECT
    cost: str | None = None
    tag: str | None = None
    currency: str | None = None
    sub_account: str | None = None
    workspace: str | None = None
    api_key: str | None = None
    # True: a bill without any column for the tag key is meant so, all its lines common cost.
    untagged: StrictBool = False
    # The column holding each line's identity, for formats without one (CUR and CUR 2.0 have theirs).
    line_id: str | None = None
    # `refuse`: a line identity found in two bill files of one period fails the run; `allow` accepts it.
    duplicates: Literal["refuse", "allow"] = "refuse"
    # `files`: bill files (--bill, the inbox); `trino` or `athena`: the table `table` (catalog.schema.table) of the
    # Trino server or Athena workgroup the settings name, reduced to group sums by one query there
    # (agent.bills.pushdown).
    engine: Literal["files", "trino", "athena"] = "files"
    table: str | None = None

    @model_validator(mode="after")
    def _table_with_engine(self) -> BillColumns:
        if self.engine == "files" and self.table is not None:
            raise ValueError("table is read by a query engine: set engine: trino or athena, or remove table")
        if self.engine != "files":
            if self.table is None:
                raise ValueError(f"engine: {self.engine} needs table: catalog.schema.table")
            table_parts(self.table)
        return self


DIMENSION_RANK = ("api_key", "workspace", "sub_account")


class AttributionMatch(_Strict):
    """Exact names or globs (`key-chat*`) of a line's sub-account, workspace and API key; all given must match."""

    sub_account: str | None = None
    workspace: str | None = None
    api_key: str | None = None

    @model_validator(mode="after")
    def _at_least_one_pattern(self) -> AttributionMatch:
        if not self.patterns():
            raise ValueError("give at least one of sub_account, workspace, api_key")
        return self

    def patterns(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in DIMENSION_RANK if getattr(self, name) is not None}


class AttributionRule(_Strict):
    """Untagged lines matching `match` are the exclusive cost of `service`, or go straight to `company`."""

    match: AttributionMatch
    service: str | None = None
    company: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> AttributionRule:
        if (self.service is None) == (self.company is None):
            raise ValueError("give exactly one of service, company")
        return self

    def precedence(self, position: int) -> tuple[int, int, int, int]:
        """Sort key: more dimensions first, then API key > workspace > sub-account, exact before glob,
        then file order."""
        patterns = self.match.patterns()
        has_glob = any(any(c in p for c in "*?[") for p in patterns.values())
        return (-len(patterns), min(DIMENSION_RANK.index(d) for d in patterns), int(has_glob), position)

    def label(self, position: int) -> str:
        condition = " ".join(f"{name}={pattern}" for name, pattern in self.match.patterns().items())
        target = f"service {self.service}" if self.service else f"company {self.company}"
        return f"attribution[{position}] {condition} -> {target}"


class Budget(_Strict):
    """The most a company or a service is meant to cost in a month, in one currency."""

    amount: Decimal
    currency: str

    @field_validator("amount", mode="before")
    @classmethod
    def _exact_positive_amount(cls, amount: object) -> Decimal:
        # Text (`"20000"`) or a YAML number, read as an exact decimal; never a boolean or a binary float.
        if isinstance(amount, bool) or not isinstance(amount, str | int | Decimal):
            raise ValueError(f'must be an amount such as "20000" or "1234.50", got {amount!r}')
        try:
            exact = parse_amount(str(amount))
        except ValueError as e:
            raise ValueError(f"must be an exact amount: {e}") from e
        if exact <= 0:
            raise ValueError(f"must be more than 0, got {amount}")
        return exact

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, currency: str) -> str:
        return _check_currency(currency)


class Budgets(_Strict):
    """Monthly budgets by company and by service code (each name at most once, in one currency)."""

    companies: dict[str, Budget] = Field(default_factory=dict)
    services: dict[str, Budget] = Field(default_factory=dict)


def _check_currency(currency: str) -> str:
    if not is_currency_code(currency):
        raise ValueError(f"must be a 3-letter ISO 4217 code, got {currency!r}")
    return currency


def _check_weights(weights: dict[str, Decimal]) -> dict[str, Decimal]:
    for name, weight in weights.items():
        if weight < 0:
            raise ValueError(f"{name}: weight must be >= 0")
    if weights and sum(weights.values()) <= 0:
        raise ValueError("weights must not all be 0")
    return weights


class Rules(_Strict):
    tag_key: str = "cz_container_bill"
    namespace_label: str = "cz_container_bill"
    currency: str | None = None
    # Strict: YAML's `true` would otherwise be taken as 1 decimal.
    precision: StrictInt | None = Field(default=None, ge=0, le=12)
    companies: dict[str, Weight] = Field(min_length=1)
    services: dict[str, dict[str, Weight]] = Field(default_factory=dict)
    common_groups: dict[str, list[str]] = Field(default_factory=dict)
    namespaces: dict[str, str] = Field(default_factory=dict)
    unmapped_namespaces: Literal["common", "proportional"] = "common"
    unattributable: Literal["unallocated", "common"] = "unallocated"
    # A cluster's idle capacity (its allocatable capacity less the namespaces' usage): `spread` over the namespaces
    # in proportion to their usage, or its own `idle` category, split by the `companies` weights (`common`) or
    # carried by no company (`unallocated`).
    idle: Literal["spread", "common", "unallocated"] = "spread"
    clusters: dict[str, ClusterSource] = Field(default_factory=dict)
    attribution: list[AttributionRule] = Field(default_factory=list)
    bill: BillColumns = Field(default_factory=BillColumns)
    budgets: Budgets = Field(default_factory=Budgets)

    def usage_basis(self, cluster: str) -> dict[str, Fraction]:
        """The resources the cluster's cost is split by, with their weights: memory alone unless the cluster's
        `clusters:` entry says otherwise."""
        source = self.clusters.get(cluster)
        return {"memory": Fraction(1)} if source is None else source.basis_weights()

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, currency: str | None) -> str | None:
        return currency if currency is None else _check_currency(currency)

    @field_validator("companies")
    @classmethod
    def _company_weights(cls, companies: dict[str, Decimal]) -> dict[str, Decimal]:
        return _check_weights(companies)

    @field_validator("services")
    @classmethod
    def _service_weights(cls, services: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
        for service, weights in services.items():
            if not weights:
                raise ValueError(f"{service}: needs at least one company weight")
            try:
                _check_weights(weights)
            except ValueError as e:
                raise ValueError(f"{service}.{e}" if ":" in str(e) else f"{service}: {e}") from e
        return services

    @model_validator(mode="after")
    def _references_exist(self) -> Rules:
        # "" is the company of unallocated cost and the service of the common pool in every report.
        problems = [f"{section}: a name must not be empty" for section, names in
                    (("companies", self.companies), ("services", self.services), ("common_groups", self.common_groups))
                    if "" in {name.strip() for name in names}]
        problems += [
            f"services.{service}.{company}: unknown company (not in companies)"
            for service, weights in self.services.items()
            for company in weights
            if company not in self.companies
        ]
        for group, members in self.common_groups.items():
            if not members:
                problems.append(f"common_groups.{group}: needs at least one service")
            problems += [f"common_groups.{group}: service {member!r} listed more than once (each member gets one "
                         f"equal share)" for member in sorted({m for m in members if members.count(m) > 1})]
            problems += [
                f"common_groups.{group}: unknown service {member!r}" for member in members if member not in self.services
            ]
        problems += [
            f"namespaces.{namespace}: unknown service {service!r}"
            for namespace, service in self.namespaces.items()
            if service not in self.services
        ]
        for position, rule in enumerate(self.attribution):
            if rule.service is not None and rule.service not in self.services:
                problems.append(f"attribution.{position}.service: unknown service {rule.service!r}")
            if rule.company is not None and rule.company not in self.companies:
                problems.append(f"attribution.{position}.company: unknown company {rule.company!r}")
        problems += [f"budgets.companies.{company}: unknown company (not in companies)"
                     for company in self.budgets.companies if company not in self.companies]
        problems += [f"budgets.services.{service}: unknown service (not in services)"
                     for service in self.budgets.services if service not in self.services]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class _DecimalLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML loader that reads floats as exact decimals: weights never pass through binary floats. LibYAML's
    parser when PyYAML has it: a rules file with thousands of services parses in milliseconds."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The mapping with its keys as written: every key of the rules is a name, and YAML 1.1 would read the
        company `no` as false and the service `0123` as 83. A key given twice is refused: YAML would keep the last
        silently (a second `services:` block would drop the first); keys merged in with `<<` may be overridden,
        as YAML means them to be."""
        first: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found a key that is not a name", key_node.start_mark)
            if key_node.value in first:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found key {key_node.value!r} twice (first on line {first[key_node.value].line + 1})",
                    key_node.start_mark)
            first[key_node.value] = key_node.start_mark
        self.flatten_mapping(node)
        return {key_node.value: self.construct_object(value_node, deep=deep) for key_node, value_node in node.value}


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "")
    # YAML spells infinity and NaN `.inf` and `.nan`; Decimal wants them spelled out (validation rejects them).
    special = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}
    try:
        return Decimal(special.get(text.lower(), text))
    except InvalidOperation as e:
        raise yaml.constructor.ConstructorError(None, None, f"not a number: {text!r}", node.start_mark) from e


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
# Booleans as YAML 1.2 spells them (true, false): YAML 1.1 would also read a service or company named no, on,
# yes or off as a boolean.
_DecimalLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _DecimalLoader.yaml_implicit_resolvers.items()
}
_DecimalLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))


def parse_rules(text: str, *, source: str = "<rules>") -> Rules:
    """Rules from YAML text; RulesError naming the key and the reason."""
    document = _load_yaml(text, source=source)
    if not isinstance(document, dict):
        raise RulesError(f"{source}: expected a mapping of rules at the top level")
    try:
        return Rules.model_validate(document)
    except ValidationError as e:
        # One line, whatever the names hold: a key may be any text, newlines included.
        raise RulesError(f"{source}: " + one_line("; ".join(_describe(error) for error in e.errors()))) from e


def _load_yaml(text: str, *, source: str) -> object:
    """The YAML document, refusing what would exhaust the stack or memory before validation sees it."""
    try:
        return _bounded_document(text, source=source)
    except yaml.YAMLError as e:
        raise RulesError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from e
    except ValueError as e:
        # PyYAML's int constructor: an integer with more digits than Python converts.
        raise RulesError(f"{source}: not valid YAML: {e}") from e
    except RecursionError as e:
        raise RulesError(f"{source}: not valid YAML: nested too deeply") from e


def _bounded_document(text: str, *, source: str) -> object:
    if _too_deep(text):
        raise RulesError(f"{source}: not valid YAML: nested too deeply (more than {MAX_RULES_DEPTH} levels)")
    loader = _DecimalLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes = _expanded_size(node, {})
        if nodes > MAX_RULES_NODES:
            raise RulesError(f"{source}: the document expands to {nodes} nodes (aliases included), more than "
                             f"{MAX_RULES_NODES}")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _too_deep(text: str) -> bool:
    """Whether the document's collections nest deeper than MAX_RULES_DEPTH, from its tokens: LibYAML scans
    without recursion, but composing a deeply nested document would overflow the C stack. The scan stops
    at the first level too deep: scanning deep flow collections takes time quadratic in their depth."""
    scanner = _DecimalLoader(text)
    depth = 0
    try:
        while (token := scanner.get_token()) is not None:
            if isinstance(token, _OPENING_TOKENS):
                depth += 1
                if depth > MAX_RULES_DEPTH:
                    return True
            elif isinstance(token, _CLOSING_TOKENS):
                depth -= 1
    finally:
        scanner.dispose()
    return False


_OPENING_TOKENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
                   yaml.FlowSequenceStartToken)
_CLOSING_TOKENS = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in the document once every alias is expanded (an alias is the node object it names)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once; construction rejects or bounds it
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    if not location or ":" in message.split(" ")[0]:
        return f"{location + '.' if location else ''}{message}"
    return f"{location}: {message}"


def rules_digest(rules: Rules) -> str:
    """sha256 of the rules' canonical JSON: the same rules give the same digest whatever the YAML layout. The
    budgets are left out: they move no money, so a new budget neither allocates a period again (the service
    re-runs an open period whose rules digest changed) nor changes the digest of rules written before budgets."""
    return hashlib.sha256(rules.model_dump_json(exclude={"budgets"}).encode()).hexdigest()
