"""The local stack as a whole: bring up what is local, leave external servers alone, report status."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.settings import Settings
from services.infra.broker import LocalBroker
from services.infra.clickhouse_server import LocalClickHouse
from services.infra.process import InfraError


@dataclass
class ServerStatus:
    name: str
    location: str
    managed: bool
    """True when this stack runs it; False for an external server."""
    running: bool
    pid: int | None = None
    rss_bytes: int | None = None
    started_in_s: float | None = None
    log: str | None = None


class LocalStack:
    """The broker and ClickHouse of the settings: local ones are started and stopped here."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = LocalBroker(settings)
        self.clickhouse = LocalClickHouse(settings)

    def up(self) -> list[ServerStatus]:
        """Start every local server that is not running yet. Idempotent."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        started: dict[str, float] = {}
        try:
            if self.settings.uses_local_broker and self.broker.process.recorded_pid() is None:
                started["broker"] = self.broker.start()
            if self.settings.uses_local_clickhouse and self.clickhouse.process.recorded_pid() is None:
                started["clickhouse"] = self.clickhouse.start()
        except InfraError:
            self.down()
            raise
        statuses = self.status()
        for st in statuses:
            st.started_in_s = started.get(st.name)
        return statuses

    def down(self) -> list[str]:
        """Stop the local servers this stack started; external servers are never touched."""
        stopped = []
        if self.clickhouse.stop():
            stopped.append("clickhouse")
        if self.broker.stop():
            stopped.append("broker")
        return stopped

    def status(self) -> list[ServerStatus]:
        s = self.settings
        out = []
        if s.uses_local_broker:
            pid = self.broker.process.recorded_pid()
            out.append(ServerStatus(
                "broker", s.bootstrap_servers, True, pid is not None and self.broker.healthy(), pid,
                self.broker.process.rss_bytes(), log=str(self.broker.process.log_file),
            ))
        else:
            out.append(ServerStatus("broker", s.bootstrap_servers, False, _external_broker_ok(s)))
        if s.uses_local_clickhouse:
            pid = self.clickhouse.process.recorded_pid()
            out.append(ServerStatus(
                "clickhouse", self.clickhouse.http_url, True, pid is not None and self.clickhouse.healthy(), pid,
                self.clickhouse.process.rss_bytes(), log=str(self.clickhouse.process.log_file),
            ))
        else:
            host, port, *_ = s.clickhouse_http()
            out.append(ServerStatus("clickhouse", f"{host}:{port}", False, _external_clickhouse_ok(s)))
        return out


def _external_broker_ok(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    from services.core.kafka.config import confluent_admin_config

    try:
        AdminClient(confluent_admin_config(settings)).list_topics(timeout=3.0)
    except Exception:  # noqa: BLE001
        return False
    return True


def _external_clickhouse_ok(settings: Settings) -> bool:
    from services.core.clickhouse.client import connect

    try:
        connect(settings, database=None).command("SELECT 1")
    except Exception:  # noqa: BLE001
        return False
    return True
