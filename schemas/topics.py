"""The topic catalog: every topic's name, payload, key, partitions and retention or compaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.completions import Completion, CompletionChunk
from schemas.deadletter import DeadLetter
from schemas.feedback import Feedback
from schemas.ids import validate_deployment_id
from schemas.requests import InferenceRequest
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from schemas.safety import SafetyFinding

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is laid out."""

    name: str
    payload: type[BaseModel]
    key: str
    """The payload field (or description) used as the message key."""
    partitions: int
    cleanup_policy: Literal["delete", "compact"] = "delete"
    retention_ms: int | None = 7 * DAY_MS
    description: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Topic configuration as Kafka expects it."""
        cfg = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None and self.cleanup_policy == "delete":
            cfg["retention.ms"] = str(self.retention_ms)
        cfg.update(self.extra_config)
        return cfg


REQUESTS = TopicSpec("llm.requests", InferenceRequest, "request_id", 6, description="Requests from producers, before routing.")
COMPLETIONS = TopicSpec("llm.completions", Completion, "request_id", 6, description="Final completions, success or error.")
COMPLETION_CHUNKS = TopicSpec(
    "llm.completion-chunks", CompletionChunk, "request_id", 6, retention_ms=DAY_MS, description="Streamed text pieces."
)
FEEDBACK = TopicSpec("llm.feedback", Feedback, "request_id", 6, retention_ms=30 * DAY_MS, description="Scores from users and graders.")
SAFETY = TopicSpec("llm.safety", SafetyFinding, "request_id", 3, retention_ms=30 * DAY_MS, description="Scanner findings.")
ALERTS = TopicSpec("llm.alerts", Alert, "alert_id", 1, retention_ms=30 * DAY_MS, description="Alerts for notifiers.")
ROLLOUTS = TopicSpec(
    "llm.rollouts", RolloutEvent, "alias", 1, cleanup_policy="compact", retention_ms=None,
    description="Rollout state per model alias; compacted, so the latest event per alias is the state.",
)
ROLLOUT_SPECS = TopicSpec(
    "llm.rollout-specs", RolloutSpecRecord, "alias", 1, cleanup_policy="compact", retention_ms=None,
    description="The spec of each alias's latest rollout, for the judge; compacted.",
)
DEADLETTER = TopicSpec(
    "llm.deadletter", DeadLetter, "original topic/partition/offset", 1, retention_ms=30 * DAY_MS,
    description="Inputs that could not be decoded or processed, with the reason.",
)

DEPLOYMENT_WINDOWS = TopicSpec(
    "llm.deployment-windows", DeploymentWindow, "deployment_id", 3,
    description="Per-interval aggregates per deployment, for the canary judge.",
)

TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        REQUESTS, COMPLETIONS, COMPLETION_CHUNKS, FEEDBACK, SAFETY, ALERTS, ROLLOUTS, ROLLOUT_SPECS, DEADLETTER,
        DEPLOYMENT_WINDOWS,
    )
}

DISPATCH_PREFIX = "llm.dispatch."
DISPATCH_PARTITIONS = 6


def dispatch_topic(deployment_id: str) -> TopicSpec:
    """The topic a router publishes to for one deployment's replicas: ``llm.dispatch.<deployment>``."""
    validate_deployment_id(deployment_id)
    return TopicSpec(
        DISPATCH_PREFIX + deployment_id, InferenceRequest, "request_id", DISPATCH_PARTITIONS, retention_ms=DAY_MS,
        description=f"Requests routed to deployment {deployment_id}.",
    )


def topic_spec(name: str) -> TopicSpec:
    """The spec of a catalog topic or a dispatch topic."""
    if name in TOPICS:
        return TOPICS[name]
    if name.startswith(DISPATCH_PREFIX):
        return dispatch_topic(name[len(DISPATCH_PREFIX) :])
    raise KeyError(f"unknown topic {name!r}")
