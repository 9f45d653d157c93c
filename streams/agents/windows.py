"""Window agent: one ``DeploymentWindow`` per deployment per window on ``llm.deployment-windows``, for the judge.

Windows are ``window_seconds`` long, aligned to the epoch (``toStartOfInterval``). A window becomes
pending when a stored batch has a completion in it (after the batch is in ClickHouse); it is published
once it ended ``window_grace_s`` ago, computed from the raw tables (FINAL, so replays never double count):
requests, errors by kind, tokens and ttft/total percentiles from ``raw_completions``; a deterministic
sample of up to 1000 total_ms values (``groupArraySample`` with a fixed seed, so a replay yields the same
sample); findings on completion text from ``safety_findings``; priced cost from ``cost_completions``;
feedback received so far for the window's completions (joined by tenant and request_id); the latest drift
share checked before the window's end. A late completion makes its window pending again and it is
republished: the judge replaces a repeated (deployment, start). The event id is derived from the content,
so an identical republication (replay) carries the same id. On start, windows of completions ingested in
the last ``window_recover_s`` seconds are pending again (crash recovery).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.aggregates import MAX_LATENCY_SAMPLE, DeploymentWindow, Quantiles
from schemas.codec import encode, make_event
from streams.sink.clickhouse import ClickHouseWriter

_NS = uuid.UUID("9b4d6c1e-2f0a-4e58-8d3c-7a1b5e9f0c22")
SAMPLE_SEED = 20_261_124
_RANGE = "occurred_at >= {lo:DateTime64(3, 'UTC')} AND occurred_at < {hi:DateTime64(3, 'UTC')}"
_WS = "toDateTime(toStartOfInterval(toDateTime(occurred_at, 'UTC'), toIntervalSecond({w:UInt32})), 'UTC')"


def window_start(at: datetime, seconds: int) -> datetime:
    """The start of ``at``'s window (epoch-aligned, UTC)."""
    epoch = int(at.astimezone(UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _quantiles(values: Any) -> Quantiles:
    vals = list(values or [])
    if len(vals) != 3 or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        return Quantiles()
    return Quantiles(p50=float(vals[0]), p95=float(vals[1]), p99=float(vals[2]))


async def compute_windows(writer: ClickHouseWriter, starts: Iterable[datetime], seconds: int) -> list[DeploymentWindow]:
    """The windows (one per deployment with completions) starting at ``starts``."""
    starts = sorted({window_start(s, seconds) for s in starts})
    if not starts:
        return []
    params: dict[str, Any] = {"lo": starts[0], "hi": starts[-1] + timedelta(seconds=seconds), "w": seconds,
                              "starts": starts}
    where = f"{_RANGE} AND {_WS} IN {{starts:Array(DateTime('UTC'))}}"
    main = await writer.query(
        f"SELECT ws, deployment_id, any(model_alias), count(), countIf(kind != ''), "
        f"sumMapIf(map(kind, toUInt64(1)), kind != ''), sum(prompt_tokens), sum(completion_tokens), "
        f"quantiles(0.5, 0.95, 0.99)(ttft_ms), quantiles(0.5, 0.95, 0.99)(total_ms), "
        f"groupArraySample({MAX_LATENCY_SAMPLE}, {SAMPLE_SEED})(total_ms) "
        f"FROM (SELECT {_WS} AS ws, deployment_id, model_alias, prompt_tokens, completion_tokens, ttft_ms, total_ms, "
        f"multiIf(error_kind != '', toString(error_kind), finish_reason = 'error', 'internal', "
        f"finish_reason = 'deadline', 'deadline_exceeded', '') AS kind FROM raw_completions FINAL WHERE {where}) "
        f"GROUP BY ws, deployment_id ORDER BY ws, deployment_id", params)
    cost = {(r[0], r[1]): r[2:] for r in await writer.query(
        f"SELECT {_WS} AS ws, deployment_id, sum(ifNull(cost, toDecimal128(0, 12))), countIf(priced = 1) "
        f"FROM cost_completions FINAL WHERE {where} GROUP BY ws, deployment_id", params)}
    safety = {(r[0], r[1]): r[2:] for r in await writer.query(
        f"SELECT {_WS} AS ws, deployment_id, count(), uniqExact(request_id) FROM safety_findings FINAL "
        f"WHERE {where} AND scanned = 'completion' GROUP BY ws, deployment_id", params)}
    feedback = {(r[0], r[1]): r[2:] for r in await writer.query(
        "SELECT c.ws, c.deployment_id, count(), sum(f.score), countIf(f.score < 0.5) "
        f"FROM (SELECT tenant_id, request_id, deployment_id, {_WS} AS ws FROM raw_completions FINAL WHERE {where}) AS c "
        "INNER JOIN (SELECT tenant_id, request_id, score FROM raw_feedback FINAL WHERE request_id IN "
        f"(SELECT request_id FROM raw_completions WHERE {where})) AS f "
        "ON f.tenant_id = c.tenant_id AND f.request_id = c.request_id GROUP BY c.ws, c.deployment_id", params)}
    drift = await writer.query(
        "SELECT deployment_id, checked_at, drift_share FROM drift_checks "
        "WHERE checked_at < {hi:DateTime64(3, 'UTC')} ORDER BY deployment_id, checked_at", params)

    out = []
    for ws, dep, alias, requests, errors, by_kind, pt, ct, ttft, total, sample in main:
        ws = ws.replace(tzinfo=UTC) if ws.tzinfo is None else ws.astimezone(UTC)
        end = ws + timedelta(seconds=seconds)
        cost_total, priced = cost.get((ws, dep), cost.get((ws.replace(tzinfo=None), dep), (0, 0)))
        findings, flagged = safety.get((ws, dep), safety.get((ws.replace(tzinfo=None), dep), (0, 0)))
        fb = feedback.get((ws, dep), feedback.get((ws.replace(tzinfo=None), dep), (0, 0.0, 0)))
        shares = [float(s) for d, at, s in drift if d == dep and (at if at.tzinfo else at.replace(tzinfo=UTC)) < end]
        out.append(DeploymentWindow(
            deployment_id=dep, model_alias=alias or "", window_start=ws, window_seconds=seconds,
            requests=int(requests), errors=int(errors), errors_by_kind={str(k): int(v) for k, v in by_kind.items()},
            prompt_tokens=int(pt), completion_tokens=int(ct), ttft_ms=_quantiles(ttft), total_ms=_quantiles(total),
            latency_sample_ms=[float(v) for v in sample][:MAX_LATENCY_SAMPLE],
            safety_findings=int(findings), safety_flagged_requests=int(flagged),
            feedback_count=int(fb[0]), feedback_score_sum=float(fb[1] or 0.0), feedback_negative=int(fb[2]),
            cost_total=float(cost_total or 0), priced_requests=int(priced),
            drift_share=shares[-1] if shares else None,
        ))
    return out


class WindowAgent:
    """Pending windows and their publication."""

    def __init__(self, writer: ClickHouseWriter, producer: AIOKafkaProducer, topic: str, seconds: int,
                 grace_s: float, source: str = "streams.windows") -> None:
        self.writer = writer
        self.producer = producer
        self.topic = topic
        self.seconds = seconds
        self.grace_s = grace_s
        self.source = source
        self._pending: set[datetime] = set()
        self.published = 0

    def touch(self, times: Iterable[datetime]) -> None:
        """Mark the windows of these completion times pending (call after their batch is stored)."""
        self._pending.update(window_start(t, self.seconds) for t in times)

    async def recover(self, seconds: float) -> int:
        """Mark pending the windows of completions ingested in the last ``seconds``."""
        if seconds <= 0:
            return 0
        rows = await self.writer.query(
            "SELECT DISTINCT occurred_at FROM raw_completions WHERE ingested_at >= now64(3) - toIntervalSecond({s:UInt64})",
            {"s": int(seconds)})
        before = len(self._pending)
        self.touch(r[0].replace(tzinfo=UTC) if r[0].tzinfo is None else r[0] for r in rows)
        return len(self._pending) - before

    async def publish_due(self, now: datetime | None = None) -> list[DeploymentWindow]:
        """Compute and publish every pending window that ended at least ``grace_s`` ago."""
        now = now or datetime.now(UTC)
        due = sorted(s for s in self._pending
                     if s + timedelta(seconds=self.seconds + self.grace_s) <= now)
        if not due:
            return []
        windows = await compute_windows(self.writer, due, self.seconds)
        futures = []
        for w in windows:
            digest = hashlib.sha256(w.model_dump_json().encode()).hexdigest()
            value, headers = encode(make_event(w, source=self.source, tenant_id="platform",
                                               event_id=uuid.uuid5(_NS, digest)))
            futures.append(await self.producer.send(self.topic, value, key=w.deployment_id.encode(), headers=headers))
        for fut in futures:
            await fut
        self._pending.difference_update(due)
        self.published += len(windows)
        return windows
