"""Deployment windows computed in the stream, published to ``llm.deployment-windows`` for the canary judge.

Windows are tumbling, ``window_seconds`` long (1 s by default), aligned to the epoch, by event time
(``occurred_at``). Each worker publishes **fragments**: one ``DeploymentWindow`` per (source partition, window,
model alias, deployment, prompt id and version) it has data for, with ``source_partition`` set; the judge sums the
fragments of a window, and a fragment published again (a late event, a replay) replaces the earlier copy.
Fragments are keyed by model alias on the topic, so both sides of a rollout land on one partition.

What counts where:

* a **completion** counts in the window of its ``occurred_at``, in the fragment of the completions partition it
  was read from: requests, errors (by kind), tokens, ttft/total quantiles, a latency sample and a log-bucket
  histogram (:func:`schemas.aggregates.latency_bucket`), safety findings on its text, priced cost (sum and sum of
  squares), the mean routing weight of the window's requests;
* a **feedback** event counts in the window of *its own* ``occurred_at`` (not its completion's), attributed to its
  completion's alias, deployment and prompt version, in the fragment of the feedback partition it was read from.
  Producers key both topics by request_id with the same partitioner, so feedback partition p holds the feedback
  of completions partition p and the same worker owns both; the completion's side is found in memory (recent
  completions of this worker), else in ClickHouse (one batched lookup), else the feedback waits (up to
  ``feedback_wait_s``) for its completion. Why the feedback's own window: windows close once and stay closed
  (no republication of old windows whenever a score arrives minutes later), the judge sees evidence when it
  arrives, and the question it asks of feedback -- which side earned this score -- does not depend on when the
  completion happened.

Events are added only after their batch is stored in ClickHouse; the state is deduplicated per fragment (request
ids, feedback event ids), so a replay or a rebuild never double counts. A window is published ``window_grace_s``
after its end by a timer (a quiet partition does not hold it back); events that arrive later make it dirty
again and it is republished, at most once per ``window_republish_s`` (a worker catching up on a backlog would
otherwise republish the same windows after every batch). Ended windows stay in memory ``window_retain_s`` for late
events; an event for an older window reloads that window from ClickHouse first. Nothing here is the only copy: on assignment, a
partition's windows are rebuilt from the raw tables (which carry source topic, partition and offset) from the
last point known to be published (``stream_window_progress``, written by :meth:`Windows.save_progress`) or
``window_recover_s`` ago, whichever is earlier, and republished.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.aggregates import MAX_LATENCY_SAMPLE, DeploymentWindow, Quantiles, latency_bucket
from schemas.codec import encode, make_event
from services.core.clickhouse.writer import ClickHouseWriter
from services.core.faust_runtime import OutMessage

log = logging.getLogger(__name__)
_NS = uuid.UUID("9b4d6c1e-2f0a-4e58-8d3c-7a1b5e9f0c22")
PROGRESS_COLUMNS = ["consumer_group", "src_topic", "src_partition", "published_through"]


@dataclass(frozen=True, slots=True)
class Side:
    """Who served a request: what a window is broken down by."""

    alias: str
    deployment: str
    prompt_id: str
    prompt_version: str


@dataclass(frozen=True, slots=True)
class CompletionFacts:
    """What a window needs of one completion (from the stream, or reloaded from ClickHouse)."""

    request_id: str
    tenant: str
    occurred_at: datetime
    side: Side
    total_ms: float
    ttft_ms: float | None
    error_kind: str
    prompt_tokens: int
    completion_tokens: int
    routing_weight: float | None
    cost: float | None
    """Priced cost; None when the model has no price."""
    findings: int
    """Safety findings on the completion text."""


@dataclass(frozen=True, slots=True)
class FeedbackFacts:
    event_id: str
    request_id: str
    tenant: str
    occurred_at: datetime
    score: float


def error_kind(finish_reason: str, error: str | None) -> str:
    """The error kind of a completion ('' when it succeeded), as every aggregate classifies it."""
    if error:
        return error
    return {"error": "internal", "deadline": "deadline_exceeded"}.get(finish_reason, "")


def _quantiles(values: list[float]) -> Quantiles:
    if not values:
        return Quantiles()
    ordered = sorted(values)

    def q(p: float) -> float:
        pos = (len(ordered) - 1) * p
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return Quantiles(p50=q(0.5), p95=q(0.95), p99=q(0.99))


def _sample_rank(request_id: str) -> bytes:
    return hashlib.blake2b(request_id.encode(), digest_size=8).digest()


@dataclass
class Fragment:
    """The running totals of one (partition, window, side); every add is deduplicated."""

    request_ids: set[str] = field(default_factory=set)
    feedback_ids: set[str] = field(default_factory=set)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    total: list[tuple[bytes, float]] = field(default_factory=list)
    histogram: dict[int, int] = field(default_factory=dict)
    findings: int = 0
    flagged: int = 0
    feedback_sum: float = 0.0
    feedback_sumsq: float = 0.0
    feedback_negative: int = 0
    cost_total: float = 0.0
    cost_sumsq: float = 0.0
    priced: int = 0
    weight_sum: float = 0.0
    weights: int = 0

    def add_completion(self, c: CompletionFacts) -> bool:
        key = f"{c.tenant}\x00{c.request_id}"
        if key in self.request_ids:
            return False
        self.request_ids.add(key)
        if c.error_kind:
            self.errors_by_kind[c.error_kind] = self.errors_by_kind.get(c.error_kind, 0) + 1
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        if c.ttft_ms is not None:
            self.ttft.append(c.ttft_ms)
        self.total.append((_sample_rank(key), c.total_ms))
        bucket = latency_bucket(c.total_ms)
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1
        self.findings += c.findings
        self.flagged += c.findings > 0
        if c.cost is not None:
            self.cost_total += c.cost
            self.cost_sumsq += c.cost * c.cost
            self.priced += 1
        if c.routing_weight is not None:
            self.weight_sum += c.routing_weight
            self.weights += 1
        return True

    def add_feedback(self, f: FeedbackFacts) -> bool:
        if f.event_id in self.feedback_ids:
            return False
        self.feedback_ids.add(f.event_id)
        self.feedback_sum += f.score
        self.feedback_sumsq += f.score * f.score
        self.feedback_negative += f.score < 0.5
        return True

    def window(self, side: Side, start: datetime, seconds: int, partition: int,
               drift_share: float | None) -> DeploymentWindow:
        sample = [ms for _, ms in sorted(self.total)[:MAX_LATENCY_SAMPLE]]
        return DeploymentWindow(
            deployment_id=side.deployment, model_alias=side.alias, window_start=start, window_seconds=seconds,
            requests=len(self.request_ids), errors=sum(self.errors_by_kind.values()),
            errors_by_kind=dict(sorted(self.errors_by_kind.items())), prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, ttft_ms=_quantiles(self.ttft),
            total_ms=_quantiles([ms for _, ms in self.total]), latency_sample_ms=sample,
            safety_findings=self.findings, safety_flagged_requests=self.flagged,
            feedback_count=len(self.feedback_ids), feedback_score_sum=self.feedback_sum,
            feedback_negative=self.feedback_negative, cost_total=self.cost_total, priced_requests=self.priced,
            drift_share=drift_share, source_partition=partition, prompt_version=side.prompt_version or None,
            prompt_id=side.prompt_id or None,
            routing_weight=(min(1.0, self.weight_sum / self.weights) if self.weights else None),
            latency_histogram=dict(sorted(self.histogram.items())), feedback_score_sumsq=self.feedback_sumsq,
            cost_sumsq=self.cost_sumsq,
        )


@dataclass
class _Partition:
    """The windows of one source partition held by this worker."""

    windows: dict[int, dict[Side, Fragment]] = field(default_factory=dict)
    version: dict[int, int] = field(default_factory=dict)
    """Changes per window; a window is dirty while its version is above the published one."""
    published: dict[int, int] = field(default_factory=dict)
    published_at: dict[int, float] = field(default_factory=dict)
    """When (monotonic) each window was last published: a republication waits ``republish_s`` after it."""
    known_from: int = 0
    """Windows before this index are not in memory (reload them from ClickHouse before adding to them)."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def fragment(self, index: int, side: Side) -> Fragment:
        sides = self.windows.setdefault(index, {})
        frag = sides.get(side)
        if frag is None:
            frag = sides[side] = Fragment()
        return frag

    def touch(self, index: int) -> None:
        self.version[index] = self.version.get(index, 0) + 1

    def dirty(self) -> list[int]:
        return sorted(i for i, v in self.version.items() if v > self.published.get(i, 0))


@dataclass(frozen=True, slots=True)
class _Parked:
    partition: int
    feedback: FeedbackFacts
    since: float


class Windows:
    """This worker's window state, its publication and its recovery."""

    def __init__(
        self,
        writer: ClickHouseWriter,
        *,
        group: str,
        completions_topic: str,
        feedback_topic: str,
        windows_topic: str,
        seconds: int,
        grace_s: float,
        republish_s: float,
        retain_s: float,
        recover_s: float,
        recover_max_s: float,
        index_size: int,
        feedback_wait_s: float,
        drift_share: Callable[[str], float | None] = lambda _: None,
        source: str = "streams.windows",
    ) -> None:
        self.writer = writer
        self.group = group
        self.completions_topic = completions_topic
        self.feedback_topic = feedback_topic
        self.topic = windows_topic
        self.seconds = seconds
        self.grace_s = grace_s
        self.republish_s = republish_s
        self.retain_s = retain_s
        self.recover_s = recover_s
        self.recover_max_s = recover_max_s
        self.index_size = index_size
        self.feedback_wait_s = feedback_wait_s
        self.drift_share = drift_share
        self.source = source
        self._partitions: dict[int, _Partition] = {}
        self._sides: OrderedDict[tuple[str, str], Side] = OrderedDict()
        """(tenant, request_id) -> side of recent completions, to attribute feedback."""
        self._parked: dict[tuple[str, str], list[_Parked]] = {}
        self._rebuilds: dict[int, asyncio.Task[None]] = {}
        self.published = 0

    # -- time ---------------------------------------------------------------------------------------------------
    def index(self, at: datetime) -> int:
        return math.floor(at.timestamp() / self.seconds)

    def start(self, index: int) -> datetime:
        return datetime.fromtimestamp(index * self.seconds, UTC)

    # -- assignment -----------------------------------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions of the completions (and co-partitioned feedback) topic now owned: rebuild them in the background."""
        for p in partitions:
            if p in self._partitions:
                continue
            self._partitions[p] = _Partition()
            self._rebuilds[p] = asyncio.create_task(self._rebuild(p), name=f"windows-rebuild-{p}")

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions no longer owned: forget them (their new owner rebuilds them)."""
        for p in partitions:
            task = self._rebuilds.pop(p, None)
            if task is not None:
                task.cancel()
            self._partitions.pop(p, None)

    @property
    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    async def wait_ready(self, partitions: Iterable[int]) -> None:
        """Wait until these partitions were rebuilt (a partition seen for the first time is assigned now)."""
        todo = set(partitions)
        self.assign(todo - set(self._partitions))
        for p in todo:
            part = self._partitions.get(p)
            if part is not None:
                await part.ready.wait()

    async def _rebuild(self, p: int) -> None:
        delay = 0.2
        while True:
            try:
                rows = await self.writer.query(
                    "SELECT published_through FROM stream_window_progress FINAL WHERE consumer_group = {g:String} "
                    "AND src_topic = {t:String} AND src_partition = {p:UInt32}",
                    {"g": self.group, "t": self.completions_topic, "p": p})
                now = time.time()
                lo_s = now - self.recover_s
                if rows:
                    lo_s = min(lo_s, rows[0][0].replace(tzinfo=UTC).timestamp())
                lo_s = max(lo_s, now - self.recover_max_s)
                lo = math.floor(lo_s / self.seconds)
                await self._load(p, lo, None)
                part = self._partitions.get(p)
                if part is None:
                    return
                part.known_from = lo
                part.ready.set()
                log.info("windows: partition %d rebuilt from %s (%d window(s) to republish)", p,
                         self.start(lo).isoformat(), len(part.dirty()))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried: the partition stays not ready meanwhile
                log.warning("windows: rebuilding partition %d failed (%s); retrying in %.1fs", p, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- adding events ----------------------------------------------------------------------------------------------
    async def add_completions(self, items: list[tuple[int, CompletionFacts]]) -> None:
        """Count stored completions (partition, facts); reloads evicted windows first."""
        await self.wait_ready({p for p, _ in items})
        await self._reload_evicted((p, self.index(c.occurred_at)) for p, c in items)
        for p, c in items:
            self._remember(c)
            self._add_completion(p, c)
            for parked in self._parked.pop((c.tenant, c.request_id), []):
                self._add_feedback(parked.partition, parked.feedback, c.side)

    async def add_feedback(self, items: list[tuple[int, FeedbackFacts]]) -> None:
        """Count stored feedback (partition, facts) for its completion's side; feedback whose completion this worker
        has not seen waits (its completion usually follows on the co-partitioned topic; else ClickHouse is asked
        by :meth:`retry_parked`)."""
        await self.wait_ready({p for p, _ in items})
        await self._reload_evicted((p, self.index(f.occurred_at)) for p, f in items)
        now = time.monotonic()
        for p, f in items:
            side = self._sides.get((f.tenant, f.request_id))
            if side is None:
                self._parked.setdefault((f.tenant, f.request_id), []).append(_Parked(p, f, now))
            else:
                self._add_feedback(p, f, side)

    async def retry_parked(self, older_than_s: float = 2.0) -> int:
        """Look up in ClickHouse the completions of feedback parked longer than ``older_than_s``; drop what waited
        longer than ``feedback_wait_s``."""
        if not self._parked:
            return 0
        now = time.monotonic()
        for key in [k for k, v in self._parked.items() if now - v[0].since > self.feedback_wait_s]:
            log.info("windows: feedback for %s found no completion within %.0fs; not counted in windows", key,
                     self.feedback_wait_s)
            del self._parked[key]
        keys = sorted(k for k, v in self._parked.items() if now - v[0].since >= older_than_s)
        resolved = 0
        for lo in range(0, len(keys), 2000):
            found = await self._lookup_sides(set(keys[lo:lo + 2000]))
            for key, side in found.items():
                self._remember_side(key, side)
                parked = self._parked.pop(key, [])
                await self._reload_evicted((x.partition, self.index(x.feedback.occurred_at)) for x in parked)
                for x in parked:
                    resolved += self._add_feedback(x.partition, x.feedback, side)
        return resolved

    @property
    def parked(self) -> int:
        return sum(len(v) for v in self._parked.values())

    def _remember(self, c: CompletionFacts) -> None:
        self._remember_side((c.tenant, c.request_id), c.side)

    def _remember_side(self, key: tuple[str, str], side: Side) -> None:
        self._sides[key] = side
        self._sides.move_to_end(key)
        while len(self._sides) > self.index_size:
            self._sides.popitem(last=False)

    def _add_completion(self, p: int, c: CompletionFacts) -> bool:
        part = self._partitions.get(p)
        if part is None:
            return False
        i = self.index(c.occurred_at)
        if part.fragment(i, c.side).add_completion(c):
            part.touch(i)
            return True
        return False

    def _add_feedback(self, p: int, f: FeedbackFacts, side: Side) -> bool:
        part = self._partitions.get(p)
        if part is None:
            return False
        i = self.index(f.occurred_at)
        if part.fragment(i, side).add_feedback(f):
            part.touch(i)
            return True
        return False

    async def _reload_evicted(self, positions: Iterable[tuple[int, int]]) -> None:
        todo: dict[int, set[int]] = {}
        for p, i in positions:
            part = self._partitions.get(p)
            if part is not None and i < part.known_from and i not in part.windows:
                todo.setdefault(p, set()).add(i)
        for p, indexes in todo.items():
            log.info("windows: late event(s) for %d window(s) of partition %d no longer in memory; reloading",
                     len(indexes), p)
            await self._load(p, min(indexes), max(indexes) + 1, only=indexes)

    # -- ClickHouse ------------------------------------------------------------------------------------------------
    async def _lookup_sides(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Side]:
        if not keys:
            return {}
        rows = await self.writer.query(
            "SELECT tenant_id, request_id, any(model_alias), any(deployment_id), any(prompt_id), any(prompt_version) "
            "FROM raw_completions WHERE tenant_id IN {t:Array(String)} AND request_id IN {r:Array(String)} "
            "GROUP BY tenant_id, request_id", {"t": sorted({t for t, _ in keys}), "r": sorted({r for _, r in keys})})
        return {(t, r): Side(a, d, pid, pv) for t, r, a, d, pid, pv in rows if (t, r) in keys}

    async def _load(self, p: int, lo: int, hi: int | None, only: set[int] | None = None) -> None:
        """Load windows [lo, hi) of partition p (only those in ``only``, if given) from the raw tables."""
        start = self.start(lo)
        end = self.start(hi) if hi is not None else datetime.now(UTC) + timedelta(days=1)
        params: dict[str, Any] = {"t": self.completions_topic, "ft": self.feedback_topic, "p": p, "lo": start,
                                  "hi": end}
        in_range = "occurred_at >= {lo:DateTime64(3, 'UTC')} AND occurred_at < {hi:DateTime64(3, 'UTC')}"
        mine = f"src_topic = {{t:String}} AND src_partition = {{p:UInt32}} AND {in_range}"
        completions = await self.writer.query(
            "SELECT request_id, tenant_id, occurred_at, model_alias, deployment_id, prompt_id, prompt_version, total_ms, "
            "ttft_ms, finish_reason, toString(error_kind), prompt_tokens, completion_tokens, routing_weight "
            f"FROM raw_completions FINAL WHERE {mine}", params)
        costs = {(t, r): (float(c) if priced and c is not None else None) for t, r, priced, c in await self.writer.query(
            f"SELECT tenant_id, request_id, priced, cost FROM cost_completions FINAL WHERE {mine}", params)}
        findings = {(t, r): int(n) for t, r, n in await self.writer.query(
            f"SELECT tenant_id, request_id, count() FROM safety_findings FINAL WHERE scanned = 'completion' "
            f"AND {in_range} AND request_id IN (SELECT request_id FROM raw_completions WHERE {mine}) "
            "GROUP BY tenant_id, request_id", params)}
        feedback = await self.writer.query(
            "SELECT toString(f.event_id), f.request_id, f.tenant_id, f.occurred_at, f.score, c.found, c.alias, c.dep, c.pid, "
            "c.pv "
            "FROM (SELECT event_id, request_id, tenant_id, occurred_at, score FROM raw_feedback FINAL "
            f"WHERE src_topic = {{ft:String}} AND src_partition = {{p:UInt32}} AND {in_range}) AS f "
            "LEFT JOIN (SELECT tenant_id, request_id, 1 AS found, any(model_alias) AS alias, any(deployment_id) AS dep, "
            "any(prompt_id) AS pid, any(prompt_version) AS pv FROM raw_completions "
            "WHERE request_id IN (SELECT request_id FROM raw_feedback "
            f"WHERE src_topic = {{ft:String}} AND src_partition = {{p:UInt32}} AND {in_range}) "
            "GROUP BY tenant_id, request_id) AS c ON f.tenant_id = c.tenant_id AND f.request_id = c.request_id", params)

        part = self._partitions.get(p)
        if part is None:
            return
        # Merged into what is in memory (every add is deduplicated), so an event a concurrent batch added meanwhile
        # is kept whether or not the query saw it.
        wanted: Callable[[int], bool] = (lambda i: i in only) if only is not None else (lambda i: i >= lo)
        now = time.monotonic()
        for (rid, tenant, at, alias, dep, pid, pv, total, ttft, finish, err, pt, ct, weight) in completions:
            at = _utc(at)
            if not wanted(self.index(at)):
                continue
            c = CompletionFacts(
                request_id=rid, tenant=tenant, occurred_at=at, side=Side(alias, dep, pid, pv), total_ms=float(total),
                ttft_ms=None if ttft is None else float(ttft), error_kind=error_kind(finish, err),
                prompt_tokens=int(pt), completion_tokens=int(ct),
                routing_weight=None if weight is None else float(weight), cost=costs.get((tenant, rid)),
                findings=findings.get((tenant, rid), 0),
            )
            self._remember(c)
            self._add_completion(p, c)
        for event_id, rid, tenant, at, score, found, alias, dep, pid, pv in feedback:
            at = _utc(at)
            if not wanted(self.index(at)):
                continue
            f = FeedbackFacts(event_id=event_id, request_id=rid, tenant=tenant, occurred_at=at, score=float(score))
            if found:
                self._add_feedback(p, f, Side(alias, dep, pid, pv))
            else:
                self._parked.setdefault((tenant, rid), []).append(_Parked(p, f, now))
        for i in part.windows:
            if wanted(i) and (hi is None or i < hi):
                part.touch(i)  # rebuilt: republish (identical content carries the same event id)

    # -- publication --------------------------------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[tuple[int, int, int, list[DeploymentWindow]]]:
        """(partition, window index, version, fragments) of every dirty window that ended ``grace_s`` ago."""
        now = time.time() if now is None else now
        mono = time.monotonic()
        last = math.floor((now - self.grace_s) / self.seconds) - 1  # the newest window that ended grace_s ago
        out = []
        for p, part in self._partitions.items():
            if not part.ready.is_set():
                continue
            for i in part.dirty():
                if i > last:
                    break
                if mono - part.published_at.get(i, -math.inf) < self.republish_s:
                    continue  # published a moment ago: late events go out together with the next copy
                start = self.start(i)
                fragments = [frag.window(side, start, self.seconds, p, self.drift_share(side.deployment))
                             for side, frag in sorted(part.windows.get(i, {}).items(), key=lambda kv: _side_key(kv[0]))]
                out.append((p, i, part.version[i], fragments))
        return out

    def messages(self, fragments: list[DeploymentWindow]) -> list[OutMessage]:
        out = []
        for w in fragments:
            digest = hashlib.sha256(w.model_dump_json().encode()).hexdigest()
            value, headers = encode(make_event(w, source=self.source, tenant_id="platform",
                                               event_id=uuid.uuid5(_NS, digest)))
            out.append(OutMessage(self.topic, (w.model_alias or w.deployment_id).encode(), value, headers))
        return out

    def mark_published(self, p: int, index: int, version: int) -> None:
        part = self._partitions.get(p)
        if part is not None:
            part.published[index] = max(part.published.get(index, 0), version)
            part.published_at[index] = time.monotonic()
            self.published += 1

    def evict(self, now: float | None = None) -> None:
        """Forget published windows that ended more than ``retain_s`` ago."""
        now = time.time() if now is None else now
        oldest = math.floor((now - self.retain_s) / self.seconds) - 1
        for part in self._partitions.values():
            dirty = set(part.dirty())
            for i in [i for i in part.windows if i < oldest and i not in dirty]:
                del part.windows[i]
                part.version.pop(i, None)
                part.published.pop(i, None)
                part.published_at.pop(i, None)
                part.known_from = max(part.known_from, i + 1)

    def progress_rows(self, now: float | None = None) -> list[list[Any]]:
        """Per ready partition: the end of the windows known to be published (rows for ``stream_window_progress``)."""
        now = time.time() if now is None else now
        rows = []
        for p, part in self._partitions.items():
            if not part.ready.is_set():
                continue
            dirty = part.dirty()
            through = dirty[0] if dirty else math.floor((now - self.grace_s) / self.seconds)  # every ended one is out
            rows.append([self.group, self.completions_topic, p, self.start(through)])
        return rows

    async def save_progress(self) -> None:
        rows = self.progress_rows()
        if rows:
            await self.writer.insert("stream_window_progress", rows, PROGRESS_COLUMNS)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _side_key(side: Side) -> tuple[str, str, str, str]:
    return side.alias, side.deployment, side.prompt_id, side.prompt_version
