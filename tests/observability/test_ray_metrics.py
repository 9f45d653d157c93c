"""Replica metrics through Ray Serve's metrics API: a real Serve replica records with ReplicaMetrics, Ray's metrics
agent exports them (as ray_<name>), and the shipped relabelling turns them into the catalog's names in a real
Prometheus (Debian's package), where the dashboards' replica panels find them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.core import metrics
from services.infra.process import free_port
from tests.observability.dashboards import PROMETHEUS as PROMETHEUS_DS
from tests.observability.dashboards import promql, queries
from tests.observability.prometheus_server import PROMETHEUS, prometheus, ray_relabel_rules
from tests.observability.scrape import Scrape
from tests.streams.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_metrics_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray") / "probe.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.observability.ray_replica_probe", str(port)], cwd=ROOT,
                                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while b"ready" not in log_path.read_bytes():
                assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the Serve replica did not record within 240 s"
                time.sleep(0.5)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ray_scrape(port: int) -> Scrape | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    s = Scrape(text)
    return s if s.has("ray_vllm_num_requests_running") and s.has("ray_gen_ai_server_request_duration_seconds_count") else None


def test_ray_exports_the_replica_metrics(ray_metrics_port: int) -> None:
    scrape = wait_until(lambda: _ray_scrape(ray_metrics_port), 90, "the replica's metrics in Ray's export")
    assert scrape is not None
    assert scrape.total("ray_vllm_num_requests_running", deployment="probe-dep", model_name="probe-model") == 3
    assert scrape.total("ray_vllm_kv_cache_usage_perc", deployment="probe-dep") == 0.25
    assert scrape.total("ray_vllm_prefix_cache_hits_total", deployment="probe-dep") == 5 * 8
    assert scrape.total("ray_vllm_prefix_cache_queries_total", deployment="probe-dep") == 5 * 20
    assert scrape.total("ray_gen_ai_server_request_duration_seconds_count", deployment="probe-dep",
                        finish_reason="stop") == 5
    assert scrape.total("ray_gen_ai_server_time_per_output_token_seconds_count", deployment="probe-dep") == 5
    for spec in metrics.SERVER_SPECS:  # every replica metric is exported under the name the relabelling expects
        base = metrics.ray_exported_name(spec)
        assert scrape.has(base) or scrape.has(base + "_count"), base


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package is not installed (make tools installs it)")
def test_prometheus_renames_ray_metrics_for_the_dashboards(ray_metrics_port: int, tmp_path: Path) -> None:
    wait_until(lambda: _ray_scrape(ray_metrics_port), 90, "the replica's metrics in Ray's export")
    with prometheus(tmp_path, {"ray": [f"127.0.0.1:{ray_metrics_port}"]}, relabel={"ray": ray_relabel_rules()}) as prom:
        wait_until(lambda: prom.query('vllm:num_requests_running{deployment="probe-dep"}'), 60, "renamed series")
        (running,) = prom.query('vllm:num_requests_running{deployment="probe-dep"}')
        assert float(running["value"][1]) == 3
        assert "WorkerId" not in running["metric"] and "SessionName" not in running["metric"]
        assert prom.query('gen_ai_server_time_to_first_token_seconds_count{deployment="probe-dep"}')
        assert not prom.query('{__name__=~"ray_vllm_.+|ray_gen_ai_.+"}'), "nothing left under Ray's names"
        replica_panels = {"Requests running and waiting", "KV-cache usage", "Time to first token by deployment",
                          "Replica request duration p95 by deployment", "Requests per second by deployment (replicas)",
                          "Time per output token by deployment", "Prefix cache hit ratio (replicas)"}
        wait_until(lambda: prom.query(promql("sum(rate(gen_ai_server_request_duration_seconds_count[$__rate_interval]))")),
                   60, "two scrapes of the replica")
        shown = {q.panel for q in queries() if q.datasource == PROMETHEUS_DS and prom.query(promql(q.text))}
        assert shown >= replica_panels, replica_panels - shown
