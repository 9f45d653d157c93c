"""Mirror of the prompt registry into ClickHouse (``prompt_versions``, ``prompt_label_moves``) for analysts.

A :class:`PromptFollower` hands every accepted event to :meth:`PromptMirror.add`; :meth:`PromptMirror.run`
writes what accumulated every ``interval_s`` through the retrying writer (off the event loop). Rows are keyed
so a repeated insert collapses (several gateways mirror the same topic; a restart mirrors it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from schemas.prompts import PromptLabel, PromptVersion
from services.core.clickhouse.writer import ClickHouseWriter, WriterStopped
from services.core.settings import Settings

VERSION_COLUMNS = [
    "name", "version", "description", "model_alias", "messages", "variables", "params", "content_hash", "push_id",
    "created_by", "created_at", "src_offset",
]
LABEL_COLUMNS = ["name", "label", "version", "moved_by", "moved_at", "src_offset"]


def version_row(event: PromptVersion, offset: int) -> list[object]:
    return [
        event.name, event.version, event.description, event.model_alias or "",
        json.dumps([m.model_dump() for m in event.messages]), json.dumps([v.model_dump() for v in event.variables]),
        event.params.model_dump_json(exclude_none=True), event.content_hash, event.push_id, event.created_by,
        event.created_at, offset,
    ]


def label_row(event: PromptLabel, offset: int) -> list[object]:
    return [event.name, event.label, event.version, event.moved_by, event.moved_at, offset]


class PromptMirror:
    """Buffers accepted registry events and writes them to ClickHouse."""

    def __init__(self, settings: Settings, *, interval_s: float = 1.0) -> None:
        self.writer = ClickHouseWriter(settings, name="prompt-mirror")
        self.interval_s = interval_s
        self.written = 0
        self._versions: list[list[object]] = []
        self._labels: list[list[object]] = []
        self._stopping = asyncio.Event()

    def add(self, event: PromptVersion | PromptLabel, offset: int) -> None:
        if isinstance(event, PromptVersion):
            self._versions.append(version_row(event, offset))
        else:
            self._labels.append(label_row(event, offset))

    def stop(self) -> None:
        self._stopping.set()
        self.writer.stop.set()

    async def flush(self) -> None:
        versions, self._versions = self._versions, []
        labels, self._labels = self._labels, []
        await self.writer.insert("prompt_versions", versions, VERSION_COLUMNS)
        await self.writer.insert("prompt_label_moves", labels, LABEL_COLUMNS)
        self.written += len(versions) + len(labels)

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.interval_s)
                await self.flush()
        except WriterStopped:
            pass  # stopping while ClickHouse was down: the next start mirrors the topic again
