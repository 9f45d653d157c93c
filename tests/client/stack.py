"""A serving path for the SDK and gateway tests: the real router and fake replicas, on per-test topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from schemas.requests import InferenceRequest
from schemas.topics import COMPLETION_CHUNKS, COMPLETIONS, DEADLETTER, REQUESTS, ROLLOUTS
from services.client.client import ClientConfig
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.router.router import Router, RouterTopics
from tests.client.fake_replica import Answer, FakeReplica, echo


@dataclass
class ServingPath:
    topics: RouterTopics
    chunks_topic: str
    router: Router
    replicas: dict[str, FakeReplica] = field(default_factory=dict)

    def client_config(self, **overrides: object) -> ClientConfig:
        data: dict[str, object] = {"requests_topic": self.topics.requests, "completions_topic": self.topics.completions}
        data.update(overrides)
        return ClientConfig.model_validate(data)


@asynccontextmanager
async def serving(
    settings: Settings, unique: str, routes: dict[str, str],
    behaviours: dict[str, Callable[[InferenceRequest], Answer]] | None = None,
) -> AsyncIterator[ServingPath]:
    """Router (routes: alias -> deployment) and one fake replica per deployment named in routes or behaviours."""
    behaviours = behaviours or {}
    topics = RouterTopics(requests=f"t-{unique}.requests", rollouts=f"t-{unique}.rollouts",
                          completions=f"t-{unique}.completions", deadletter=f"t-{unique}.deadletter")
    chunks = f"t-{unique}.chunks"
    await asyncio.to_thread(ensure_topics, settings, [
        REQUESTS.renamed(topics.requests), ROLLOUTS.renamed(topics.rollouts), COMPLETIONS.renamed(topics.completions),
        DEADLETTER.renamed(topics.deadletter), COMPLETION_CHUNKS.renamed(chunks),
    ])
    router = Router(settings, routes, group_id=f"router-{unique}", topics=topics, poll_ms=20)
    path = ServingPath(topics, chunks, router)
    for deployment in {*routes.values(), *behaviours}:
        path.replicas[deployment] = FakeReplica(settings, deployment, topics.completions, chunks,
                                                behaviours.get(deployment, echo))
    tasks = [asyncio.create_task(router.run()), *(asyncio.create_task(r.run()) for r in path.replicas.values())]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in path.replicas.values())), 30)
        yield path
    finally:
        router.stop()
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
