"""Safety-spike alerts: a deployment window in which too many requests had a safety finding.

Judged on the published ``DeploymentWindow`` (computed exactly from the raw tables), so a republished
window yields the same ``alert_id`` and the alert is raised once.
"""

from __future__ import annotations

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert


def safety_spike_alert(window: DeploymentWindow, *, share: float, min_requests: int) -> Alert | None:
    """An alert when at least ``share`` of the window's requests (and ``min_requests`` of them) were flagged."""
    if window.requests < min_requests or window.requests == 0:
        return None
    observed = window.safety_flagged_requests / window.requests
    if observed < share:
        return None
    start = window.window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Alert(
        alert_id=f"safety_spike:{window.deployment_id}:{start}",
        kind="safety_spike",
        severity="critical" if observed >= min(1.0, 2 * share) else "warning",
        title=f"{window.deployment_id}: {observed:.0%} of requests had a safety finding",
        detail=(f"{window.safety_flagged_requests} of {window.requests} requests flagged in the "
                f"{window.window_seconds}s window from {start} ({window.safety_findings} findings); "
                f"threshold {share:.0%} with at least {min_requests} requests"),
        deployment_id=window.deployment_id,
        observed={"flagged_share": observed, "flagged_requests": float(window.safety_flagged_requests),
                  "requests": float(window.requests), "threshold": share},
    )
