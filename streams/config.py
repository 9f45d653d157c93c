"""Knobs of the stream worker (topics, batching, retries, files, windows, drift), with defaults.

Connection settings (broker, ClickHouse) come from :class:`services.core.settings.Settings`; everything specific
to the stream app lives here. Every field is also an environment variable with the ``LLMOPS_STREAMS_`` prefix
(``LLMOPS_STREAMS_WINDOW_SECONDS=2``), which is how ``faust -A streams.app worker`` is configured; ``llmops
streams --config FILE`` and ``python -m streams.worker --config FILE`` read a JSON file instead (file values win
over nothing else: a file is the whole configuration, with defaults for what it leaves out).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import ALERTS, COMPLETIONS, DEADLETTER, DEPLOYMENT_WINDOWS, FEEDBACK, REQUESTS, REVIEW, ROLLOUTS, SAFETY
from services.core.resources import package_path
from streams.concerns.review import ReviewConfig


class StreamsConfig(BaseSettings):
    """Configuration of the stream app."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_STREAMS_", extra="forbid", env_parse_none_str="null")

    group_id: str = Field(default="llmops-streams", min_length=1, description="Consumer group (the Faust app id).")
    consumer_name: str = Field(default="streams.sink", description="Written into dead letters as the consumer.")
    requests_topic: str = REQUESTS.name
    completions_topic: str = COMPLETIONS.name
    feedback_topic: str = FEEDBACK.name
    safety_topic: str = SAFETY.name
    alerts_topic: str = ALERTS.name
    deadletter_topic: str = DEADLETTER.name
    windows_topic: str = DEPLOYMENT_WINDOWS.name
    review_topic: str = REVIEW.name
    rollouts_topic: str = Field(default=ROLLOUTS.name, description="Read for the review queue's rollout flags.")
    review: ReviewConfig = Field(
        default_factory=ReviewConfig,
        description="What goes to human review: gray bands of the safety scores, low feedback (streams/concerns/review.py).",
    )

    agent_layout: str = Field(
        default="per_topic", pattern="^(per_topic|single)$",
        description="per_topic: one agent per input topic (batches of a topic are stored independently); "
        "single: one agent over the three input topics.",
    )
    batch_size: int = Field(default=500, ge=1, description="A batch is at most this many records...")
    batch_interval_s: float = Field(default=0.2, gt=0, description="...or what arrived within this long.")
    commit_interval_s: float = Field(default=1.0, gt=0, description="How often acked offsets are committed.")
    web_port: int | None = Field(default=None, ge=1, le=65535, description="Faust's web server on 127.0.0.1; unset: off.")

    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0, description="Backoff cap while ClickHouse or Kafka is unreachable.")

    prices_path: Path = Field(
        default_factory=lambda: package_path("streams.cost", "prices.yaml"), description="Default: the shipped price table."
    )
    budgets_path: Path | None = Field(
        default_factory=lambda: package_path("streams.cost", "budgets.yaml"),
        description="Default: the shipped example budgets; None: no budgets.",
    )
    policies_path: Path | None = Field(
        default_factory=lambda: package_path("streams.safety", "policies.yaml"),
        description="Default: the shipped tenant policies; None: the default policy for every tenant.",
    )

    aggregate_interval_s: float = Field(default=0.5, gt=0, description="How often touched minutes are recomputed.")
    startup_recompute_hours: float = Field(
        default=24.0, ge=0, description="On start, recompute minutes of raw rows ingested this recently (crash recovery)."
    )

    windows_enabled: bool = True
    window_seconds: int = Field(default=1, ge=1, description="Length of the tumbling deployment windows (event time).")
    window_grace_s: float = Field(
        default=0.25, ge=0, description="A window is published this long after its end (wall clock); later events "
        "republish it.",
    )
    window_tick_s: float = Field(default=0.1, gt=0, description="How often ended windows are looked for.")
    window_republish_s: float = Field(
        default=0.5, ge=0, description="A window changed by late events is republished at most this often.",
    )
    window_retain_s: float = Field(
        default=120.0, ge=0, description="Ended windows stay in memory this long for late events (older ones are "
        "reloaded from ClickHouse when a late event arrives).",
    )
    window_recover_s: float = Field(
        default=120.0, ge=0, description="On assignment, windows of this partition ending this recently are rebuilt "
        "from ClickHouse and republished (plus every window after the last one known to be published).",
    )
    window_recover_max_s: float = Field(
        default=3600.0, ge=0, description="...but never windows older than this (bounds the rebuild after long downtime).",
    )
    completion_index_size: int = Field(
        default=200_000, ge=1000, description="Recent completions remembered per worker to attribute feedback.",
    )
    feedback_wait_s: float = Field(
        default=600.0, ge=0, description="Feedback whose completion is unknown is looked up again for this long.",
    )

    safety_spike_share: float = Field(
        default=0.2, gt=0, le=1, description="A safety-spike incident opens when this share of a deployment's requests "
        "was flagged...",
    )
    safety_spike_min_requests: int = Field(default=20, ge=1, description="...over at least this many requests...")
    safety_spike_span_s: int = Field(default=10, ge=1, description="...in the last this many seconds of windows.")

    drift_enabled: bool = True
    drift_encoder: str = Field(default="hashing", pattern="^(hashing|minilm)$")
    drift_reference_size: int = Field(default=100, ge=30, description="The first N completions of a deployment "
                                      "(persisted in ClickHouse, so a restart keeps them).")
    drift_current_size: int = Field(default=100, ge=30, description="The sliding window compared with the reference.")
    drift_check_every: int = Field(default=100, ge=1, description="Check a deployment after this many new completions...")
    drift_check_interval_s: float = Field(default=60.0, gt=0, description="...or this long after its last check...")
    drift_check_min_interval_s: float = Field(
        default=10.0, ge=0, description="...but not sooner than this after its last check (a check costs CPU seconds; "
        "at high traffic it would otherwise run every few seconds per deployment).",
    )
    drift_share_threshold: float = Field(default=0.3, gt=0, le=1)

    @classmethod
    def load(cls, path: Path | str) -> StreamsConfig:
        """Read a JSON file (environment variables are not consulted)."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def to_env(self) -> dict[str, str]:
        """The LLMOPS_STREAMS_* environment that makes ``StreamsConfig()`` in a child process equal this config."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            env[f"LLMOPS_STREAMS_{name.upper()}"] = "null" if value is None else str(value)
        return env
