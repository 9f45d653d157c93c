"""Safety-spike incidents: too many of a deployment's recent requests had a safety finding. One alert per incident.

Judged on the published deployment windows (read back from ``llm.deployment-windows``, keyed by model alias, so
one worker sees every fragment of a deployment): the latest copy of each fragment is kept for the last
``span_s`` seconds of windows, and after every batch of fragments each touched deployment is judged over that
span. An incident opens when at least ``share`` of at least ``min_requests`` requests were flagged, and resolves
when, over at least ``min_requests`` requests again, the share fell below ``share``. The alert ids are the
incident's (:class:`streams.concerns.alerts.Incidents`), so a condition lasting minutes raises two alerts, not
one per window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from streams.concerns.alerts import Incidents

FragmentKey = tuple[datetime, int | None, str | None, str | None]


class SafetySpikes:
    """Recent fragments per deployment and the incidents they imply."""

    def __init__(self, incidents: Incidents, *, share: float, min_requests: int, span_s: int) -> None:
        self.incidents = incidents
        self.share = share
        self.min_requests = min_requests
        self.span = timedelta(seconds=span_s)
        self._fragments: dict[str, dict[FragmentKey, DeploymentWindow]] = {}

    def totals(self, deployment: str, until: datetime) -> tuple[int, int, int]:
        """(requests, flagged requests, findings) of the deployment's windows in the span ending at ``until``."""
        fragments = self._fragments.get(deployment, {})
        lo = until - self.span
        recent = [w for (start, *_), w in fragments.items() if lo <= start < until]
        return (sum(w.requests for w in recent), sum(w.safety_flagged_requests for w in recent),
                sum(w.safety_findings for w in recent))

    async def observe(self, windows: list[DeploymentWindow]) -> list[Alert]:
        """Take in published fragments; the incident alerts (openings, resolutions) they cause."""
        latest: dict[str, datetime] = {}
        for w in windows:
            self._fragments.setdefault(w.deployment_id, {})[(w.window_start, w.source_partition, w.prompt_id,
                                                           w.prompt_version)] = w
            end = w.window_start + timedelta(seconds=w.window_seconds)
            latest[w.deployment_id] = max(latest.get(w.deployment_id, end), end)
        alerts = []
        for deployment, until in sorted(latest.items()):
            fragments = self._fragments[deployment]
            for key in [k for k in fragments if k[0] < until - 2 * self.span]:
                del fragments[key]
            requests, flagged, findings = self.totals(deployment, until)
            if requests < self.min_requests:
                continue
            observed = flagged / requests
            active = observed >= self.share

            def opened(alert_id: str, deployment: str = deployment, observed: float = observed,
                       requests: int = requests, flagged: int = flagged, findings: int = findings) -> Alert:
                return Alert(
                    alert_id=alert_id, kind="safety_spike",
                    severity="critical" if observed >= min(1.0, 2 * self.share) else "warning",
                    title=f"{deployment}: {observed:.0%} of requests had a safety finding",
                    detail=(f"{flagged} of {requests} requests flagged in the last {self.span.seconds}s "
                            f"({findings} findings); threshold {self.share:.0%} with at least {self.min_requests} "
                            "requests. One alert per incident: another one follows when it resolves."),
                    deployment_id=deployment,
                    observed={"flagged_share": observed, "flagged_requests": float(flagged),
                              "requests": float(requests), "threshold": self.share},
                )

            def resolved(alert_id: str, deployment: str = deployment, observed: float = observed,
                         requests: int = requests) -> Alert:
                return Alert(
                    alert_id=alert_id, kind="safety_spike", severity="info",
                    title=f"{deployment}: safety findings back to {observed:.0%} of requests (resolved)",
                    detail=f"over the last {self.span.seconds}s ({requests} requests); threshold {self.share:.0%}",
                    deployment_id=deployment,
                    observed={"flagged_share": observed, "requests": float(requests), "threshold": self.share},
                )

            alert = await self.incidents.update(deployment, active, until, opened, resolved)
            if alert is not None:
                alerts.append(alert)
        return alerts
