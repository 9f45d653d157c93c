"""A real Prometheus server (Debian's `prometheus` package) on loopback, scraping the given targets, for tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from services.infra.process import free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def targets(self) -> list[dict[str, Any]]:
        data = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return list(data["data"]["activeTargets"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr``; AssertionError with Prometheus's message if it does not evaluate."""
        data = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert data["status"] == "success", f"{expr}: {data.get('errorType')}: {data.get('error')}"
        return list(data["data"]["result"])


def ray_relabel_rules() -> list[dict[str, Any]]:
    """The metric_relabel_configs of the shipped config's Ray job (deploy/prometheus/prometheus.yml)."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (ray,) = [job for job in config["scrape_configs"] if job["job_name"] == "ray"]
    return list(ray["metric_relabel_configs"])


@contextmanager
def prometheus(tmp: Path, jobs: dict[str, list[str]], relabel: dict[str, list[dict[str, Any]]] | None = None,
               ) -> Iterator[Prometheus]:
    """Prometheus scraping each job's ``host:port`` targets every second, listening on 127.0.0.1 only."""
    assert PROMETHEUS is not None
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}],
             **({"metric_relabel_configs": relabel[job]} if relabel and job in relabel else {})}
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen([
        PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], stdout=log, stderr=log)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready in 60 s"
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
