"""Drift: one DriftMonitor per deployment, its reference persisted in ClickHouse; checks off the event loop.

Every stored completion is added to its deployment's monitor (reference = the deployment's first
``drift_reference_size`` completions, current = a sliding window of the last ``drift_current_size``). Once a
reference is complete it is embedded and written to ``drift_references``; a deployment this worker has not seen
yet starts from the persisted reference when there is one (the first written wins), so a restart, or another
worker, compares against the same reference instead of refilling it from new traffic. A deployment is checked
when ``drift_check_every`` completions arrived since its last check, or ``drift_check_interval_s`` passed with new
completions, and never sooner than ``drift_check_min_interval_s`` after its previous check (a check costs CPU
seconds). The windows are embedded in a thread and the Evidently check runs in a child process (one, shared by
the deployments, started on the first check): a check holds the interpreter for up to a second, which in a thread
of the worker stalled its batches and window timers (window publication p99 3.4 s instead of 1.5 s at 200
completions/s). Each check is a row of
``drift_checks``, and its share is published in the deployment's windows. A drifted deployment is an *incident*:
one ``drift`` alert when a check first finds it drifted, one more when a check finds it no longer drifted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas.alerts import Alert
from schemas.completions import Completion
from services.core.clickhouse.writer import ClickHouseWriter
from streams.concerns.alerts import AlertPublisher, Incidents
from streams.config import StreamsConfig

if TYPE_CHECKING:  # Evidently (and pandas) take seconds to import: only a worker with drift enabled loads them
    from streams.drift import DriftMonitor, TextEncoder

log = logging.getLogger(__name__)

DRIFT_COLUMNS = [
    "deployment_id", "checked_at", "reference_size", "current_size", "regime", "encoder", "drift_share",
    "share_threshold", "dataset_drifted", "drifted_features", "per_feature", "duration_s",
]
REFERENCE_COLUMNS = ["deployment_id", "created_at", "encoder", "embedding_columns", "rows", "frame"]


class _Deployment:
    def __init__(self, monitor: DriftMonitor, persisted: bool) -> None:
        self.monitor = monitor
        self.persisted = persisted
        self.new = 0
        self.last_check = time.monotonic()
        self.checked = False
        self.tenant = ""
        self.task: asyncio.Task[None] | None = None


class Drift:
    """Per-deployment drift monitoring."""

    def __init__(self, config: StreamsConfig, writer: ClickHouseWriter, alerts: AlertPublisher,
                 encoder: TextEncoder | None = None) -> None:
        from streams.drift import load_text_encoder

        self.config = config
        self.writer = writer
        self.alerts = alerts
        self.incidents = Incidents("drift", writer)
        self.encoder = encoder or load_text_encoder(prefer="minilm" if config.drift_encoder == "minilm" else "hashing")
        self._deployments: dict[str, _Deployment] = {}
        self._shares: dict[str, float] = {}
        self._executor: ProcessPoolExecutor | None = None
        self.checks = 0

    def latest_share(self, deployment: str) -> float | None:
        """The drift share of the deployment's latest check, if any."""
        return self._shares.get(deployment)

    async def prepare(self, deployments: set[str]) -> None:
        """Create the monitors of deployments not seen yet, from their persisted reference when there is one."""
        new = sorted(d for d in deployments if d not in self._deployments)
        if not new:
            return
        import pandas as pd

        from streams.drift import DriftMonitor
        from streams.drift.features import DEFAULT_EMBEDDING_COLUMNS

        refs = {r[0]: r[1:] for r in await self.writer.query(
            "SELECT deployment_id, argMin(frame, created_at), argMin(encoder, created_at), "
            "argMin(embedding_columns, created_at) FROM drift_references WHERE deployment_id IN {d:Array(String)} "
            "GROUP BY deployment_id", {"d": new})}
        for dep, share in await self.writer.query(
                "SELECT deployment_id, argMax(drift_share, checked_at) FROM drift_checks "
                "WHERE deployment_id IN {d:Array(String)} GROUP BY deployment_id", {"d": new}):
            self._shares.setdefault(dep, float(share))
        for dep in new:
            if dep in self._deployments:
                continue
            monitor = DriftMonitor(self.encoder, reference_size=self.config.drift_reference_size,
                                   current_size=self.config.drift_current_size,
                                   drift_share_threshold=self.config.drift_share_threshold)
            persisted = False
            if dep in refs:
                frame_json, encoder, columns = refs[dep]
                if encoder == self.encoder.name and int(columns) == DEFAULT_EMBEDDING_COLUMNS:
                    monitor.pin_reference(pd.DataFrame(json.loads(frame_json)))
                    persisted = True
                    log.info("drift %s: reference restored from ClickHouse", dep)
                else:
                    log.warning("drift %s: the persisted reference used encoder %s; starting a new one", dep, encoder)
            self._deployments[dep] = _Deployment(monitor, persisted)

    def add(self, tenant: str, completion: Completion) -> None:
        """Add a stored completion (call :meth:`prepare` for its deployment first)."""
        dep = self._deployments[completion.deployment_id]
        dep.monitor.add(completion)
        dep.tenant = tenant
        if dep.monitor.reference_ready and dep.monitor.sizes()[1] > 0:
            dep.new += 1

    def due(self) -> list[str]:
        now = time.monotonic()
        out = []
        for name, dep in self._deployments.items():
            if dep.task is not None:
                continue
            since = now - dep.last_check
            reference_to_persist = not dep.persisted and dep.monitor.reference_ready
            spaced = not dep.checked or since >= self.config.drift_check_min_interval_s
            check_due = bool(dep.new) and spaced and (
                dep.new >= self.config.drift_check_every or since >= self.config.drift_check_interval_s)
            if reference_to_persist or check_due:
                out.append(name)
        return out

    def start_due_checks(self) -> None:
        """Start a background job (persist the reference, or check) for every deployment that is due (never blocks)."""
        for name in self.due():
            dep = self._deployments[name]
            if dep.persisted:
                dep.new = 0
                dep.last_check = time.monotonic()
                dep.checked = True
                dep.task = asyncio.create_task(self._check(name, dep), name=f"drift-check-{name}")
            else:
                dep.task = asyncio.create_task(self._persist(name, dep), name=f"drift-reference-{name}")

    async def wait_idle(self) -> None:
        tasks = [d.task for d in self._deployments.values() if d.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _persist(self, name: str, dep: _Deployment) -> None:
        import pandas as pd

        from streams.drift.features import DEFAULT_EMBEDDING_COLUMNS

        try:
            reference, _ = await asyncio.to_thread(dep.monitor.snapshot)
            frame: dict[str, Any] = {c: reference[c].tolist() for c in reference.columns}
            await self.writer.insert("drift_references", [[
                name, datetime.now(UTC), self.encoder.name, DEFAULT_EMBEDDING_COLUMNS, len(reference),
                json.dumps(frame),
            ]], REFERENCE_COLUMNS)
            # Read back the first one written (another worker may have been first) and compare against it.
            rows = await self.writer.query(
                "SELECT argMin(frame, created_at) FROM drift_references WHERE deployment_id = {d:String}", {"d": name})
            dep.monitor.pin_reference(pd.DataFrame(json.loads(rows[0][0])) if rows else reference)
            dep.persisted = True
            log.info("drift %s: reference of %d completions persisted", name, len(reference))
        except Exception:
            log.exception("drift %s: persisting the reference failed", name)
        finally:
            dep.task = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the worker process has threads (Faust's consumer, writers) that a fork would copy mid-way.
            self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def close(self) -> None:
        """Stop the check process (a check in flight is abandoned; the next start checks again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _check(self, name: str, dep: _Deployment) -> None:
        from streams.drift import InsufficientData
        from streams.drift.check import run_drift_check

        try:
            try:
                arguments = await asyncio.to_thread(dep.monitor.check_arguments)
                report = await asyncio.get_running_loop().run_in_executor(
                    self._pool(), functools.partial(run_drift_check, **arguments))
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
            self._shares[name] = report.drift_share
            self.checks += 1

            def opened(alert_id: str) -> Alert:
                return Alert(
                    alert_id=alert_id, kind="drift", title=f"{name}: {report.drift_share:.0%} of drift features drifted",
                    detail=f"drifted features: {', '.join(drifted)} ({report.regime} windows, {report.encoder}); "
                    "one alert per incident: another one follows when a check finds no drift",
                    deployment_id=name,
                    observed={"drift_share": report.drift_share, "threshold": report.drift_share_threshold},
                )

            def resolved(alert_id: str) -> Alert:
                return Alert(
                    alert_id=alert_id, kind="drift", severity="info",
                    title=f"{name}: no drift any more ({report.drift_share:.0%} of features; resolved)",
                    deployment_id=name,
                    observed={"drift_share": report.drift_share, "threshold": report.drift_share_threshold},
                )

            alert = await self.incidents.update(name, report.dataset_drifted, checked_at, opened, resolved)
            if alert is not None:
                await self.alerts.raise_once([(alert, dep.tenant)])
        except Exception:
            log.exception("drift %s: check failed", name)
        finally:
            dep.task = None
