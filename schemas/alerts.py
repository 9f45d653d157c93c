"""Alerts raised by stream agents and the canary judge, consumed by notifiers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlertSeverity = Literal["info", "warning", "critical"]


class Alert(BaseModel):
    """Something a human (or a pager) should know about."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=200, description="Stable dedup key: same condition, same id.")
    kind: Literal["budget", "safety_spike", "drift", "rollout", "unknown_model_price", "sink_failure"]
    severity: AlertSeverity = "warning"
    title: str = Field(min_length=1, max_length=500)
    detail: str = Field(default="", max_length=20_000)
    deployment_id: str | None = Field(default=None, max_length=200)
    observed: dict[str, float] = Field(default_factory=dict)
