"""The judge on the real broker and ClickHouse: synthetic deployment windows in, rollout decisions out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from schemas import Alert, DeadLetter, DeploymentWindow, RolloutEvent, decode, make_event
from services.clickhouse.client import connect
from services.clickhouse.migrations import migrate
from services.kafka.admin import ensure_topics
from services.kafka.config import aiokafka_consumer_kwargs
from services.kafka.producer import EventProducer
from services.rollout.commands import RolloutError, abort_rollout, format_status, rollout_status, start_rollout
from services.rollout.judge import Judge
from services.rollout.spec import RolloutSpec
from services.rollout.topics import RolloutTopics
from services.settings import Settings
from tests.rollout.windows import window

INTERVAL = 10
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(local_stack: Settings) -> Settings:
    migrate(local_stack)  # 0020_rollout_decisions
    return local_stack


def _topics(settings: Settings, unique: str, windows_partitions: int = 3) -> RolloutTopics:
    topics = RolloutTopics(windows=f"t.win.{unique}", rollouts=f"t.roll.{unique}", specs=f"t.spec.{unique}",
                           alerts=f"t.alert.{unique}", deadletter=f"t.dl.{unique}")
    ensure_topics(settings, topics.specs_for_creation(windows_partitions))
    return topics


def _spec(unique: str, **kw: object) -> RolloutSpec:
    base: dict[str, object] = dict(
        alias=f"chat-{unique}", stable=f"v1-{unique}", canary=f"v2-{unique}", steps=[10, 50, 100],
        analysis_interval_seconds=INTERVAL, min_samples=100, failure_threshold=2,
        gates={"error_rate": {"threshold": 0.02}, "p95_latency_ratio": {"threshold": 1.5}},
    )
    base.update(kw)
    return RolloutSpec.model_validate(base)


def _publish(settings: Settings, topic: str, windows: list[DeploymentWindow]) -> None:
    producer = EventProducer(settings)
    for w in windows:
        producer.send(topic, make_event(w, source="test", tenant_id="t"), key=w.deployment_id)
    producer.flush()


def _interval(spec: RolloutSpec, k: int, *, canary: bool = True, stable: bool = True, **canary_kw: object) -> list[DeploymentWindow]:
    """One interval's windows (one window per side), the canary's shaped by canary_kw."""
    start = T0 + timedelta(seconds=k * INTERVAL)
    out = []
    if stable:
        out.append(window(spec.stable, start, seconds=INTERVAL, seed=k))
    if canary:
        out.append(window(spec.canary, start, seconds=INTERVAL, seed=1000 + k, **canary_kw))  # type: ignore[arg-type]
    return out


async def _collect(settings: Settings, topic: str, done: Callable[[list], bool], timeout_s: float = 40.0) -> list:
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(out):
            assert time.monotonic() < deadline, f"timed out on {topic}; got {[getattr(e, 'action', e) for e in out]}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [decode(r.value, r.headers).payload for r in records]
    finally:
        await consumer.stop()
    return out


def _actions(events: list[RolloutEvent]) -> list[tuple[str, int]]:
    return [(e.action, e.step) for e in events]


class Running:
    def __init__(self, settings: Settings, topics: RolloutTopics, group: str) -> None:
        self.judge = Judge(settings, topics=topics, group_id=group, poll_ms=100)
        self.task = asyncio.create_task(self.judge.run())

    async def __aenter__(self) -> Judge:
        await asyncio.wait_for(self.judge.ready.wait(), 30)
        return self.judge

    async def __aexit__(self, *exc: object) -> None:
        self.judge.stop()
        await asyncio.wait_for(self.task, 30)


def _rows(settings: Settings, rollout_id: str) -> list[tuple]:
    return connect(settings).query(
        "SELECT interval_index, action, step, reason, gate, gate_passed, canary_requests, stable_requests "
        "FROM rollout_decisions FINAL WHERE rollout_id = {r:String} ORDER BY interval_index, action",
        parameters={"r": rollout_id},
    ).result_rows


async def test_bad_canary_rolls_back_with_reason_alert_and_rows(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique)
    spec = _spec(unique)
    started = await start_rollout(stack, spec, topics=topics, started_at=T0)
    with pytest.raises(RolloutError, match="already has an active rollout"):
        await start_rollout(stack, spec, topics=topics, started_at=T0)
    async with Running(stack, topics, f"judge.{unique}"):
        _publish(stack, topics.windows, [w for k in range(3) for w in _interval(spec, k, latency_scale=3.0)])
        events = await _collect(stack, topics.rollouts, lambda es: any(e.action == "rollback" for e in es))
        alerts = await _collect(stack, topics.alerts, lambda a: len(a) >= 1)
    assert _actions(events) == [("start", 1), ("hold", 1), ("rollback", 0)]
    rollback = events[-1]
    assert rollback.weights == {spec.stable: 1.0, spec.canary: 0.0}
    assert rollback.reason.startswith("rollback: p95_latency_ratio ")
    assert "> 1.5 (canary n=500, stable n=500; Mann-Whitney p=" in rollback.reason
    assert rollback.reason.endswith("for 2 consecutive intervals")
    observed = next(g.observed for g in rollback.gates if g.gate == "p95_latency_ratio")
    assert 2.5 < observed < 3.6
    [alert] = alerts
    assert isinstance(alert, Alert) and alert.kind == "rollout" and alert.severity == "critical"
    assert alert.deployment_id == spec.canary and "p95_latency_ratio" in alert.detail

    rows = _rows(stack, started.rollout_id)
    assert [(r[0], r[1], r[2]) for r in rows] == [(-1, "start", 1), (0, "hold", 1), (1, "rollback", 0)]
    assert rows[2][3] == rollback.reason and rows[2][4] == ["error_rate", "p95_latency_ratio"]
    assert rows[2][5] == [1, 0] and rows[2][6:] == (500, 500)

    [status] = await rollout_status(stack, spec.alias, topics=topics)
    assert status.action == "rollback" and not status.active and status.steps == [10, 50, 100]
    table = format_status([status])
    assert "p95_latency_ratio" in table and "FAIL" in table and "1.5" in table and "rollback" in table


async def test_error_rate_10_percent_vs_1_rolls_back(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique, windows_partitions=1)
    spec = _spec(unique)
    await start_rollout(stack, spec, topics=topics, started_at=T0)
    async with Running(stack, topics, f"judge.{unique}"):
        _publish(stack, topics.windows, [w for k in range(2) for w in _interval(spec, k, error_rate=0.10)])
        events = await _collect(stack, topics.rollouts, lambda es: any(e.action == "rollback" for e in es))
    assert _actions(events) == [("start", 1), ("hold", 1), ("rollback", 0)]
    assert "error_rate 0.09 > 0.02 (canary n=500, stable n=500; two-proportion z p=" in events[-1].reason


async def test_healthy_canary_is_promoted_through_every_step(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique)
    spec = _spec(unique)
    started = await start_rollout(stack, spec, topics=topics, started_at=T0)
    async with Running(stack, topics, f"judge.{unique}") as judge:
        # passing the 50% step promotes (the 100% step is never analysed); windows 5 and 6 come after it
        _publish(stack, topics.windows, [w for k in (0, 1, 5, 6) for w in _interval(spec, k)])
        events = await _collect(stack, topics.rollouts, lambda es: any(e.action == "promote" for e in es))
        alerts = await _collect(stack, topics.alerts, lambda a: len(a) >= 1)
        await asyncio.sleep(0.5)
        assert len(judge.published) == 2
    assert _actions(events) == [("start", 1), ("step_up", 2), ("promote", 2)]
    assert [e.weights.get(spec.canary) for e in events] == [pytest.approx(0.1), 0.5, 1.0]
    assert events[-1].weights == {spec.canary: 1.0} and all(g.passed for g in events[-1].gates)
    assert alerts[0].severity == "info" and "promoted" in alerts[0].title
    with pytest.raises(RolloutError, match=f"now serves {spec.canary}"):  # the spec's stable is no longer serving
        await start_rollout(stack, spec, topics=topics)
    after = spec.model_copy(update={"stable": spec.canary, "canary": f"v3-{unique}"})
    assert (await start_rollout(stack, after, topics=topics)).weights[after.stable] == pytest.approx(0.9)
    rows = _rows(stack, started.rollout_id)
    assert [(r[0], r[1]) for r in rows] == [(-1, "start"), (0, "step_up"), (1, "promote")]


async def test_no_canary_traffic_holds_and_says_so(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique)
    spec = _spec(unique)
    await start_rollout(stack, spec, topics=topics, started_at=T0)
    async with Running(stack, topics, f"judge.{unique}") as judge:
        # the canary is silent (no windows at all): intervals close by lateness on the stable's event time
        _publish(stack, topics.windows, [w for k in range(3) for w in _interval(spec, k, canary=False)])
        events = await _collect(stack, topics.rollouts, lambda es: len(es) >= 3)
        # intervals 0 and 1 closed (stable is a full interval past them); interval 2 waits for more event time
        await asyncio.sleep(0.5)
        assert len(judge.published) == 2
        # then a trickle: 20 canary requests per interval; interval 2 (canary still silent) closes, then 3 and 4
        _publish(stack, topics.windows, [w for k in range(3, 5) for w in _interval(spec, k, requests=20)])
        events = await _collect(stack, topics.rollouts, lambda es: len(es) >= 6)
        await asyncio.sleep(0.3)
        assert len(judge.published) == 5
    assert _actions(events) == [("start", 1)] + [("hold", 1)] * 5
    assert [e.reason for e in events[1:4]] == ["hold: insufficient traffic: canary 0 < min 100"] * 3
    assert [e.reason for e in events[4:6]] == ["hold: insufficient traffic: canary 20 < min 100"] * 2
    assert all(e.weights == spec.weights(1) for e in events[1:])
    [status] = await rollout_status(stack, spec.alias, topics=topics)
    assert status.active and "n/a (insufficient)" in format_status([status])


async def test_restarted_judge_resumes_step_and_failure_count(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique)
    spec = _spec(unique)
    await start_rollout(stack, spec, topics=topics, started_at=T0)
    group = f"judge.{unique}"
    async with Running(stack, topics, group):
        _publish(stack, topics.windows, _interval(spec, 0) + _interval(spec, 1, latency_scale=3.0))
        # interval 2: only the stable side so far, so interval 2 stays open (its offset is not committed)
        _publish(stack, topics.windows, _interval(spec, 2, canary=False))
        events = await _collect(stack, topics.rollouts, lambda es: len(es) >= 3)
        await asyncio.sleep(0.5)
    assert _actions(events) == [("start", 1), ("step_up", 2), ("hold", 2)]
    assert "failed interval 1 of 2" in events[-1].reason

    async with Running(stack, topics, group) as judge:
        assert judge.runs[spec.alias].progress.step == 2
        assert judge.runs[spec.alias].progress.consecutive_failures == 1
        assert judge.runs[spec.alias].last_decided == 1
        _publish(stack, topics.windows, _interval(spec, 2, stable=False, latency_scale=3.0))
        events = await _collect(stack, topics.rollouts, lambda es: len(es) >= 4)
        await asyncio.sleep(0.3)
        assert [e.action for e in judge.published] == ["rollback"]  # intervals 0 and 1 were not decided again
    rollback = events[-1]
    assert rollback.action == "rollback" and rollback.reason.endswith("for 2 consecutive intervals")
    assert "canary n=500, stable n=500" in rollback.reason  # the stable window read again after the restart


async def test_abort_bad_windows_and_start_again(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique)
    spec = _spec(unique)
    with pytest.raises(RolloutError, match="no rollout for alias"):
        await abort_rollout(stack, spec.alias, topics=topics)
    first = await start_rollout(stack, spec, topics=topics, started_at=T0)
    async with Running(stack, topics, f"judge.{unique}") as judge:
        producer = EventProducer(stack)
        producer.send_raw(topics.windows, b"{not json", key=b"x")
        producer.flush()
        future = window(spec.canary, datetime.now(UTC) + timedelta(hours=2), seconds=INTERVAL)
        _publish(stack, topics.windows, [future])
        # The two land on different partitions, so their dead letters may come in either order.
        letters = await _collect(stack, topics.deadletter, lambda d: len(d) >= 2)
        letter, late = sorted(letters, key=lambda d: d.error_kind != "not_json")
        assert isinstance(letter, DeadLetter) and letter.error_kind == "not_json" and letter.original() == b"{not json"
        assert late.error_kind == "from_future" and "ahead of the judge's clock" in late.error

        aborted = await abort_rollout(stack, spec.alias, reason="bad vibes", topics=topics)
        assert aborted.action == "abort" and aborted.weights == {spec.stable: 1.0, spec.canary: 0.0}
        while judge.runs[spec.alias].progress.status != "aborted":
            await asyncio.sleep(0.05)
        _publish(stack, topics.windows, [w for k in range(2) for w in _interval(spec, k)])
        await asyncio.sleep(1.0)
        assert len(judge.published) == 0  # an aborted rollout is not judged
        with pytest.raises(RolloutError, match="not active"):
            await abort_rollout(stack, spec.alias, topics=topics)
        second = await start_rollout(stack, spec, topics=topics, started_at=T0 + timedelta(seconds=100))
        assert second.rollout_id != first.rollout_id
        while judge.runs[spec.alias].event.rollout_id != second.rollout_id:
            await asyncio.sleep(0.05)
        _publish(stack, topics.windows, [w for k in range(10, 11) for w in _interval(spec, k)])
        events = await _collect(stack, topics.rollouts, lambda es: len(es) >= 4)
    assert _actions(events) == [("start", 1), ("abort", 0), ("start", 1), ("step_up", 2)]
    assert events[-1].rollout_id == second.rollout_id and events[1].reason == "abort: bad vibes"
    rows = _rows(stack, first.rollout_id)
    assert [(r[0], r[1]) for r in rows] == [(-1, "abort"), (-1, "start")]


async def test_a_decision_landing_after_an_abort_is_overridden(stack: Settings, unique: str) -> None:
    topics = _topics(stack, unique)
    spec = _spec(unique)
    started = await start_rollout(stack, spec, topics=topics, started_at=T0)
    async with Running(stack, topics, f"judge.{unique}") as judge:
        await abort_rollout(stack, spec.alias, topics=topics)
        # The race: the judge decides an interval and its event lands on the topic after the operator's abort.
        late_decision = started.model_copy(update={"action": "step_up", "step": 2, "weights": spec.weights(2)})
        await judge._publish(late_decision, judge.runs[spec.alias], T0 + timedelta(seconds=INTERVAL))
        events = await _collect(stack, topics.rollouts, lambda es: len(es) >= 4)
    assert _actions(events) == [("start", 1), ("abort", 0), ("step_up", 2), ("abort", 0)]
    assert events[-1].rollout_id == started.rollout_id and events[-1].weights == {spec.stable: 1.0, spec.canary: 0.0}
    [status] = await rollout_status(stack, spec.alias, topics=topics)
    assert status.action == "abort" and not status.active
