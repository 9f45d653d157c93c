"""The canary judge: ``llm.deployment-windows`` in, one decision per analysis interval out to ``llm.rollouts``.

Why a plain aiokafka service and not a Faust agent: the judge's state (the step and failure count of each
rollout) must survive restarts exactly, and on the local broker Faust's changelog recovery can stop early
(see the local-broker notes). Here the state is rebuilt from the compacted topics themselves, like the
router does: at start the judge reads ``llm.rollout-specs`` and ``llm.rollouts`` from the beginning (no
consumer group) and replays the events with the decision rules (:func:`services.rollout.decision.apply`);
then it consumes windows in the group ``llmops.judge`` with manual commits (at-least-once). A window is
matched to a rollout by its ``deployment_id`` (the rollout's stable or canary).

Intervals are driven by event time, never the wall clock, so a replay decides the same way: interval k of a
rollout covers window starts in [started_at + k*I, started_at + (k+1)*I), ``started_at`` coming from the spec
record. Interval k closes when both deployments' watermarks (the latest window end seen) reach its end, or,
once the judge has read every windows partition to its high-water mark, when one side is ``lateness`` past
it while the other is silent (a canary with no traffic publishes no windows; it must still hold). The
caught-up condition keeps a side whose windows sit on a partition not read yet from being taken as silent.
A decision's envelope ``occurred_at`` is its interval's end, so a restarted judge knows the last decided
interval from the latest event on ``llm.rollouts``. The count of consecutive failed intervals is rebuilt by
replaying the holds on the topic; were compaction to remove earlier holds of the running rollout, the count
would restart from those left (at least 1 when the latest event is a failed hold), delaying a rollback by at
most ``failure_threshold - 1`` intervals.

Offsets of windows that belong to a still-open interval are not committed: a restart re-reads them. A window
of an interval already decided is skipped; a window repeated (same deployment and start) replaces the
earlier copy. Each decision is written to ClickHouse (idempotent key) and alerted (stable alert id) before the
rollout event, the commit point, is published. Run one judge at a time: it must see both sides' windows.
An interval with no window from either side is skipped without a decision. A bad window (undecodable,
invalid, or starting more than an hour ahead of the clock) is dead-lettered and skipped; a failing ClickHouse or Kafka write
stops the judge (nothing is committed past the open intervals, so a restart decides the same way).

Windows read before the judge has seen the 'start' of their rollout are not judged. Both topics are read
in one loop, rollout events first, and the stream agents publish a window only after it ends, so the start
is in practice always seen first.

A foreign 'abort' (from ``llmops rollout abort``) ends the rollout; if a decision of this judge lands after it
on the topic, the judge publishes the abort again, so the latest event per alias stays the abort.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from clickhouse_connect.driver.client import Client

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.codec import DecodeError, decode, encode, make_event
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from services.clickhouse.client import connect
from services.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.rollout.decision import Decision, Progress, abort_event, apply, decide
from services.rollout.gates import SideStats
from services.rollout.store import decision_row, insert_rows
from services.kafka.from_beginning import assign_from_beginning, caught_up
from services.rollout.topics import RolloutTopics, ensure_rollout_topics
from services.settings import Settings

log = logging.getLogger(__name__)
SOURCE = "llmops.judge"
GROUP_ID = "llmops.judge"
JUDGE_ACTIONS = {"step_up", "hold", "promote", "rollback"}
MAX_WAITING = 10_000
"""Windows kept per rollout while its spec record has not been read yet."""
MAX_AHEAD = timedelta(hours=1)
"""A window starting further ahead of the wall clock than this is dead-lettered (the only wall-clock check)."""

Pending = tuple[DeploymentWindow, TopicPartition, int]


@dataclass
class Run:
    """One alias's current rollout as the judge sees it."""

    event: RolloutEvent
    progress: Progress
    record: RolloutSpecRecord | None = None
    last_decided: int = -1
    decided_until: datetime | None = None
    """End of the latest interval decided on the topic (a judge event's occurred_at), read back at start."""
    watermark: dict[str, datetime] = field(default_factory=dict)
    intervals: dict[int, dict[str, dict[datetime, Pending]]] = field(default_factory=dict)
    waiting: list[Pending] = field(default_factory=list)
    """Windows seen before the spec record arrived."""
    canary_drift: float | None = None

    @property
    def active(self) -> bool:
        return self.progress.status == "active"

    def deployments(self) -> set[str]:
        return {d for d in (self.event.stable_deployment, self.event.canary_deployment) if d}

    def interval_bounds(self, k: int) -> tuple[datetime, datetime]:
        assert self.record is not None
        step = timedelta(seconds=self.record.spec.analysis_interval_seconds)
        return self.record.started_at + k * step, self.record.started_at + (k + 1) * step

    def interval_of(self, when: datetime) -> int:
        assert self.record is not None
        return math.floor((when - self.record.started_at).total_seconds() / self.record.spec.analysis_interval_seconds)

    def pending_offsets(self) -> list[tuple[TopicPartition, int]]:
        out = [(tp, off) for sides in self.intervals.values() for wins in sides.values() for _, tp, off in wins.values()]
        return out + [(tp, off) for _, tp, off in self.waiting]


class Judge:
    """Decide every running rollout. ``run()`` until ``stop()``; ``ready`` is set once the state is rebuilt."""

    def __init__(
        self, settings: Settings, *, topics: RolloutTopics | None = None, group_id: str = GROUP_ID, poll_ms: int = 200,
    ) -> None:
        self.settings = settings
        self.topics = topics or RolloutTopics()
        self.group_id = group_id
        self.poll_ms = poll_ms
        self.ready = asyncio.Event()
        self.runs: dict[str, Run] = {}
        self.records: dict[str, RolloutSpecRecord] = {}
        self.published: deque[RolloutEvent] = deque(maxlen=1000)
        """This judge's latest decisions (for inspection)."""
        self._own: set[uuid.UUID] = set()
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._ch: Client | None = None

    def stop(self) -> None:
        self._stopping.set()

    def _client(self) -> Client:
        assert self._ch is not None, "ClickHouse client is created in run()"
        return self._ch

    async def run(self) -> None:
        await ensure_rollout_topics(self.settings, self.topics)
        self._ch = await asyncio.to_thread(connect, self.settings)
        self._producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings))
        await self._producer.start()
        follower = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None))
        await follower.start()
        windows: AIOKafkaConsumer | None = None
        try:
            tps = await assign_from_beginning(follower, [self.topics.specs, self.topics.rollouts])
            while not await caught_up(follower, tps):
                await self._follow(follower, timeout_ms=self.poll_ms)
                if self._stopping.is_set():
                    return
            windows = AIOKafkaConsumer(self.topics.windows, **aiokafka_consumer_kwargs(self.settings, self.group_id))
            await windows.start()
            self.ready.set()
            log.info("judge ready: %d rollout(s) known, %d active", len(self.runs), sum(r.active for r in self.runs.values()))
            while not self._stopping.is_set():
                batches = await windows.getmany(timeout_ms=self.poll_ms, max_records=500)
                await self._follow(follower, timeout_ms=0)  # rollout events first: a start may have come meanwhile
                for tp, records in batches.items():
                    for rec in records:
                        await self._on_window_record(tp, rec)
                if await caught_up(windows, sorted(windows.assignment())):
                    for run in list(self.runs.values()):
                        await self._close_intervals(run, allow_late=True)
                if batches:
                    await windows.commit(self._commit_positions(batches))
        finally:
            if windows is not None:
                await windows.stop()
            await follower.stop()
            await self._producer.stop()
            if self._ch is not None:
                self._ch.close()

    # --- rollout state from the compacted topics ---------------------------------------------------------

    async def _follow(self, follower: AIOKafkaConsumer, timeout_ms: int) -> None:
        batches = await follower.getmany(timeout_ms=timeout_ms)
        for tp in sorted(batches, key=lambda t: t.topic != self.topics.specs):  # specs first within one poll
            for rec in batches[tp]:
                if tp.topic == self.topics.specs:
                    try:
                        record = decode(rec.value, rec.headers, expect=RolloutSpecRecord).payload
                    except DecodeError as exc:
                        log.warning("skipping bad rollout spec at offset %s: %s", rec.offset, exc)
                        continue
                    self.records[record.rollout_id] = record
                    run = self.runs.get(record.spec.alias)
                    if run is not None and run.event.rollout_id == record.rollout_id and run.record is None:
                        await self._attach(run, record)
                    continue
                try:
                    env: Envelope[RolloutEvent] = decode(rec.value, rec.headers, expect=RolloutEvent)
                except DecodeError as exc:
                    log.warning("skipping bad rollout event at offset %s: %s", rec.offset, exc)
                    continue
                await self._on_rollout_event(env)

    async def _on_rollout_event(self, env: Envelope[RolloutEvent]) -> None:
        event = env.payload
        run = self.runs.get(event.alias)
        if env.event_id in self._own:
            self._own.discard(env.event_id)
            if run is not None and run.progress.status == "aborted" and event.action != "abort" \
                    and run.event.rollout_id == event.rollout_id:
                log.info("decision for %s landed after its abort; publishing the abort again", event.alias)
                await self._publish(abort_event(run.event, run.event.reason or "aborted"), run, None)
            return
        if event.action == "start" or run is None or run.event.rollout_id != event.rollout_id:
            progress = apply(None, event)
            assert progress is not None
            run = Run(event=event, progress=progress, record=None)
            self.runs[event.alias] = run
            record = self.records.get(event.rollout_id)
            if record is not None:
                await self._attach(run, record)
        else:
            run.progress = apply(run.progress, event) or run.progress
            run.event = event
        if event.action in JUDGE_ACTIONS:
            run.decided_until = max(filter(None, (run.decided_until, env.occurred_at)))
            if run.record is not None:
                run.last_decided = max(run.last_decided, run.interval_of(run.decided_until) - 1)
        if event.action in ("start", "abort"):
            when = env.occurred_at
            row = decision_row(event, -1, when, when, run.progress.consecutive_failures, 0, 0)
            await asyncio.to_thread(insert_rows, self._client(), [row])
        if not run.active:
            run.intervals.clear()
            run.waiting.clear()

    async def _attach(self, run: Run, record: RolloutSpecRecord) -> None:
        run.record = record
        if run.decided_until is not None:
            run.last_decided = max(run.last_decided, run.interval_of(run.decided_until) - 1)
        waiting, run.waiting = run.waiting, []
        for window, tp, offset in waiting:
            await self._on_window(run, window, tp, offset)

    # --- windows --------------------------------------------------------------------------------------------

    async def _on_window_record(self, tp: TopicPartition, rec: ConsumerRecord) -> None:
        try:
            window: DeploymentWindow = decode(rec.value, rec.headers, expect=DeploymentWindow).payload
        except DecodeError as exc:
            log.warning("dead-lettering bad window at %s/%s/%s: %s", tp.topic, tp.partition, rec.offset, exc)
            letter = DeadLetter.from_bytes(topic=tp.topic, partition=tp.partition, offset=rec.offset,
                                           error_kind=exc.kind.value, error=exc.message, value=rec.value, key=rec.key,
                                           consumer=self.group_id)
            await self._send(self.topics.deadletter, letter, f"{tp.topic}/{tp.partition}/{rec.offset}")
            return
        if window.window_start > datetime.now(UTC) + MAX_AHEAD:
            # Event time drives the intervals: a window from the future would close every interval up to it.
            letter = DeadLetter.from_bytes(topic=tp.topic, partition=tp.partition, offset=rec.offset,
                                           error_kind="from_future",
                                           error=f"window_start {window.window_start.isoformat()} is more than "
                                                 f"{MAX_AHEAD} ahead of the judge's clock", value=rec.value, key=rec.key,
                                           consumer=self.group_id)
            await self._send(self.topics.deadletter, letter, f"{tp.topic}/{tp.partition}/{rec.offset}")
            return
        for run in list(self.runs.values()):
            if run.active and window.deployment_id in run.deployments():
                await self._on_window(run, window, tp, rec.offset)

    async def _on_window(self, run: Run, window: DeploymentWindow, tp: TopicPartition, offset: int) -> None:
        if run.record is None:
            if len(run.waiting) >= MAX_WAITING:
                dropped = run.waiting.pop(0)
                log.warning("no spec for rollout %s yet: dropping its oldest waiting window (%s of %s)",
                            run.event.rollout_id, dropped[0].window_start, dropped[0].deployment_id)
            run.waiting.append((window, tp, offset))
            return
        k = run.interval_of(window.window_start)
        if k < 0 or k <= run.last_decided:
            return
        side = window.deployment_id
        run.intervals.setdefault(k, {}).setdefault(side, {})[window.window_start] = (window, tp, offset)
        end = window.window_start + timedelta(seconds=window.window_seconds)
        if side not in run.watermark or end > run.watermark[side]:
            run.watermark[side] = end
        await self._close_intervals(run)

    @staticmethod
    def _closable(run: Run, k: int, allow_late: bool) -> bool:
        assert run.record is not None
        _, end = run.interval_bounds(k)
        marks = [run.watermark.get(d) for d in run.deployments()]
        seen = [m for m in marks if m is not None]
        if len(seen) == len(marks) and min(seen) >= end:
            return True
        return allow_late and bool(seen) and max(seen) >= end + timedelta(seconds=run.record.spec.lateness)

    async def _close_intervals(self, run: Run, allow_late: bool = False) -> None:
        """Decide every interval that can be closed, in order. ``allow_late`` only when the judge has read every
        partition to its high-water mark: then a side still missing is silent, not merely on a lagging partition."""
        while run.active and run.record is not None and self._closable(run, run.last_decided + 1, allow_late):
            k = run.last_decided + 1
            if k not in run.intervals:
                # No window of either side in interval k: nothing to decide on. Jump to the next interval that
                # has windows (a silent alias makes no decisions; a far-ahead window cannot make millions).
                later = [i for i in run.intervals if i > k]
                if not later:
                    break
                run.last_decided = min(later) - 1
                continue
            spec = run.record.spec
            sides = run.intervals[k]
            canary_windows = [w for w, _, _ in sides.get(spec.canary, {}).values()]
            stable_windows = [w for w, _, _ in sides.get(spec.stable, {}).values()]
            canary = SideStats.from_windows(canary_windows, drift_share=run.canary_drift)
            stable = SideStats.from_windows(stable_windows)
            run.canary_drift = canary.drift_share
            decision = decide(spec, run.progress, canary, stable)
            start, end = run.interval_bounds(k)
            row = decision_row(decision.event, k, start, end, decision.progress.consecutive_failures,
                               canary.requests, stable.requests)
            await asyncio.to_thread(insert_rows, self._client(), [row])
            if decision.event.action in ("rollback", "promote"):
                await self._alert(decision)
            await self._publish(decision.event, run, end)
            run.progress = decision.progress
            run.event = decision.event
            run.last_decided = k
            run.intervals.pop(k, None)
            log.info("%s interval %d: %s", spec.alias, k, decision.event.reason)
        if not run.active:
            run.intervals.clear()

    # --- output -----------------------------------------------------------------------------------------------

    async def _alert(self, decision: Decision) -> None:
        ev = decision.event
        rollback = ev.action == "rollback"
        alert = Alert(
            alert_id=f"rollout:{ev.alias}:{ev.rollout_id}:{ev.action}", kind="rollout",
            severity="critical" if rollback else "info",
            title=(f"rollout of {ev.canary_deployment} for {ev.alias} rolled back" if rollback
                   else f"{ev.canary_deployment} promoted for {ev.alias}"),
            detail=ev.reason[:20_000], deployment_id=ev.canary_deployment,
            observed={g.gate: g.observed for g in ev.gates if g.observed is not None and (not g.passed or not rollback)},
        )
        await self._send(self.topics.alerts, alert, alert.alert_id)

    async def _publish(self, event: RolloutEvent, run: Run, occurred_at: datetime | None) -> None:
        extra = {"occurred_at": occurred_at} if occurred_at is not None else {}
        env = make_event(event, source=SOURCE, tenant_id="_system", **extra)
        self._own.add(env.event_id)
        await self._send_env(self.topics.rollouts, env, event.alias)
        self.published.append(event)

    async def _send(self, topic: str, payload: Any, key: str) -> None:
        await self._send_env(topic, make_event(payload, source=SOURCE, tenant_id="_system"), key)

    async def _send_env(self, topic: str, env: Envelope[Any], key: str) -> None:
        assert self._producer is not None
        value, headers = encode(env)
        await (await self._producer.send(topic, value, key=key.encode(), headers=headers))

    def _commit_positions(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        """Past every processed window, except those of intervals still open (a restart must see them again)."""
        positions = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        for run in self.runs.values():
            for tp, offset in run.pending_offsets():
                if tp in positions and offset < positions[tp]:
                    positions[tp] = offset
        return positions


async def run_judge(settings: Settings, *, topics: RolloutTopics | None = None, group_id: str = GROUP_ID) -> None:
    """Run the judge until cancelled (``llmops rollout judge``)."""
    judge = Judge(settings, topics=topics, group_id=group_id)
    try:
        await judge.run()
    except asyncio.CancelledError:
        judge.stop()
        raise

