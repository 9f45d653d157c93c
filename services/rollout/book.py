"""One rollout's windows as the judge holds them, feeding its evidence. Pure (no I/O).

- **Sides.** A window is the canary's or stable's when its deployment matches the variant's, and, for a prompt
  variant (``<deployment>/<prompt_id>@<version>``), its prompt version and prompt id too (a window of an older
  stream worker carries no prompt id: then the version decides); other windows do not count.
- **Fragments.** A window may come in fragments (one per completions partition, and per prompt); each is
  kept by (deployment, window_start, source_partition, prompt_id, prompt_version), and a fragment published again replaces
  the earlier copy: its terms are subtracted and the new ones added, with the stakes it was first given.
- **Sealing.** The rate-ratio e-processes may only see a window once both sides of it are in (a canary fragment
  alone over-states them), so a cell (window_start, source partition) is *sealed* when both sides' fragments have
  arrived, or when a later window of the same source partition has (a side with no traffic publishes nothing).
  The betting and asymptotic sequences are one-sample, per side, so their fragments count at once.
- **Steps.** The e-processes run over the whole rollout (each fragment at its own canary weight: the router's
  ``routing_weight`` when the window carries it, else the current step's share, which over-states an earlier
  step's and so stays valid); the confidence sequences count only fragments of the current step.
- **The slow threshold** of each slow-request gate: the spec's ``latency_ms``, else the bucket bound at stable's
  ``stable_quantile`` over the minute before the rollout started (from the windows the judge stored) when it holds
  the gate's ``calibration_requests``, else over stable's first ``calibration_requests`` requests of the rollout,
  which then do not count for that gate (so the threshold does not depend on the data it judges).
- **Event time.** The rollout's clock is the end of its latest sealed window; the time since the step began is
  measured on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from schemas.aggregates import DeploymentWindow, latency_bucket, latency_bucket_upper
from schemas.rollout_specs import RolloutSpecRecord
from schemas.variants import parse_variant
from services.rollout.evidence import Evidence, GateEval, GatePlan, Side, SideWindow, plan_gates
from services.rollout.sequential.betting import Stakes

PRE_START = timedelta(seconds=60)
"""How far before the rollout's start stable's latency is read for the slow threshold."""

FragmentKey = tuple[str, datetime, int, str, str]
Cell = tuple[datetime, int]


def fragment_key(w: DeploymentWindow) -> FragmentKey:
    return (w.deployment_id, w.window_start, -1 if w.source_partition is None else w.source_partition,
            w.prompt_id or "", w.prompt_version or "")


def window_end(w: DeploymentWindow) -> datetime:
    return w.window_start + timedelta(seconds=w.window_seconds)


def latency_histogram(w: DeploymentWindow) -> dict[int, int] | None:
    """Every request's latency bucket: the window's histogram, else its latency sample when it holds every
    request; None when the window does not say."""
    if w.latency_histogram:
        return w.latency_histogram
    if w.requests > 0 and len(w.latency_sample_ms) == w.requests:
        out: dict[int, int] = {}
        for ms in w.latency_sample_ms:
            b = latency_bucket(ms)
            out[b] = out.get(b, 0) + 1
        return out
    return None


def quantile_bucket(histogram: dict[int, int], q: float) -> int:
    """The bucket holding the q-quantile of a histogram (requests above its bound are the slowest 1 - q or less)."""
    total = sum(histogram.values())
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= q * total:
            return b
    return max(histogram)


@dataclass
class Fragment:
    window: DeploymentWindow
    side: Side
    canary_weight: float
    data: SideWindow
    sealed: bool = False
    stakes: dict[str, Stakes] | None = None
    """The stakes it was added to the step's sequences with (None: not in the current step)."""


@dataclass
class SlowThreshold:
    """A slow-request gate's threshold: the bucket above which a request is slow, and from when it counts."""

    bucket: int | None = None
    counts_from: datetime | None = None
    calibration: dict[int, int] = field(default_factory=dict)
    calibration_end: datetime | None = None

    @property
    def ms(self) -> float | None:
        return None if self.bucket is None else latency_bucket_upper(self.bucket)


class RolloutBook:
    """The windows of one rollout (``record``) and the evidence they make; ``step`` and ``step_started_at`` as
    the rollout's progress says."""

    def __init__(self, record: RolloutSpecRecord, step: int, step_started_at: datetime, alpha: float | None = None,
                 prior: list[DeploymentWindow] | None = None) -> None:
        self.record = record
        self.spec = record.spec
        self.stable = parse_variant(self.spec.stable)
        self.canary = parse_variant(self.spec.canary)
        self.step = step
        self.step_started_at = step_started_at
        self.evidence = Evidence(plan_gates(self.spec), self.spec.alpha if alpha is None else alpha)
        self.fragments: dict[FragmentKey, Fragment] = {}
        self.cells: dict[Cell, set[Side]] = {}
        self.partition_latest: dict[int, datetime] = {}
        self.clock: datetime | None = None
        """End of the latest sealed window."""
        self.slow: dict[str, SlowThreshold] = {}
        for p in self.evidence.plans:
            if p.source == "slow":
                self.slow[p.name] = self._threshold(p, prior or [])
                self._show_threshold(p.name)

    # --- the slow thresholds ------------------------------------------------------------------------------

    def _threshold(self, plan: GatePlan, prior: list[DeploymentWindow]) -> SlowThreshold:
        if plan.slow_ms is not None:
            return SlowThreshold(bucket=latency_bucket(plan.slow_ms), counts_from=self.record.started_at)
        since = self.record.started_at - PRE_START
        merged: dict[int, int] = {}
        for w in prior:
            hist = latency_histogram(w)
            if hist and self.stable.matches(w.deployment_id, w.prompt_version, w.prompt_id) \
                    and since <= w.window_start < self.record.started_at:
                for b, n in hist.items():
                    merged[b] = merged.get(b, 0) + n
        if sum(merged.values()) >= plan.calibration_requests:
            return SlowThreshold(bucket=quantile_bucket(merged, plan.stable_quantile), counts_from=self.record.started_at)
        return SlowThreshold()

    def _calibrate(self, w: DeploymentWindow) -> None:
        """A stable window of the rollout towards a slow threshold still unknown."""
        hist = latency_histogram(w)
        if hist is None:
            return
        for name, t in self.slow.items():
            if t.bucket is not None:
                continue
            for b, n in hist.items():
                t.calibration[b] = t.calibration.get(b, 0) + n
            end = window_end(w)
            t.calibration_end = end if t.calibration_end is None else max(t.calibration_end, end)
            plan = next(p for p in self.evidence.plans if p.name == name)
            if sum(t.calibration.values()) >= plan.calibration_requests:
                t.bucket = quantile_bucket(t.calibration, plan.stable_quantile)
                t.counts_from = t.calibration_end
                self._show_threshold(name)

    def _show_threshold(self, name: str) -> None:
        ms = self.slow[name].ms
        if ms is not None:
            self.evidence.plans = [replace(p, slow_ms=ms) if p.name == name else p for p in self.evidence.plans]

    # --- windows --------------------------------------------------------------------------------------------

    def side_of(self, w: DeploymentWindow) -> Side | None:
        """Which side a window belongs to: its deployment (and, for a prompt variant, its prompt) match."""
        if self.canary.matches(w.deployment_id, w.prompt_version, w.prompt_id):
            return "canary"
        if self.stable.matches(w.deployment_id, w.prompt_version, w.prompt_id):
            return "stable"
        return None

    def canary_weight(self, w: DeploymentWindow, side: Side) -> float:
        """The router's weight in force for the window (what the window says, else the current step's share)."""
        if w.routing_weight is not None:
            return w.routing_weight if side == "canary" else 1.0 - w.routing_weight
        return self.spec.canary_share(self.step)

    def side_window(self, w: DeploymentWindow) -> SideWindow:
        def a(x: float) -> np.ndarray:
            return np.asarray(float(x))

        hist = latency_histogram(w)
        slow: dict[str, np.ndarray] = {}
        timed: dict[str, np.ndarray] = {}
        for name, t in self.slow.items():
            counts = hist is not None and t.bucket is not None and t.counts_from is not None \
                and w.window_start >= t.counts_from
            slow[name] = a(sum(n for b, n in (hist or {}).items() if t.bucket is not None and b > t.bucket) if counts else 0)
            timed[name] = a(w.requests if counts else 0)
        # Windows of older stream workers carry no sum of squares: x^2 <= x in [0, 1] bounds it (conservatively);
        # cost without its sum of squares has no variance to go on, so it does not count.
        fb_sumsq = w.feedback_score_sumsq if w.feedback_score_sumsq > 0 or w.feedback_score_sum == 0 \
            else w.feedback_score_sum
        cost_known = w.cost_sumsq > 0 or w.cost_total == 0
        drift = w.drift_share if w.drift_share is not None and math.isfinite(w.drift_share) else math.nan
        return SideWindow(
            requests=a(w.requests), errors=a(w.errors), flagged=a(w.safety_flagged_requests), slow=slow, timed=timed,
            feedback_n=a(w.feedback_count), feedback_sum=a(min(w.feedback_score_sum, w.feedback_count)),
            feedback_sumsq=a(min(fb_sumsq, w.feedback_count)), priced=a(w.priced_requests if cost_known else 0),
            cost_sum=a(w.cost_total if cost_known else 0), cost_sumsq=a(w.cost_sumsq if cost_known else 0),
            drift=a(drift),
        )

    def add(self, w: DeploymentWindow) -> bool:
        """Take a window (or fragment) of this rollout's deployments; True when the evidence changed."""
        side = self.side_of(w)
        if side is None or w.window_start < self.record.started_at:
            return False
        if side == "stable":
            self._calibrate(w)
        key = fragment_key(w)
        old = self.fragments.get(key)
        frag = Fragment(w, side, self.canary_weight(w, side), self.side_window(w))
        if old is not None:
            if old.sealed:
                self.evidence.add_bad(old.side, old.data, old.canary_weight, sign=-1.0)
            if old.stakes is not None:
                self.evidence.add_step(old.side, old.data, self._elapsed_at(old.window), sign=-1.0, bets=old.stakes)
            frag.canary_weight, frag.sealed = old.canary_weight, old.sealed
        self.fragments[key] = frag
        if w.window_start >= self.step_started_at:
            frag.stakes = self.evidence.add_step(side, frag.data, self._elapsed_at(w),
                                                 bets=old.stakes if old is not None and old.stakes else None)
        if frag.sealed:
            self.evidence.add_bad(side, frag.data, frag.canary_weight)
        cell = (w.window_start, key[2])
        self.cells.setdefault(cell, set()).add(side)
        sealed_any = self._seal(cell, key[2], w.window_start)
        return sealed_any or frag.stakes is not None or frag.sealed

    def _elapsed_at(self, w: DeploymentWindow) -> float:
        return max((w.window_start - self.step_started_at).total_seconds(), 0.0)

    def _seal(self, cell: Cell, partition: int, start: datetime) -> bool:
        """Seal the cell if both sides are in, and every earlier open cell of the partition."""
        sealed = False
        latest = self.partition_latest.get(partition)
        if latest is None or start > latest:
            self.partition_latest[partition] = start
        for c, sides in list(self.cells.items()):
            if c[1] != partition:
                continue
            if (c == cell and len(sides) == 2) or c[0] < self.partition_latest[partition]:
                self._seal_cell(c)
                sealed = True
        return sealed

    def _seal_cell(self, cell: Cell) -> None:
        for key, frag in self.fragments.items():
            if (key[1], key[2]) == cell and not frag.sealed:
                frag.sealed = True
                self.evidence.add_bad(frag.side, frag.data, frag.canary_weight)
                end = window_end(frag.window)
                self.clock = end if self.clock is None else max(self.clock, end)
        del self.cells[cell]

    # --- steps and verdicts ---------------------------------------------------------------------------------

    def new_step(self, step: int, started_at: datetime) -> None:
        """Enter ``step`` at ``started_at`` (event time): the confidence sequences start again."""
        self.step, self.step_started_at = step, started_at
        self.evidence.new_step()
        for frag in sorted(self.fragments.values(), key=lambda f: f.window.window_start):
            frag.stakes = None
            if frag.window.window_start >= started_at:
                frag.stakes = self.evidence.add_step(frag.side, frag.data, self._elapsed_at(frag.window))

    def elapsed(self) -> float:
        """Event seconds from the step's start to the clock (0 before any sealed window)."""
        if self.clock is None:
            return 0.0
        return max((self.clock - self.step_started_at).total_seconds(), 0.0)

    def evaluate(self) -> tuple[list[GateEval], int, int, float]:
        """(every gate's evaluation, canary requests, stable requests in the step, seconds since the step began)."""
        ev = self.evidence
        return ev.evaluate(), int(ev.requests["canary"]), int(ev.requests["stable"]), self.elapsed()

    def slow_thresholds_ms(self) -> dict[str, float | None]:
        return {name: t.ms for name, t in self.slow.items()}
