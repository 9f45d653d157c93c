"""The router renders PromptRefs before dispatch, answers bad ones with an error, and routes prompt-version rollouts:
variants of one deployment split by sticky user, and a rollback sends every user back to the stable version."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from schemas.requests import Message, PromptRef
from schemas.rollouts import RolloutEvent
from services.client import Client, RequestFailed
from services.core.settings import Settings
from services.prompts.definition import PromptDefinition
from services.prompts.store import move_label, push
from services.router.router import publish_rollout
from tests.client.stack import serving


async def _push_two_versions(settings: Settings, name: str) -> None:
    for template in ("v1 says: {{ text }}", "v2 says: {{ text }}"):
        await push(settings, PromptDefinition.model_validate({
            "name": name, "messages": [{"role": "user", "content": template}], "variables": [{"name": "text"}],
            "params": {"max_tokens": 21}}))
    await move_label(settings, name, "production", 1)


async def _wait_for(router_state_check: Callable[[], bool], timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if router_state_check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("router did not see the change in time")


async def test_router_renders_prompt_refs_and_refuses_bad_ones(local_stack: Settings, unique: str) -> None:
    name = f"greet-{unique}"
    await _push_two_versions(local_stack, name)
    deployment = f"dep-{unique}"
    async with serving(local_stack, unique, {"chat": deployment}) as path, \
            Client(local_stack, tenant="acme", config=path.client_config()) as client:
        await _wait_for(lambda: name in path.router.prompts.registry.labels)
        done = await client.complete("chat", prompt=PromptRef(prompt_id=name, version="production", variables={"text": "hi"}))
        assert done.text == "echo: v1 says: hi" and done.prompt_id == name and done.prompt_version == "1"
        seen = path.replicas[deployment].seen[-1]
        assert seen.params.max_tokens == 21 and seen.prompt is not None and seen.prompt.version == "1"

        with pytest.raises(RequestFailed, match=r"invalid_params: .*missing variable"):
            await client.complete("chat", prompt=PromptRef(prompt_id=name, version="2"))
        with pytest.raises(RequestFailed, match="invalid_params: unknown prompt 'nope'"):
            await client.complete("chat", prompt=PromptRef(prompt_id="nope", version="1"))


async def test_prompt_version_rollout_is_sticky_and_rolls_back(local_stack: Settings, unique: str) -> None:
    name = f"summ-{unique}"
    await _push_two_versions(local_stack, name)
    deployment = f"dep-{unique}"
    stable, canary = f"{deployment}/{name}@1", f"{deployment}/{name}@2"
    async with serving(local_stack, unique, {"chat": deployment}) as path, \
            Client(local_stack, tenant="acme", config=path.client_config()) as client:
        await _wait_for(lambda: name in path.router.prompts.registry.labels)
        await publish_rollout(local_stack, RolloutEvent(
            alias="chat", rollout_id=f"ro-{unique}", stable_deployment=stable, canary_deployment=canary, action="start",
            step=1, weights={stable: 0.5, canary: 0.5}), topic=path.topics.rollouts)
        await _wait_for(lambda: "chat" in path.router.state.rollouts)

        async def version_for(user: str) -> str | None:
            done = await client.complete("chat", user_id=user,
                                         prompt=PromptRef(prompt_id=name, version="production", variables={"text": user}))
            assert done.text == f"echo: v{done.prompt_version} says: {user}" and done.deployment_id == deployment
            return done.prompt_version

        users = [f"user-{i}" for i in range(16)]
        first = await asyncio.gather(*(version_for(u) for u in users))
        assert set(first) == {"1", "2"}  # both versions get traffic
        assert await asyncio.gather(*(version_for(u) for u in users)) == first  # sticky per user
        plain = await client.complete("chat", messages=[Message(role="user", content="no prompt")])
        assert plain.deployment_id == deployment and plain.prompt_version is None

        await publish_rollout(local_stack, RolloutEvent(
            alias="chat", rollout_id=f"ro-{unique}", stable_deployment=stable, canary_deployment=canary,
            action="rollback", step=1, weights={stable: 1.0, canary: 0.0}, reason="test"), topic=path.topics.rollouts)
        await _wait_for(lambda: path.router.state.rollouts["chat"].action == "rollback")
        assert set(await asyncio.gather(*(version_for(u) for u in users))) == {"1"}
