"""The consumer runtime and the compacted-topic follower on the real broker: commits after side effects (out of
order), dead letters with deterministic ids, transient failures retried, others dead-lettered, released work
redelivered, backpressure, graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaTimeoutError
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from schemas import DeadLetter, Feedback, decode, make_event
from schemas.envelope import Envelope
from schemas.topics import TopicSpec
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs, confluent_consumer_config
from services.core.kafka.consumer import PROCESSING_FAILED, GroupConsumer, Handler, Record, Work
from services.core.kafka.deadletters import dead_letter_id
from services.core.kafka.follower import CompactedFollower
from services.core.kafka.from_beginning import TopicMissing, assign_from_beginning, caught_up
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.core.signals import serve_until_signalled
from tests.notifier.helpers import wait_until


def _topics(settings: Settings, unique: str, partitions: int = 1) -> tuple[str, str]:
    source, letters = f"t.rt.{unique}", f"t.rt-dl.{unique}"
    ensure_topics(settings, [TopicSpec(source, Feedback, "request_id", partitions),
                             TopicSpec(letters, DeadLetter, "position", 1)])
    return source, letters


def _publish(settings: Settings, topic: str, items: list[str | bytes], partition: int | None = None) -> None:
    """Feedback events for request ids (str), raw bytes as they are; in order."""
    producer = EventProducer(settings)
    for item in items:
        if isinstance(item, bytes):
            producer.send_raw(topic, item)
        else:
            producer.send(topic, make_event(Feedback(request_id=item, score=0.5), source="t", tenant_id="t"), key=item)
    producer.flush()


def _runtime(settings: Settings, unique: str, source: str, letters: str, handler: Handler, **kw: Any) -> GroupConsumer:
    return GroupConsumer(settings, topics=[source], group_id=f"rt.{unique}", handler=handler, expect=Feedback,
                         source="test", deadletter_topic=letters, poll_ms=50, commit_interval_s=0.1, **kw)


def _committed(settings: Settings, group: str, topic: str, partitions: int = 1) -> list[int]:
    consumer = Consumer(confluent_consumer_config(settings, group))
    try:
        got = consumer.committed([ConfluentTopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        consumer.close()


async def _read_letters(settings: Settings, topic: str, n: int, timeout_s: float = 20) -> list[Envelope[DeadLetter]]:
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    out: list[Envelope[DeadLetter]] = []
    try:
        async def enough() -> None:
            while len(out) < n:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    out.extend(decode(r.value, r.headers, expect=DeadLetter) for r in records)

        await asyncio.wait_for(enough(), timeout_s)
    finally:
        await consumer.stop()
    return out


@dataclass
class _At:
    """A source position, as a dead letter sees a record (not frozen: SourceRecord's attributes are plain ones)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


class Running:
    """A runtime running as a task of the test's loop; leaving stops it and waits for it."""

    def __init__(self, runtime: GroupConsumer) -> None:
        self.runtime = runtime
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GroupConsumer:
        self.task = task = asyncio.create_task(self.runtime.run())
        await wait_until(lambda: self.runtime.assigned.is_set() or task.done(), 30, "partitions")
        return self.runtime

    async def __aexit__(self, *exc: object) -> None:
        self.runtime.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def test_commits_follow_side_effects_even_out_of_order(local_stack: Settings, unique: str) -> None:
    source, letters = _topics(local_stack, unique)
    gates: dict[str, asyncio.Event] = {f"r{i}": asyncio.Event() for i in range(5)}
    seen: list[str] = []

    async def handler(event: Envelope[Feedback], record: Record) -> Work | None:
        seen.append(event.payload.request_id)
        gate = gates[event.payload.request_id]
        return gate.wait()

    _publish(local_stack, source, list(gates))
    async with Running(_runtime(local_stack, unique, source, letters, handler)) as runtime:
        await wait_until(lambda: len(seen) == 5, 30, "all 5 handed to the handler")
        assert seen == list(gates)  # in partition order
        for rid in ("r1", "r2", "r4"):  # finish out of order: r0 still open, nothing may be committed
            gates[rid].set()
        await wait_until(lambda: runtime.stats.done == 3, 10, "three done")
        await asyncio.sleep(0.3)  # several commit intervals: a wrong commit would have happened by now
        assert runtime.stats.committed == {}
        gates["r0"].set()
        await wait_until(lambda: runtime.stats.committed.get(f"{source}/0") == 3, 10, "commit up to r3 (still open)")
        gates["r3"].set()
        await wait_until(lambda: runtime.stats.committed.get(f"{source}/0") == 5, 10, "everything committed")
    assert _committed(local_stack, f"rt.{unique}", source) == [5]


async def test_bad_records_are_dead_lettered_transient_failures_retried_and_the_loop_goes_on(
    local_stack: Settings, unique: str,
) -> None:
    source, letters = _topics(local_stack, unique)
    attempts: dict[str, int] = {}

    async def handler(event: Envelope[Feedback], record: Record) -> Work | None:
        rid = event.payload.request_id
        attempts[rid] = attempts.get(rid, 0) + 1
        if rid == "flaky" and attempts[rid] < 3:
            raise KafkaTimeoutError("broker busy")  # transient: called again
        if rid == "poison":
            raise ValueError("cannot handle this one")  # not transient: dead-lettered

        async def later_failure() -> None:
            raise RuntimeError("the side effect failed")

        return later_failure() if rid == "late-poison" else None

    _publish(local_stack, source, [b"{not json", "ok-1", "flaky", "poison", "late-poison", "ok-2"])
    async with Running(_runtime(local_stack, unique, source, letters, handler, retry_initial_s=0.05)) as runtime:
        await wait_until(lambda: runtime.stats.committed.get(f"{source}/0") == 6, 30, "all six committed")
    assert attempts == {"ok-1": 1, "flaky": 3, "poison": 1, "late-poison": 1, "ok-2": 1}
    assert runtime.stats.retries == 2 and runtime.stats.failed == 2 and runtime.stats.dead_lettered == 3

    got = await _read_letters(local_stack, letters, 3)
    by_offset = {e.payload.offset: e for e in got}
    assert sorted(by_offset) == [0, 3, 4]
    assert by_offset[0].payload.error_kind == "not_json" and by_offset[0].payload.original() == b"{not json"
    assert by_offset[3].payload.error_kind == PROCESSING_FAILED and "cannot handle this one" in by_offset[3].payload.error
    assert by_offset[4].payload.error_kind == PROCESSING_FAILED and "side effect failed" in by_offset[4].payload.error
    for offset, envelope in by_offset.items():  # deterministic ids: a redelivered record's letter collapses
        assert envelope.payload.topic == source and envelope.payload.consumer == f"rt.{unique}"
        assert envelope.event_id == dead_letter_id(_At(source, 0, offset), f"rt.{unique}")


async def test_released_work_is_not_committed_and_is_redelivered(local_stack: Settings, unique: str) -> None:
    source, letters = _topics(local_stack, unique)
    handled: list[tuple[int, str]] = []

    def handler_of(run: int, release: set[str]) -> Handler:
        async def handler(event: Envelope[Feedback], record: Record) -> Work | None:
            handled.append((run, event.payload.request_id))

            async def outcome() -> bool:
                return event.payload.request_id not in release

            return outcome()

        return handler

    _publish(local_stack, source, ["a", "b", "c"])
    async with Running(_runtime(local_stack, unique, source, letters, handler_of(1, {"b"}))) as runtime:
        await wait_until(lambda: runtime.stats.done == 2 and runtime.stats.released == 1, 30, "a, c done; b released")
        await asyncio.sleep(0.3)
        assert runtime.stats.committed.get(f"{source}/0") == 1  # past a only: b is open
    async with Running(_runtime(local_stack, unique, source, letters, handler_of(2, set()))) as again:
        await wait_until(lambda: again.stats.committed.get(f"{source}/0") == 3, 30, "b and c redelivered and done")
    assert handled == [(1, "a"), (1, "b"), (1, "c"), (2, "b"), (2, "c")]


async def test_backpressure_bounds_open_work_and_stop_commits_only_what_is_done(
    local_stack: Settings, unique: str,
) -> None:
    source, letters = _topics(local_stack, unique, partitions=3)
    release = asyncio.Event()
    started: list[str] = []

    async def handler(event: Envelope[Feedback], record: Record) -> Work | None:
        started.append(event.payload.request_id)
        return release.wait()

    _publish(local_stack, source, [f"r{i}" for i in range(30)])
    runtime = _runtime(local_stack, unique, source, letters, handler, max_in_flight=4, shutdown_grace_s=0.2)
    async with Running(runtime):
        await wait_until(lambda: len(started) == 4, 30, "four in flight")
        await asyncio.sleep(0.5)  # the loop keeps polling while full; it must not take more
        assert len(started) == 4 and runtime.in_flight() == 4 and runtime.stats.paused_times >= 1
        release.set()
        await wait_until(lambda: runtime.stats.done == 30, 30, "all 30 done, four at a time")
        assert runtime.stats.max_in_flight == 4
        release.clear()
        _publish(local_stack, source, ["late-1", "late-2"])
        await wait_until(lambda: len(started) == 32, 30, "two more open")
    # Stopped with two open (past the grace period): released, uncommitted, for the next member.
    assert sum(_committed(local_stack, f"rt.{unique}", source, 3)) == 30
    assert runtime.stats.released == 2 and runtime.stats.done == 30


async def test_sigterm_stops_gracefully_through_the_shared_helper(local_stack: Settings, unique: str) -> None:
    source, letters = _topics(local_stack, unique)
    done = asyncio.Event()

    async def handler(event: Envelope[Feedback], record: Record) -> Work | None:
        done.set()
        return None

    runtime = _runtime(local_stack, unique, source, letters, handler)
    task = asyncio.create_task(serve_until_signalled(runtime.run(), runtime.stop))
    _publish(local_stack, source, ["x"])
    await asyncio.wait_for(done.wait(), 30)
    signal.raise_signal(signal.SIGTERM)
    await asyncio.wait_for(task, 30)
    assert _committed(local_stack, f"rt.{unique}", source) == [1]


async def test_follower_rebuilds_state_skips_bad_events_and_keeps_following(local_stack: Settings, unique: str) -> None:
    topic = f"t.state.{unique}"
    ensure_topics(local_stack, [TopicSpec(topic, Feedback, "request_id", 2, cleanup_policy="compact", retention_ms=None)])
    _publish(local_stack, topic, ["k1", b"garbage", "k2"])
    tombstones = EventProducer(local_stack)
    tombstones.send_raw(topic, None, key=b"k1")
    tombstones.flush()
    state: list[str] = []
    follower = CompactedFollower(local_stack, [topic], lambda e, r: state.append(e.payload.request_id),
                                 expect=Feedback, poll_ms=50, name="test")
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_ready(task, 30)
        assert sorted(state) == ["k1", "k2"] and follower.skipped == 1
        _publish(local_stack, topic, ["k3"])
        await wait_until(lambda: "k3" in state, 10, "a new event applied")
    finally:
        follower.stop()
        await asyncio.wait_for(task, 10)


async def test_reading_from_the_beginning_finds_a_topic_created_after_the_consumer_started(
    local_stack: Settings, unique: str,
) -> None:
    # The consumer's metadata comes from its start; the topic does not exist yet then. Assigning from that
    # metadata would assign no partitions: nothing read, ever, and "caught up" at once.
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(local_stack, None, fetch_max_wait_ms=50))
    await consumer.start()
    try:
        topic = f"t.late.{unique}"
        ensure_topics(local_stack, [TopicSpec(topic, Feedback, "request_id", 2, cleanup_policy="compact", retention_ms=None)])
        _publish(local_stack, topic, ["k1", "k2"])
        tps = await assign_from_beginning(consumer, [topic], timeout_s=30)
        assert sorted(tp.partition for tp in tps) == [0, 1]
        read: list[str] = []

        async def both_read() -> None:
            while len(read) < 2:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    read.extend(decode(r.value, expect=Feedback).payload.request_id for r in records if r.value)

        await asyncio.wait_for(both_read(), 30)
        assert sorted(read) == ["k1", "k2"] and await caught_up(consumer, tps)
    finally:
        await consumer.stop()


async def test_reading_a_topic_that_does_not_exist_fails_with_its_name(local_stack: Settings, unique: str) -> None:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(local_stack, None))
    await consumer.start()
    try:
        with pytest.raises(TopicMissing, match=f"t.absent.{unique}"):
            await assign_from_beginning(consumer, [f"t.absent.{unique}"], timeout_s=1.0)
    finally:
        await consumer.stop()


async def test_follower_reports_a_failure_instead_of_waiting(local_stack: Settings) -> None:
    follower = CompactedFollower(local_stack.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"}), ["nowhere"],
                                 lambda e, r: None, poll_ms=50, name="test")
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_ready(task, 30)
    except Exception as exc:  # noqa: BLE001 - any error but a silent wait
        assert not isinstance(exc, TimeoutError), exc
    else:
        raise AssertionError("an unreachable broker cannot be caught up with")
    finally:
        follower.stop()
        await asyncio.gather(task, return_exceptions=True)

