"""Drift agent: one DriftMonitor per deployment; checks run off the event loop; results to ClickHouse and alerts.

Every completion is added to its deployment's monitor (reference = the first N completions seen,
current = a sliding window of the last M). A deployment is checked when ``check_every`` completions
arrived since its last check, or ``check_interval_s`` passed with new completions; the Evidently check
runs in a thread (``asyncio.to_thread``), one at a time per deployment, without holding up the batch
loop. Each check is a row of ``drift_checks``; a drifted check also raises an Alert (kind ``drift``).
Monitors live in memory: after a restart the reference window is rebuilt from the traffic that follows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime

from schemas.alerts import Alert
from schemas.completions import Completion
from streams.agents.alerts import AlertPublisher
from streams.config import StreamsConfig
from streams.drift import DriftMonitor, DriftReport, InsufficientData, TextEncoder, load_text_encoder
from streams.sink.clickhouse import ClickHouseWriter

log = logging.getLogger(__name__)

DRIFT_COLUMNS = [
    "deployment_id", "checked_at", "reference_size", "current_size", "regime", "encoder", "drift_share",
    "share_threshold", "dataset_drifted", "drifted_features", "per_feature", "duration_s",
]


class _Deployment:
    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self.new = 0
        self.last_check = time.monotonic()
        self.tenant = ""
        self.task: asyncio.Task[None] | None = None


class DriftAgent:
    """Per-deployment drift monitoring."""

    def __init__(self, config: StreamsConfig, writer: ClickHouseWriter, alerts: AlertPublisher,
                 encoder: TextEncoder | None = None) -> None:
        self.config = config
        self.writer = writer
        self.alerts = alerts
        self.encoder = encoder or load_text_encoder(prefer="minilm" if config.drift_encoder == "minilm" else "hashing")
        self._deployments: dict[str, _Deployment] = {}
        self.checks = 0

    def add(self, tenant: str, completion: Completion) -> None:
        dep = self._deployments.get(completion.deployment_id)
        if dep is None:
            dep = self._deployments[completion.deployment_id] = _Deployment(DriftMonitor(
                self.encoder, reference_size=self.config.drift_reference_size,
                current_size=self.config.drift_current_size, drift_share_threshold=self.config.drift_share_threshold,
            ))
        dep.monitor.add(completion)
        dep.tenant = tenant
        if dep.monitor.reference_ready and dep.monitor.sizes()[1] > 0:
            dep.new += 1

    def due(self) -> list[str]:
        now = time.monotonic()
        out = []
        for name, dep in self._deployments.items():
            if dep.task is not None or dep.new == 0:
                continue
            if dep.new >= self.config.drift_check_every or now - dep.last_check >= self.config.drift_check_interval_s:
                out.append(name)
        return out

    def start_due_checks(self) -> None:
        """Start a background check for every deployment that is due (never blocks)."""
        for name in self.due():
            dep = self._deployments[name]
            dep.new = 0
            dep.last_check = time.monotonic()
            dep.task = asyncio.create_task(self._check(name, dep), name=f"drift-check-{name}")

    async def wait_idle(self) -> None:
        tasks = [d.task for d in self._deployments.values() if d.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _check(self, name: str, dep: _Deployment) -> None:
        try:
            try:
                report: DriftReport = await asyncio.to_thread(dep.monitor.check)
            except InsufficientData as exc:
                log.info("drift %s: not checked yet (%s)", name, exc)
                return
            checked_at = datetime.now(UTC)
            drifted = sorted(k for k, v in report.per_feature.items() if v.drifted)
            await self.writer.insert("drift_checks", [[
                name, checked_at, report.reference_size, report.current_size, report.regime, report.encoder,
                report.drift_share, report.drift_share_threshold, int(report.dataset_drifted), drifted,
                json.dumps({k: v.model_dump() for k, v in report.per_feature.items()}), report.duration_s,
            ]], DRIFT_COLUMNS)
            self.checks += 1
            if report.dataset_drifted:
                await self.alerts.publish(Alert(
                    alert_id=f"drift:{name}:{checked_at.strftime('%Y-%m-%dT%H:%M')}", kind="drift",
                    title=f"{name}: {report.drift_share:.0%} of drift features drifted",
                    detail=f"drifted features: {', '.join(drifted)} ({report.regime} windows, {report.encoder})",
                    deployment_id=name,
                    observed={"drift_share": report.drift_share, "threshold": report.drift_share_threshold},
                ), dep.tenant)
        except Exception:  # noqa: BLE001 - a failed check must not take the worker down
            log.exception("drift %s: check failed", name)
        finally:
            dep.task = None
