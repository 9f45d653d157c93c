"""Findings counted per deployment per minute, ready to be written as rows.

``MinuteCounter.add(findings, at)`` buckets by ``(deployment_id, minute, scanned, category,
action)``; ``drain(before)`` pops the buckets of minutes that ended at or before ``before``
(closed minutes), so a stream agent can flush on a timer without losing late events of the
current minute. Deployment ``None`` is counted under ``""``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from schemas.safety import SafetyFinding

__all__ = ["FindingCount", "MinuteCounter", "minute_of"]

_MINUTE = timedelta(minutes=1)


def minute_of(at: datetime) -> datetime:
    """The start of ``at``'s minute, in UTC (naive datetimes are taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class FindingCount:
    """One row: how many findings of a kind a deployment had in one minute."""

    deployment_id: str
    minute: datetime
    scanned: str
    category: str
    action: str
    count: int


class MinuteCounter:
    """Per deployment per minute counts of findings (not thread-safe; one per agent)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, datetime, str, str, str], int] = {}

    def add(self, findings: Iterable[SafetyFinding], at: datetime) -> None:
        """Count each finding in ``at``'s minute."""
        minute = minute_of(at)
        for f in findings:
            key = (f.deployment_id or "", minute, f.scanned, f.category, f.action)
            self._counts[key] = self._counts.get(key, 0) + 1

    def drain(self, before: datetime) -> list[FindingCount]:
        """Remove and return the counts of every minute that ended at or before ``before``."""
        cutoff = _utc(before) - _MINUTE
        out: list[FindingCount] = []
        for key in sorted(k for k in self._counts if k[1] <= cutoff):
            out.append(FindingCount(key[0], key[1], key[2], key[3], key[4], self._counts.pop(key)))
        return out

    def __len__(self) -> int:
        return len(self._counts)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        return at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc)
