"""Rows of ``gateway_requests``: which API key made each request, its status, and what a cache hit saved.

Rows are buffered and written every ``interval_s`` through the retrying ClickHouse writer (off the event
loop); the table is keyed by request id, so a retried request (same ``x-request-id``) counts once.
"""

from __future__ import annotations

import asyncio
import contextlib

from schemas.envelope import utc_now
from services.core.clickhouse.writer import ClickHouseWriter, WriterStopped
from services.core.settings import Settings

COLUMNS = [
    "key_id", "tenant_id", "request_id", "occurred_at", "model_alias", "gateway_instance", "status", "cached",
    "saved_prompt_tokens", "saved_completion_tokens",
]


class RequestRecorder:
    def __init__(self, settings: Settings, instance_id: str, *, interval_s: float = 0.5) -> None:
        self.writer = ClickHouseWriter(settings, name="gateway-requests")
        self.instance_id = instance_id
        self.interval_s = interval_s
        self.written = 0
        self._rows: list[list[object]] = []
        self._stopping = asyncio.Event()

    def record(
        self, key_id: str, tenant: str, request_id: str, alias: str, status: int, *, cached: bool = False,
        saved_prompt_tokens: int = 0, saved_completion_tokens: int = 0,
    ) -> None:
        self._rows.append([key_id, tenant, request_id, utc_now(), alias, self.instance_id, status, int(cached),
                           saved_prompt_tokens, saved_completion_tokens])

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        await self.writer.insert("gateway_requests", rows, COLUMNS)
        self.written += len(rows)

    def stop(self) -> None:
        self._stopping.set()
        self.writer.stop.set()

    async def run(self) -> None:
        with contextlib.suppress(WriterStopped):
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.interval_s)
                await self.flush()
