"""Rollout specs: what a canary rollout of a model alias is judged by, and the record the judge reads.

A spec names the alias, the stable and canary deployments, the traffic steps (percent of traffic on the
canary), the analysis interval, the minimum traffic per side per interval, how many consecutive failed
intervals roll back, and the gates. Each gate compares the canary with the stable deployment over one
interval (except ``drift_share``, an absolute threshold on the canary) and fails only when the observed
value breaches its threshold AND the difference is significant at ``alpha``.

A gate with ``severe_threshold`` rolls back at once (without waiting for ``failure_threshold`` intervals)
when its observed value breaches that larger threshold, still only when significant.

``RolloutSpecRecord`` (event type ``rollout.spec``) is published to the compacted ``llm.rollout-specs``
topic when a rollout starts, so the judge knows every running rollout's spec without files.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.envelope import UtcDatetime
from schemas.ids import validate_deployment_id

GateName = Literal[
    "error_rate", "p95_latency_ratio", "safety_finding_rate", "feedback_score_delta", "drift_share",
    "cost_per_request_ratio",
]


class _Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float
    severe_threshold: float | None = Field(
        default=None, description="Breaching this (significantly) rolls back at once, without waiting."
    )
    min_samples: int | None = Field(
        default=None, ge=1, description="Samples per side this gate needs; default: the spec's min_samples."
    )

    @model_validator(mode="after")
    def _severe_beyond_threshold(self) -> _Gate:
        if self.severe_threshold is not None and self.severe_threshold < self.threshold:
            raise ValueError(f"severe_threshold {self.severe_threshold} must be >= threshold {self.threshold}")
        return self


class RateGate(_Gate):
    """A rate compared with stable: ``difference`` (canary - stable > threshold) or ``ratio`` (canary / stable > threshold)."""

    comparison: Literal["difference", "ratio"] = "difference"
    threshold: float = Field(gt=0)


class RatioGate(_Gate):
    """canary / stable > threshold fails (threshold > 1, e.g. 1.5 = 50% worse)."""

    threshold: float = Field(gt=1.0)


class DeltaGate(_Gate):
    """Mean feedback score (0..1): stable - canary > threshold fails (the canary is worse by more than threshold)."""

    threshold: float = Field(gt=0, le=1)


class AbsoluteGate(_Gate):
    """An absolute ceiling on the canary's value (drift share, 0..1)."""

    threshold: float = Field(gt=0, le=1)
    severe_threshold: float | None = Field(default=None, gt=0, le=1)


class Gates(BaseModel):
    """The gates of a rollout; a gate left out is not checked."""

    model_config = ConfigDict(extra="forbid")

    error_rate: RateGate | None = None
    p95_latency_ratio: RatioGate | None = None
    safety_finding_rate: RateGate | None = None
    feedback_score_delta: DeltaGate | None = None
    drift_share: AbsoluteGate | None = None
    cost_per_request_ratio: RatioGate | None = None

    def configured(self) -> list[GateName]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]  # type: ignore[misc]


class RolloutSpec(BaseModel):
    """One canary rollout of a model alias."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=200)
    stable: str = Field(min_length=1, max_length=191, description="The deployment serving the alias now.")
    canary: str = Field(min_length=1, max_length=191, description="The new deployment being rolled out.")
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1, description="Percent of traffic on the canary at each step, strictly increasing, in (0, 100].",
    )
    analysis_interval_seconds: float = Field(default=60.0, gt=0, description="Length of one analysis interval (event time).")
    min_samples: int = Field(default=100, ge=1, description="Requests per side per interval below which the judge holds.")
    failure_threshold: int = Field(default=2, ge=1, description="Consecutive failed intervals before rollback.")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Significance level of every gate's one-sided test.")
    lateness_seconds: float | None = Field(
        default=None, ge=0,
        description="How far (event time) one side may run ahead of a silent other side before the interval closes "
        "anyway; default: one analysis interval.",
    )
    gates: Gates = Field(default_factory=Gates)

    @field_validator("stable", "canary")
    @classmethod
    def _deployment_id(cls, value: str) -> str:
        validate_deployment_id(value)  # raises ValueError naming the allowed characters
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        for s in steps:
            if not 0 < s <= 100:
                raise ValueError(f"each step is a percent in (0, 100], got {s}")
        if steps[0] >= 100:
            raise ValueError("the first step must leave stable some traffic (< 100%): the judge compares the two")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        return steps

    @model_validator(mode="after")
    def _check(self) -> RolloutSpec:
        if self.stable == self.canary:
            raise ValueError(f"stable and canary must differ (both {self.stable!r})")
        if not self.gates.configured():
            raise ValueError("at least one gate is required (gates: error_rate, p95_latency_ratio, ...)")
        return self

    @property
    def lateness(self) -> float:
        return self.analysis_interval_seconds if self.lateness_seconds is None else self.lateness_seconds

    def canary_share(self, step: int) -> float:
        """Canary share (0..1) at a 1-based step."""
        return self.steps[step - 1] / 100.0

    def weights(self, step: int) -> dict[str, float]:
        """Weights at a 1-based step."""
        share = self.canary_share(step)
        return {self.stable: 1.0 - share, self.canary: share}


class RolloutSpecRecord(BaseModel):
    """The spec of one started rollout, with its id and the origin of its analysis intervals."""

    model_config = ConfigDict(extra="forbid")

    rollout_id: str = Field(min_length=1, max_length=200)
    started_at: UtcDatetime = Field(description="Origin of the analysis intervals (event time).")
    spec: RolloutSpec
