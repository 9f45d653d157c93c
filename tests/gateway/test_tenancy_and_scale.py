"""Tenant isolation of the read endpoints, two gateway instances sharing the load, graceful drain on stop."""

from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
from openai import OpenAI

from services.core.settings import Settings
from tests.gateway.conftest import Gw
from tests.gateway.harness import store_completion
from tests.streams.helpers import wait_until


def _client(base_url: str, key: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def test_a_key_reads_only_its_tenants_requests(gw: Gw, local_stack: Settings) -> None:
    raw = _client(gw.base_url, gw.key_a).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "tenant A's secret"}])
    request_id = raw.headers["x-request-id"]
    asyncio.run(store_completion(local_stack, gw.stack.path.topics.completions, request_id))
    url = f"{gw.base_url}/llmops/requests/{request_id}"
    mine = httpx.get(url, headers={"authorization": f"Bearer {gw.key_a}"})
    assert mine.status_code == 200 and mine.json()["text"] == "echo: tenant A's secret"
    theirs = httpx.get(url, headers={"authorization": f"Bearer {gw.key_b}"})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "request_not_found"
    assert httpx.get(url).status_code == 401
    usage = httpx.get(f"{gw.base_url}/llmops/usage", headers={"authorization": f"Bearer {gw.key_b}"}).json()
    assert usage["tenant"] == gw.tenant_b


def test_two_gateways_share_the_load(gw: Gw) -> None:
    second = gw.stack.start_gateway(f"gw-{gw.stack.unique}-2")
    try:
        urls = [gw.base_url, f"http://127.0.0.1:{second.port}/v1"]

        def ask(i: int) -> tuple[str, str, str]:
            raw = _client(urls[i % 2], gw.key_a).chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": f"question {i}"}])
            return urls[i % 2], raw.headers["x-request-id"], raw.parse().choices[0].message.content or ""

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(20)))
        assert [text for _, _, text in answers] == [f"echo: question {i}" for i in range(20)]
        by_id = {r.request_id: r for r in gw.stack.path.replicas[gw.stack.primary].seen}
        for url, request_id, _ in answers:  # each answer went back only to the instance that asked
            instance = gw.server.config.instance_id if url == gw.base_url else second.config.instance_id
            assert by_id[request_id].reply_to == f"llm.replies.{instance}"
        assert gw.server.gateway.client.replies.dropped == 0 and second.gateway.client.replies.dropped == 0
    finally:
        gw.stack.stop_gateway(second)


def test_same_request_id_in_flight_twice_is_refused(gw: Gw) -> None:
    url = f"{gw.base_url}/chat/completions"
    headers = {"authorization": f"Bearer {gw.key_a}", "x-request-id": f"dup-{gw.stack.unique}"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "SLOW twice"}]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, url, json=body, headers=headers, timeout=30)
        wait_until(lambda: gw.server.gateway.client.replies.waiting(headers["x-request-id"]), 10, "the first in flight")
        second = httpx.post(url, json=body, headers=headers, timeout=30)
        assert second.status_code == 409 and second.json()["error"]["code"] == "request_in_flight"
        assert first.result(timeout=30).json()["choices"][0]["message"]["content"] == "slow answer"


def test_stop_drains_in_flight_requests(gw: Gw) -> None:
    server = gw.stack.start_gateway(f"gw-{gw.stack.unique}-drain")
    url = f"http://127.0.0.1:{server.port}/v1"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: _client(url, gw.key_a).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "SLOW one"}]))
        wait_until(lambda: server.gateway.in_flight > 0, 10, "the slow request in flight")
        gw.stack.stop_gateway(server)  # returns once the server has shut down
        assert slow.result(timeout=30).choices[0].message.content == "slow answer"
    try:
        httpx.get(url.removesuffix("/v1") + "/healthz", timeout=2)
        raise AssertionError("the stopped gateway still accepts connections")
    except httpx.ConnectError:
        pass
