"""Settings from the environment (CZ_AGENT_*): built once at start-up and passed down."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_store_url() -> str:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{data_home / 'cz-agent' / 'runs.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CZ_AGENT_", extra="ignore")

    # SQLAlchemy URL of the run store: SQLite by default, postgresql+psycopg://... works too.
    store_url: str = ""
    log_level: str = "INFO"

    def effective_store_url(self) -> str:
        return self.store_url or _default_store_url()
