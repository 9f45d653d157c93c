"""Per-deployment latency aggregate over one time window (a minute; hours are merged minutes).

The latency agent keeps one :class:`LatencyAggregate` per (deployment, minute), feeds it each
Completion with :meth:`LatencyAggregate.add`, and emits :meth:`LatencyAggregate.summary` when the
minute closes. The summary carries p50/p95/p99 *and* the sketch states, so a consumer rebuilds the
aggregate with :meth:`LatencyAggregate.from_summary` and merges minutes into hours exactly.

What is counted: every completion adds to ``count`` and its ``total_ms`` to the total sketch;
``ttft_ms`` is added when present (errors before the first token have none). Errors are counted by
``error.kind``; a completion with finish_reason "error"/"deadline" but no error object counts as
"internal"/"deadline_exceeded".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from schemas.completions import Completion
from streams.latency.sketch import DEFAULT_ALPHA, DDSketch, SketchState

QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)


def minute_of(at: datetime) -> datetime:
    """The UTC minute containing ``at`` (timezone-aware)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware")
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def error_kind(completion: Completion) -> str | None:
    """The error kind of a completion, or None when it succeeded."""
    if completion.error is not None:
        return completion.error.kind
    if completion.finish_reason == "error":
        return "internal"
    if completion.finish_reason == "deadline":
        return "deadline_exceeded"
    return None


class Percentiles(BaseModel):
    """p50/p95/p99 in ms (None when there were no values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50: float | None
    p95: float | None
    p99: float | None


class LatencySummary(BaseModel):
    """What the agent emits per deployment per window: counts, percentiles and mergeable sketches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment_id: str
    window_start: datetime
    window_seconds: int = Field(gt=0)
    count: int = Field(ge=0)
    error_count: int = Field(ge=0)
    errors_by_kind: dict[str, int]
    ttft_ms: Percentiles
    total_ms: Percentiles
    ttft_sketch: SketchState
    total_sketch: SketchState


class LatencyAggregate:
    """Counts, errors by kind and ttft/total sketches for one deployment over one window."""

    def __init__(
        self,
        deployment_id: str,
        window_start: datetime,
        window_seconds: int = 60,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        if window_start.tzinfo is None or window_start.utcoffset() is None:
            raise ValueError("window_start must be timezone-aware")
        self.deployment_id = deployment_id
        self.window_start = window_start.astimezone(UTC)
        self.window_seconds = window_seconds
        self.count = 0
        self.errors_by_kind: dict[str, int] = {}
        self.ttft = DDSketch(alpha)
        self.total = DDSketch(alpha)

    @property
    def window_end(self) -> datetime:
        """Exclusive end of the window."""
        return self.window_start + timedelta(seconds=self.window_seconds)

    def add(self, completion: Completion) -> None:
        """Count one completion of this deployment."""
        if completion.deployment_id != self.deployment_id:
            raise ValueError(f"completion of {completion.deployment_id!r} added to {self.deployment_id!r}")
        self.count += 1
        kind = error_kind(completion)
        if kind is not None:
            self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        self.total.add(completion.total_ms)
        if completion.ttft_ms is not None:
            self.ttft.add(completion.ttft_ms)

    def merge(self, other: LatencyAggregate) -> None:
        """Add another aggregate of the same deployment; the window widens to cover both."""
        if other.deployment_id != self.deployment_id:
            raise ValueError("cannot merge aggregates of different deployments")
        start = min(self.window_start, other.window_start)
        end = max(self.window_end, other.window_end)
        self.window_start = start
        self.window_seconds = int((end - start).total_seconds())
        self.count += other.count
        for kind, n in other.errors_by_kind.items():
            self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + n
        self.ttft.merge(other.ttft)
        self.total.merge(other.total)

    @classmethod
    def rollup(cls, parts: Iterable[LatencyAggregate], window_start: datetime, window_seconds: int) -> LatencyAggregate:
        """Merge windows (e.g. 60 minutes) into one of ``window_seconds`` starting at ``window_start``."""
        items = list(parts)
        if not items:
            raise ValueError("nothing to roll up")
        result = cls(items[0].deployment_id, window_start, window_seconds, items[0].ttft.alpha)
        end = result.window_end
        for part in items:
            if part.window_start < result.window_start or part.window_end > end:
                raise ValueError(f"window {part.window_start.isoformat()} lies outside the rollup window")
            if part.deployment_id != result.deployment_id:
                raise ValueError("cannot roll up aggregates of different deployments")
            result.count += part.count
            for kind, n in part.errors_by_kind.items():
                result.errors_by_kind[kind] = result.errors_by_kind.get(kind, 0) + n
            result.ttft.merge(part.ttft)
            result.total.merge(part.total)
        return result

    def summary(self) -> LatencySummary:
        """The event payload for this window."""

        def pct(sketch: DDSketch) -> Percentiles:
            p50, p95, p99 = (sketch.quantile(q) for q in QUANTILES)
            return Percentiles(p50=p50, p95=p95, p99=p99)

        return LatencySummary(
            deployment_id=self.deployment_id,
            window_start=self.window_start,
            window_seconds=self.window_seconds,
            count=self.count,
            error_count=sum(self.errors_by_kind.values()),
            errors_by_kind=dict(sorted(self.errors_by_kind.items())),
            ttft_ms=pct(self.ttft),
            total_ms=pct(self.total),
            ttft_sketch=self.ttft.to_state(),
            total_sketch=self.total.to_state(),
        )

    @classmethod
    def from_summary(cls, summary: LatencySummary) -> LatencyAggregate:
        """Rebuild an aggregate from an emitted summary (to merge it further)."""
        result = cls(summary.deployment_id, summary.window_start, summary.window_seconds, summary.total_sketch.alpha)
        result.count = summary.count
        result.errors_by_kind = dict(summary.errors_by_kind)
        result.ttft = DDSketch.from_state(summary.ttft_sketch)
        result.total = DDSketch.from_state(summary.total_sketch)
        return result
