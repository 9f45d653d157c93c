"""The notifier on the real broker with real local HTTP receivers: exactly-once after a failure, filters,
permanent failures, restarts before and after the commit, dead letters."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.codec import decode, encode, make_event
from schemas.deadletter import DeadLetter
from schemas.envelope import utc_now
from schemas.rollouts import RolloutEvent
from schemas.topics import ALERTS, DEADLETTER
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.core.signals import serve_until_signalled
from services.infra.process import free_port
from services.notifier.config import NotifierConfig
from services.notifier.service import Notifier, NotifierTopics
from tests.notifier.helpers import SECRET, Reply, alert_event, receiver, wait_until

FAST_RETRY: dict[str, Any] = {"max_attempts": 3, "base_backoff_s": 0.05, "max_backoff_s": 0.2, "request_timeout_s": 2.0}


def _topics(settings: Settings, unique: str) -> NotifierTopics:
    """Per-test topics laid out like the catalog's (one partition for alerts), created before anything is sent."""
    topics = NotifierTopics(alerts=f"t.alerts.{unique}", deadletter=f"t.dl.{unique}")
    ensure_topics(settings, [replace(ALERTS, name=topics.alerts), replace(DEADLETTER, name=topics.deadletter)])
    return topics


def _config(unique: str, hooks: list[dict[str, Any]], **extra: Any) -> NotifierConfig:
    return NotifierConfig.model_validate({
        "webhooks": [{"secret": SECRET, **h} for h in hooks], "retry": FAST_RETRY, "group_id": f"notify.{unique}", **extra,
    })


class Running:
    """A notifier running as a task of the test's event loop."""

    def __init__(self, settings: Settings, config: NotifierConfig, topics: NotifierTopics, **kwargs: Any) -> None:
        self.notifier = Notifier(settings, config, topics=topics, **kwargs)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Notifier:
        self.task = task = asyncio.create_task(self.notifier.run())
        await wait_until(lambda: self.notifier.ready.is_set() or task.done(), 30, "the notifier to join")
        return self.notifier

    async def __aexit__(self, *exc: Any) -> None:
        self.notifier.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 20)


def _publish(settings: Settings, topic: str, items: list[Any]) -> None:
    """Envelopes (encoded by the codec) or raw bytes, in order."""
    producer = EventProducer(settings)
    for item in items:
        if isinstance(item, bytes):
            producer.send_raw(topic, item)
        else:
            producer.send(topic, item, key=getattr(item.payload, "alert_id", None))
    producer.flush()


async def test_each_alert_reaches_each_matching_webhook_exactly_once_after_one_failure(
    local_stack: Settings, unique: str,
) -> None:
    # /all fails the first POST of every alert (500), then accepts; /pager only wants critical budget alerts.
    def script(path: str, key: str, nth: int) -> Reply:
        return Reply(500) if path == "/all" and nth == 1 else Reply(200)

    topics = _topics(local_stack, unique)
    old = utc_now() - timedelta(days=2)
    events = [alert_event("budget-crit", "budget", "critical", observed={"spend_usd": 12.5, "limit_usd": 10}),
              alert_event("budget-warn", "budget", "warning"),
              alert_event("drift-crit", "drift", "critical"),
              alert_event("safety-info", "safety_spike", "info")]
    stale = alert_event("too-old", "budget", "critical", occurred_at=old)
    out = io.StringIO()
    with receiver(script) as rx:
        config = _config(unique, [
            {"name": "all", "url": rx.url("/all")},
            {"name": "pager", "url": rx.url("/pager"), "kinds": ["budget"], "min_severity": "critical"},
        ], console=True, max_age_s=3600)
        # The first event twice (a producer retry upstream), and one alert too old to page anyone about.
        _publish(local_stack, topics.alerts, [*events, events[0], stale])
        async with Running(local_stack, config, topics, console=out) as notifier:
            await wait_until(lambda: notifier.stats.consumer.committed.get(f"{topics.alerts}/0") == 6, 30, "all 6 committed")

        accepted = rx.accepted("/all")
        assert sorted(p.key for p in accepted) == sorted(str(e.event_id) for e in events)  # each exactly once
        for event in events:
            first, retry = rx.posts_to("/all", str(event.event_id))  # exactly two POSTs: the 500 and the retry
            assert (first.status, retry.status) == (500, 200)
            assert first.signature_ok and retry.signature_ok and first.body == retry.body
            assert json.loads(retry.body)["alert"]["alert_id"] == event.payload.alert_id
        assert [p.key for p in rx.posts_to("/pager")] == [str(events[0].event_id)]
        assert all(p.signature_ok for p in rx.posts)
        assert not rx.posts_to("/all", str(stale.event_id))

    stats = notifier.stats
    assert stats.delivered == {"all": 4, "pager": 1} and stats.failed == {}
    assert stats.duplicates_skipped >= 1 and stats.stale_skipped == 1 and stats.alerts == 6
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # the duplicate and the stale alert are not printed
    assert "CRITICAL" in lines[0] and "budget" in lines[0] and "budget alert budget-crit" in lines[0]
    assert "limit_usd=10" in lines[0] and "spend_usd=12.5" in lines[0] and "tenant acme" in lines[0]


async def test_rejecting_and_unreachable_webhooks_fail_permanently_and_the_notifier_keeps_going(
    local_stack: Settings, unique: str,
) -> None:
    topics = _topics(local_stack, unique)
    events = [alert_event(f"a{i}", "rollout", "critical") for i in range(3)]
    with receiver(lambda path, key, nth: Reply(400) if path == "/bad" else Reply(200)) as rx:
        config = _config(unique, [
            {"name": "bad", "url": rx.url("/bad")},
            {"name": "down", "url": f"http://127.0.0.1:{free_port()}/hook"},
            {"name": "good", "url": rx.url("/good")},
        ])
        _publish(local_stack, topics.alerts, events)
        async with Running(local_stack, config, topics) as notifier:
            await wait_until(lambda: notifier.stats.consumer.committed.get(f"{topics.alerts}/0") == 3, 30, "all committed")
        assert sorted(p.key for p in rx.accepted("/good")) == sorted(str(e.event_id) for e in events)
        bad = rx.posts_to("/bad")
        assert len(bad) == 3 and len({p.key for p in bad}) == 3  # one POST per alert: a 400 is not retried
    assert notifier.stats.rejected == {"bad": 3}
    assert notifier.stats.exhausted == {"down": 3}  # each after max_attempts, then on to the next alert
    assert notifier.stats.failed == {"bad": 3, "down": 3} and notifier.stats.delivered == {"good": 3}


async def test_restart_after_commit_does_not_resend_and_restart_before_commit_resends_with_same_key(
    local_stack: Settings, unique: str,
) -> None:
    first, second = alert_event("first", "drift", "warning"), alert_event("second", "drift", "warning")
    k1, k2 = str(first.event_id), str(second.event_id)

    # The receiver processes the second alert's first POST but answers too late (after the client's 0.5 s
    # timeout): the notifier cannot know it arrived, so it must not commit, and must send it again later.
    def script(path: str, key: str, nth: int) -> Reply:
        return Reply(200, delay_s=1.5) if key == k2 and nth == 1 else Reply(200)

    topics = _topics(local_stack, unique)
    retry = {**FAST_RETRY, "request_timeout_s": 0.5, "base_backoff_s": 30.0, "max_backoff_s": 30.0}
    with receiver(script) as rx:
        config = _config(unique, [{"name": "hook", "url": rx.url("/h")}], retry=retry)
        _publish(local_stack, topics.alerts, [first])
        async with Running(local_stack, config, topics) as a:
            await wait_until(lambda: a.stats.consumer.committed.get(f"{topics.alerts}/0") == 1, 30, "the first alert committed")

        _publish(local_stack, topics.alerts, [second])
        async with Running(local_stack, config, topics) as b:
            await wait_until(lambda: bool(rx.posts_to("/h", k2)), 30, "the second alert's first POST")
            stop_asked = time.monotonic()
        # Stopping interrupted the 30 s backoff at once, and nothing was committed for the second alert.
        assert time.monotonic() - stop_asked < 10
        assert b.stats.interrupted == 1 and b.stats.consumer.committed == {} and b.stats.delivered == {}
        assert [p.key for p in rx.posts_to("/h")] == [k1, k2]  # the committed first alert was not resent

        async with Running(local_stack, config, topics) as c:
            await wait_until(lambda: c.stats.consumer.committed.get(f"{topics.alerts}/0") == 2, 30, "the second alert committed")
        posts = rx.posts_to("/h")
        assert [p.key for p in posts] == [k1, k2, k2]
        assert posts[1].body == posts[2].body and all(p.signature_ok for p in posts)
        assert c.stats.delivered == {"hook": 1}


async def test_malformed_events_go_to_the_dead_letter_topic_and_the_loop_continues(
    local_stack: Settings, unique: str,
) -> None:
    topics = _topics(local_stack, unique)
    rollout = make_event(RolloutEvent(alias="x", rollout_id="r", stable_deployment="s", action="step_up", step=1,
                                      weights={"s": 1.0}), source="test", tenant_id="t")
    good = alert_event("after-bad-input", "sink_failure", "critical")
    with receiver() as rx:
        config = _config(unique, [{"name": "hook", "url": rx.url("/h")}])
        _publish(local_stack, topics.alerts, [b"not json {", rollout, good])
        async with Running(local_stack, config, topics) as notifier:
            await wait_until(lambda: notifier.stats.consumer.committed.get(f"{topics.alerts}/0") == 3, 30, "all committed")
        assert [p.key for p in rx.accepted("/h")] == [str(good.event_id)]
    assert notifier.stats.consumer.dead_lettered == 2

    consumer = AIOKafkaConsumer(topics.deadletter, **aiokafka_consumer_kwargs(local_stack, None))
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + 20
        while len(letters) < 2:
            assert time.monotonic() < deadline, f"only {len(letters)} of 2 dead letters after 20 s"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                letters += [decode(r.value, r.headers, expect=DeadLetter).payload for r in records]
    finally:
        await consumer.stop()
    assert [(d.offset, d.error_kind) for d in letters] == [(0, "not_json"), (1, "wrong_type")]
    assert all(d.topic == topics.alerts and d.consumer == config.group_id for d in letters)
    assert base64.b64decode(letters[0].original_b64) == b"not json {"
    assert letters[1].original() == encode(rollout)[0]


async def test_the_notifier_prints_to_the_console_and_stops_on_sigterm(local_stack: Settings, unique: str) -> None:
    """The CLI's way to run it: console only, stopped by SIGTERM through the shared signal helper."""
    topics = _topics(local_stack, unique)
    event = alert_event("cli", "unknown_model_price", "warning", observed={"requests": 3})
    _publish(local_stack, topics.alerts, [event])
    out = io.StringIO()
    config = NotifierConfig(console=True, group_id=f"notify.{unique}")
    notifier = Notifier(local_stack, config, topics=topics, console=out)
    task = asyncio.create_task(serve_until_signalled(notifier.run(), notifier.stop))
    await wait_until(lambda: "unknown_model_price" in out.getvalue() or task.done(), 30, "the console line")
    signal.raise_signal(signal.SIGTERM)  # at once: a graceful stop still commits what it printed
    await asyncio.wait_for(task, 20)
    stats = notifier.stats
    assert stats.printed == 1 and stats.consumer.committed == {f"{topics.alerts}/0": 1}
    line, = out.getvalue().splitlines()
    assert " WARNING " in line and "[tenant acme, deployment dep-1]" in line and line.endswith("requests=3")
    assert line.startswith(event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
