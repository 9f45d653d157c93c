"""The safety-spike rule on one deployment window."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import DeploymentWindow
from streams.agents.safety_spike import safety_spike_alert

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _window(requests: int, flagged: int) -> DeploymentWindow:
    return DeploymentWindow(deployment_id="d", window_start=START, window_seconds=60, requests=requests, errors=0,
                            safety_flagged_requests=flagged, safety_findings=flagged)


def test_below_share_or_too_few_requests_raises_nothing() -> None:
    assert safety_spike_alert(_window(100, 19), share=0.2, min_requests=20) is None
    assert safety_spike_alert(_window(10, 10), share=0.2, min_requests=20) is None
    assert safety_spike_alert(_window(0, 0), share=0.2, min_requests=1) is None


def test_spike_alert_is_keyed_by_deployment_and_window() -> None:
    alert = safety_spike_alert(_window(100, 25), share=0.2, min_requests=20)
    assert alert is not None and alert.kind == "safety_spike" and alert.severity == "warning"
    assert alert.alert_id == "safety_spike:d:2026-11-24T10:00:00Z"
    assert alert.observed["flagged_share"] == 0.25
    assert safety_spike_alert(_window(100, 45), share=0.2, min_requests=20).severity == "critical"  # type: ignore[union-attr]
