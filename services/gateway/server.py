"""Serving the gateway with uvicorn, stopping gracefully: SIGTERM stops accepting, drains in-flight requests, then closes.

:func:`serve` runs in the caller's event loop (the stop signal is handled by :mod:`services.core.signals`);
uvicorn's own signal handling is switched off so there is one way to stop every service.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator

import uvicorn

from services.core.settings import Settings
from services.gateway.app import Gateway
from services.gateway.config import GatewayConfig
from services.gateway.pricing import Pricer
from services.gateway.safety import Scanner

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by services.core.signals, which calls GatewayServer.stop


class GatewayServer:
    """One gateway process: the service and its HTTP server."""

    def __init__(
        self, settings: Settings, config: GatewayConfig, *, scanner: Scanner | None = None, pricer: Pricer | None = None,
        log_level: str = "warning",
    ) -> None:
        self.gateway = Gateway(settings, config, scanner, pricer)
        self.config = config
        self.server = _Server(uvicorn.Config(
            self.gateway.app, host=config.host, port=config.port, log_level=log_level, access_log=False,
            timeout_graceful_shutdown=int(config.drain_timeout_s) or None, lifespan="on", loop="asyncio",
            timeout_keep_alive=config.keep_alive_s,
        ))

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        servers = getattr(self.server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        """Stop accepting connections; in-flight requests finish (up to drain_timeout_s), then the service closes."""
        log.info("gateway %s: stopping (%d in flight)", self.config.instance_id, self.gateway.in_flight)
        self.server.should_exit = True
