"""Traffic for the observability tests: requests, completions (some with personal data, some errors) and feedback
for a stable and a canary deployment, published to per-test topics; and the stream worker as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from schemas import Completion, Feedback, InferenceRequest, Message, make_event
from schemas.completions import CompletionError
from schemas.topics import ALERTS, COMPLETIONS, DEADLETTER, DEPLOYMENT_WINDOWS, FEEDBACK, REQUESTS, SAFETY
from services.core.kafka.admin import ensure_topics
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings


@dataclass(frozen=True)
class Traffic:
    unique: str
    metrics_port: int | None = None
    """The stream worker's /metrics port, when it serves one."""

    @property
    def tenant(self) -> str:
        return f"obs-{self.unique}"

    @property
    def stable(self) -> str:
        return f"obs-stable-{self.unique}"

    @property
    def canary(self) -> str:
        return f"obs-canary-{self.unique}"

    def topics(self) -> dict[str, str]:
        """StreamsConfig topic fields -> this traffic's topic names."""
        names = ("requests", "completions", "feedback", "safety", "alerts", "deadletter", "windows")
        return {f"{n}_topic": f"obs-{self.unique}.{n}" for n in names}

    def create_topics(self, settings: Settings) -> None:
        specs = {"requests": REQUESTS, "completions": COMPLETIONS, "feedback": FEEDBACK, "safety": SAFETY, "alerts": ALERTS,
                 "deadletter": DEADLETTER, "windows": DEPLOYMENT_WINDOWS}
        ensure_topics(settings, [spec.renamed(self.topics()[f"{n}_topic"]) for n, spec in specs.items()])

    def publish(self, settings: Settings, per_deployment: int = 60) -> int:
        """Publish the traffic; returns the number of completions."""
        topics = self.topics()
        producer = EventProducer(settings)
        count = 0
        for deployment, slow in ((self.stable, 1.0), (self.canary, 2.5)):
            for i in range(per_deployment):
                rid = f"{deployment}-{i}"
                text = f"Write to me at user{i}@example.com about order {i}" if i % 5 == 0 else f"Question {i} about pricing"
                request = InferenceRequest(
                    request_id=rid, tenant=self.tenant, application="obs", model_alias="chat", deployment_id=deployment,
                    messages=[Message(role="user", content=text)],
                )
                error = CompletionError(kind="overloaded", message="queue full") if i % 20 == 7 else None
                completion = Completion(
                    request_id=rid, tenant=self.tenant, application="obs", model_alias="chat", deployment_id=deployment,
                    model_name="gpt-4o-mini", prompt_version="3" if deployment == self.canary else "2", prompt_text=text,
                    text="" if error else f"Sure, answer number {i} " * (1 + i % 4),
                    finish_reason="error" if error else "stop", error=error, prompt_tokens=12 + i % 7,
                    completion_tokens=0 if error else 20 + i % 30, ttft_ms=40.0 * slow + i, total_ms=400.0 * slow + 10 * i,
                )
                feedback = Feedback(request_id=rid, score=0.9 if deployment == self.stable else 0.4 + (i % 3) / 10)
                for topic, payload in (("requests_topic", request), ("completions_topic", completion),
                                       ("feedback_topic", feedback)):
                    producer.send(topics[topic], make_event(payload, source="obs-test", tenant_id=self.tenant), key=rid)
                count += 1
        producer.flush()
        return count


@contextmanager
def stream_worker(
    settings: Settings, traffic: Traffic, tmp: Path, metrics_port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`llmops streams` on the traffic's topics in a subprocess (SIGTERM at the end)."""
    config = {
        **traffic.topics(), "group_id": f"obs-{traffic.unique}", "batch_interval_s": 0.3, "aggregate_interval_s": 0.5,
        "window_seconds": 5, "window_grace_s": 0.5, "drift_encoder": "hashing", "drift_reference_size": 30,
        "drift_current_size": 30, "drift_check_every": 30, "drift_check_interval_s": 1.0,
    }
    path = tmp / "streams.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, **settings.to_env()}
    if metrics_port is not None:
        env["LLMOPS_METRICS_PORT"] = str(metrics_port)
    log = (tmp / "streams.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "streams", "--config", str(path)], env=env, stdout=log, stderr=log,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
