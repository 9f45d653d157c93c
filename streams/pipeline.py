"""What the stream app does with a batch of each topic: the concern modules composed, side effects then return.

Every ``handle_*`` coroutine performs all the side effects of its batch and returns only once each was
acknowledged (ClickHouse inserts returned, producer sends acked); the agent acks the batch's events after that
(:mod:`services.core.faust_runtime`). Each is idempotent: run again on the same records it writes the same rows
(ReplacingMergeTree keys) and publishes the same events (deterministic ids), and in-memory state deduplicates.

* requests: decode -> redact per tenant policy -> ``raw_requests``;
* completions: decode -> safety scan and redaction -> cost -> review queue -> ``raw_completions``,
  ``safety_findings``, ``cost_completions``, ``review_items`` -> findings to ``llm.safety``, review items to
  ``llm.review`` -> alerts (unknown price, budget) -> windows, minute aggregates, drift;
* feedback: decode -> redact the comment -> ``raw_feedback`` -> windows (attributed to the completion's side);
  low user/grader scores -> ``review_items`` and ``llm.review``;
* anything undecodable, or rejected by ClickHouse, goes to ``llm.deadletter`` with the reason;
* dead letters (from every service) -> ``dead_letters`` with the original redacted; alerts (from anyone) ->
  ``alerts_log`` once per id; published windows -> safety-spike incidents.

The periodic jobs (:meth:`Pipeline.publish_windows` and friends) run on timers of the app.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.codec import DecodeError, decode, encode
from schemas.completions import Completion
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.feedback import Feedback
from schemas.requests import InferenceRequest
from schemas.review import ReviewItem
from schemas.rollouts import RolloutEvent
from schemas.safety import SafetyFinding
from services.core import metrics
from services.core.clickhouse.raw_tables import (
    COMPLETION_COLUMNS,
    DEAD_LETTER_COLUMNS,
    FEEDBACK_COLUMNS,
    REQUEST_COLUMNS,
    completion_row,
    dead_letter_row,
    feedback_row,
    request_row,
)
from services.core.faust_runtime import OutMessage, Record
from services.core.kafka.follower import CompactedFollower
from services.core.settings import Settings
from streams.concerns.aggregates import MinuteAggregator
from streams.concerns.alerts import AlertIngest, AlertPublisher, Incidents
from streams.concerns.cost import COST_COLUMNS, Costs, load_budgets
from streams.concerns.deadletters import INGEST_CONSUMER, DeadLetterIngest, dead_letter_messages
from streams.concerns.decode import DecodedBatch, dead_letter, decode_batch, position
from streams.concerns.drift import Drift
from streams.concerns.review import REVIEW_COLUMNS, ReviewQueue, ScoredCompletion
from streams.concerns.safety import SAFETY_COLUMNS, Safety, TextToStore, load_tenant_policies
from streams.concerns.safety_spike import SafetySpikes
from streams.concerns.sink import Sink
from streams.concerns.windows import CompletionFacts, FeedbackFacts, Side, Windows, error_kind
from streams.config import StreamsConfig
from streams.cost import PriceTable

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]


def _stored_texts(texts: dict[str, str]) -> Callable[[str], str]:
    """The redactor of one completion: its texts as the safety scan left them to be stored."""
    return lambda text: texts.get(text, text)


def _processed(records: list[Record]) -> None:
    topics: dict[str, int] = {}
    for r in records:
        topics[r.topic] = topics.get(r.topic, 0) + 1
    for topic, n in topics.items():
        metrics.EVENTS_PROCESSED.labels(service="streams", topic=topic).inc(n)


@dataclass
class _PreparedCompletions:
    """A decoded completions batch with its rows and window facts, before any I/O."""

    decoded: DecodedBatch
    completion_rows: list[list[Any]] = field(default_factory=list)
    finding_rows: list[list[Any]] = field(default_factory=list)
    cost_rows: list[list[Any]] = field(default_factory=list)
    review_rows: list[list[Any]] = field(default_factory=list)
    owners: dict[str, list[int]] = field(default_factory=lambda: {
        "raw_completions": [], "safety_findings": [], "cost_completions": [], "review_items": []})
    """Per table: the completion (index in ``decoded.completions``) each row belongs to."""
    facts: list[tuple[int, CompletionFacts]] = field(default_factory=list)
    findings: list[list[Envelope[SafetyFinding]]] = field(default_factory=list)
    reviews: list[list[Envelope[ReviewItem]]] = field(default_factory=list)
    alerts: list[tuple[Alert, str]] = field(default_factory=list)


class Pipeline:
    """The concerns of one worker and the batch handlers that run them."""

    def __init__(self, settings: Settings, config: StreamsConfig, publish: Publish) -> None:
        self.settings = settings
        self.config = config
        self.publish = publish
        cfg = config
        self.expected: dict[str, type[BaseModel]] = {
            cfg.requests_topic: InferenceRequest, cfg.completions_topic: Completion, cfg.feedback_topic: Feedback,
        }
        self.sink = Sink(settings, retry_initial_s=cfg.retry_initial_s, retry_max_s=cfg.retry_max_s)
        self.safety = Safety(load_tenant_policies(cfg.policies_path))
        self.costs = Costs(PriceTable.load(cfg.prices_path), load_budgets(cfg.budgets_path))
        self.review = ReviewQueue(cfg.review)
        self.rollout_flags = CompactedFollower(settings, [cfg.rollouts_topic],
                                               lambda event, _: self.review.rollout_update(event.payload),
                                               expect=RolloutEvent, poll_ms=500, name="review rollouts")
        self.alerts = AlertPublisher(publish, self.sink.writer("alerts"), cfg.alerts_topic)
        self.aggregator = MinuteAggregator(self.sink.writer("aggregates"))
        self.drift = Drift(cfg, self.sink.writer("drift"), self.alerts) if cfg.drift_enabled else None
        self.windows = Windows(
            self.sink.writer("windows"), group=cfg.group_id, completions_topic=cfg.completions_topic,
            feedback_topic=cfg.feedback_topic, windows_topic=cfg.windows_topic, seconds=cfg.window_seconds,
            grace_s=cfg.window_grace_s, republish_s=cfg.window_republish_s, retain_s=cfg.window_retain_s,
            recover_s=cfg.window_recover_s, recover_max_s=cfg.window_recover_max_s, index_size=cfg.completion_index_size,
            feedback_wait_s=cfg.feedback_wait_s,
            drift_share=self.drift.latest_share if self.drift is not None else (lambda _: None),
        ) if cfg.windows_enabled else None
        self.spikes = SafetySpikes(Incidents("safety_spike", self.sink.writer("incidents")),
                                   share=cfg.safety_spike_share, min_requests=cfg.safety_spike_min_requests,
                                   span_s=cfg.safety_spike_span_s)
        self.dead_letter_ingest = DeadLetterIngest(self.sink, self.safety.redactor("unknown", "dead-letter", None))
        self.alert_ingest = AlertIngest(self.sink, f"{cfg.consumer_name}.alerts")
        self.dead_lettered = 0

    # -- input topics ---------------------------------------------------------------------------------------------
    async def handle_inputs(self, records: list[Record]) -> None:
        """A batch from any of the three input topics (one agent for all of them)."""
        cfg = self.config
        by_topic: dict[str, list[Record]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        results = await asyncio.gather(
            self.handle_requests(by_topic.get(cfg.requests_topic, [])),
            self.handle_completions(by_topic.get(cfg.completions_topic, [])),
            self.handle_feedback(by_topic.get(cfg.feedback_topic, [])),
            self.handle_unexpected([r for t, rs in by_topic.items() if t not in self.expected for r in rs]),
            return_exceptions=True,  # all three finish before the guard sees a failure (and maybe runs them again)
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def handle_unexpected(self, records: list[Record]) -> None:
        await self._dead_letter([dead_letter(r, "wrong_topic", f"no agent reads {r.topic}", self.config.consumer_name)
                                 for r in records])

    async def handle_requests(self, records: list[Record]) -> None:
        if not records:
            return
        decoded, rows = await asyncio.to_thread(self._prepare_requests, records)
        rejected = await self.sink.insert("raw_requests", rows, REQUEST_COLUMNS)
        await self._dead_letter(decoded.dead_letters + self._rejected(rejected, [rec for _, rec in decoded.requests]))
        _processed(records)

    def _prepare_requests(self, records: list[Record]) -> tuple[DecodedBatch, list[list[Any]]]:
        decoded = decode_batch(records, self.expected, self.config.consumer_name)
        stored = self.safety.redactions([
            TextToStore(ev.tenant_id, ev.payload.request_id, ev.payload.deployment_id, m.content)
            for ev, _ in decoded.requests for m in ev.payload.messages or []])
        return decoded, [request_row(ev, position(rec), functools.partial(stored, ev.tenant_id))
                         for ev, rec in decoded.requests]

    async def handle_feedback(self, records: list[Record]) -> None:
        if not records:
            return
        decoded, rows = await asyncio.to_thread(self._prepare_feedback, records)
        rejected = await self.sink.insert("raw_feedback", rows, FEEDBACK_COLUMNS)
        await self._dead_letter(decoded.dead_letters + self._rejected(rejected, [rec for _, rec in decoded.feedback]))
        bad = {i for i, _ in rejected}
        review = self.review.collect([], [ev for i, (ev, _) in enumerate(decoded.feedback) if i not in bad])
        if review.rows:
            await self.sink.insert("review_items", review.rows, REVIEW_COLUMNS)
            await self.publish([OutMessage(self.config.review_topic, e.payload.request_id.encode(), *encode(e))
                                for e in review.events])
        if self.windows is not None:
            await self.windows.add_feedback([
                (rec.partition, FeedbackFacts(str(ev.event_id), ev.payload.request_id, ev.tenant_id, ev.occurred_at,
                                              ev.payload.score))
                for i, (ev, rec) in enumerate(decoded.feedback) if i not in bad])
        _processed(records)

    def _prepare_feedback(self, records: list[Record]) -> tuple[DecodedBatch, list[list[Any]]]:
        decoded = decode_batch(records, self.expected, self.config.consumer_name)
        stored = self.safety.redactions([TextToStore(ev.tenant_id, ev.payload.request_id, None, ev.payload.comment or "")
                                         for ev, _ in decoded.feedback])
        return decoded, [feedback_row(ev, position(rec), functools.partial(stored, ev.tenant_id))
                         for ev, rec in decoded.feedback]

    async def handle_completions(self, records: list[Record]) -> None:
        if not records:
            return
        prepared = await asyncio.to_thread(self._prepare_completions, records)
        decoded, facts, findings_by, alerts = prepared.decoded, prepared.facts, prepared.findings, prepared.alerts
        owners = prepared.owners
        if self.drift is not None:
            await self.drift.prepare({ev.payload.deployment_id for ev, _ in decoded.completions})

        # 1. ClickHouse, the three tables in parallel; rows the server rejects dead-letter their completion.
        rejected = await self.sink.insert_all([
            ("raw_completions", prepared.completion_rows, COMPLETION_COLUMNS),
            ("safety_findings", prepared.finding_rows, SAFETY_COLUMNS),
            ("cost_completions", prepared.cost_rows, COST_COLUMNS),
            ("review_items", prepared.review_rows, REVIEW_COLUMNS),
        ])
        bad: dict[int, str] = {}
        for table, rows in rejected.items():
            for i, reason in rows:
                bad.setdefault(owners[table][i], f"{table}: {reason}")
        records_of = [rec for _, rec in decoded.completions]
        letters = decoded.dead_letters + self._rejected(sorted(bad.items()), records_of)

        # 2. Kafka: findings of the stored completions, and the dead letters.
        out = [OutMessage(self.config.safety_topic, e.payload.request_id.encode(), *encode(e))
               for n, events in enumerate(findings_by) if n not in bad for e in events]
        out += [OutMessage(self.config.review_topic, e.payload.request_id.encode(), *encode(e))
                for n, events in enumerate(prepared.reviews) if n not in bad for e in events]
        await self.publish(out + dead_letter_messages(letters, self.config.deadletter_topic, self.config.consumer_name))
        self._count_dead_letters(letters)

        # 3. Alerts: unknown prices, then budgets against the stored spend.
        stored = [(ev, rec) for n, (ev, rec) in enumerate(decoded.completions) if n not in bad]
        tenant_days: set[tuple[str, date]] = {(ev.tenant_id, ev.occurred_at.date()) for ev, _ in stored}
        if tenant_days and (self.costs.budgets.tenants or self.costs.budgets.default is not None):
            alerts.extend(await self.costs.budget_alerts(self.sink.writer("budgets"), tenant_days))
        if alerts:
            await self.alerts.raise_once(alerts)

        # 4. In-memory state of what is stored: windows, minutes to recompute, drift.
        if self.windows is not None:
            await self.windows.add_completions([f for n, f in enumerate(facts) if n not in bad])
        minutes: set[datetime] = {ev.occurred_at for ev, _ in stored}
        self.aggregator.touch(minutes)
        if self.drift is not None:
            for ev, _ in stored:
                self.drift.add(ev.tenant_id, ev.payload)
        metrics.record_completions((ev.payload, ev.tenant_id, error_kind(ev.payload.finish_reason,
                                                                          ev.payload.error.kind if ev.payload.error else None))
                                   for ev, _ in stored)
        for row in prepared.finding_rows:
            kinds = row[SAFETY_COLUMNS.index("kinds")]
            metrics.SAFETY_FINDINGS.labels(category=row[SAFETY_COLUMNS.index("category")], kind=kinds[0] if kinds else "",
                                           action=row[SAFETY_COLUMNS.index("action")]).inc()
        _processed(records)

    def _prepare_completions(self, records: list[Record]) -> _PreparedCompletions:
        """The CPU part of a completions batch (decode, safety scans, redaction, cost, rows): run in a thread, so the
        event loop stays free for timers (window publication) and commits meanwhile."""
        out = _PreparedCompletions(decode_batch(records, self.expected, self.config.consumer_name))
        scans = self.safety.scan_completions([ev for ev, _ in out.decoded.completions])
        for n, ((ev, rec), scan) in enumerate(zip(out.decoded.completions, scans, strict=True)):
            c = ev.payload
            out.completion_rows.append(completion_row(ev, position(rec), _stored_texts(
                {c.prompt_text: scan.prompt_text, c.text: scan.text})))
            out.owners["raw_completions"].append(n)
            out.finding_rows.extend(scan.rows)
            out.owners["safety_findings"].extend([n] * len(scan.rows))
            out.findings.append(scan.events)
            review = self.review.collect(
                [ScoredCompletion(ev, scan.injection_score, scan.toxicity_score, scan.prompt_text, scan.text)], [])
            out.review_rows.extend(review.rows)
            out.owners["review_items"].extend([n] * len(review.rows))
            out.reviews.append(review.events)
            cost_row, alert = self.costs.row(ev, position(rec))
            out.cost_rows.append(cost_row)
            out.owners["cost_completions"].append(n)
            if alert is not None:
                out.alerts.append((alert, ev.tenant_id))
            cost = cost_row[COST_COLUMNS.index("cost")]
            out.facts.append((rec.partition, CompletionFacts(
                request_id=c.request_id, tenant=ev.tenant_id, occurred_at=ev.occurred_at,
                side=Side(c.model_alias, c.deployment_id, c.prompt_id or "", c.prompt_version or ""), total_ms=c.total_ms,
                ttft_ms=c.ttft_ms, error_kind=error_kind(c.finish_reason, c.error.kind if c.error else None),
                prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, routing_weight=c.routing_weight,
                cost=None if cost is None else float(cost), findings=scan.text_findings,
            )))
        return out

    # -- dead letters ---------------------------------------------------------------------------------------------
    def _rejected(self, rejected: Sequence[tuple[int, str]], records: list[Record]) -> list[DeadLetter]:
        return [dead_letter(records[i], "rejected_by_clickhouse", reason, self.config.consumer_name)
                for i, reason in rejected]

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        if letters:
            await self.publish(dead_letter_messages(letters, self.config.deadletter_topic, self.config.consumer_name))
            self._count_dead_letters(letters)

    def _count_dead_letters(self, letters: list[DeadLetter]) -> None:
        self.dead_lettered += len(letters)
        for letter in letters:
            metrics.DEAD_LETTERS.labels(service="streams", topic=letter.topic, reason=letter.error_kind).inc()

    async def handle_poison(self, record: Record, exc: BaseException) -> None:
        """A record that failed for a reason nobody foresaw: dead-letter it (on the topic, or stored directly when
        it came from the dead-letter topic itself, so nothing loops)."""
        reason = f"processing_error: {type(exc).__name__}: {exc}"
        letter = dead_letter(record, "processing_error", reason[:20_000], self.config.consumer_name)
        if record.topic == self.config.deadletter_topic:
            letter = dead_letter(record, "processing_error", reason[:20_000], INGEST_CONSUMER)
            await self.sink.insert("dead_letters", [dead_letter_row(letter, self.dead_letter_ingest.redact)],
                                   DEAD_LETTER_COLUMNS)
        else:
            await self._dead_letter([letter])

    async def handle_dead_letters(self, records: list[Record]) -> None:
        await self.dead_letter_ingest.handle(records)
        _processed(records)

    async def handle_alerts(self, records: list[Record]) -> None:
        await self._dead_letter(await self.alert_ingest.handle(records))
        _processed(records)

    async def handle_windows(self, records: list[Record]) -> None:
        """Published windows (read back from the windows topic): safety-spike incidents."""
        windows: list[DeploymentWindow] = []
        letters = []
        for rec in records:
            try:
                windows.append(decode(rec.value, rec.headers, expect=DeploymentWindow).payload)
            except DecodeError as exc:
                letters.append(dead_letter(rec, exc.kind.value, str(exc), f"{self.config.consumer_name}.windows"))
        await self._dead_letter(letters)
        alerts = await self.spikes.observe(windows)
        if alerts:
            await self.alerts.raise_once([(a, "platform") for a in alerts])

    def summary(self) -> str:
        """One line of what the concerns did so far (for the periodic stats log)."""
        parts = [f"dead-lettered {self.dead_lettered}", f"texts scanned {self.safety.scans}",
                 f"minutes recomputed {self.aggregator.recomputed}", f"alerts raised {self.alerts.raised}"]
        if self.windows is not None:
            parts.append(f"windows published {self.windows.published}, feedback waiting {self.windows.parked}")
        return ", ".join(parts)

    # -- periodic jobs ----------------------------------------------------------------------------------------------
    async def publish_windows(self) -> None:
        """Publish every window that ended ``window_grace_s`` ago and changed since it was last published."""
        if self.windows is None:
            return
        due = self.windows.due()
        if due:
            await self.publish([m for _, _, _, fragments in due for m in self.windows.messages(fragments)])
            for p, index, version, _ in due:
                self.windows.mark_published(p, index, version)
        self.windows.evict()

    async def save_window_progress(self) -> None:
        if self.windows is not None:
            await self.windows.save_progress()

    async def retry_parked_feedback(self) -> None:
        if self.windows is not None:
            await self.windows.retry_parked()

    async def flush_aggregates(self) -> None:
        await self.aggregator.flush()

    async def check_drift(self) -> None:
        if self.drift is not None:
            self.drift.start_due_checks()

    async def recover_aggregates(self) -> None:
        """On start: minutes of recently ingested rows are recomputed (a crash may have stored them unaggregated)."""
        n = await self.aggregator.recover(self.config.startup_recompute_hours)
        log.info("streams: %d minute(s) to recompute after start", n)
