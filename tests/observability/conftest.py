"""Shared fixtures of the observability tests: traffic through the real stream worker into ClickHouse, once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.core.settings import Settings
from services.infra.process import free_port
from tests.observability.traffic import Traffic, stream_worker
from tests.streams.helpers import scalar, wait_until


@pytest.fixture(scope="session")
def traffic(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    traffic = Traffic(datetime.now(UTC).strftime("%H%M%S%f"), metrics_port=free_port())
    traffic.create_topics(local_stack)
    tmp = tmp_path_factory.mktemp("obs-dash")
    with stream_worker(local_stack, traffic, tmp, metrics_port=traffic.metrics_port) as worker:
        traffic.publish(local_stack)
        def landed() -> bool:
            assert worker.poll() is None, (tmp / "streams.log").read_text()[-3000:]
            t = {"tenant": traffic.tenant, "c": traffic.canary}
            return all((
                scalar(local_stack, "SELECT count() FROM agg_cost_minute FINAL WHERE tenant_id = {tenant:String}", **t) > 0,
                scalar(local_stack, "SELECT count() FROM safety_findings FINAL WHERE tenant_id = {tenant:String}", **t) > 0,
                scalar(local_stack, "SELECT count() FROM v_feedback_minute WHERE deployment_id = {c:String}", **t) > 0,
                scalar(local_stack, "SELECT count() FROM agg_latency_minute FINAL WHERE deployment_id = {c:String}", **t) > 0,
                scalar(local_stack, "SELECT count() FROM drift_checks WHERE deployment_id = {c:String}", **t) > 0,
            ))
        wait_until(landed, 180, "the traffic's aggregates, findings, feedback and drift checks in ClickHouse", 1.0)
        yield traffic
