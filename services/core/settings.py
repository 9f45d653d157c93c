"""The one settings object. Every knob is an environment variable with the ``LLMOPS_`` prefix.

By default everything runs on the embedded local stack (a Tansu broker and a chdb-backed ClickHouse
server under ``LLMOPS_DATA_DIR``). Set ``LLMOPS_KAFKA_BOOTSTRAP`` and ``LLMOPS_CLICKHOUSE_URL`` to use a
real Kafka cluster and ClickHouse server instead; nothing else changes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.resources import package_path


class Settings(BaseSettings):
    """Configuration for every command and service. Field ``x`` is read from ``LLMOPS_X``."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_", extra="ignore")

    data_dir: Path = Field(default=Path(".llmops"), description="Where the local stack keeps data, logs and PIDs.")

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="External Kafka bootstrap servers (host:port,...). Unset: the local broker."
    )
    broker_host: str = Field(default="127.0.0.1", description="Address the local broker binds (loopback only).")
    broker_port: int = Field(default=19092, ge=1, le=65535)
    kafka_session_timeout_ms: int = Field(
        default=6000, ge=1000, description="Consumer group session timeout. 6 s keeps joins fast on the local broker."
    )
    kafka_client_id: str = "llmops"

    # ClickHouse
    clickhouse_url: str | None = Field(
        default=None, description="External ClickHouse HTTP URL (http://user:pass@host:8123). Unset: the local server."
    )
    clickhouse_host: str = Field(default="127.0.0.1", description="Address the local ClickHouse binds (loopback only).")
    clickhouse_http_port: int = Field(default=18123, ge=1, le=65535)
    clickhouse_tcp_port: int = Field(default=19000, ge=1, le=65535)
    clickhouse_database: str = Field(default="llmops", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    raw_ttl_days: int = Field(default=90, ge=1, description="How long raw events are kept in ClickHouse.")
    migrations_dir: Path | None = Field(
        default=None, description="Directory of NNNN_*.sql migrations; unset: the ones shipped with the package."
    )
    clickhouse_analysts_file: Path | None = Field(
        default=None,
        description="YAML declaring read-only analyst users, optionally limited to tenants (services/core/clickhouse/access.py).",
    )

    # Prometheus metrics (services/core/metrics.py)
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Port of a long-running command's /metrics endpoint; unset: no endpoint; 0: a free port (logged).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint binds (loopback by default).")
    metrics_max_label_values: int = Field(
        default=100, ge=1, description="Distinct values kept per traffic-derived label (tenant, model, ...); then 'other'.",
    )

    # Local servers
    startup_timeout_s: float = Field(default=30.0, gt=0, description="How long `infra up` waits for health.")

    @property
    def uses_local_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def uses_local_clickhouse(self) -> bool:
        return self.clickhouse_url is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.broker_host}:{self.broker_port}"

    def to_env(self) -> dict[str, str]:
        """The LLMOPS_* environment that makes a child process's ``Settings()`` equal these settings."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is not None:
                env[f"LLMOPS_{name.upper()}"] = str(value)
        return env

    def migrations_path(self) -> Path:
        """The migrations directory in use: ``migrations_dir``, or the shipped ``services/core/clickhouse/migrations``."""
        return self.migrations_dir or package_path("services.core.clickhouse", "migrations")

    def clickhouse_http(self) -> tuple[str, int, str, str, bool]:
        """(host, port, username, password, secure) of the ClickHouse HTTP interface."""
        if self.clickhouse_url is None:
            return self.clickhouse_host, self.clickhouse_http_port, "default", "", False
        parts = urlsplit(self.clickhouse_url)
        secure = parts.scheme == "https"
        port = parts.port or (8443 if secure else 8123)
        return parts.hostname or "localhost", port, parts.username or "default", parts.password or "", secure


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
