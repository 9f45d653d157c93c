"""A replica's Kafka loop on the real local broker (no Ray): completions, chunks, errors, dead letters, commits,
backpressure and a shutdown that releases in-flight work to the next member of the group."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.completions import Completion, CompletionChunk
from schemas.requests import FallbackRecord
from schemas.topics import DISPATCH_PARTITIONS, dispatch_topic, reply_topic
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import confluent_consumer_config
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.inference.adapter import render_prompt
from services.inference.engine import Engine, EngineLimits, EngineRequest, EngineResult, SamplingParams
from services.inference.model_loader import LoadedModel
from services.inference.replica import KafkaReplica
from services.inference.spec import DeploymentSpec
from tests.inference.kafka_io import Reader, committed_total, decode_message, make_request, publish
from tests.notifier.helpers import wait_until


def _spec(dep: str, model_dir: Path, **kw: object) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {"deployment_id": dep, "model_alias": "tiny", "model_source": str(model_dir), **kw}
    )


async def _start(spec: DeploymentSpec, settings: Settings, loaded: LoadedModel) -> tuple[KafkaReplica, asyncio.Task[None]]:
    engine = Engine(loaded, EngineLimits(max_batch_size=spec.max_batch_size, token_budget=spec.token_budget))
    engine.start()
    replica = KafkaReplica(spec, settings, engine, "t")
    task = asyncio.create_task(replica.run())
    await asyncio.wait_for(replica.ready.wait(), 30)
    return replica, task


def _read_until_completion(settings: Settings, topic: str, timeout_s: float = 30) -> list[object]:
    """The payloads of a one-partition topic up to its first Completion; fails if none arrives in time."""
    consumer = Consumer(confluent_consumer_config(settings, f"tests-{topic}"))
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[object] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not any(isinstance(p, Completion) for p in out):
            assert time.monotonic() < deadline, f"no completion on {topic} after {timeout_s}s ({len(out)} messages)"
            out += [decode_message(m).payload for m in consumer.consume(100, timeout=0.2) if not m.error()]
    finally:
        consumer.close()
    return out


async def _wait_committed(settings: Settings, spec: DeploymentSpec, expected: int, timeout_s: float = 20) -> int:
    deadline = time.monotonic() + timeout_s
    total = -1
    while time.monotonic() < deadline:
        total = await asyncio.to_thread(committed_total, settings, spec.consumer_group, spec.dispatch_topic,
                                        DISPATCH_PARTITIONS)
        if total == expected:
            break
        await asyncio.sleep(0.3)
    return total


async def test_replica_serves_50_requests_and_answers_bad_input(
    local_stack: Settings, unique: str, tiny_model_dir: Path, tiny_loaded: LoadedModel
) -> None:
    settings = local_stack
    spec = _spec(f"tiny-{unique}", tiny_model_dir, max_batch_size=8, max_queued_requests=8,
                 generation={"temperature": 0.0})
    ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    replica, task = await _start(spec, settings, tiny_loaded)
    reader = Reader(settings)
    try:
        good = [make_request(f"{unique}-{i}", spec.deployment_id, f"Question number {i}?", max_tokens=5 + i % 20)
                for i in range(50)]
        bad = {
            "unknown_deployment": make_request(f"{unique}-dep", "someone-else", "hi"),
            "invalid_params": make_request(f"{unique}-stop", spec.deployment_id, "hi", stop=[""]),
            "prompt_too_long": make_request(f"{unique}-long", spec.deployment_id, "word " * 700),
        }
        await asyncio.to_thread(publish, settings, spec.dispatch_topic, good[:25])
        producer = EventProducer(settings)
        producer.send_raw(spec.dispatch_topic, b"{not json", key=b"junk")
        producer.flush()
        # A request from a waiting producer (reply topic), routed with a weight, on its alias's fallback deployment.
        replies = reply_topic(f"t-{unique}")
        ensure_topics(settings, [replies])
        waited = make_request(f"{unique}-reply", spec.deployment_id, "Who waits?", max_tokens=4).model_copy(update={
            "reply_to": replies.name, "routing_weight": 0.25,
            "fallback": FallbackRecord(from_deployment="other", reason="timeout"),
        })
        await asyncio.to_thread(publish, settings, spec.dispatch_topic, [*bad.values(), *good[25:], waited])
        ids = {r.request_id for r in good} | {r.request_id for r in bad.values()} | {waited.request_id}
        data = await asyncio.to_thread(reader.read_until, ids, 90, spec.dispatch_topic, 1)
        await asyncio.to_thread(reader.drain, 1.0)

        assert set(data.completions) >= ids
        assert {rid: len(data.completions[rid]) for rid in ids} == {rid: 1 for rid in ids}  # exactly one each
        for req in good:
            c = data.completions[req.request_id][0]
            assert c.error is None and c.deployment_id == spec.deployment_id and c.tenant == "t1"
            assert c.finish_reason in ("length", "eos")
            if c.finish_reason == "length":
                assert c.completion_tokens == req.params.max_tokens
            else:
                assert c.completion_tokens <= req.params.max_tokens
            assert c.prompt_tokens > 0 and c.ttft_ms is not None and c.total_ms >= c.ttft_ms >= c.queue_ms
            assert data.streamed_text(req.request_id) == c.text
        for kind, req in bad.items():
            c = data.completions[req.request_id][0]
            assert c.finish_reason == "error" and c.error is not None and c.error.kind == kind, (kind, c)
            assert c.error.message
        answer = data.completions[waited.request_id][0]
        assert answer.error is None and answer.routing_weight == 0.25 and answer.fallback == waited.fallback
        assert all(c.routing_weight is None and c.fallback is None for c in data.completions[good[0].request_id])
        assert waited.request_id not in data.chunks  # its chunks went to its reply topic only
        *chunks, reply = await asyncio.to_thread(_read_until_completion, settings, replies.name)
        assert reply == answer and all(isinstance(c, CompletionChunk) for c in chunks)
        assert "".join(c.text for c in chunks if isinstance(c, CompletionChunk)) == answer.text
        letters = [d for d in data.dead_letters if d.topic == spec.dispatch_topic]
        assert len(letters) == 1 and letters[0].original() == b"{not json" and letters[0].error_kind == "not_json"

        # The full path computes what the engine computes for the same rendered prompt (greedy).
        probe = good[7]
        _, ids7 = render_prompt(probe, tiny_loaded.tokenizer)
        direct: list[EngineResult] = []
        eng = Engine(tiny_loaded)
        eng.submit(EngineRequest("d", ids7, SamplingParams(max_tokens=probe.params.max_tokens)), None, direct.append)
        while eng.has_work():
            eng.step()
        assert data.completions[probe.request_id][0].text == direct[0].text

        assert await _wait_committed(settings, spec, 55) == 55  # every message done, then committed
        assert replica.stats.dead_lettered == 1 and replica.stats.errors == 3
    finally:
        reader.close()
        await replica.stop()
        await task


async def test_backpressure_and_shutdown_release_lose_nothing(
    local_stack: Settings, unique: str, tiny_model_dir: Path, tiny_loaded: LoadedModel
) -> None:
    settings = local_stack
    spec = _spec(f"tiny-bp-{unique}", tiny_model_dir, max_batch_size=2, max_queued_requests=2, shutdown_grace_s=0,
                 generation={"temperature": 0.0})
    ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    reqs = [make_request(f"{unique}-bp-{i}", spec.deployment_id, f"Tell me about {i}", max_tokens=60)
            for i in range(24)]
    await asyncio.to_thread(publish, settings, spec.dispatch_topic, reqs)
    ids = {r.request_id for r in reqs}
    reader = Reader(settings)
    try:
        first, task = await _start(spec, settings, tiny_loaded)
        # Stop with requests queued behind the running ones: they cannot finish within the stop, so they are released.
        await wait_until(lambda: first.stats.completed >= 4 and first.consumer.in_flight() >= 3, 120,
                         "4 completions and 3 requests in flight")
        await first.stop()  # grace 0: whatever is in flight is released, not completed
        await task
        assert first.stats.max_in_flight <= spec.max_batch_size + spec.max_queued_requests
        assert first.stats.paused_times > 0
        assert first.stats.released > 0
        done_by_first = first.stats.completed
        assert done_by_first < len(reqs)

        second, task2 = await _start(spec, settings, tiny_loaded)
        data = await asyncio.to_thread(reader.read_until, ids, 300)  # a deadline: slow when the machine is busy
        assert set(data.completions) >= ids  # nothing lost across the shutdown
        for rid in ids:
            c = data.completions[rid][-1]
            assert c.error is None and c.completion_tokens > 0
            assert data.streamed_text(rid) == c.text
        assert await _wait_committed(settings, spec, len(reqs)) == len(reqs)
        await second.stop()
        await task2
    finally:
        reader.close()
