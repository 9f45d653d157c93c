"""A storm of hostile input interleaved with good events: the worker stays up, every bad event is dead-lettered with
its reason (and without its personal data in ClickHouse), and every good event is stored exactly once.

More than 10,000 hostile records of every kind go to the three input topics: JSON nested 5,000 deep, lone
surrogates (as JSON escapes that pass validation but not ClickHouse, and as raw bytes), values over the topic's
message size once encoded as a dead letter, invalid UTF-8, wrong types (fields and whole events), empty values,
garbage, and duplicates of all of them; between them, good requests, completions and feedback, some sent twice.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from schemas import encode
from services.core.clickhouse.migrations import migrate
from services.core.kafka.config import confluent_producer_config
from services.core.settings import Settings
from tests.streams.helpers import (
    WorkerProcess,
    completion_event,
    feedback_event,
    make_config,
    request_event,
    rows,
    scalar,
    wait_until,
)

EMAIL = "storm.victim@example.com"


def test_a_hostile_storm_is_dead_lettered_and_good_events_are_stored_once(
    local_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = local_stack
    migrate(settings)
    config = make_config(unique, tmp_path, batch_size=500)
    tenant = f"storm-{unique}"
    topics = [config.requests_topic, config.completions_topic, config.feedback_topic]
    rng = random.Random(5)
    good_json = [json.loads(encode(ev)[0]) for ev in (
        request_event(tenant, "x", text=f"mail {EMAIL}"), completion_event(tenant, "x", text=f"mail {EMAIL}"),
        feedback_event(tenant, "x", 0.5))]

    def hostile(kind: str, t: int, i: int) -> bytes:
        body = dict(good_json[t], event_id=f"00000000-0000-4000-8000-{i:012d}")
        if kind == "deep":
            return b'{"a":' * 5000 + b"1" + b"}" * 5000
        if kind == "surrogate_escape":  # valid JSON and a valid event, but ClickHouse refuses the text
            payload = dict(body["payload"], request_id=f"{tenant}-sur-{i}")
            if t == 0:
                payload["messages"] = [{"role": "user", "content": f"{EMAIL} \udc80"}]
            elif t == 1:
                payload["text"] = f"{EMAIL} \udc80"
            else:
                payload["comment"] = f"{EMAIL} \udc80"
            return json.dumps(dict(body, payload=payload)).encode()
        if kind == "surrogate_bytes":  # a surrogate encoded as UTF-8 bytes: not valid UTF-8
            return b'{"note": "\xed\xb2\x80", ' + json.dumps(body).encode()[1:]
        if kind == "invalid_utf8":
            return b"\xff\xfe" + json.dumps(body).encode()
        if kind == "wrong_field_type":
            return json.dumps(dict(body, payload=dict(body["payload"], request_id=["not", "a", "string"]))).encode()
        if kind == "wrong_event":  # a valid event of another topic's type
            return json.dumps(dict(good_json[(t + 1) % 3], event_id=body["event_id"])).encode()
        if kind == "empty":
            return b""
        if kind == "garbage":
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        raise AssertionError(kind)

    kinds = ["deep", "surrogate_escape", "surrogate_bytes", "invalid_utf8", "wrong_field_type", "wrong_event",
             "empty", "garbage"]
    producer = Producer(confluent_producer_config(settings, **{"message.max.bytes": 4_000_000}))
    bad_positions: dict[tuple[str, int, int], str] = {}
    kind_of: dict[bytes, str] = {}
    errors: list[object] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        key, topic, partition, offset = msg.key(), msg.topic(), msg.partition(), msg.offset()
        assert key is not None and topic is not None and partition is not None and offset is not None  # all set once delivered
        kind = kind_of[key]
        if kind != "good":
            bad_positions[(topic, partition, offset)] = kind

    def send(topic: str, value: bytes, kind: str, key: str) -> None:
        key_bytes = f"{key}/{len(kind_of)}".encode()  # unique per send, so the delivery report names its kind
        kind_of[key_bytes] = kind
        while True:
            try:
                producer.produce(topic, value=value, key=key_bytes, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    good: dict[str, set[str]] = {"raw_requests": set(), "raw_completions": set(), "raw_feedback": set()}
    tables = ["raw_requests", "raw_completions", "raw_feedback"]
    for i in range(11_000):
        t = i % 3
        kind = kinds[i % len(kinds)]
        value = hostile(kind, t, i)
        send(topics[t], value, kind, f"h-{i}")
        if i % 7 == 0:  # a duplicate of the same hostile bytes: dead-lettered again (its own position)
            send(topics[t], value, kind, f"h-{i}")
        if i % 5 == 0:
            rid = f"{tenant}-{i}"
            ev = [request_event(tenant, rid), completion_event(tenant, rid), feedback_event(tenant, rid, 0.7)][t]
            for _ in range(2 if i % 10 == 0 else 1):  # some good events are delivered twice
                send(topics[t], encode(ev)[0], "good", rid)
            good[tables[t]].add(rid if t < 2 else str(ev.event_id))
    oversize = json.dumps(dict(good_json[0], payload=dict(good_json[0]["payload"], messages=[
        {"role": "user", "content": f"{EMAIL} " + "x" * 1_000_001}]))).encode()
    for i in range(3):
        send(topics[0], oversize, "oversize", f"big-{i}")
    assert producer.flush(60) == 0 and not errors, errors
    assert len(bad_positions) >= 10_000

    worker = WorkerProcess(settings, config, tmp_path).start()
    try:
        n_bad = len(bad_positions)
        wait_until(lambda: scalar(settings, "SELECT count() FROM dead_letters FINAL WHERE src_topic IN {t:Array(String)}",
                                  t=topics) >= n_bad or worker.exited(), 300, f"{n_bad} dead letters", interval_s=2)
        for table, ids in good.items():
            column = "toString(event_id)" if table == "raw_feedback" else "request_id"

            def all_good_rows_landed(table: str = table, ids: set[str] = ids, column: str = column) -> bool:
                return bool(scalar(settings, f"SELECT uniqExact({column}) FROM {table} FINAL WHERE tenant_id = {{t:String}} "
                                             f"AND {column} IN {{ids:Array(String)}}", t=tenant, ids=sorted(ids)) == len(ids)
                            or worker.exited())

            wait_until(all_good_rows_landed, 120, f"{len(ids)} good rows in {table}")
        assert not worker.exited(), f"the worker died: {worker.log()[-5000:]}"
    finally:
        status = worker.stop()
    assert status == 0, worker.log()[-3000:]
    assert "exiting hard" not in worker.log()

    letters = {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in rows(
        settings, "SELECT src_topic, src_partition, src_offset, error_kind, error, original FROM dead_letters FINAL "
                  "WHERE src_topic IN {t:Array(String)}", t=topics)}
    assert set(letters) == set(bad_positions), "a hostile record was not dead-lettered, or a good one was"
    assert all(kind and error for kind, error, _ in letters.values())
    by_kind: dict[str, Counter[str]] = {}
    for pos, kind in bad_positions.items():
        by_kind.setdefault(kind, Counter())[letters[pos][0]] += 1
    print({k: dict(v) for k, v in by_kind.items()})
    assert "processing_error" not in {k for c in by_kind.values() for k in c}, by_kind
    leaked = Counter(bad_positions[pos] for pos, (_, _, original) in letters.items() if EMAIL in original)
    if leaked:
        example = next(o for _, _, o in letters.values() if EMAIL in o)[:300]
        raise AssertionError(f"PII stored in dead_letters: {dict(leaked)}; e.g. {example!r}")
    # Good events exactly once: duplicates collapse, nothing of the storm's tenant leaked in besides them.
    for table, ids in good.items():
        assert scalar(settings, f"SELECT count() FROM {table} FINAL WHERE tenant_id = {{t:String}}", t=tenant) == len(ids)
