"""The one Settings object: nothing else in the package reads the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOD_", extra="ignore")

    data_dir: Path = Path(".iod")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means a SQLite file under data_dir.",
    )
    network_driver: Literal["simulated"] = "simulated"
    issuer: str = "http://127.0.0.1:8080"
    audience: str = "internet-on-demand"
    token_ttl: int = Field(default=3600, ge=5, le=86400)
    client_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=4.0,
        description="How long a client's state (enabled, secret generation) is cached.",
    )
    key_refresh_seconds: float = Field(
        default=5.0,
        ge=0.1,
        le=60,
        description="How often each process reloads the signing keys; `iod keys rotate` "
        "activates a new key two intervals later, so every process knows it first.",
    )
    simulated_provision_seconds: float = Field(default=2.0, ge=0)
    simulated_change_seconds: float = Field(default=1.0, ge=0)
    simulated_failure_rate: float = Field(default=0.0, ge=0, le=1)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    worker_batch_size: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Jobs a worker claims and records per transaction; what the network has "
        "not carried out within half the lease goes back to the queue.",
    )
    job_max_attempts: int = Field(default=5, ge=1)
    job_backoff_seconds: float = Field(default=1.0, ge=0)
    job_backoff_cap_seconds: float = Field(default=60.0, ge=0)
    max_body_bytes: int = 64 * 1024
    max_schedule_days: int = 365
    inprocess_worker: bool = Field(
        default=True, description="Whether `iod serve` runs the job worker in each API process."
    )
    metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'iod.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
