"""Settings from the environment (CZ_AGENT_*): built once at start-up and passed down."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from agent.core.bill_limits import BillLimits, setting_name
from agent.errors import SettingsError


def _default_store_url() -> str:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{data_home / 'cz-agent' / 'runs.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CZ_AGENT_", extra="ignore")

    # SQLAlchemy URL of the run store: SQLite by default, postgresql+psycopg://... works too.
    store_url: str = ""
    log_level: str = "INFO"

    # Live usage: the Prometheus of clusters whose rules entry has no prometheus_url, and its credentials.
    prometheus_url: str | None = None
    prometheus_bearer_token_file: Path | None = None
    prometheus_username: str | None = None
    prometheus_password: SecretStr | None = None
    prometheus_ca_file: Path | None = None
    prometheus_timeout_seconds: float = Field(default=60, gt=0)
    prometheus_retries: int = Field(default=3, ge=0)
    # How memory is measured: what containers use, what they request, or the larger of the two.
    usage_basis: Literal["usage", "request", "max"] = "usage"
    # The prefix of the pod labels on the DCGM exporter's GPU series: `exported_` where Prometheus scrapes it without
    # honor_labels (its default), "" where the scrape honors them.
    gpu_label_prefix: Literal["exported_", ""] = "exported_"
    usage_step_seconds: int = Field(default=60, ge=1, le=3600)
    # Below this fraction of the period with usage data, the run summary warns about a cluster.
    coverage_warning_threshold: float = Field(default=0.9, ge=0, le=1)

    # Live namespace map: kubeconfig (default: in-cluster, then $KUBECONFIG or ~/.kube/config).
    kubeconfig: Path | None = None
    kube_timeout_seconds: float = Field(default=30, gt=0)

    # The service (cz-agent serve): rules, bill inbox, schedule, HTTP.
    rules_file: Path | None = None
    inbox_dir: Path = Path("inbox")
    inbox_poll_seconds: int = Field(default=60, ge=1)
    # Object storage prefixes mirrored into the inbox at each poll: s3://, gs:// or az:// URLs, comma-separated.
    bill_sources: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Credentials come from each platform's default chain; these only point at another endpoint (MinIO, an
    # emulator) or name the Azure storage account.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    gcs_endpoint_url: str | None = None
    azure_storage_account: str | None = None
    azure_storage_key: SecretStr | None = None
    azure_blob_endpoint: str | None = None
    object_store_timeout_seconds: float = Field(default=30, gt=0)
    # The Trino server of rules with `bill: {engine: trino}` (http(s)://host:port), the user its queries run as,
    # and a file holding that user's password (sent over https only).
    trino_url: str | None = None
    trino_user: str = "cz-agent"
    trino_password_file: Path | None = None
    # Athena, for rules with `bill: {engine: athena}`: the region (default: AWS_REGION, else AWS_DEFAULT_REGION),
    # the workgroup, the s3:// prefix results are written to (unless the workgroup enforces its own), and another
    # endpoint (a VPC endpoint). Credentials come from the AWS default chain (IRSA, EKS Pod Identity...).
    athena_region: str | None = None
    athena_workgroup: str = "primary"
    athena_output_location: str | None = None
    athena_endpoint_url: str | None = None
    # The longest a bill table's query may run.
    bill_query_timeout_seconds: float = Field(default=600, gt=0)
    allocation_interval_seconds: int = Field(default=900, ge=1)
    misfire_grace_seconds: int = Field(default=300, ge=1)
    exposed_periods: int = Field(default=3, ge=1)
    max_series_per_family: int = Field(default=10000, ge=10)
    # cz_allocation_namespace_cost: series over all exposed periods, the smallest folded into `other`.
    max_namespace_series: int = Field(default=2000, ge=10)
    # Workspaces and API keys exposed per period (the largest by cost), the rest summed into `other`.
    split_top: int = Field(default=20, ge=1)
    # `::` listens on every IPv6 and IPv4 address (one dual-stack socket), or on 0.0.0.0 without IPv6.
    host: str = "::"
    port: int = Field(default=8080, ge=1, le=65535)
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    metrics_require_token: bool = False
    # POST /api/v1/bills: the largest bill file taken (larger ones belong in object storage synced to the inbox).
    upload_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    log_format: Literal["text", "json"] = "text"

    # Two or more replicas: only the holder of a coordination.k8s.io Lease runs the jobs; every replica serves.
    leader_election: bool = False
    leader_election_lease_name: str = "cz-allocation-agent"
    # Default: POD_NAMESPACE, else the namespace of the pod's service account.
    leader_election_namespace: str | None = None
    # Default: POD_NAME (the downward API), else HOSTNAME.
    leader_election_identity: str | None = None
    # client-go's defaults: a follower takes over lease_duration after the last renewal it saw; the leader stops
    # its jobs when it could not renew for renew_deadline; every candidate tries every retry_period.
    leader_election_lease_duration_seconds: float = Field(default=15, gt=0)
    leader_election_renew_deadline_seconds: float = Field(default=10, gt=0)
    leader_election_retry_period_seconds: float = Field(default=2, gt=0)

    # Bill files past these sizes are refused, naming the limit (agent.core.bill_limits has the defaults' reasons).
    bill_max_cell_chars: int = Field(default=BillLimits.max_cell_chars, ge=1)
    bill_max_row_bytes: int = Field(default=BillLimits.max_row_bytes, ge=1)
    bill_max_decompressed_bytes: int = Field(default=BillLimits.max_decompressed_bytes, ge=1)
    bill_max_xlsx_shared_strings_bytes: int = Field(default=BillLimits.max_xlsx_shared_strings_bytes, ge=1)
    bill_max_xlsx_part_bytes: int = Field(default=BillLimits.max_xlsx_part_bytes, ge=1)
    bill_max_xlsx_sheets: int = Field(default=BillLimits.max_xlsx_sheets, ge=1)
    bill_max_xlsx_rows: int = Field(default=BillLimits.max_xlsx_rows, ge=1)
    bill_max_xlsx_columns: int = Field(default=BillLimits.max_xlsx_columns, ge=1)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # The environment overrides the config file (passed as init values), as in a Deployment whose env
        # refines a mounted ConfigMap.
        return env_settings, init_settings, file_secret_settings

    def effective_store_url(self) -> str:
        return self.store_url or _default_store_url()

    def effective_athena_region(self) -> str | None:
        """athena_region, else the AWS SDKs' own AWS_REGION and AWS_DEFAULT_REGION."""
        return self.athena_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    @field_validator("bill_sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [url.strip() for url in value.split(",") if url.strip()] if isinstance(value, str) else value

    def effective_api_token(self) -> str | None:
        """The API token from CZ_AGENT_API_TOKEN, else read from the file (a mounted Secret). A token that is
        given but empty fails closed: an empty Secret value must not turn authentication off."""
        if self.api_token is not None:
            return _non_empty(self.api_token.get_secret_value(), given_as="api_token (CZ_AGENT_API_TOKEN)")
        return _secret_file(self.api_token_file, setting="api_token_file")

    def trino_password(self) -> str | None:
        """The Trino user's password, read from trino_password_file (a mounted Secret); None without one."""
        return _secret_file(self.trino_password_file, setting="trino_password_file")

    def bill_limits(self) -> BillLimits:
        return BillLimits(**{limit.name: getattr(self, setting_name(limit.name)) for limit in fields(BillLimits)})

    def masked(self) -> dict[str, object]:
        """The effective settings for the start-up log: secrets masked, the store URL's password hidden."""
        values = self.model_dump(mode="json")
        values["store_url"] = make_url(self.effective_store_url()).render_as_string(hide_password=True)
        return values


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from the YAML config file (CZ_AGENT_CONFIG_FILE or `config_file`), overridden by CZ_AGENT_*."""
    path = config_file or (Path(os.environ["CZ_AGENT_CONFIG_FILE"]) if os.environ.get("CZ_AGENT_CONFIG_FILE")
                           else None)
    values = _config_file_values(path) if path else {}
    try:
        return Settings(**values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in e.errors())
        raise SettingsError(f"invalid settings ({path or 'environment'}, CZ_AGENT_*): {problems}") from e


def _config_file_values(path: Path) -> dict[str, object]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SettingsError(f"{path}: cannot read the config file: {e}") from e
    if not isinstance(document, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    unknown = sorted(set(document) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return document


def _secret_file(path: Path | None, *, setting: str) -> str | None:
    """The secret a file holds (a mounted Secret), None without a file; SettingsError if unreadable or empty."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingsError(f"{setting} {path}: {e.strerror or e}") from e
    return _non_empty(text, given_as=f"{setting} {path}")


def _non_empty(token: str, *, given_as: str) -> str:
    if not token.strip():
        raise SettingsError(f"{given_as} is set but empty: give a token, or unset it to serve the API without one")
    return token.strip()
