"""Pending review items from ClickHouse, and human labels published as ``Feedback(source="human")``.

``pending`` reads ``review_items`` (filled by the stream worker, streams/concerns/review.py) for requests that
have no human feedback yet in ``raw_feedback``, one entry per request with all its reasons, oldest first.
Items queued without text (low feedback) show the completion as stored in ``raw_completions`` (redacted
per tenant policy); the CLI redacts PII once more before printing.

``label`` publishes the human's verdict on ``llm.feedback``: label ``safe`` or ``unsafe``, a score (default
1.0 for safe, 0.0 for unsafe; higher is better, as for every feedback) and an optional comment. The stream
worker stores it like any feedback, so it counts in the quality aggregates and the judge's feedback gate,
and the item stops being pending once it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.codec import make_event
from schemas.envelope import Envelope
from schemas.feedback import Feedback
from schemas.topics import FEEDBACK
from services.core.clickhouse.client import connect
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings

__all__ = ["PendingItem", "ReviewError", "label", "pending"]

SOURCE = "llmops.review"
Verdict = Literal["safe", "unsafe"]


class ReviewError(RuntimeError):
    """A review command cannot proceed (unknown request, bad score)."""


@dataclass(frozen=True, slots=True)
class PendingItem:
    """One request waiting for a human label."""

    tenant_id: str
    request_id: str
    deployment_id: str
    reasons: list[str]
    injection_score: float | None
    toxicity_score: float | None
    feedback_score: float | None
    detail: str
    prompt_text: str
    text: str
    occurred_at: datetime


_PENDING_SQL = """
SELECT r.tenant_id, r.request_id, any(r.deployment_id), arraySort(groupUniqArray(r.reason)),
       max(r.injection_score), max(r.toxicity_score), min(r.feedback_score),
       arrayStringConcat(arrayFilter(x -> x != '', groupUniqArray(r.detail)), '; '),
       argMax(r.prompt_text, length(r.prompt_text)), argMax(r.text, length(r.text)), min(r.occurred_at)
FROM review_items AS r FINAL
WHERE (r.tenant_id, r.request_id) NOT IN (
    SELECT tenant_id, request_id FROM raw_feedback WHERE feedback_source = 'human'
)
{tenant_filter}
GROUP BY r.tenant_id, r.request_id
ORDER BY min(r.occurred_at), r.request_id
LIMIT %(limit)s
"""

_STORED_SQL = """
SELECT tenant_id, request_id, argMax(prompt_text, ingested_at), argMax(text, ingested_at),
       argMax(deployment_id, ingested_at)
FROM raw_completions
WHERE (tenant_id, request_id) IN %(keys)s
GROUP BY tenant_id, request_id
"""


def pending(settings: Settings, limit: int = 20, tenant: str | None = None) -> list[PendingItem]:
    """Requests queued for review and not labelled by a human yet, oldest first (texts as stored)."""
    client = connect(settings)
    try:
        params: dict[str, object] = {"limit": limit}
        tenant_filter = ""
        if tenant is not None:
            tenant_filter = "AND r.tenant_id = %(tenant)s"
            params["tenant"] = tenant
        rows = client.query(_PENDING_SQL.format(tenant_filter=tenant_filter), parameters=params).result_rows
        items = [
            PendingItem(str(r[0]), str(r[1]), str(r[2]), list(r[3]), r[4], r[5], r[6], str(r[7]), str(r[8]), str(r[9]), r[10])
            for r in rows
        ]
        missing = [(i.tenant_id, i.request_id) for i in items if not i.prompt_text and not i.text]
        if missing:
            stored = {
                (str(t), str(q)): (str(p), str(c), str(d))
                for t, q, p, c, d in client.query(_STORED_SQL, parameters={"keys": missing}).result_rows
            }
            items = [
                PendingItem(i.tenant_id, i.request_id, i.deployment_id or s[2], i.reasons, i.injection_score,
                            i.toxicity_score, i.feedback_score, i.detail, s[0], s[1], i.occurred_at)
                if (s := stored.get((i.tenant_id, i.request_id))) is not None else i
                for i in items
            ]
        return items
    finally:
        client.close()


def _tenant_of(settings: Settings, request_id: str) -> str:
    client = connect(settings)
    try:
        rows = client.query(
            "SELECT DISTINCT tenant_id FROM review_items WHERE request_id = %(r)s", parameters={"r": request_id},
        ).result_rows
    finally:
        client.close()
    if not rows:
        raise ReviewError(f"request {request_id!r} is not in the review queue (give --tenant to label it anyway)")
    if len(rows) > 1:
        tenants = ", ".join(str(r[0]) for r in rows)
        raise ReviewError(f"request {request_id!r} is queued for several tenants ({tenants}): give --tenant")
    return str(rows[0][0])


def label(
    settings: Settings, request_id: str, verdict: Verdict, *, score: float | None = None, comment: str | None = None,
    tenant: str | None = None, topic: str = FEEDBACK.name,
) -> Envelope[Feedback]:
    """Publish the human label of ``request_id`` as feedback (and wait for the broker's acknowledgement)."""
    if score is None:
        score = 1.0 if verdict == "safe" else 0.0
    if not 0.0 <= score <= 1.0:
        raise ReviewError(f"score must be within [0, 1], got {score}")
    tenant_id = tenant if tenant is not None else _tenant_of(settings, request_id)
    event = make_event(
        Feedback(request_id=request_id, score=score, label=verdict, comment=comment, source="human"),
        source=SOURCE, tenant_id=tenant_id,
    )
    producer = EventProducer(settings)
    producer.send(topic, event, key=request_id)
    producer.flush()
    return event
