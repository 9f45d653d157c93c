"""The judge's state: every alias's rollout, its windows and evidence, and the decisions they call for. No I/O.

The Faust app (services/rollout/judge_app.py) feeds it: rollout specs and events as it reads the compacted topics
(``on_spec``, ``on_event``), the stored windows of a rollout when it first needs them (``wants_history`` ->
``load``), then every window as it comes (``on_window``), and it publishes what ``on_window`` returns.

After every window that changed a rollout's evidence the decision rule runs (services/rollout/decision.py):
rollback, step_up and promote are published at once and applied here at once (the next window counts for the new
step); a hold is published on the first verdict of a step and then every ``report_seconds`` of event time, so
``llmops rollout status`` shows each gate's current e-value or bounds. A decision's event time (its envelope's
``occurred_at``) is the end of the latest sealed window; a step begins at the event time of the event that
entered it.

Restart: the rollouts' progress comes from ``llm.rollout-specs`` and ``llm.rollouts`` (:func:`decision.apply`),
the evidence from the windows the judge stored before it processed them (``load``); a hold is not published again
for an event time the topic already has a judge event for. Windows that arrive before their rollout's spec are
stored, and count once the spec is known (``load`` reads them back).

A decision this judge published that lands on ``llm.rollouts`` after an operator's abort is answered with the
abort again, so the latest event per alias stays the abort.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.aggregates import DeploymentWindow
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from schemas.variants import parse_variant
from services.rollout.book import PRE_START, RolloutBook
from services.rollout.decision import HOLD, PASS, Decision, Progress, abort_event, apply, decide

log = logging.getLogger(__name__)
SOURCE = "llmops.judge"
JUDGE_ACTIONS = frozenset({"step_up", "hold", "promote", "rollback"})


@dataclass
class Run:
    """One alias's current rollout as the judge sees it."""

    event: RolloutEvent
    progress: Progress
    record: RolloutSpecRecord | None = None
    book: RolloutBook | None = None
    reported_at: datetime | None = None
    """Event time of this rollout's latest judge event on the topic (or published by this judge)."""

    @property
    def active(self) -> bool:
        return self.progress.status == "active"

    def deployments(self) -> set[str]:
        """The deployments of both variants (a prompt canary has one deployment for both)."""
        return {parse_variant(v).deployment for v in (self.event.stable_deployment, self.event.canary_deployment) if v}


@dataclass(frozen=True)
class Verdict:
    """A decision to publish: the event, its event time, and what the rollout looked like."""

    decision: Decision
    at: datetime
    run: Run
    started_at: datetime
    step_started_at: datetime

    @property
    def event(self) -> RolloutEvent:
        return self.decision.event


@dataclass
class JudgeState:
    runs: dict[str, Run] = field(default_factory=dict)
    records: dict[str, RolloutSpecRecord] = field(default_factory=dict)
    own: set[uuid.UUID] = field(default_factory=set)
    """Event ids this judge published and has not read back yet."""

    # --- the compacted topics -----------------------------------------------------------------------------

    def on_spec(self, record: RolloutSpecRecord) -> None:
        self.records[record.rollout_id] = record
        run = self.runs.get(record.spec.alias)
        if run is not None and run.event.rollout_id == record.rollout_id and run.record is None:
            run.record = record

    def on_event(self, event: RolloutEvent, occurred_at: datetime, event_id: uuid.UUID, source: str) -> RolloutEvent | None:
        """A rollout event read from ``llm.rollouts``; returns an abort to publish again, if one is due."""
        run = self.runs.get(event.alias)
        if event_id in self.own:
            self.own.discard(event_id)
            if run is not None and run.progress.status == "aborted" and event.action != "abort" \
                    and run.event.rollout_id == event.rollout_id:
                log.info("decision for %s landed after its abort; publishing the abort again", event.alias)
                return abort_event(run.event, run.event.reason or "aborted")
            return None
        if event.action == "start" or run is None or run.event.rollout_id != event.rollout_id:
            progress = apply(None, event, occurred_at)
            assert progress is not None
            run = Run(event=event, progress=progress, record=self.records.get(event.rollout_id))
            self.runs[event.alias] = run
        else:
            before = run.progress
            run.progress = apply(run.progress, event, occurred_at) or run.progress
            run.event = event
            if run.book is not None and run.progress.step != before.step and run.progress.step_started_at:
                run.book.new_step(run.progress.step, run.progress.step_started_at)
        if event.action in JUDGE_ACTIONS and source == SOURCE:
            run.reported_at = occurred_at if run.reported_at is None else max(run.reported_at, occurred_at)
        if not run.active:
            run.book = None
        return None

    # --- windows --------------------------------------------------------------------------------------------

    def runs_of(self, window: DeploymentWindow) -> list[Run]:
        return [r for r in self.runs.values() if r.active and window.deployment_id in r.deployments()]

    def wants_history(self, windows: list[DeploymentWindow]) -> list[Run]:
        """Active rollouts these windows belong to whose evidence must first be read back from the store."""
        out: dict[str, Run] = {}
        for w in windows:
            for run in self.runs_of(w):
                if run.book is None and run.record is not None:
                    out[run.event.alias] = run
        return list(out.values())

    @staticmethod
    def history_since(run: Run) -> datetime:
        """The earliest window start ``load`` needs (stable's minute before the start fixes the slow threshold)."""
        assert run.record is not None
        return run.record.started_at - PRE_START

    def load(self, run: Run, stored: list[DeploymentWindow]) -> None:
        """Build a rollout's evidence from the windows stored for its deployments (in window order)."""
        assert run.record is not None
        step_started = run.progress.step_started_at or run.record.started_at
        book = RolloutBook(run.record, run.progress.step, step_started, prior=stored)
        for w in sorted(stored, key=lambda x: (x.window_start, x.deployment_id, x.source_partition or -1)):
            book.add(w)
        run.book = book
        log.info("%s: evidence of rollout %s rebuilt from %d stored window(s)", run.event.alias, run.event.rollout_id,
                 len(stored))

    def on_window(self, window: DeploymentWindow) -> list[Verdict]:
        """A window (fragment) into the books of its rollouts, and the decisions it calls for."""
        out: list[Verdict] = []
        for run in self.runs_of(window):
            if run.book is None or run.record is None or not run.book.add(window):
                continue
            verdict = self._verdict(run)
            if verdict is not None:
                out.append(verdict)
        return out

    def _verdict(self, run: Run) -> Verdict | None:
        book = run.book
        assert book is not None and run.record is not None
        if book.clock is None or book.clock < book.step_started_at:
            return None
        evals, canary_n, stable_n, elapsed = book.evaluate()
        at = book.clock
        decision = decide(run.record.spec, run.progress, evals, canary_n, stable_n, elapsed, at)
        if decision.verdict == HOLD:
            last = run.reported_at
            due = last is None or last < book.step_started_at or \
                at >= last + timedelta(seconds=run.record.spec.report_seconds)
            if not due or (last is not None and at <= last):
                return None
        verdict = Verdict(decision, at, run, run.record.started_at, book.step_started_at)
        run.reported_at = at
        run.progress = decision.progress
        run.event = decision.event
        if decision.verdict == PASS and decision.event.action == "step_up":
            book.new_step(decision.progress.step, at)
        if not run.active:
            run.book = None
        return verdict

    def summary(self) -> str:
        active = sum(r.active for r in self.runs.values())
        return f"{len(self.runs)} rollout(s) known, {active} active"
