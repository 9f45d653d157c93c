"""Review queue feeding: which completions a human should look at, as ``ReviewItem`` events and table rows.

The stream worker calls ``ReviewQueue.collect(completions, feedback)`` once per batch, after the safety scan:

* ``completions``: one ``ScoredCompletion`` per completion event of the batch: the event, the highest
  injection and toxicity scores of its prompt and completion (``ScanResult.injection_score`` /
  ``toxicity_score``, which exist even below the finding thresholds), and its texts as stored (redacted per
  the tenant's policy);
* ``feedback``: the batch's ``Feedback`` events.

It returns a ``ReviewBatch``: ``events`` to publish on ``llm.review`` (key: request id; deterministic event
ids, so a replayed batch republishes the same events) and ``rows`` for the ``review_items`` table
(``REVIEW_COLUMNS``; keyed by tenant, request and reason, so replays collapse). Reasons:

* ``injection_gray_band`` / ``toxicity_gray_band``: a score within ``[low, high)`` of its band: the layers
  were unsure (scores at or above the band are findings already);
* ``low_feedback``: a user or grader score at or below ``low_feedback_max`` (human labels never requeue);
* ``rollout_flag``: the completion's deployment is a canary whose latest rollout decision failed a gate or
  rolled it back (``rollout_update`` is fed the ``RolloutEvent``s of ``llm.rollouts``); at most
  ``rollout_max_per_deployment`` completions per deployment and decision are queued.

Texts in review items have every PII span redacted whatever the tenant's policy (reviewers are people
outside the tenant); a feedback-triggered item carries no text (``llmops review`` shows the stored one).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.codec import make_event
from schemas.completions import Completion
from schemas.envelope import Envelope
from schemas.feedback import Feedback
from schemas.review import ReviewItem, ReviewReason
from schemas.rollouts import RolloutEvent
from streams.safety.pii import scan_pii
from streams.safety.redact import redact

__all__ = ["REVIEW_COLUMNS", "ReviewBatch", "ReviewConfig", "ReviewQueue", "ScoredCompletion", "review_text"]

REVIEW_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "deployment_id", "reason", "injection_score", "toxicity_score",
    "feedback_score", "detail", "prompt_text", "text",
]
_NS = uuid.UUID("0b7d8e61-9a8e-4c1e-8f0a-5d3c2b1a4e77")


class ReviewConfig(BaseModel):
    """What goes to human review. Bands are ``[low, high)``; set ``low == high`` to turn one off."""

    model_config = ConfigDict(extra="forbid")

    injection_band: tuple[float, float] = Field(
        default=(0.5, 0.7),
        description="Injection scores the layers were unsure about: from the patterns' weakest flag (0.5) to the "
        "shipped learned threshold (0.70, streams/safety/data/injection_model.npz).",
    )
    toxicity_band: tuple[float, float] = Field(
        default=(0.3, 0.5), description="Toxicity probabilities just under the 0.5 boundary.",
    )
    low_feedback_max: float = Field(default=0.2, ge=0.0, le=1.0, description="Queue user/grader feedback at or below this score.")
    rollout_max_per_deployment: int = Field(
        default=20, ge=0, description="Completions queued per flagged deployment and decision.",
    )


@dataclass(frozen=True, slots=True)
class ScoredCompletion:
    """A completion with its safety scores and its texts as stored."""

    event: Envelope[Completion]
    injection_score: float
    toxicity_score: float
    prompt_text: str
    text: str


@dataclass
class ReviewBatch:
    """What to publish and insert for one batch."""

    events: list[Envelope[ReviewItem]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def review_text(text: str) -> str:
    """``text`` with every PII span redacted, whatever the tenant's policy."""
    spans = scan_pii(text)
    return redact(text, spans) if spans else text


def _in(band: tuple[float, float], score: float) -> bool:
    return band[0] <= score < band[1]


class ReviewQueue:
    """Decides per batch which completions and feedback go to review; remembers flagged rollout canaries."""

    def __init__(self, config: ReviewConfig | None = None, source: str = "streams.review") -> None:
        self.config = config or ReviewConfig()
        self.source = source
        self._flagged: dict[str, tuple[str, int]] = {}  # deployment -> (why, completions still to queue)

    def rollout_update(self, event: RolloutEvent) -> None:
        """Track the canary of each alias: flagged while its latest decision rolled back or failed a gate."""
        canary = event.canary_deployment
        if canary is None:
            return
        failed = [g.gate for g in event.gates if not g.passed]
        if event.action == "rollback" or failed:
            why = f"rollout {event.rollout_id}: {event.action}" + (f", failed gates: {', '.join(failed)}" if failed else "")
            self._flagged[canary] = (why[:2000], self.config.rollout_max_per_deployment)
        else:
            self._flagged.pop(canary, None)

    def flagged_deployments(self) -> dict[str, str]:
        return {d: why for d, (why, _left) in self._flagged.items()}

    def collect(self, completions: Sequence[ScoredCompletion], feedback: Sequence[Envelope[Feedback]]) -> ReviewBatch:
        """The review items of one batch (see the module docstring)."""
        cfg = self.config
        out = ReviewBatch()
        for sc in completions:
            c = sc.event.payload
            reasons: list[ReviewReason] = []
            if _in(cfg.injection_band, sc.injection_score):
                reasons.append("injection_gray_band")
            if _in(cfg.toxicity_band, sc.toxicity_score):
                reasons.append("toxicity_gray_band")
            detail = ""
            flag = self._flagged.get(c.deployment_id)
            if flag is not None and flag[1] > 0:
                reasons.append("rollout_flag")
                detail = flag[0]
                self._flagged[c.deployment_id] = (flag[0], flag[1] - 1)
            if reasons:
                item = ReviewItem(
                    request_id=c.request_id, deployment_id=c.deployment_id, reasons=reasons,
                    injection_score=round(sc.injection_score, 6), toxicity_score=round(sc.toxicity_score, 6),
                    detail=detail, prompt_text=review_text(sc.prompt_text), text=review_text(sc.text),
                )
                self._add(out, sc.event, item)
        for fb in feedback:
            f = fb.payload
            if f.source in ("human", "human_review") or f.score > cfg.low_feedback_max:
                continue
            item = ReviewItem(request_id=f.request_id, reasons=["low_feedback"], feedback_score=f.score,
                              detail=f"{f.source} feedback {f.score:.2f}" + (f" ({f.label})" if f.label else ""))
            self._add(out, fb, item)
        return out

    def _add(self, out: ReviewBatch, cause: Envelope[Any], item: ReviewItem) -> None:
        key = f"{cause.tenant_id}/{item.request_id}/{'+'.join(item.reasons)}/{cause.event_id}"
        out.events.append(make_event(
            item, source=self.source, tenant_id=cause.tenant_id, trace_id=cause.trace_id,
            event_id=uuid.uuid5(_NS, key), occurred_at=cause.occurred_at,
        ))
        for reason in item.reasons:
            out.rows.append([
                cause.tenant_id, cause.occurred_at, item.request_id, item.deployment_id or "", reason,
                item.injection_score, item.toxicity_score, item.feedback_score, item.detail,
                item.prompt_text or "", item.text or "",
            ])
