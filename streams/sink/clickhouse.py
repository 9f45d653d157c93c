"""A ClickHouse writer for the agents: every call runs off the event loop and retries until it succeeds.

``insert``/``command``/``query`` run the blocking clickhouse-connect call in a worker thread
(``asyncio.to_thread``) and, when the server is unreachable or fails, retry with exponential backoff
(``retry_initial_s`` doubling up to ``retry_max_s``), logging each failure. They return only once
ClickHouse acknowledged, so a caller that commits Kafka offsets afterwards never commits data that is
not stored; while they retry, the caller is blocked and so stops consuming. Retries are safe because
every table written by the agents is keyed so that a repeated insert collapses (ReplacingMergeTree).
A stop request (``stop`` event) ends the retrying with :class:`WriterStopped` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from services.clickhouse.client import connect
from services.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriterStopped(RuntimeError):
    """The worker is stopping while a ClickHouse call was still being retried."""


class ClickHouseWriter:
    """One client (one thread at a time) with retrying async calls."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        stop: asyncio.Event | None = None,
        name: str = "clickhouse",
    ) -> None:
        self.settings = settings
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stop = stop or asyncio.Event()
        self.name = name
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self.failures = 0
        """Failed attempts so far (for tests and metrics)."""

    def _get_client(self) -> Client:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    async def _call(self, what: str, fn: Callable[[Client], T]) -> T:
        delay = self.retry_initial_s
        async with self._lock:
            while True:
                try:
                    return await asyncio.to_thread(lambda: fn(self._get_client()))
                except Exception as exc:  # noqa: BLE001 - any failure: log, back off, retry
                    self.failures += 1
                    self._client = None  # reconnect on the next attempt
                    log.warning("%s: %s failed (%s); retrying in %.1fs", self.name, what, str(exc)[:300], delay)
                if self.stop.is_set():
                    raise WriterStopped(f"{self.name}: stopped while retrying {what}")
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                else:
                    raise WriterStopped(f"{self.name}: stopped while retrying {what}")
                delay = min(delay * 2, self.retry_max_s)

    async def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert rows (nothing when empty); returns once ClickHouse acknowledged."""
        if not rows:
            return
        # Batches are already large: a synchronous insert (no server-side async-insert buffering) is acknowledged
        # as soon as its part is written, instead of after the server's async flush timer.
        await self._call(f"insert into {table} ({len(rows)} rows)",
                         lambda c: c.insert(table, list(rows), column_names=list(columns),
                                            settings={"async_insert": 0}))

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement (e.g. INSERT ... SELECT) until it succeeds."""
        await self._call(sql.split("\n", 1)[0][:80], lambda c: c.command(sql, parameters=parameters))

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT."""
        return await self._call(sql.split("\n", 1)[0][:80],
                                lambda c: [tuple(r) for r in c.query(sql, parameters=parameters).result_rows])
