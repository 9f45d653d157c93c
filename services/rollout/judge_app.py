"""The canary judge as a Faust app: one agent over ``llm.deployment-windows``, decisions out to ``llm.rollouts``.

``llmops rollout judge`` (or ``python -m services.rollout.judge_app [--config FILE]``) runs it until SIGINT/SIGTERM.
Built on the guard rails of :mod:`services.core.faust_runtime`: the windows agent consumes with ``noack_take`` and
acks a batch only after every side effect of it was acknowledged, never raises (a :class:`BatchGuard` retries
transient failures and dead-letters a poison record), and a fatal error ends the process hard.

Per batch of windows, in this order:

1. decode; a window that does not decode, or that starts more than an hour ahead of the clock (event time drives
   the decisions), goes to ``llm.deadletter`` with the reason;
2. for a running rollout whose evidence is not in memory yet (just started, or the judge just started), read the
   windows stored for it from ClickHouse (``rollout_windows``);
3. store every window of the batch there, so a restart can rebuild the evidence from it;
4. feed each window to :class:`services.rollout.judge.JudgeState`, which decides after every window;
5. for each decision: its ClickHouse row, an alert for a rollback or a promotion (stable alert id), then the event
   on ``llm.rollouts`` (the router applies it), each acknowledged before the next and before the batch is acked.

The rollouts' progress comes from the compacted ``llm.rollout-specs`` and ``llm.rollouts``, read from the beginning
(no consumer group) by a task that keeps following them; the agent waits until that task has caught up, then the
judge logs that it is ready. Windows of one alias share a partition (keyed by alias), so judges may split the
partitions; every judge reads every rollout's progress.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel, ConfigDict, Field

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.codec import DecodeError, decode, encode, make_event
from schemas.envelope import Envelope
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from schemas.topics import ALERTS, DEADLETTER, DEPLOYMENT_WINDOWS, ROLLOUT_SPECS, ROLLOUTS
from services.core import metrics
from services.core.clickhouse.migrations import migrate
from services.core.clickhouse.writer import ClickHouseWriter
from services.core.faust_runtime import BatchGuard, OutMessage, Record, batch_agent, hard_exit, make_app, publish
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.deadletters import dead_letter_message
from services.core.kafka.from_beginning import assign_from_beginning, caught_up
from services.core.metrics import start_metrics_server
from services.core.settings import Settings, get_settings
from services.rollout.judge import SOURCE, JudgeState, Run, Verdict
from services.rollout.store import (
    DECISION_COLUMNS,
    DECISIONS,
    WINDOW_COLUMNS,
    WINDOWS,
    command_row,
    decision_row,
    window_row,
    windows_of,
    windows_query,
)
from services.rollout.topics import RolloutTopics, ensure_rollout_topics

log = logging.getLogger(__name__)
GROUP_ID = "llmops.judge"
MAX_AHEAD = timedelta(hours=1)
"""A window starting further ahead of the wall clock than this is dead-lettered (the only wall-clock check)."""


class JudgeConfig(BaseModel):
    """Where the judge reads and writes (tests rename the topics), its consumer group and batching."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(default=GROUP_ID, min_length=1)
    windows_topic: str = DEPLOYMENT_WINDOWS.name
    rollouts_topic: str = ROLLOUTS.name
    specs_topic: str = ROLLOUT_SPECS.name
    alerts_topic: str = ALERTS.name
    deadletter_topic: str = DEADLETTER.name
    batch_size: int = Field(default=500, ge=1)
    batch_within_s: float = Field(default=0.2, gt=0, description="A batch is what arrived within this long.")
    follow_poll_ms: int = Field(default=100, ge=1)

    @property
    def topics(self) -> RolloutTopics:
        return RolloutTopics(windows=self.windows_topic, rollouts=self.rollouts_topic, specs=self.specs_topic,
                             alerts=self.alerts_topic, deadletter=self.deadletter_topic)

    @classmethod
    def load(cls, path: str | Path) -> JudgeConfig:
        return cls.model_validate_json(Path(path).read_text())


class Judge:
    """The app's side effects around :class:`JudgeState`: the follower task and the windows handler."""

    def __init__(self, app: faust.App, settings: Settings, config: JudgeConfig) -> None:
        self.app = app
        self.settings = settings
        self.config = config
        self.topics = config.topics
        self.state = JudgeState()
        self.ready = asyncio.Event()
        self.writer = ClickHouseWriter(settings)
        self.pending: list[Verdict] = []
        """Decisions made and not yet fully written (a retried batch finishes them first)."""

    # --- the compacted topics -----------------------------------------------------------------------------

    async def follow(self) -> None:
        """Read the rollout specs and events from the beginning, then keep following them."""
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None))
        await consumer.start()
        try:
            tps = await assign_from_beginning(consumer, [self.topics.specs, self.topics.rollouts])
            while True:
                batches = await consumer.getmany(timeout_ms=self.config.follow_poll_ms)
                for tp in sorted(batches, key=lambda t: t.topic != self.topics.specs):  # specs first within a poll
                    for rec in batches[tp]:
                        await self._on_state_record(tp.topic, rec.value, rec.headers, rec.offset)
                if not self.ready.is_set() and await caught_up(consumer, tps):
                    self.ready.set()
                    log.info("judge ready: %s; consuming %s as group %s", self.state.summary(), self.topics.windows,
                             self.config.group_id)
        finally:
            await consumer.stop()

    async def _on_state_record(self, topic: str, value: bytes | None, headers: Any, offset: int) -> None:
        if topic == self.topics.specs:
            try:
                self.state.on_spec(decode(value or b"", headers, expect=RolloutSpecRecord).payload)
            except DecodeError as exc:
                log.warning("skipping bad rollout spec at offset %s: %s", offset, exc)
            return
        try:
            env: Envelope[RolloutEvent] = decode(value or b"", headers, expect=RolloutEvent)
        except DecodeError as exc:
            log.warning("skipping bad rollout event at offset %s: %s", offset, exc)
            return
        again = self.state.on_event(env.payload, env.occurred_at, env.event_id, env.source)
        metrics.record_rollout_event(env.payload)
        if env.payload.action in ("start", "abort"):
            await self.writer.insert(DECISIONS, [command_row(env.payload, env.occurred_at)], DECISION_COLUMNS)
        if again is not None:
            await self._publish_event(again, None)

    # --- windows ----------------------------------------------------------------------------------------------

    async def on_records(self, records: list[Record]) -> None:
        """The windows agent's batch handler (run by a BatchGuard: it may run again on the same records)."""
        await self.ready.wait()
        await self._flush()
        metrics.EVENTS_PROCESSED.labels(service="judge", topic=self.topics.windows).inc(len(records))
        decoded: list[tuple[Record, DeploymentWindow]] = []
        letters: list[OutMessage] = []
        for rec in records:
            window, letter = self._decode(rec)
            if window is not None:
                decoded.append((rec, window))
            elif letter is not None:
                letters.append(letter)
        if decoded:
            for run in self.state.wants_history([w for _, w in decoded]):  # before this batch is stored: it is
                await self._load(run)                                         # judged window by window
            stored = await self.writer.insert(WINDOWS, [window_row(w) for _, w in decoded], WINDOW_COLUMNS)
            refused = {r.index: r.reason for r in stored.rejected}
            letters += [self._letter(decoded[i][0], "rejected_by_clickhouse", reason) for i, reason in refused.items()]
        if letters:
            await publish(self.app, letters)
        windows = [w for i, (_, w) in enumerate(decoded) if i not in refused] if decoded else []
        for w in windows:
            self.pending += self.state.on_window(w)
        await self._flush()

    async def on_poison(self, record: Record, exc: BaseException) -> None:
        """A window that failed for a reason no retry fixes: dead-letter it, with the reason."""
        await publish(self.app, [self._letter(record, "processing_failed", f"{type(exc).__name__}: {exc}")])

    def _decode(self, rec: Record) -> tuple[DeploymentWindow | None, OutMessage | None]:
        try:
            window: DeploymentWindow = decode(rec.value or b"", rec.headers, expect=DeploymentWindow).payload
        except DecodeError as exc:
            log.warning("dead-lettering bad window at %s: %s", rec.position, exc)
            return None, self._letter(rec, exc.kind.value, exc.message)
        if window.window_start > datetime.now(UTC) + MAX_AHEAD:
            return None, self._letter(rec, "from_future", f"window_start {window.window_start.isoformat()} is more "
                                                          f"than {MAX_AHEAD} ahead of the judge's clock")
        return window, None

    def _letter(self, rec: Record, kind: str, error: str) -> OutMessage:
        return OutMessage(self.topics.deadletter, *dead_letter_message(rec, kind, error, consumer=self.config.group_id,
                                                                       source=SOURCE, tenant_id="_system"))

    async def _load(self, run: Run) -> None:
        sql, params = windows_query(sorted(run.deployments()), self.state.history_since(run))
        rows = await self.writer.query(sql, params)
        self.state.load(run, windows_of(rows))

    # --- decisions out ------------------------------------------------------------------------------------

    async def _flush(self) -> None:
        while self.pending:
            v = self.pending[0]
            ev = v.event
            written = await self.writer.insert(DECISIONS, [decision_row(ev, v.started_at, v.step_started_at, v.at)],
                                               DECISION_COLUMNS)
            if not written.ok:  # the event is still published: the decision must reach the router
                log.error("%s: decision row refused by ClickHouse: %s", ev.alias, written.rejected[0].reason)
            if ev.action in ("rollback", "promote"):
                await self._alert(ev)
            await self._publish_event(ev, v.at)
            log.info("%s: %s", ev.alias, ev.reason[:2000])
            self.pending.pop(0)

    async def _alert(self, ev: RolloutEvent) -> None:
        rollback = ev.action == "rollback"
        alert = Alert(
            alert_id=f"rollout:{ev.alias}:{ev.rollout_id}:{ev.action}", kind="rollout",
            severity="critical" if rollback else "info",
            title=(f"rollout of {ev.canary_deployment} for {ev.alias} rolled back" if rollback
                   else f"{ev.canary_deployment} promoted for {ev.alias}"),
            detail=ev.reason[:20_000], deployment_id=ev.canary_deployment,
            observed={g.gate: g.observed for g in ev.gates if g.observed is not None and (not g.passed or not rollback)},
        )
        value, headers = encode(make_event(alert, source=SOURCE, tenant_id="_system"))
        await publish(self.app, [OutMessage(self.topics.alerts, alert.alert_id.encode(), value, headers)])

    async def _publish_event(self, event: RolloutEvent, occurred_at: datetime | None) -> None:
        extra: dict[str, Any] = {"occurred_at": occurred_at} if occurred_at is not None else {}
        env = make_event(event, source=SOURCE, tenant_id="_system", **extra)
        self.state.own.add(env.event_id)
        value, headers = encode(env)
        await publish(self.app, [OutMessage(self.topics.rollouts, event.alias.encode(), value, headers)])


def create_app(settings: Settings, config: JudgeConfig | None = None) -> tuple[faust.App, Judge]:
    """The judge's Faust app (consumer group ``config.group_id``) and its :class:`Judge`."""
    config = config or JudgeConfig()
    app = make_app(config.group_id, settings)
    judge = Judge(app, settings, config)
    guard = BatchGuard("judge.windows", judge.on_records, judge.on_poison)
    batch_agent(app, [config.windows_topic], guard, batch_size=config.batch_size, within_s=config.batch_within_s)

    async def follow_rollouts() -> None:
        try:
            await judge.follow()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - without the rollouts' state the judge must not decide anything
            hard_exit(f"judge: following {config.rollouts_topic} failed: {type(exc).__name__}: {exc}")

    app.task(follow_rollouts)
    return app, judge


def prepare(settings: Settings, config: JudgeConfig) -> None:
    """Create the judge's topics and apply the ClickHouse migrations (both idempotent)."""
    asyncio.run(ensure_rollout_topics(settings, config.topics))
    migrate(settings)


def run_judge(settings: Settings | None = None, config: JudgeConfig | None = None, log_level: str = "INFO") -> None:
    """Run the judge until SIGINT/SIGTERM (Faust's worker stops it gracefully: acked offsets are committed, the
    rest is replayed by the next judge)."""
    settings = settings or get_settings()
    config = config or JudgeConfig()
    prepare(settings, config)
    start_metrics_server(settings)
    app, _ = create_app(settings, config)
    started = time.monotonic()
    log.info("starting the judge (group %s)", config.group_id)
    worker = faust.Worker(app, loglevel=log_level.upper(), redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        log.info("judge stopped after %.0fs", time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.rollout.judge_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JudgeConfig as a JSON file (topics, consumer group, batching)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    run_judge(get_settings(), JudgeConfig.load(args.config) if args.config else None, args.log_level)


if __name__ == "__main__":
    main()
