"""The producer SDK against the real broker, the real router and fake replicas: complete, stream, deadlines,
retries with the same request id, fallback, the sync wrapper."""

from __future__ import annotations

import asyncio
import threading

import pytest

from schemas.requests import InferenceRequest, Message
from services.client import Client, DeadlineExceeded, RequestFailed, SyncClient
from services.core.settings import Settings
from tests.client.fake_replica import Answer, echo
from tests.client.stack import ServingPath, serving

HI = [Message(role="user", content="hello there")]


def silent(request: InferenceRequest) -> Answer:
    return Answer(silent=True)


async def test_complete_and_stream(local_stack: Settings, unique: str) -> None:
    async with serving(local_stack, unique, {"chat": f"dep-{unique}"}) as path, \
            Client(local_stack, tenant="acme", application="sdk", config=path.client_config()) as client:
        done = await client.complete("chat", messages=HI, deadline_s=30)
        assert done.text == "echo: hello there" and done.deployment_id == f"dep-{unique}" and done.tenant == "acme"
        assert path.replicas[f"dep-{unique}"].seen[-1].params.stream is False  # complete asks for no chunks

        async with client.stream("chat", messages=[Message(role="user", content="one two three")]) as stream:
            pieces = [piece.text async for piece in stream]
        assert pieces == ["echo: ", "one ", "two ", "three"]
        assert stream.completion is not None and stream.completion.text == "".join(pieces)
        assert client.replies.topic == f"llm.replies.{client.instance_id}"


async def test_error_completion_raises_with_the_reason(local_stack: Settings, unique: str) -> None:
    def bad_params(request: InferenceRequest) -> Answer:
        return Answer(error_kind="invalid_params")

    async with serving(local_stack, unique, {"chat": f"dep-{unique}"}, {f"dep-{unique}": bad_params}) as path, \
            Client(local_stack, tenant="acme", config=path.client_config()) as client:
        with pytest.raises(RequestFailed, match="invalid_params") as failed:
            await client.complete("chat", messages=HI)
        assert failed.value.completion.error is not None


async def test_no_answer_retries_with_the_same_request_id_then_times_out(local_stack: Settings, unique: str) -> None:
    async with serving(local_stack, unique, {"chat": f"dep-{unique}"}, {f"dep-{unique}": silent}) as path, \
            Client(local_stack, tenant="acme", config=path.client_config(attempt_timeout_s=1.0, max_attempts=2)) as client:
        with pytest.raises(DeadlineExceeded, match="after 2 attempt"):
            await client.complete("chat", messages=HI, request_id=f"r-{unique}")
        replica = path.replicas[f"dep-{unique}"]
        for _ in range(50):
            if len(replica.seen) >= 2:
                break
            await asyncio.sleep(0.1)
        assert [r.request_id for r in replica.seen] == [f"r-{unique}", f"r-{unique}"]


async def test_deadline_bounds_the_wait(local_stack: Settings, unique: str) -> None:
    async with serving(local_stack, unique, {"chat": f"dep-{unique}"}, {f"dep-{unique}": silent}) as path, \
            Client(local_stack, tenant="acme", config=path.client_config(attempt_timeout_s=60)) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeadlineExceeded, match="before its deadline"):
            await client.complete("chat", messages=HI, deadline_s=1.0)
        assert loop.time() - started < 10  # the deadline (plus a grace second), not the 60 s attempt timeout


async def test_fallback_used_once_and_recorded(local_stack: Settings, unique: str) -> None:
    primary, fallback = f"dep-{unique}", f"fb-{unique}"
    async with serving(local_stack, unique, {"chat": primary}, {primary: lambda r: Answer(error_kind="internal"),
                                                                 fallback: echo}) as path, \
            Client(local_stack, tenant="acme", config=path.client_config(fallbacks={"chat": fallback})) as client:
        done = await client.complete("chat", messages=HI)
        assert done.deployment_id == fallback and done.text == "echo: hello there"
        assert done.fallback is not None and done.fallback.from_deployment == primary
        assert done.fallback.reason == "error" and done.fallback.error_kind == "internal"
        assert len(path.replicas[fallback].seen) == 1

        # a fallback that fails too is not retried again: at most one retry
        path.replicas[fallback].behaviour = lambda r: Answer(error_kind="internal")
        with pytest.raises(RequestFailed, match="internal") as failed:
            await client.complete("chat", messages=HI)
        assert failed.value.completion.deployment_id == fallback
        assert len(path.replicas[fallback].seen) == 2 and len(path.replicas[primary].seen) == 2


async def test_timeout_falls_back(local_stack: Settings, unique: str) -> None:
    primary, fallback = f"dep-{unique}", f"fb-{unique}"
    async with serving(local_stack, unique, {"chat": primary}, {primary: silent, fallback: echo}) as path, \
            Client(local_stack, tenant="acme",
                   config=path.client_config(fallbacks={"chat": fallback}, attempt_timeout_s=1.0)) as client:
        done = await client.complete("chat", messages=HI)
        assert done.deployment_id == fallback and done.fallback is not None and done.fallback.reason == "timeout"


def test_sync_client(local_stack: Settings, unique: str) -> None:
    async def run_path(ready: asyncio.Event, stop: asyncio.Event, out: list[ServingPath]) -> None:
        async with serving(local_stack, unique, {"chat": f"dep-{unique}"}) as path:
            out.append(path)
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    out: list[ServingPath] = []
    thread = threading.Thread(target=loop.run_until_complete, args=(run_path(ready, stop, out),), daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(ready.wait(), 60), loop).result()
        path = out[0]
        with SyncClient(local_stack, tenant="acme", config=path.client_config()) as client:
            assert client.complete("chat", messages=HI).text == "echo: hello there"
            assert "".join(p.text for p in client.stream("chat", messages=HI)) == "echo: hello there"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
