"""The Ray Serve application end to end on the real broker and a local Ray (2 CPUs): two replicas in one consumer
group serve 50 requests with exactly 50 completions; then a replica actor is killed mid-stream and every request
still gets its completion (redelivered from the uncommitted offsets, the dead replica replaced by Serve)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray import serve

from schemas.topics import dispatch_topic
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.inference.serve_app import app_name, serve_deployment, stop_deployment
from services.inference.spec import DeploymentSpec
from tests.inference.kafka_io import Reader, make_request, publish


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray Serve's shutdown() is unannotated
        ray.shutdown()


def _replica_actor_names(spec: DeploymentSpec) -> list[str]:
    prefix = f"SERVE_REPLICA::{app_name(spec)}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def test_two_replicas_serve_all_and_survive_a_killed_replica(
    local_stack: Settings, local_ray: None, unique: str, tiny_model_dir: Path
) -> None:
    settings = local_stack
    spec = DeploymentSpec.model_validate({
        "deployment_id": f"tiny-serve-{unique}", "model_alias": "tiny", "model_source": str(tiny_model_dir),
        "num_replicas": 2, "max_batch_size": 4, "max_queued_requests": 4, "torch_threads": 1,
        "ray_actor_options": {"num_cpus": 0.5}, "generation": {"temperature": 0.0}, "shutdown_grace_s": 5,
    })
    ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    serve_deployment(spec, settings=settings)
    assert len(_replica_actor_names(spec)) == 2
    reader = Reader(settings)
    try:
        # Phase 1: exactly one completion per request.
        first = [make_request(f"{unique}-a{i}", spec.deployment_id, f"Say {i}", max_tokens=4 + i % 13)
                 for i in range(50)]
        publish(settings, spec.dispatch_topic, first)
        ids = {r.request_id for r in first}
        data = reader.read_until(ids, 120)
        reader.drain(1.0)
        assert {rid: len(data.completions.get(rid, [])) for rid in ids} == {rid: 1 for rid in ids}
        for req in first:
            c = data.completions[req.request_id][0]
            assert c.error is None and c.finish_reason in ("length", "eos") and c.prompt_tokens > 0
            assert c.completion_tokens == req.params.max_tokens or c.finish_reason == "eos"
            assert data.streamed_text(req.request_id) == c.text

        # Phase 2: kill one replica actor while requests are mid-stream.
        second = [make_request(f"{unique}-b{i}", spec.deployment_id, f"Tell a long story {i}", max_tokens=120)
                  for i in range(30)]
        publish(settings, spec.dispatch_topic, second)
        ids2 = {r.request_id for r in second}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reader.drain(0.3)
            streaming = {rid for rid in ids2 if data.chunks.get(rid)} - set(data.completions)
            if len(streaming) >= 2:
                break
        done_before_kill = ids2 & set(data.completions)
        assert len(done_before_kill) < len(ids2)
        victim = _replica_actor_names(spec)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

        data = reader.read_until(ids2, 150)
        assert set(data.completions) >= ids2  # every request answered despite the kill
        for req in second:
            finals = data.completions[req.request_id]
            assert all(c.error is None and c.prompt_tokens > 0 for c in finals)
            assert data.streamed_text(req.request_id) in {c.text for c in finals}
        restarted = [rid for rid in ids2 if data.attempts(rid) > 1]
        assert restarted, "the killed replica had streams in flight that were redelivered"

        deadline = time.monotonic() + 60  # Serve replaces the dead replica
        while time.monotonic() < deadline:
            names = _replica_actor_names(spec)
            if len(names) == 2 and victim not in names:
                break
            time.sleep(0.5)
        assert victim not in _replica_actor_names(spec) and len(_replica_actor_names(spec)) == 2
    finally:
        reader.close()
        stop_deployment(spec)
