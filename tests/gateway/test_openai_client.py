"""The official openai client, unchanged, against the gateway (real broker, router and ClickHouse; fake replicas)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.gateway.keys import create_key, revoke_key
from tests.gateway.conftest import Gw
from tests.gateway.harness import store_completion
from tests.streams.helpers import wait_until

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def client(gw: Gw, key: str | None = None, default_headers: dict[str, str] | None = None) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key=key or gw.key_a, max_retries=0, timeout=30, default_headers=default_headers)


def test_chat_completion(gw: Gw) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(model="chat", messages=HI, user="u-1")
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.choices[0].finish_reason == "stop" and answer.usage is not None and answer.usage.total_tokens > 0
    assert raw.headers["x-llmops-deployment"] == gw.stack.primary
    request_id = raw.headers["x-request-id"]
    seen = [r for r in gw.stack.path.replicas[gw.stack.primary].seen if r.request_id == request_id]
    assert len(seen) == 1 and seen[0].tenant == gw.tenant_a and seen[0].user_id == "u-1"
    assert seen[0].application == "support" and seen[0].reply_to == f"llm.replies.{gw.server.config.instance_id}"


def test_streaming_chat(gw: Gw) -> None:
    stream = client(gw).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 4  # relayed piece by piece


def test_legacy_completions_and_models(gw: Gw) -> None:
    c = client(gw)
    done = c.completions.create(model="chat", prompt="say hi")
    assert done.choices[0].text == "echo: say hi"
    assert sorted(m.id for m in c.models.list()) == ["chat", "other"]
    assert c.models.retrieve("chat").id == "chat"


def test_errors_have_openai_types(gw: Gw) -> None:
    with pytest.raises(openai.NotFoundError, match="The model 'nope' does not exist"):
        client(gw).chat.completions.create(model="nope", messages=HI)
    with pytest.raises(openai.AuthenticationError, match="invalid or revoked API key"):
        client(gw, key="llmops-000000000000-notarealsecretnotarealsecret").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(gw, key="garbage").chat.completions.create(model="chat", messages=HI)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client(gw).chat.completions.create(model="chat", messages=HI, temperature=5)
    with pytest.raises(openai.UnprocessableEntityError, match="n=1"):
        client(gw).chat.completions.create(model="chat", messages=HI, n=2)
    with pytest.raises(openai.PermissionDeniedError, match="another tenant"):
        client(gw, default_headers={"x-llmops-tenant": gw.tenant_b}).chat.completions.create(model="chat", messages=HI)
    with pytest.raises(openai.InternalServerError) as timeout:  # 504 after the deadline
        client(gw, default_headers={"x-llmops-deadline-ms": "800"}).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "SILENT please"}])
    assert timeout.value.status_code == 504 and timeout.value.code == "deadline_exceeded"


def test_rate_limit_429_with_retry_after(gw: Gw, local_stack: Settings) -> None:
    _, key = create_key(local_stack, gw.tenant_a, name="tight", requests_per_minute=2)
    c = client(gw, key=key)
    wait_until(lambda: _accepted(c), 10, "new key loaded by the gateway")
    for _ in range(2):
        c.chat.completions.create(model="chat", messages=HI)
    with pytest.raises(openai.RateLimitError, match="2 requests per minute") as refused:
        c.chat.completions.create(model="chat", messages=HI)
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60


def _accepted(c: OpenAI) -> bool:
    try:
        c.models.list()
        return True
    except openai.AuthenticationError:
        return False


def test_revoked_key_is_refused(gw: Gw, local_stack: Settings) -> None:
    record, key = create_key(local_stack, gw.tenant_a, name="short-lived")
    c = client(gw, key=key)
    wait_until(lambda: _accepted(c), 10, "new key loaded")
    assert c.chat.completions.create(model="chat", messages=HI).choices[0].message.content
    revoke_key(local_stack, record.key_id)
    wait_until(lambda: not _accepted(c), 10, "revocation seen by the gateway")
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="chat", messages=HI)


def test_model_allow_list_403(gw: Gw, local_stack: Settings) -> None:
    _, key = create_key(local_stack, gw.tenant_a, models=("other",))
    c = client(gw, key=key)
    wait_until(lambda: _accepted(c), 10, "new key loaded")
    assert [m.id for m in c.models.list()] == ["other"]
    with pytest.raises(openai.PermissionDeniedError, match="may not use the model 'chat'"):
        c.chat.completions.create(model="chat", messages=HI)


def test_fallback_used_once(gw: Gw, local_stack: Settings) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "FAIL then recover"}])
    assert raw.parse().choices[0].message.content == "echo: FAIL then recover"
    assert raw.headers["x-llmops-deployment"] == gw.stack.fallback
    assert raw.headers["x-llmops-fallback-from"] == gw.stack.primary
    rid = raw.headers["x-request-id"]
    assert len([r for r in gw.stack.path.replicas[gw.stack.fallback].seen if r.request_id == rid]) == 1
    # The request's row (its latest completion) says where the answer came from, and which deployment failed first.
    asyncio.run(store_completion(local_stack, gw.stack.path.topics.completions, rid, count=2))
    stored = connect(local_stack).query(
        "SELECT deployment_id, fallback_from_deployment, fallback_reason, cached FROM raw_completions FINAL "
        "WHERE request_id = %(r)s", parameters={"r": rid}).result_rows
    assert stored == [(gw.stack.fallback, gw.stack.primary, "error", 0)]


def test_cache_hit_miss_and_no_cache(gw: Gw, local_stack: Settings) -> None:
    c = client(gw)
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"cache me {time.time()}"}]
    first = c.chat.completions.with_raw_response.create(model="chat", messages=question, temperature=0)
    second = c.chat.completions.with_raw_response.create(model="chat", messages=question, temperature=0)
    assert first.headers["x-llmops-cache"] == "miss" and second.headers["x-llmops-cache"] == "hit"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    sampled = c.chat.completions.with_raw_response.create(model="chat", messages=question, temperature=0.7)
    assert sampled.headers["x-llmops-cache"] == "bypass"
    forced = c.chat.completions.with_raw_response.create(
        model="chat", messages=question, temperature=0, extra_headers={"cache-control": "no-cache"})
    assert forced.headers["x-llmops-cache"] == "bypass"
    streamed = list(c.chat.completions.create(model="chat", messages=question, temperature=0, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == f"echo: {question[0]['content']}"
    seen = gw.stack.path.replicas[gw.stack.primary].seen
    asked = [r for r in seen if r.messages and r.messages[-1].content == question[0]["content"]]
    assert len(asked) == 3  # the miss, the sampled one and the no-cache one; both hits were answered by the cache

    hit_id = second.headers["x-request-id"]
    saved = wait_until(lambda: connect(local_stack).query(
        "SELECT cached, saved_completion_tokens FROM gateway_requests FINAL WHERE request_id = %(r)s",
        parameters={"r": hit_id}).result_rows, 15, "the hit recorded in gateway_requests")
    assert saved[0][0] == 1 and saved[0][1] > 0
    # The hit is a completion of its own (no model ran): stored with cached = 1 and no tokens, so the savings
    # are a query away.
    for rid in (first.headers["x-request-id"], hit_id):
        asyncio.run(store_completion(local_stack, gw.stack.path.topics.completions, rid))
    stored = connect(local_stack).query(
        "SELECT c.cached, c.deployment_id, c.prompt_tokens, c.completion_tokens, g.saved_prompt_tokens, "
        "g.saved_completion_tokens FROM raw_completions AS c FINAL INNER JOIN gateway_requests AS g FINAL "
        "USING (tenant_id, request_id) WHERE c.request_id IN %(r)s ORDER BY c.cached",
        parameters={"r": [first.headers["x-request-id"], hit_id]}).result_rows
    miss, hit = stored
    assert miss[:2] == (0, gw.stack.primary) and miss[3] > 0
    assert hit == (1, "gateway-cache", 0, 0, miss[2], miss[3])


def test_unknown_prompt_404_and_missing_variable_422(gw: Gw, tmp_path: Path) -> None:
    import asyncio

    from services.prompts.definition import PromptDefinition
    from services.prompts.store import push

    name = f"greet-{gw.stack.unique}"
    definition = PromptDefinition.model_validate({
        "name": name, "messages": [{"role": "user", "content": "Greet {{ who }}"}], "variables": [{"name": "who"}]})
    asyncio.run(push(gw.stack.settings, definition))
    c = client(gw)
    with pytest.raises(openai.NotFoundError, match="unknown prompt 'nope'"):
        c.chat.completions.create(model="chat", messages=[], extra_body={"prompt": {"id": "nope"}})
    wait_until(lambda: name in gw.server.gateway.prompts.registry.names(), 10, "the gateway followed the push")
    with pytest.raises(openai.UnprocessableEntityError, match=r"missing variable\(s\): who"):
        c.chat.completions.create(model="chat", messages=[], extra_body={"prompt": {"id": name, "version": "latest"}})


def test_health(gw: Gw) -> None:
    body = httpx.get(gw.base_url.removesuffix("/v1") + "/healthz").json()
    assert body["status"] == "ok" and body["instance"] == gw.server.config.instance_id


def test_registry_prompt_rendered_with_its_parameters(gw: Gw) -> None:
    import asyncio

    from services.prompts.definition import PromptDefinition
    from services.prompts.store import move_label, push

    name = f"summarize-{gw.stack.unique}"
    definition = PromptDefinition.model_validate({
        "name": name, "messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Summarize in {{ words }} words: {{ text }}"}],
        "variables": [{"name": "text"}, {"name": "words", "type": "integer", "default": "10"}],
        "params": {"temperature": 0, "max_tokens": 33},
    })
    version = asyncio.run(push(gw.stack.settings, definition)).version.version
    asyncio.run(move_label(gw.stack.settings, name, "production", version))
    wait_until(lambda: gw.server.gateway.prompts.registry.labels.get(name), 10, "the gateway followed the label")
    raw = client(gw).chat.completions.with_raw_response.create(
        model="chat", messages=[], extra_body={"prompt": {"id": name, "variables": {"text": "a long story", "words": 5}}})
    assert raw.parse().choices[0].message.content == "echo: Summarize in 5 words: a long story"
    assert raw.headers["x-llmops-prompt-version"] == str(version)
    sent = next(r for r in gw.stack.path.replicas[gw.stack.primary].seen if r.request_id == raw.headers["x-request-id"])
    assert sent.prompt is not None and sent.prompt.prompt_id == name and sent.prompt.version == str(version)
    assert sent.params.max_tokens == 33 and sent.params.temperature == 0.0  # stored with the prompt
