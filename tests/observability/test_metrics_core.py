"""The metrics foundation: the catalog's names, bounded labels, and the loopback /metrics server."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry

from schemas.completions import Completion
from services.core import metrics
from services.core.settings import Settings
from tests.observability.scrape import Scrape, scrape


def test_names_follow_the_conventions() -> None:
    for spec in metrics.CATALOG.values():
        assert re.fullmatch(r"(gen_ai_[a-z_]+|vllm:[a-z_]+|llmops_[a-z_]+|http_server_[a-z_]+)", spec.name), spec.name
        assert not spec.name.endswith("_total"), "counters gain _total when exposed"
        assert "request_id" not in spec.labels and "event_id" not in spec.labels
        if spec.kind == "histogram":
            assert spec.buckets and list(spec.buckets) == sorted(spec.buckets), spec.name
    names = set(metrics.CATALOG)
    # The GenAI conventions' metrics and vLLM's engine gauges the dashboards rely on.
    assert {
        "gen_ai_client_operation_duration_seconds", "gen_ai_client_token_usage",
        "gen_ai_server_request_duration_seconds", "gen_ai_server_time_to_first_token_seconds",
        "gen_ai_server_time_per_output_token_seconds", "vllm:num_requests_running", "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    } <= names


def test_labels_beyond_the_limit_become_other() -> None:
    bound = metrics.LabelBound(limit=2)
    family = metrics.Family(
        metrics.MetricSpec("llmops_test_requests", "counter", "test", ("tenant", "service")),
        registry=CollectorRegistry(), bound=bound,
    )
    for tenant in ("a", "b", "c", "d", "a"):
        family.labels(tenant=tenant, service="s").inc()
    assert [bound.value("tenant", t) for t in ("a", "b", "c")] == ["a", "b", metrics.OTHER]
    # A label whose values are ours (not traffic-derived) is never bounded.
    assert bound.value("service", "anything-else") == "anything-else"
    with pytest.raises(ValueError, match="takes labels"):
        family.labels(tenant="a")


def test_settings_default_to_no_endpoint_on_loopback() -> None:
    settings = Settings()
    assert settings.metrics_port is None and settings.metrics_host == "127.0.0.1"
    assert metrics.start_metrics_server(Settings(metrics_port=None)) is None


def test_server_serves_the_registry_after_traffic() -> None:
    server = metrics.start_metrics_server(Settings(metrics_port=0))
    assert server is not None
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        assert metrics.start_metrics_server(Settings(metrics_port=0)) is server, "one server per process"
        labels = dict(
            gen_ai_operation_name="chat", gen_ai_request_model="chat", gen_ai_response_model="smollm2",
            deployment="core-test", tenant="core-test-tenant",
        )
        before = scrape(server.url)
        completion = Completion(request_id="core-test-1", tenant="core-test-tenant", deployment_id="core-test",
                                model_alias="chat", model_name="smollm2", text="hi", finish_reason="stop",
                                prompt_tokens=12, completion_tokens=30, total_ms=1500.0)
        metrics.record_completions([(completion, "core-test-tenant", "")])
        after = scrape(server.url)
        name = "gen_ai_client_operation_duration_seconds"
        assert after.total(name + "_count", **labels) == before.total(name + "_count", **labels) + 1
        assert after.total(name + "_sum", **labels) == pytest.approx(before.total(name + "_sum", **labels) + 1.5)
        usage = "gen_ai_client_token_usage_sum"
        assert after.total(usage, **labels, gen_ai_token_type="output") - before.total(
            usage, **labels, gen_ai_token_type="output") == 30
        assert after.has("process_resident_memory_bytes")
        assert Scrape(metrics.exposition().decode()).total(name + "_count", **labels) >= 1
    finally:
        metrics.stop_metrics_server()


def test_ray_export_names() -> None:
    assert metrics.ray_exported_name(metrics.REQUESTS_RUNNING) == "ray_vllm_num_requests_running"
    assert metrics.ray_exported_name(metrics.PREFIX_CACHE_HITS) == "ray_vllm_prefix_cache_hits_total"
    assert metrics.ray_exported_name(metrics.SERVER_TIME_TO_FIRST_TOKEN) == "ray_gen_ai_server_time_to_first_token_seconds"
