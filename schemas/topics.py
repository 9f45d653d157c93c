"""The topic catalog: every topic's name, payload, key, partitions and retention or compaction."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.completions import Completion, CompletionChunk
from schemas.deadletter import DeadLetter
from schemas.feedback import Feedback
from schemas.ids import validate_deployment_id
from schemas.prompts import PromptVersion
from schemas.requests import InferenceRequest
from schemas.review import ReviewItem
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from schemas.safety import SafetyFinding

HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS


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

    def renamed(self, name: str) -> TopicSpec:
        """The same layout under another name (topics renamed by configuration, or per test)."""
        return replace(self, name=name)

    def config(self) -> dict[str, str]:
        """Topic configuration as Kafka expects it."""
        cfg: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None and self.cleanup_policy == "delete":
            cfg["retention.ms"] = str(self.retention_ms)
        cfg.update(self.extra_config)
        return cfg


REQUESTS = TopicSpec("llm.requests", InferenceRequest, "request_id", 6, description="Requests from producers, before routing.")
COMPLETIONS = TopicSpec("llm.completions", Completion, "request_id", 6, description="Final completions, success or error.")
COMPLETION_CHUNKS = TopicSpec(
    "llm.completion-chunks", CompletionChunk, "request_id", 6, retention_ms=DAY_MS, description="Streamed text pieces."
)
FEEDBACK = TopicSpec(
    "llm.feedback", Feedback, "request_id", 6, retention_ms=30 * DAY_MS, description="Scores from users, graders and reviewers.",
)
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
    "llm.deployment-windows", DeploymentWindow, "model_alias", 3,
    description="Per-window aggregates per deployment (fragments per source partition), for the canary judge; keyed "
    "by model alias, so both sides of a rollout share a partition.",
)

PROMPTS = TopicSpec(
    "llm.prompts", PromptVersion, "version/<name>/<n>/<push_id> or label/<name>/<label>", 1,
    cleanup_policy="compact", retention_ms=None,
    description="The prompt registry: PromptVersion and PromptLabel events; one partition, so its order decides "
    "which push got a version number; compacted.",
)

REVIEW = TopicSpec(
    "llm.review", ReviewItem, "request_id", 3, retention_ms=30 * DAY_MS,
    description="Completions queued for human review (gray-band safety scores, low feedback, rollout flags).",
)

TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        REQUESTS, COMPLETIONS, COMPLETION_CHUNKS, FEEDBACK, SAFETY, ALERTS, ROLLOUTS, ROLLOUT_SPECS, DEADLETTER,
        DEPLOYMENT_WINDOWS, PROMPTS, REVIEW,
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


REPLY_PREFIX = "llm.replies."


def reply_topic(instance_id: str) -> TopicSpec:
    """The reply topic of one waiting producer (a gateway instance, an SDK client): ``llm.replies.<instance>``.

    Replicas publish a request's completion and chunks there too when the request names it in ``reply_to``,
    so each producer reads only its own replies. One partition: a reply stream is small and stays in order.
    """
    validate_deployment_id(instance_id)  # the same rule: it names a topic
    return TopicSpec(
        REPLY_PREFIX + instance_id, CompletionChunk, "request_id", 1, retention_ms=HOUR_MS,
        description=f"Completions and chunks for the producer {instance_id} (CompletionChunk and Completion events).",
    )


def topic_spec(name: str) -> TopicSpec:
    """The spec of a catalog topic, a dispatch topic or a reply topic."""
    if name in TOPICS:
        return TOPICS[name]
    if name.startswith(DISPATCH_PREFIX):
        return dispatch_topic(name[len(DISPATCH_PREFIX) :])
    if name.startswith(REPLY_PREFIX):
        return reply_topic(name[len(REPLY_PREFIX) :])
    raise KeyError(f"unknown topic {name!r}")
