"""One way to get a ClickHouse client (HTTP, clickhouse-connect), for the local or an external server."""

from __future__ import annotations

from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.core.settings import Settings


def connect(settings: Settings, *, database: str | None = "", **kwargs: Any) -> Client:
    """A client for the configured server. ``database=""`` means the settings' database; None means none."""
    host, port, user, password, secure = settings.clickhouse_http()
    db = settings.clickhouse_database if database == "" else database
    return clickhouse_connect.get_client(
        host=host,
        port=port,
        username=user,
        password=password,
        secure=secure,
        database=db or "default",
        connect_timeout=5,
        send_receive_timeout=60,
        autogenerate_session_id=False,
        **kwargs,
    )
