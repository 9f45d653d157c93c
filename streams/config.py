"""Knobs of the stream worker (topics, batching, retries, files, drift windows), with defaults.

Connection settings (broker, ClickHouse) come from :class:`services.settings.Settings`; everything
specific to the stream agents lives here. A worker subprocess can read one from a JSON file
(``python -m streams.worker --config FILE``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.topics import ALERTS, COMPLETIONS, DEADLETTER, DEPLOYMENT_WINDOWS, FEEDBACK, REQUESTS, SAFETY
from services.settings import REPO_ROOT


class StreamsConfig(BaseModel):
    """Configuration of the stream agents."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(default="llmops-streams", min_length=1)
    consumer_name: str = Field(default="streams.sink", description="Written into dead letters as the consumer.")
    requests_topic: str = REQUESTS.name
    completions_topic: str = COMPLETIONS.name
    feedback_topic: str = FEEDBACK.name
    safety_topic: str = SAFETY.name
    alerts_topic: str = ALERTS.name
    deadletter_topic: str = DEADLETTER.name
    windows_topic: str = DEPLOYMENT_WINDOWS.name

    batch_size: int = Field(default=500, ge=1, description="Flush a batch at this many records...")
    batch_interval_s: float = Field(default=1.0, gt=0, description="...or when the oldest record waited this long.")

    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0, description="Backoff cap while ClickHouse or Kafka is unreachable.")

    prices_path: Path = REPO_ROOT / "deploy" / "prices.yaml"
    budgets_path: Path | None = Field(default=REPO_ROOT / "deploy" / "budgets.yaml", description="None: no budgets.")
    policies_path: Path | None = Field(default=REPO_ROOT / "deploy" / "policies.yaml", description="None: default policy.")

    aggregate_interval_s: float = Field(default=2.0, gt=0, description="How often touched minutes are recomputed.")
    startup_recompute_hours: float = Field(
        default=24.0, ge=0, description="On start, recompute minutes of raw rows ingested this recently (crash recovery)."
    )

    safety_spike_share: float = Field(
        default=0.2, gt=0, le=1, description="Alert when at least this share of a window's requests was flagged..."
    )
    safety_spike_min_requests: int = Field(default=20, ge=1, description="...and the window had this many requests.")
    windows_enabled: bool = True
    window_seconds: int = Field(default=60, ge=1, description="Length of the per-deployment windows for the judge.")
    window_grace_s: float = Field(default=5.0, ge=0, description="Publish a window this long after it ended.")
    window_recover_s: float = Field(
        default=900.0, ge=0, description="On start, republish windows of completions ingested this recently."
    )

    drift_enabled: bool = True
    drift_encoder: str = Field(default="hashing", pattern="^(hashing|minilm)$")
    drift_reference_size: int = Field(default=500, ge=30)
    drift_current_size: int = Field(default=500, ge=30)
    drift_check_every: int = Field(default=500, ge=1, description="Check a deployment after this many new completions...")
    drift_check_interval_s: float = Field(default=60.0, gt=0, description="...or this long after its last check.")
    drift_share_threshold: float = Field(default=0.3, gt=0, le=1)

    @classmethod
    def load(cls, path: Path | str) -> StreamsConfig:
        """Read a JSON file."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
