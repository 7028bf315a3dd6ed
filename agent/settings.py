"""Settings from the environment (CZ_AGENT_*): built once at start-up and passed down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    usage_basis: Literal["usage", "request", "max"] = "usage"
    usage_step_seconds: int = Field(default=60, ge=1, le=3600)
    # Below this fraction of the period with usage data, the run summary warns about a cluster.
    coverage_warning_threshold: float = Field(default=0.9, ge=0, le=1)

    # Live namespace map: kubeconfig (default: in-cluster, then $KUBECONFIG or ~/.kube/config).
    kubeconfig: Path | None = None
    kube_timeout_seconds: float = Field(default=30, gt=0)

    def effective_store_url(self) -> str:
        return self.store_url or _default_store_url()
