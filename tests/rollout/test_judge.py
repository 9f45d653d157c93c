"""The judge app on the real broker and ClickHouse: per-second windows in, decisions out, as a process.

Bad canary -> rollback (reason, alert, ClickHouse rows, status table); healthy -> step up, then promote; no canary
traffic -> hold, saying so, until max_step_seconds; a judge killed mid-rollout and started again resumes from the
stored windows (one per fragment, per prompt); bad windows are dead-lettered; an aborted rollout is not judged; SIGTERM
stops the judge cleanly.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import Alert, DeadLetter, DeploymentWindow, RolloutEvent
from services.core.clickhouse.client import connect
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.rollout.commands import RolloutError, abort_rollout, format_status, rollout_status, start_rollout
from services.rollout.spec import RolloutSpec
from services.rollout.store import WINDOW_COLUMNS, WINDOWS, window_row, windows_of, windows_query
from tests.rollout.helpers import JudgeProcess, collect, judge_config, publish_windows
from tests.rollout.windows import window

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RATE = 500
"""Requests per second of the alias in these tests."""


def _spec(unique: str, **kw: object) -> RolloutSpec:
    base: dict[str, object] = dict(
        alias=f"chat-{unique}", stable=f"v1-{unique}", canary=f"v2-{unique}", steps=[10, 50, 100], alpha=0.01,
        min_samples=50, min_step_seconds=5, max_step_seconds=600, report_seconds=10,
        gates={"error_rate": {"max_ratio": 1.0, "margin": 0.05},
               "slow_request_rate": {"max_ratio": 1.25, "margin": 0.05}},
    )
    base.update(kw)
    return RolloutSpec.model_validate(base)


def _second(k: float) -> datetime:
    return T0 + timedelta(seconds=k)


def _traffic(spec: RolloutSpec, seconds: range, share: float = 0.1, *, canary: bool = True,
             **canary_kw: object) -> list[DeploymentWindow]:
    """1-second windows of both sides (the canary's shaped by canary_kw), split at ``share``, saying so."""
    out = []
    for k in seconds:
        out.append(window(spec.stable, _second(k), requests=round(RATE * (1 - share)), seed=k, alias=spec.alias,
                          routing_weight=1 - share))
        if canary:
            out.append(window(spec.canary, _second(k), requests=round(RATE * share), seed=10_000 + k, alias=spec.alias,
                              routing_weight=share, **canary_kw))  # type: ignore[arg-type]  # overrides typed as object
    return out


def _before_start(spec: RolloutSpec) -> list[DeploymentWindow]:
    """Stable alone in the minute before the rollout: what its slow threshold is fixed from."""
    return [window(spec.stable, _second(-k), requests=RATE, seed=20_000 + k, alias=spec.alias) for k in range(1, 11)]


def _rows(settings: Settings, rollout_id: str) -> Sequence[Sequence[Any]]:
    return connect(settings).query(
        "SELECT interval_index, action, step, reason, gate, gate_status, gate_e_value, canary_requests, stable_requests "
        "FROM rollout_decisions FINAL WHERE rollout_id = {r:String} ORDER BY interval_index, action",
        parameters={"r": rollout_id},
    ).result_rows


def _actions(events: list[RolloutEvent]) -> list[tuple[str, int]]:
    return [(e.action, e.step) for e in events]


async def test_latency_x3_rolls_back_in_seconds_with_reason_alert_rows_and_status(
        local_stack: Settings, unique: str, tmp_path: Path) -> None:
    config = judge_config(local_stack, unique)
    topics = config.topics
    spec = _spec(unique)
    started = await start_rollout(local_stack, spec, topics=topics, started_at=T0)
    with pytest.raises(RolloutError, match="already has an active rollout"):
        await start_rollout(local_stack, spec, topics=topics, started_at=T0)
    with JudgeProcess(local_stack, config, tmp_path) as judge:
        publish_windows(local_stack, topics.windows, _before_start(spec) + _traffic(spec, range(30), latency_scale=3.0),
                        spec.alias)
        events = await collect(local_stack, topics.rollouts, lambda es: any(e.action == "rollback" for e in es),
                               what="a rollback")
        alerts = await collect(local_stack, topics.alerts, lambda a: len(a) >= 1, what="the alert")
        assert "judge ready: 1 rollout(s) known, 1 active" in judge.log()
    assert judge.proc is not None and judge.proc.returncode == 0  # SIGTERM: a clean stop
    rollback = events[-1]
    assert _actions(events)[0] == ("start", 1) and rollback.action == "rollback"
    assert rollback.weights == {spec.stable: 1.0, spec.canary: 0.0}
    assert rollback.reason.startswith("rollback: slow_request_rate: slow (>")
    assert "e-value " in rollback.reason and "(rollback at 400, H0 canary <= 1.25x stable)" in rollback.reason
    assert "s into step 1 (10%), canary n=" in rollback.reason
    assert rollback.step_seconds is not None and rollback.step_seconds <= 5  # seconds of event time, not minutes
    gate = next(g for g in rollback.gates if g.gate == "slow_request_rate")
    assert gate.status == "rollback" and gate.e_value is not None and gate.e_threshold == 400
    # either test may have fired first: the e-process, or the two sides' confidence sequences
    assert gate.e_value >= 400 or (gate.worse_low is not None and gate.worse_low > 0)
    assert gate.canary_value is not None and gate.canary_value > 0.5 and gate.stable_value is not None \
        and gate.stable_value < 0.1
    [alert] = alerts
    assert isinstance(alert, Alert) and alert.kind == "rollout" and alert.severity == "critical"
    assert alert.deployment_id == spec.canary and "slow_request_rate" in alert.detail

    rows = _rows(local_stack, started.rollout_id)
    assert next(r[1] for r in rows) == "start" and rows[-1][1] == "rollback"
    assert rows[-1][3] == rollback.reason and "slow_request_rate" in rows[-1][4]
    assert rows[-1][5][rows[-1][4].index("slow_request_rate")] == "rollback"
    stored = connect(local_stack).query("SELECT count() FROM rollout_windows FINAL WHERE deployment_id = {d:String}",
                                        parameters={"d": spec.canary}).result_rows[0][0]
    assert stored >= 1

    [status] = await rollout_status(local_stack, spec.alias, topics=topics)
    assert status.action == "rollback" and not status.active
    table = format_status([status])
    assert "slow_request_rate" in table and "ROLLBACK" in table and "e=" in table and "/ 400" in table


async def test_healthy_canary_steps_up_then_is_promoted(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    config = judge_config(local_stack, unique)
    topics = config.topics
    spec = _spec(unique)
    started = await start_rollout(local_stack, spec, topics=topics, started_at=T0)
    with JudgeProcess(local_stack, config, tmp_path):
        publish_windows(local_stack, topics.windows, _before_start(spec) + _traffic(spec, range(90)), spec.alias)
        events = await collect(local_stack, topics.rollouts, lambda es: any(e.action == "promote" for e in es),
                               what="a promotion")
        alerts = await collect(local_stack, topics.alerts, lambda a: len(a) >= 1)
    passed = [e for e in events if e.action not in ("hold", "start")]
    assert [(e.action, e.step) for e in passed] == [("step_up", 2), ("promote", 2)]
    promote = passed[-1]
    assert promote.weights == {spec.canary: 1.0} and all(g.status == "within_margin" for g in promote.gates)
    assert "promote: every gate within margin at 50%" in promote.reason
    assert all(e.action == "hold" for e in events if e.action not in ("start", "step_up", "promote"))
    assert alerts[0].severity == "info" and "promoted" in alerts[0].title
    with pytest.raises(RolloutError, match=f"now serves {spec.canary}"):
        await start_rollout(local_stack, spec, topics=topics)
    assert [r[1] for r in _rows(local_stack, started.rollout_id)][-1] == "promote"


async def test_no_canary_traffic_holds_and_says_so_until_max_step_seconds(
        local_stack: Settings, unique: str, tmp_path: Path) -> None:
    config = judge_config(local_stack, unique)
    topics = config.topics
    spec = _spec(unique, max_step_seconds=25)
    await start_rollout(local_stack, spec, topics=topics, started_at=T0)
    with JudgeProcess(local_stack, config, tmp_path):
        publish_windows(local_stack, topics.windows, _traffic(spec, range(12), canary=False), spec.alias)
        events = await collect(local_stack, topics.rollouts, lambda es: len(es) >= 3, what="two holds")
        [status] = await rollout_status(local_stack, spec.alias, topics=topics)
        assert status.active and "no data" in format_status([status])
        publish_windows(local_stack, topics.windows, _traffic(spec, range(12, 30), canary=False), spec.alias)
        events = await collect(local_stack, topics.rollouts, lambda es: any(e.action == "rollback" for e in es),
                               what="the timeout")
    holds = [e for e in events if e.action == "hold"]
    assert holds and all(e.reason.startswith("hold: no canary traffic in this step (nothing to judge: every e-value "
                                             "is 1)") for e in holds)
    assert [e.step_seconds for e in holds] == [1.0, 11.0, 21.0]
    assert all(e.weights == spec.weights(1) for e in holds)
    assert "not passed within max_step_seconds=25" in events[-1].reason


async def test_a_judge_killed_mid_rollout_resumes_from_the_stored_windows(
        local_stack: Settings, unique: str, tmp_path: Path) -> None:
    config = judge_config(local_stack, unique)
    topics = config.topics
    spec = _spec(unique, gates={"error_rate": {"max_ratio": 1.0, "margin": 0.001}}, min_step_seconds=500)
    await start_rollout(local_stack, spec, topics=topics, started_at=T0)
    judge = JudgeProcess(local_stack, config, tmp_path).start()
    publish_windows(local_stack, topics.windows, _traffic(spec, range(12)), spec.alias)  # healthy: holds only
    await collect(local_stack, topics.rollouts, lambda es: len(es) >= 3, what="two holds")
    assert judge.stop(signal.SIGKILL) == -signal.SIGKILL

    with JudgeProcess(local_stack, config, tmp_path) as judge:
        publish_windows(local_stack, topics.windows, _traffic(spec, range(12, 40), error_rate=0.2), spec.alias)
        events = await collect(local_stack, topics.rollouts, lambda es: any(e.action == "rollback" for e in es),
                               what="a rollback after the restart")
        assert "rebuilt from" in judge.log()
    rollback = events[-1]
    # the step's counts include the windows judged before the kill: the evidence was rebuilt, not restarted
    assert rollback.canary_requests is not None and rollback.canary_requests > 12 * RATE * 0.1
    assert rollback.reason.startswith("rollback: error_rate: rate canary")
    times = [e.step_seconds for e in events if e.action == "hold"]
    assert len(times) == len(set(times))  # no hold published twice for the same event time


async def test_bad_windows_are_dead_lettered_and_an_aborted_rollout_is_not_judged(
        local_stack: Settings, unique: str, tmp_path: Path) -> None:
    config = judge_config(local_stack, unique)
    topics = config.topics
    spec = _spec(unique)
    with pytest.raises(RolloutError, match="no rollout for alias"):
        await abort_rollout(local_stack, spec.alias, topics=topics)
    first = await start_rollout(local_stack, spec, topics=topics, started_at=T0)
    aborted = await abort_rollout(local_stack, spec.alias, reason="bad vibes", topics=topics)
    assert aborted.action == "abort" and aborted.weights == {spec.stable: 1.0, spec.canary: 0.0}
    with pytest.raises(RolloutError, match="is not active"):
        await abort_rollout(local_stack, spec.alias, topics=topics)
    again = await abort_rollout(local_stack, spec.alias, reason="start over", topics=topics, ended_too=True)
    assert again.action == "abort" and again.weights == {spec.stable: 1.0, spec.canary: 0.0}
    with JudgeProcess(local_stack, config, tmp_path) as judge:
        producer = EventProducer(local_stack)
        producer.send_raw(topics.windows, b"{not json", key=b"x")
        producer.flush()
        future = window(spec.canary, datetime.now(UTC) + timedelta(hours=2))
        publish_windows(local_stack, topics.windows, [future, *_traffic(spec, range(10), error_rate=0.5)], spec.alias)
        letters = await collect(local_stack, topics.deadletter, lambda d: len(d) >= 2, what="two dead letters")
        kinds = sorted(d.error_kind for d in letters)
        assert all(isinstance(d, DeadLetter) for d in letters) and kinds == ["from_future", "not_json"]
        # the aborted rollout was not judged; a new one is
        second = await start_rollout(local_stack, spec, topics=topics, started_at=T0 + timedelta(seconds=100))
        publish_windows(local_stack, topics.windows, _traffic(spec, range(100, 130), error_rate=0.5), spec.alias)
        events = await collect(local_stack, topics.rollouts, lambda es: any(e.action == "rollback" for e in es),
                               what="the second rollout's rollback")
        assert "judge ready" in judge.log()
    judged = [e for e in events if e.action not in ("start", "abort")]
    assert all(e.rollout_id == second.rollout_id for e in judged)
    assert _actions(events)[:4] == [("start", 1), ("abort", 0), ("abort", 0), ("start", 1)]
    assert [r[1] for r in _rows(local_stack, first.rollout_id)] == ["abort", "start"]


def test_stored_windows_keep_one_fragment_per_prompt(local_stack: Settings, unique: str) -> None:
    """Two prompts with the same version number on one deployment are two stored fragments; a copy replaces its own."""
    dep = f"v1-{unique}"
    fragments = [window(dep, T0, requests=n, source_partition=0).model_copy(update={"prompt_id": p, "prompt_version": "3"})
                 for p, n in (("summarize", 10), ("translate", 20), ("translate", 30))]
    client = connect(local_stack)
    for w in fragments:  # one insert each: the later copy of translate's fragment replaces the earlier one
        client.insert(WINDOWS, [window_row(w)], column_names=WINDOW_COLUMNS)
    sql, params = windows_query([dep], T0)
    stored = windows_of(client.query(sql, parameters=params).result_rows)
    assert sorted((w.prompt_id, w.requests) for w in stored) == [("summarize", 10), ("translate", 30)]
