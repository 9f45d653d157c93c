"""The Faust guard rails on the real broker: injected failures lose nothing, and nothing unhandled is committed.

Each test runs ``tests.streams.faust_probe`` (a Faust worker built with services.core.faust_runtime) as a process.
Plain faust-streaming 0.15.3 loses the first batch of a fresh partition and a single-message batch when the agent
raises; with the guard a failure is retried or dead-lettered, and committed offsets never pass an unhandled record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.deadletter import DeadLetter
from schemas.topics import TopicSpec
from services.core.faust_runtime import EXIT_FATAL
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import confluent_consumer_config, confluent_producer_config
from services.core.settings import Settings
from tests.streams.helpers import wait_until

PARTITIONS = 3


def _topic(settings: Settings, unique: str) -> str:
    name = f"t-{unique}.probe"
    ensure_topics(settings, [TopicSpec(name, DeadLetter, "test", PARTITIONS)])  # any payload: the probe reads bytes
    return name


def _produce(settings: Settings, topic: str, values: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """Send (partition, value) pairs in order; returns their (partition, offset)."""
    producer = Producer(confluent_producer_config(settings))
    positions: list[tuple[int, int]] = []

    def done(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None  # set on every delivered message
        positions.append((partition, offset))

    for partition, value in values:
        producer.produce(topic, value=value.encode(), partition=partition, on_delivery=done)
        producer.flush(10)  # one at a time: offsets in the order given
    return positions


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer(confluent_consumer_config(settings, group))
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@contextmanager
def _probe(settings: Settings, topic: str, group: str, out: Path, poison_handler: str = "ok"
           ) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **settings.to_env()}
    log = (out / "worker.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "tests.streams.faust_probe", "--topic", topic, "--group", group,
                             "--out", str(out), "--poison-handler", poison_handler],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _stored(out: Path) -> set[tuple[int, int]]:
    return {(int(p), int(o)) for p, o in (line.split() for line in _lines(out / "stored"))}


def _dead(out: Path) -> dict[tuple[int, int], str]:
    return {(int(p), int(o)): reason for p, o, reason in (line.split() for line in _lines(out / "dead"))}


def test_failures_in_a_fresh_partitions_first_batch_and_in_single_message_batches_lose_nothing(
    local_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = local_stack
    topic, group = _topic(settings, unique), f"probe-{unique}"
    # Partition 0: its first batch fails transiently twice, and has a poison record in the middle.
    # Partition 1: a single message, poison. Partition 2: a single message failing transiently once.
    plan = ([(0, "transient:2:a")] + [(0, f"good-{i}") for i in range(20)] + [(0, "poison:b")]
            + [(0, f"good-{i}") for i in range(20, 40)] + [(1, "poison:c")] + [(2, "transient:1:d")])
    positions = _produce(settings, topic, plan)
    poison = {pos for pos, (_, value) in zip(positions, plan, strict=True) if value.startswith("poison:")}
    with _probe(settings, topic, group, tmp_path) as proc:
        ends = {p: max(o for q, o in positions if q == p) + 1 for p in range(PARTITIONS)}
        wait_until(lambda: _committed(settings, group, topic) == ends or proc.poll() is not None, 60,
                   "every partition committed to its end")
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    stored, dead = _stored(tmp_path), _dead(tmp_path)
    assert set(dead) == poison and set(dead.values()) == {"ValueError"}
    assert stored == set(positions) - poison
    assert stored.isdisjoint(dead)


def test_a_fatal_failure_exits_hard_without_committing_past_it_and_a_restart_replays(
    local_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = local_stack
    topic, group = _topic(settings, unique), f"probe-{unique}"
    plan = [(0, f"good-{i}") for i in range(10)] + [(0, "poison:x")] + [(0, f"good-{i}") for i in range(10, 20)]
    positions = _produce(settings, topic, plan)
    with _probe(settings, topic, group, tmp_path, poison_handler="fatal") as proc:
        assert proc.wait(60) == EXIT_FATAL, (tmp_path / "worker.log").read_text()[-3000:]
    committed = _committed(settings, group, topic).get(0, 0)
    assert committed <= positions[10][1], f"committed {committed} past the poison record {positions[10]}"
    with _probe(settings, topic, group, tmp_path) as proc:
        wait_until(lambda: _committed(settings, group, topic).get(0) == positions[-1][1] + 1, 60,
                   "the restarted worker committed the partition to its end")
    assert _stored(tmp_path) >= set(positions) - {positions[10]}
    assert set(_dead(tmp_path)) == {positions[10]}


def test_a_stalled_batch_is_never_acked_and_sigterm_still_stops_the_worker(
    local_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = local_stack
    topic, group = _topic(settings, unique), f"probe-{unique}"
    positions = _produce(settings, topic, [(0, f"good-{i}") for i in range(30)])
    with _probe(settings, topic, group, tmp_path) as proc:
        wait_until(lambda: _committed(settings, group, topic).get(0) == positions[-1][1] + 1, 60, "first records")
        stalled = _produce(settings, topic, [(0, "stall:s")] + [(0, f"after-{i}") for i in range(5)])
        wait_until(lambda: "injected stall" in (tmp_path / "worker.log").read_text(), 30, "the stall is retried")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) is not None
    assert _committed(settings, group, topic).get(0) == stalled[0][1], "offsets moved past the stalled record"
    assert not _stored(tmp_path) & set(stalled)
