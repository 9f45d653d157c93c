"""A bad prompt version rolled back by the same router, weights and judge as a model canary.

The rollout's variants are one deployment with two versions of a registry prompt (``dep/p@1`` stable, ``dep/p@2``
canary). The judge runs as its process; the windows it reads are published here for each variant (deployment and
prompt version), as the stream worker publishes them per (deployment, prompt version); the canary's version errs
on 30% of its requests. After the rollback, every user's request naming the prompt is rendered at version 1.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.aggregates import DeploymentWindow
from schemas.requests import PromptRef
from schemas.topics import COMPLETION_CHUNKS, COMPLETIONS, REQUESTS
from services.client import Client, ClientConfig
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.prompts.definition import PromptDefinition
from services.prompts.store import move_label, push
from services.rollout.commands import start_rollout
from services.rollout.spec import RolloutSpec
from services.router.router import Router, RouterTopics
from tests.client.fake_replica import FakeReplica
from tests.rollout.helpers import JudgeProcess, eventually, judge_config, publish_windows
from tests.rollout.windows import window

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def _windows(deployment: str, spec: RolloutSpec, seconds: range) -> list[DeploymentWindow]:
    share = spec.canary_share(1)

    def versioned(w: DeploymentWindow, version: str) -> DeploymentWindow:
        return w.model_copy(update={"prompt_version": version})

    out = [versioned(window(deployment, T0 - timedelta(seconds=k), requests=400, seed=500 + k), "1") for k in range(1, 6)]
    for k in seconds:
        start = T0 + timedelta(seconds=k)
        out += [
            versioned(window(deployment, start, requests=round(400 * (1 - share)), seed=k, routing_weight=1 - share), "1"),
            versioned(window(deployment, start, requests=round(400 * share), seed=100 + k, routing_weight=share,
                             error_rate=0.3), "2"),
        ]
    return out


async def test_bad_prompt_version_is_rolled_back(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    name, deployment, alias = f"p-{unique}", f"dep-{unique}", f"chat-{unique}"
    for template in ("v1: {{ text }}", "v2 rambles: {{ text }}"):
        await push(local_stack, PromptDefinition.model_validate({
            "name": name, "messages": [{"role": "user", "content": template}], "variables": [{"name": "text"}]}))
    await move_label(local_stack, name, "production", 1)

    config = judge_config(local_stack, unique, windows_partitions=1)
    topics = RouterTopics(requests=f"t.req.{unique}", rollouts=config.rollouts_topic, completions=f"t.comp.{unique}",
                          deadletter=config.deadletter_topic)
    ensure_topics(local_stack, [REQUESTS.renamed(topics.requests), COMPLETIONS.renamed(topics.completions),
                                COMPLETION_CHUNKS.renamed(f"t.chunks.{unique}")])
    spec = RolloutSpec.model_validate({
        "alias": alias, "stable": f"{deployment}/{name}@1", "canary": f"{deployment}/{name}@2", "steps": [25, 50, 100],
        "alpha": 0.01, "min_samples": 50, "min_step_seconds": 5,
        "gates": {"error_rate": {"max_ratio": 1.0, "margin": 0.05}},
    })
    await start_rollout(local_stack, spec, topics=config.topics, started_at=T0)
    router = Router(local_stack, {alias: deployment}, group_id=f"router.{unique}", topics=topics, poll_ms=100)
    replica = FakeReplica(local_stack, deployment, topics.completions, f"t.chunks.{unique}")
    tasks = [asyncio.create_task(router.run()), asyncio.create_task(replica.run())]
    judge = JudgeProcess(local_stack, config, tmp_path).start()
    try:
        async with Client(local_stack, tenant="acme", config=ClientConfig(
                requests_topic=topics.requests, completions_topic=topics.completions)) as client:
            await asyncio.wait_for(router.ready.wait(), 30)
            await eventually(lambda: router.state.weights(alias) == spec.weights(1), what="the start at the router")

            async def versions(users: list[str]) -> list[str | None]:
                answers = await asyncio.gather(*(client.complete(alias, user_id=u, prompt=PromptRef(
                    prompt_id=name, version="production", variables={"text": u})) for u in users))
                return [a.prompt_version for a in answers]

            users = [f"user-{i}" for i in range(24)]
            assert set(await versions(users)) == {"1", "2"}  # the canary version gets its share, by sticky user

            publish_windows(local_stack, config.windows_topic, _windows(deployment, spec, range(20)), alias)
            await eventually(lambda: router.state.rollouts[alias].action == "rollback", timeout_s=60,
                             what="the judge's rollback at the router")
            assert "error_rate" in router.state.rollouts[alias].reason
            assert set(await versions(users)) == {"1"}
    finally:
        assert judge.stop() == 0
        router.stop()
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
