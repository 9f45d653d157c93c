"""Rollout specs: what a canary rollout of a model alias is judged by, and the record the judge reads.

A spec names the alias, the stable and canary deployments, the traffic steps (percent of traffic on the
canary), the overall ``alpha``, the minimum samples and time per step, the longest a step may take, and the
gates. The judge (services/rollout) decides after every deployment window, with statistics that stay valid
however often they are looked at:

- **roll back** as soon as one gate shows the canary worse than its tolerance (``max_ratio`` for the count
  gates: error, safety and slow-request rates; ``threshold`` for the feedback and cost gates), with every
  gate's test at ``alpha / number of tested gates`` (Bonferroni), so ``alpha`` bounds the chance that a canary
  no worse than its tolerances is ever rolled back;
- **step up, or promote** after the last step below 100%, once the step has lasted ``min_step_seconds``, has
  ``min_samples`` requests per side, and every gate's confidence sequence shows the canary no worse than
  stable by more than the gate's ``margin`` (never merely because no regression was found);
- **roll back** a step that has shown neither after ``max_step_seconds`` (the reason says what was missing);
- otherwise **hold**, and say why (no canary traffic, too few samples, which gate is not yet within margin).

Fields of the interval-based judge (``analysis_interval_seconds``, ``failure_threshold``, ``lateness_seconds``,
``severe_threshold``) still load; the sequential judge ignores them (a test's crossing is the decision, at once).
Until it replaces the interval judge in services/rollout/judge.py, that one still reads them.

``RolloutSpecRecord`` (event type ``rollout.spec``) is published to the compacted ``llm.rollout-specs``
topic when a rollout starts, so the judge knows every running rollout's spec without files.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.envelope import UtcDatetime
from schemas.variants import parse_variant

GateName = Literal[
    "error_rate", "slow_request_rate", "p95_latency_ratio", "safety_finding_rate", "feedback_score_delta",
    "drift_share", "cost_per_request_ratio",
]


class _Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float
    severe_threshold: float | None = Field(
        default=None, description="Ignored (kept so that older specs load): every significant breach rolls back at once."
    )
    min_samples: int | None = Field(
        default=None, ge=1,
        description="Samples per side this gate needs in a step before it can count as within margin; default: the "
        "spec's min_samples.",
    )

    @model_validator(mode="after")
    def _severe_beyond_threshold(self) -> _Gate:
        if self.severe_threshold is not None and self.severe_threshold < self.threshold:
            raise ValueError(f"severe_threshold {self.severe_threshold} must be >= threshold {self.threshold}")
        return self


DEFAULT_MAX_RATIO = 1.5
"""Rate-ratio tolerance of a count gate that names none (a ``comparison: difference`` gate of an older spec)."""
DEFAULT_RATE_MARGIN = 0.02
"""Promotion margin (canary rate - stable rate) of a count gate that names none (a ``comparison: ratio`` gate)."""
DEFAULT_SLOW_MARGIN = 0.05
"""Promotion margin of the slow-request gate (canary share of slow requests - stable's)."""


class RateGate(_Gate):
    """A count (errors, requests with safety findings) of canary vs stable.

    Rolls back once the canary's rate is shown above ``max_ratio`` x stable's (a sequential test on the bad
    events); counts as within margin once the canary's rate is shown below stable's + ``margin``.
    Older specs: ``comparison: ratio`` makes ``threshold`` the max_ratio, ``comparison: difference`` makes it the
    margin.
    """

    comparison: Literal["difference", "ratio"] = "difference"
    threshold: float = Field(default=0.0, ge=0)
    max_ratio: float | None = Field(
        default=None, ge=1.0, description="Roll back once canary rate > max_ratio x stable rate is shown.",
    )
    margin: float | None = Field(
        default=None, gt=0, le=1, description="Within margin once canary rate < stable rate + margin is shown.",
    )

    @model_validator(mode="after")
    def _some_tolerance(self) -> RateGate:
        if self.threshold <= 0 and (self.max_ratio is None or self.margin is None):
            raise ValueError("a rate gate needs max_ratio and margin (or, as older specs, threshold > 0)")
        return self

    def resolved_max_ratio(self) -> float:
        if self.max_ratio is not None:
            return self.max_ratio
        return self.threshold if self.comparison == "ratio" and self.threshold >= 1.0 else DEFAULT_MAX_RATIO

    def resolved_margin(self, default: float = DEFAULT_RATE_MARGIN) -> float:
        if self.margin is not None:
            return self.margin
        return min(self.threshold, 1.0) if self.comparison == "difference" else default


class SlowGate(BaseModel):
    """The share of slow requests (latency above ``latency_ms``) of canary vs stable: a count gate on both sides.

    ``latency_ms`` unset: the judge fixes it when the rollout starts, at the bucket bound nearest stable's
    ``stable_quantile`` latency over the minute before, when that minute holds ``calibration_requests`` stable
    requests (else over stable's first ``calibration_requests`` requests of the rollout).
    A tail-only slowdown (a fifth of requests 4x slower, median unchanged) moves this share, not the median.
    """

    model_config = ConfigDict(extra="forbid")

    max_ratio: float = Field(default=DEFAULT_MAX_RATIO, ge=1.0)
    margin: float = Field(default=DEFAULT_SLOW_MARGIN, gt=0, le=1)
    latency_ms: float | None = Field(default=None, gt=0, description="The slow threshold L; default from stable.")
    stable_quantile: float = Field(default=0.99, gt=0.5, lt=1.0)
    calibration_requests: int = Field(
        default=200, ge=20,
        description="Stable requests the quantile is read from (before the start, else at the start of the rollout).",
    )
    min_samples: int | None = Field(default=None, ge=1)


class RatioGate(_Gate):
    """canary / stable > threshold rolls back (threshold > 1, e.g. 1.5 = 50% worse); within margin once
    canary / stable < ``margin`` (default: threshold) is shown.

    ``p95_latency_ratio`` (older specs) is judged as the slow-request gate with ``max_ratio: threshold``.
    """

    threshold: float = Field(gt=1.0)
    margin: float | None = Field(default=None, gt=1.0)

    def resolved_margin(self) -> float:
        return self.threshold if self.margin is None else self.margin


class DeltaGate(_Gate):
    """Mean feedback score (0..1): rolls back once stable - canary > threshold is shown; within margin once
    stable - canary < ``margin`` (default: threshold) is shown."""

    threshold: float = Field(gt=0, le=1)
    margin: float | None = Field(default=None, gt=0, le=1)

    def resolved_margin(self) -> float:
        return self.threshold if self.margin is None else self.margin


class AbsoluteGate(_Gate):
    """An absolute ceiling on the canary's drift share (0..1), as the drift monitor reports it (no test of its
    own): a report above it rolls back; a report at or below it in the step counts as within margin."""

    threshold: float = Field(gt=0, le=1)
    severe_threshold: float | None = Field(default=None, gt=0, le=1)


class Gates(BaseModel):
    """The gates of a rollout; a gate left out is not checked."""

    model_config = ConfigDict(extra="forbid")

    error_rate: RateGate | None = None
    slow_request_rate: SlowGate | None = None
    p95_latency_ratio: RatioGate | None = None
    safety_finding_rate: RateGate | None = None
    feedback_score_delta: DeltaGate | None = None
    drift_share: AbsoluteGate | None = None
    cost_per_request_ratio: RatioGate | None = None

    def configured(self) -> list[GateName]:
        return [name for name in type(self).model_fields  # type: ignore[misc]  # str keys, which are exactly the GateNames
                if getattr(self, name) is not None]


class RolloutSpec(BaseModel):
    """One canary rollout of a model alias."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=200)
    stable: str = Field(
        min_length=1, max_length=191,
        description="The variant serving the alias now: a deployment, or <deployment>/<prompt_id>@<version>.",
    )
    canary: str = Field(min_length=1, max_length=191, description="The new variant being rolled out (same forms).")
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1, description="Percent of traffic on the canary at each step, strictly increasing, in (0, 100].",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5,
        description="Chance, over the whole rollout, of rolling back a canary no worse than its tolerances (split "
        "over the tested gates); also the chance that a gate counts as within margin while it is not.",
    )
    min_samples: int = Field(default=100, ge=1, description="Requests per side in a step before it can be passed.")
    min_step_seconds: float = Field(default=30.0, ge=0, description="Event time a step lasts at least before it is passed.")
    max_step_seconds: float | None = Field(
        default=1800.0, gt=0,
        description="A step that has not been passed (nor rolled back) after this much event time is rolled back; "
        "null: hold for as long as it takes.",
    )
    report_seconds: float = Field(
        default=10.0, gt=0, description="While a step holds, the judge publishes its state this often (event time).",
    )
    analysis_interval_seconds: float = Field(default=60.0, gt=0, description="Ignored (interval-based judge).")
    failure_threshold: int = Field(default=2, ge=1, description="Ignored (interval-based judge).")
    lateness_seconds: float | None = Field(default=None, ge=0, description="Ignored (interval-based judge).")
    gates: Gates = Field(default_factory=Gates)

    @field_validator("stable", "canary")
    @classmethod
    def _variant(cls, value: str) -> str:
        parse_variant(value)  # a deployment id, or <deployment>/<prompt_id>@<version>; raises ValueError saying why
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        for s in steps:
            if not 0 < s <= 100:
                raise ValueError(f"each step is a percent in (0, 100], got {s}")
        if steps[0] >= 100:
            raise ValueError("the first step must leave stable some traffic (< 100%): the judge compares the two")
        if any(b <= a for a, b in itertools.pairwise(steps)):
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

    @model_validator(mode="after")
    def _step_times(self) -> RolloutSpec:
        if self.max_step_seconds is not None and self.max_step_seconds < self.min_step_seconds:
            raise ValueError(f"max_step_seconds {self.max_step_seconds} must be >= min_step_seconds {self.min_step_seconds}")
        return self

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
    started_at: UtcDatetime = Field(description="When the rollout started (event time: windows before it are not judged).")
    spec: RolloutSpec
