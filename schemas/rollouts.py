"""Rollout events: the canary judge's decisions and the router's traffic weights.

A judge event carries, per gate, what the gate shows now (``GateResult``): the observed values of both sides,
the e-value of its rollback test and the boundary it must reach, or the confidence bounds of how much worse
the canary is, and the margin the promotion needs. The fields added for the sequential judge are optional, so
events of the interval-based judge still decode.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RolloutAction = Literal["start", "step_up", "hold", "promote", "rollback", "abort"]


GateStatus = Literal["rollback", "within_margin", "pending", "no_data"]


class GateResult(BaseModel):
    """One gate's verdict: observed value against its threshold, with the sample sizes."""

    model_config = ConfigDict(extra="forbid")

    gate: str = Field(min_length=1, max_length=100)
    passed: bool = Field(description="False when the gate calls for a rollback.")
    observed: float | None
    threshold: float = Field(description="The tolerance beyond which the gate rolls back.")
    canary_samples: int = Field(ge=0)
    stable_samples: int = Field(ge=0)
    detail: str = Field(default="", max_length=2_000)
    status: GateStatus | None = Field(
        default=None,
        description="rollback: shown worse than its tolerance; within_margin: shown within its margin; pending: "
        "neither yet; no_data: nothing to judge yet.",
    )
    canary_value: float | None = Field(default=None, description="The canary's rate, mean score or cost per request.")
    stable_value: float | None = Field(default=None, description="Stable's, in the same unit.")
    e_value: float | None = Field(default=None, ge=0, description="The rollback test's e-value (count gates).")
    e_threshold: float | None = Field(default=None, gt=0, description="The e-value that rolls back (K / alpha).")
    worse_low: float | None = Field(
        default=None, description="Lower confidence bound of how much worse the canary is (rollback level).",
    )
    worse_high: float | None = Field(
        default=None, description="Upper confidence bound of how much worse the canary is (promotion level).",
    )
    margin: float | None = Field(default=None, description="worse_high must be at most this to count as within margin.")


class RolloutEvent(BaseModel):
    """The rollout state of one model alias after a decision. Keyed by alias on a compacted topic."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=200)
    rollout_id: str = Field(min_length=1, max_length=200)
    stable_deployment: str = Field(min_length=1, max_length=200)
    canary_deployment: str | None = Field(default=None, max_length=200)
    action: RolloutAction
    step: int = Field(ge=0, description="Index into the rollout's steps; 0 before the first step.")
    weights: dict[str, float] = Field(description="deployment id -> share of traffic, summing to 1.")
    reason: str = Field(default="", max_length=20_000)
    gates: list[GateResult] = Field(default_factory=list)
    step_seconds: float | None = Field(
        default=None, ge=0, description="Event time since the judged step began, when the judge decided.",
    )
    canary_requests: int | None = Field(default=None, ge=0, description="Canary requests judged in the step.")
    stable_requests: int | None = Field(default=None, ge=0, description="Stable requests judged in the step.")

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_one(cls, weights: dict[str, float]) -> dict[str, float]:
        if not weights:
            raise ValueError("weights must name at least one deployment")
        if any(w < 0 for w in weights.values()):
            raise ValueError("weights must be non-negative")
        total = sum(weights.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got {total}")
        return weights
