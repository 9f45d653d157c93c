"""Which offsets may be committed when records finish out of order.

A consumer that works on many records at once (a replica generating answers, a notifier posting to webhooks)
finishes them in any order, but Kafka keeps one committed position per partition. :class:`OffsetTracker` keeps,
per partition, the offsets started and not yet done; the committable position is the first offset still open
(or, when none is, one past the last started). Committing it never skips a record that is not done.
"""

from __future__ import annotations

from aiokafka import TopicPartition


class OffsetTracker:
    """Per partition: offsets read but not yet done; the committable position is the first one not done."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        # The first offset read is where the group's committed position already is: nothing to commit until past it.
        self._committed.setdefault(tp, offset)
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        """The record's side effects are acknowledged (a partition already forgotten is ignored)."""
        if tp in self._open:
            self._open[tp].discard(offset)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions this consumer no longer owns: their open offsets are someone else's now."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def committable(self) -> dict[TopicPartition, int]:
        """Positions that advanced since the last :meth:`mark_committed`."""
        out: dict[TopicPartition, int] = {}
        for tp, nxt in self._next.items():
            pos = min(self._open[tp]) if self._open.get(tp) else nxt
            if pos > self._committed.get(tp, -1):
                out[tp] = pos
        return out

    def mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        for tp, pos in positions.items():
            if tp in self._next:
                self._committed[tp] = max(self._committed.get(tp, -1), pos)

    def in_flight(self, tps: set[TopicPartition] | None = None) -> int:
        """Open offsets, over every partition or only ``tps``."""
        return sum(len(s) for tp, s in self._open.items() if tps is None or tp in tps)
