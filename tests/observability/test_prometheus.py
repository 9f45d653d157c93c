"""Services' metrics after traffic: scraped and parsed with prometheus_client's parser, then scraped by a real
Prometheus (Debian's package) whose targets must be up and which evaluates every PromQL expression of the dashboards.
The GenAI client metrics come from the stream worker, which sees every completion (gateway cache hits included).

Traffic goes through the gateway (OpenAI API), the real router and fake replicas (tests/gateway/harness.py); the
stream worker runs as `llmops streams` in a subprocess with its own metrics port.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.core import metrics
from services.core.settings import Settings
from tests.gateway.harness import GatewayStack
from tests.observability.dashboards import PROMETHEUS as PROMETHEUS_DS
from tests.observability.dashboards import promql, queries
from tests.observability.prometheus_server import PROMETHEUS, prometheus
from tests.observability.scrape import Scrape, scrape
from tests.observability.traffic import Traffic
from tests.streams.helpers import wait_until

# Panels of "LLM traffic" whose series this test's traffic must produce.
MUST_SHOW = {
    "Requests per second by model (clients)", "Request duration percentiles (clients)", "Tokens per second by type",
    "Tokens per second by tenant", "Gateway HTTP requests by route and status", "Error ratio",
    "Response cache hit ratio (gateway)", "Router dispatches by alias and deployment", "Events processed per second",
    "Consumer lag",
}


class Endpoint:
    def __init__(self) -> None:
        server = metrics.start_metrics_server(Settings(metrics_port=0))
        assert server is not None
        self.server = server

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def scrape(self) -> Scrape:
        return scrape(self.server.url)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    yield Endpoint()
    metrics.stop_metrics_server()


@pytest.fixture(scope="module")
def gateway_traffic(local_stack: Settings, endpoint: Endpoint) -> Iterator[tuple[Scrape, Scrape, dict[str, str]]]:
    """Scrapes before and after 12 chat calls (and a few bad ones) through the gateway."""
    stack = GatewayStack(local_stack, uuid.uuid4().hex[:10])
    try:
        server = stack.start_gateway(f"gw-obs-{stack.unique}", require_auth=False)
        before = endpoint.scrape()
        base = f"http://127.0.0.1:{server.port}/v1"
        with httpx.Client(timeout=30) as http:
            for i in range(12):
                body = {"model": "chat", "messages": [{"role": "user", "content": f"hello {i % 4}"}], "temperature": 0}
                assert http.post(f"{base}/chat/completions", json=body).status_code == 200
            assert http.post(f"{base}/chat/completions", json={"model": "nope", "messages": []}).status_code >= 400
            assert http.get(f"{base}/models").status_code == 200
        yield before, endpoint.scrape(), {"requests": stack.path.topics.requests}
    finally:
        stack.close()


def test_gateway_and_router_metrics_moved(gateway_traffic: tuple[Scrape, Scrape, dict[str, str]]) -> None:
    before, after, stack_topics = gateway_traffic

    def moved(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    # 4 distinct prompts at temperature 0: 4 model calls, 8 answers from the response cache.
    assert moved("llmops_gateway_cache_lookups_total", result="hit") == 8
    assert moved("llmops_gateway_cache_lookups_total", result="miss") == 4
    http = "http_server_request_duration_seconds_count"
    route = {"http_route": "/v1/chat/completions", "http_request_method": "POST"}
    assert moved(http, **route, http_response_status_code="200") == 12
    # The router (behind the gateway, same process) dispatched the 4 model calls; its consumer runtime counted them.
    assert moved("llmops_router_requests_total", alias="chat") == 4
    assert moved("llmops_events_processed_total", topic=stack_topics["requests"]) >= 4
    assert after.has("llmops_consumer_lag", topic=stack_topics["requests"])
    assert any(code.startswith("4") for code in after.label_values(http, "http_response_status_code"))
    # Label values are route templates, never raw paths with ids.
    assert all("{" in r or r.count("/") <= 3 or r == "unmatched" for r in after.label_values(http, "http_route"))


def test_stream_worker_metrics_moved(traffic: Traffic) -> None:
    """The stream worker (`llmops streams`, subprocess) after the 120 completions of the shared traffic."""
    assert traffic.metrics_port is not None
    s = scrape(f"http://127.0.0.1:{traffic.metrics_port}/metrics")
    mine = {"tenant": traffic.tenant}
    assert s.total("gen_ai_client_operation_duration_seconds_count", **mine) == 120
    assert s.total("gen_ai_client_operation_duration_seconds_count", **mine, error_type="overloaded") == 6
    assert s.total("gen_ai_client_operation_duration_seconds_count", **mine, deployment=traffic.canary) == 60
    assert s.total("gen_ai_client_token_usage_count", **mine, gen_ai_token_type="input") == 120
    for topic in ("requests_topic", "completions_topic", "feedback_topic"):
        assert s.total("llmops_events_processed_total", service="streams", topic=traffic.topics()[topic]) == 120
    assert s.total("llmops_safety_findings_total", category="pii") >= 24  # an email in every 5th prompt
    assert s.total("llmops_clickhouse_rows_written_total", table="raw_completions") >= 120


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package is not installed (make tools installs it)")
def test_prometheus_scrapes_and_evaluates_every_dashboard_expression(
    gateway_traffic: tuple[Scrape, Scrape, dict[str, str]], endpoint: Endpoint, traffic: Traffic, tmp_path: Path
) -> None:
    targets = [endpoint.target, f"127.0.0.1:{traffic.metrics_port}"]
    with prometheus(tmp_path, {"llmops": targets}) as prom:
        wait_until(lambda: len([t for t in prom.targets() if t["health"] == "up"]) == 2, 30, "both targets up")
        assert all(t["scrapeUrl"].startswith("http://127.0.0.1:") for t in prom.targets())
        # rate() needs two samples of a counter: wait until every target has been scraped twice (targets are scraped
        # at different offsets, so the worker's counters having two samples says nothing of the gateway's).
        def scraped_twice() -> bool:
            counts = prom.query("count_over_time(up[1m])")
            return len(counts) == len(targets) and all(float(c["value"][1]) >= 2 for c in counts)

        wait_until(scraped_twice, 30, "two scrapes of every target")
        shown = set()
        expressions = [q for q in queries() if q.datasource == PROMETHEUS_DS]
        assert len(expressions) >= 25
        for query in expressions:
            result = prom.query(promql(query.text))  # fails with Prometheus's message if it does not parse/evaluate
            if result:
                shown.add(query.panel)
        assert shown >= MUST_SHOW, MUST_SHOW - shown
