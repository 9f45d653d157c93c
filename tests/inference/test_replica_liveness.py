"""Replica liveness on the real broker, each failure injected: a failing engine step, a completion the replica cannot
build, a completion it cannot publish, a dead event pump, an engine that keeps failing. Every request still gets a
completion (an error completion is fine) or, when it cannot be published, a dead letter; no offset stays open; and
the health check reports what cannot recover, so Ray Serve replaces the replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from schemas.topics import COMPLETIONS, DISPATCH_PARTITIONS, dispatch_topic
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.inference import adapter
from services.inference import replica as replica_module
from services.inference.engine import Engine, EngineLimits
from services.inference.engine_api import EngineUnhealthy
from services.inference.model_loader import LoadedModel
from services.inference.replica import KafkaReplica, ReplicaUnhealthy
from services.inference.spec import DeploymentSpec
from tests.inference.kafka_io import Reader, committed_total, make_request, publish
from tests.inference.test_engine_liveness import FaultyModel, _is_prefill
from tests.streams.helpers import wait_until


def _spec(dep: str, model_dir: Path) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"deployment_id": dep, "model_alias": "tiny", "model_source": str(model_dir),
                                          "max_batch_size": 4, "max_queued_requests": 4,
                                          "generation": {"temperature": 0.0}})


async def _start(spec: DeploymentSpec, settings: Settings, engine: Engine) -> tuple[KafkaReplica, asyncio.Task[None]]:
    ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    engine.start()
    replica = KafkaReplica(spec, settings, engine, "t")
    task = asyncio.create_task(replica.run())
    await asyncio.wait_for(replica.ready.wait(), 30)
    return replica, task


def _committed(settings: Settings, spec: DeploymentSpec) -> int:
    return committed_total(settings, spec.consumer_group, spec.dispatch_topic, DISPATCH_PARTITIONS)


async def test_failures_inside_the_replica_still_answer_every_request(
    local_stack: Settings, unique: str, tiny_model_dir: Path, tiny_loaded: LoadedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = local_stack
    spec = _spec(f"live-{unique}", tiny_model_dir)
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=4))
    FaultyModel(tiny_loaded.model, _is_prefill, times=1).install(engine)  # the first prefill fails
    unbuildable, unpublishable = f"{unique}-unbuildable", f"{unique}-unpublishable"

    real_completion = adapter.completion_from_result  # what the replica module imported

    def completion_from_result(req: Any, *args: Any) -> Any:
        if req.request_id == unbuildable:
            raise ValueError("injected: the completion cannot be built")
        return real_completion(req, *args)

    monkeypatch.setattr(replica_module, "completion_from_result", completion_from_result)
    replica, task = await _start(spec, settings, engine)
    real_send = replica._send

    async def send(topic: str, envelope: Any, payload: Any, key: str) -> asyncio.Future[Any]:
        if key == unpublishable and topic == COMPLETIONS.name:
            raise ValueError("injected: the completion cannot be published")
        return await real_send(topic, envelope, payload, key)

    monkeypatch.setattr(replica, "_send", send)
    reader = Reader(settings)
    try:
        first = [make_request(f"{unique}-a{i}", spec.deployment_id, f"first {i}", max_tokens=6) for i in range(3)]
        await asyncio.to_thread(publish, settings, spec.dispatch_topic, first)
        data = await asyncio.to_thread(reader.read_until, {r.request_id for r in first}, 60)
        failed = [c for r in first for c in data.completions[r.request_id] if c.error is not None]
        assert failed, "the failing prefill must have failed the requests it held"
        assert all(c.error is not None and c.error.kind == "internal" and "injected failure" in c.error.message
                   for c in failed)

        more = [make_request(f"{unique}-b{i}", spec.deployment_id, f"second {i}", max_tokens=6) for i in range(4)]
        odd = [make_request(rid, spec.deployment_id, "odd one", max_tokens=3) for rid in (unbuildable, unpublishable)]
        await asyncio.to_thread(publish, settings, spec.dispatch_topic, [*more, *odd])
        ids = {r.request_id for r in [*first, *more]} | {unbuildable}
        data = await asyncio.to_thread(reader.read_until, ids, 60, spec.dispatch_topic, 1)
        assert set(data.completions) >= ids  # every request answered
        assert all(data.completions[r.request_id][-1].error is None for r in more)  # and the replica kept serving
        broken = data.completions[unbuildable][0]
        assert broken.error is not None and broken.error.kind == "internal"
        assert "could not build the completion" in broken.error.message
        letters = [d for d in data.dead_letters if d.topic == spec.dispatch_topic]
        assert [d.error_kind for d in letters] == ["processing_failed"] and "cannot be published" in letters[0].error
        assert unpublishable not in data.completions
        total = len(first) + len(more) + len(odd)
        await asyncio.to_thread(wait_until, lambda: _committed(settings, spec) == total, 30, "every offset committed")
        replica.check_health()  # each failure was handled: nothing to restart
        assert engine.stats().extra["failed_steps"] == 0
    finally:
        reader.close()
        await replica.stop()
        await task


async def test_health_check_reports_a_dead_pump_and_an_unhealthy_engine(
    local_stack: Settings, unique: str, tiny_model_dir: Path, tiny_loaded: LoadedModel,
) -> None:
    settings = local_stack
    spec = _spec(f"health-{unique}", tiny_model_dir)
    engine = Engine(tiny_loaded)
    FaultyModel(tiny_loaded.model, lambda _kw: True, times=10**6).install(engine)  # every step fails
    replica, task = await _start(spec, settings, engine)
    reader = Reader(settings)
    try:
        replica.check_health()
        reqs = [make_request(f"{unique}-{i}", spec.deployment_id, f"doomed {i}", max_tokens=4) for i in range(3)]
        for r in reqs:  # one at a time: three failed steps in a row
            await asyncio.to_thread(publish, settings, spec.dispatch_topic, [r])
            data = await asyncio.to_thread(reader.read_until, {r.request_id}, 60)
            assert data.completions[r.request_id][0].error is not None
        with pytest.raises(EngineUnhealthy, match="3 engine steps failed in a row"):
            replica.check_health()

        assert replica._pump is not None
        replica._pump.cancel()  # the pump dies: no completion would ever be published again
        await asyncio.gather(replica._pump, return_exceptions=True)
        with pytest.raises(ReplicaUnhealthy, match="event pump died"):
            replica.check_health()
    finally:
        reader.close()
        await replica.stop()
        await task
