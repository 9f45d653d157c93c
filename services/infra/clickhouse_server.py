"""The local ClickHouse server: chdb-core's engine in a child process speaking the real HTTP/TCP protocols.

Its working directory ``<data_dir>/clickhouse`` holds the generated ``config.xml`` (loopback only) and
the data under ``data/``, which survives restarts. Stopping kills the serving query, so the engine
shuts down cleanly.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from services.core.clickhouse.access import load_analysts, local_users_xml, tenant_scope_from_migrations
from services.core.settings import Settings
from services.infra import clickhouse_child
from services.infra.process import InfraError, ManagedProcess, port_is_free

CONFIG_TEMPLATE = """<clickhouse>
  <listen_host>{host}</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <keep_alive_timeout>1</keep_alive_timeout>
  <logger><level>warning</level><console>1</console></logger>{users}
</clickhouse>
"""
USERS = "\n  <user_directories><users_xml><path>users.xml</path></users_xml></user_directories>"
"""With declared analysts: users.xml (written next to config.xml) defines the users; it is read once at start."""


class LocalClickHouse:
    """Start, check and stop the chdb-backed ClickHouse server."""

    name = "clickhouse"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.data_dir / "run")
        self.home = settings.data_dir / "clickhouse"

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.clickhouse_host}:{self.settings.clickhouse_http_port}"

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        analysts = load_analysts(self.settings)
        if analysts:  # this server has no SQL access management: analysts are XML users (services/core/clickhouse/access.py)
            scope = tenant_scope_from_migrations(self.settings)
            (self.home / "users.xml").write_text(local_users_xml(self.settings, analysts, scope))
        config = self.home / "config.xml"
        config.write_text(
            CONFIG_TEMPLATE.format(
                host=self.settings.clickhouse_host,
                http_port=self.settings.clickhouse_http_port,
                tcp_port=self.settings.clickhouse_tcp_port,
                users=USERS if analysts else "",
            )
        )
        return config

    def start(self) -> float:
        """Start the server and wait for ``/ping``; returns seconds to ready."""
        if self.process.recorded_pid() is not None:
            raise InfraError(f"ClickHouse is already running (PID file {self.process.pid_file})")
        host = self.settings.clickhouse_host
        for port, var in (
            (self.settings.clickhouse_http_port, "LLMOPS_CLICKHOUSE_HTTP_PORT"),
            (self.settings.clickhouse_tcp_port, "LLMOPS_CLICKHOUSE_TCP_PORT"),
        ):
            if not port_is_free(host, port):
                raise InfraError(f"port {host}:{port} is taken by another process; set {var} to a free port")
        self.write_config()
        data = (self.home / "data").resolve()
        argv = [sys.executable, str(Path(clickhouse_child.__file__).resolve()), str(data)]
        self.process.start(argv, cwd=self.home)
        return self.process.wait_healthy(self.healthy, self.settings.startup_timeout_s)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/ping", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _kill_serving_query(self) -> None:
        pattern = clickhouse_child.SERVE_QUERY.split(" FROM ")[0]
        sql = f"KILL QUERY WHERE query LIKE '{pattern}%' SYNC"
        req = urllib.request.Request(self.http_url, data=sql.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5.0):
            pass

    def stop(self) -> bool:
        return self.process.stop(graceful=self._kill_serving_query)
