"""Dead letters: publish what could not be processed to ``llm.deadletter``; store every dead letter, redacted.

The stream agents only *publish* dead letters (:func:`dead_letter_messages`, with deterministic event ids, so a
replayed batch republishes the same events). One ingest agent consumes ``llm.deadletter`` -- the dead letters of
every service -- and writes the ``dead_letters`` table (:class:`DeadLetterIngest`): the original as text, redacted
by the same safety scanners as every stored text, with its size and SHA-256. The original bytes stay only on the
topic (30 days, as the catalog says), where a replay can still use them; raw personal data in a malformed event
never reaches ClickHouse. A record on the dead-letter topic that is not a dead letter is stored as a dead letter
of the ingest agent itself (never republished, so nothing loops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from schemas.codec import DecodeError, decode
from schemas.deadletter import DeadLetter
from services.core.clickhouse.raw_tables import DEAD_LETTER_COLUMNS, dead_letter_row
from services.core.faust_runtime import OutMessage, Record
from services.core.kafka.deadletters import encode_dead_letter
from streams.concerns.decode import dead_letter
from streams.concerns.sink import Sink

INGEST_CONSUMER = "streams.deadletters"


def dead_letter_messages(letters: list[DeadLetter], topic: str, source: str) -> list[OutMessage]:
    """The messages that publish these dead letters, keyed by source position; ids are derived from it."""
    return [OutMessage(topic, *encode_dead_letter(letter, source=source)) for letter in letters]


class DeadLetterIngest:
    """Batches of ``llm.deadletter`` records -> ``dead_letters`` rows with redacted originals."""

    def __init__(self, sink: Sink, redact: Callable[[str], str]) -> None:
        self.sink = sink
        self.redact = redact
        self.stored = 0

    def rows(self, records: list[Record]) -> list[list[Any]]:
        rows = []
        for rec in records:
            try:
                event = decode(rec.value, rec.headers, expect=DeadLetter)
                rows.append(dead_letter_row(event.payload, self.redact, event.occurred_at))
            except DecodeError as exc:
                rows.append(dead_letter_row(dead_letter(rec, exc.kind.value, str(exc), INGEST_CONSUMER), self.redact))
        return rows

    async def handle(self, records: list[Record]) -> None:
        rows = await asyncio.to_thread(self.rows, records)  # redaction is CPU work: off the event loop
        rejected = await self.sink.insert("dead_letters", rows, DEAD_LETTER_COLUMNS)
        if rejected:  # store what can be stored of them: the position and the reason, without the original
            await self.sink.insert("dead_letters", [
                [*rows[i][:6], f"{rows[i][6]} (stored without its original: {reason})"[:20_000], "", None, rows[i][9],
                 rows[i][10]] for i, reason in rejected
            ], DEAD_LETTER_COLUMNS)
        self.stored += len(rows)
