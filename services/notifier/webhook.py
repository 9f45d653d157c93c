"""One alert to one webhook: the signed JSON POST, retried with backoff until it is accepted or given up.

Headers sent with every attempt:

- ``X-Llmops-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the webhook's secret
  (receivers check it with :func:`verify_signature`).
- ``X-Llmops-Dedup-Key``: the alert event's envelope ``event_id``. It is the same on every retry and every
  Kafka redelivery of that event (the bytes are the same record), and the stream agents derive it from
  ``alert_id`` (uuid5), so an upstream replay keeps it too. ``alert_id`` alone is not used: it names the
  *condition*, and a condition that fires again later is a new notification the receiver should see.
- ``X-Llmops-Timestamp``: when this attempt was sent (Unix seconds). It is not covered by the signature
  (the signature is over the body only); replays are dropped by the dedup key.
- ``X-Llmops-Alert-Id``, ``X-Llmops-Attempt``: for grouping and debugging.

Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and jitter (a
``Retry-After`` is waited out, up to ``max_retry_after_s``); other statuses fail permanently at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from schemas.alerts import Alert
from schemas.envelope import Envelope, UtcDatetime
from services.notifier.config import RetryPolicy, WebhookConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Llmops-Signature"
TIMESTAMP_HEADER = "X-Llmops-Timestamp"
DEDUP_HEADER = "X-Llmops-Dedup-Key"
ALERT_ID_HEADER = "X-Llmops-Alert-Id"
ATTEMPT_HEADER = "X-Llmops-Attempt"
USER_AGENT = "llmops-notifier/1"
RETRYABLE_STATUSES = frozenset({408, 429})


class WebhookBody(BaseModel):
    """What a receiver gets: the alert and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dedup_key: str
    event_id: str
    occurred_at: UtcDatetime
    tenant_id: str
    source: str
    trace_id: str | None
    alert: Alert


def dedup_key(event: Envelope[Alert]) -> str:
    """The key a receiver drops repeats by: the envelope's event_id (see the module docstring for why)."""
    return str(event.event_id)


def build_body(event: Envelope[Alert]) -> bytes:
    """The JSON body for an alert event; the same event always gives the same bytes."""
    body = WebhookBody(
        dedup_key=dedup_key(event), event_id=str(event.event_id), occurred_at=event.occurred_at,
        tenant_id=event.tenant_id, source=event.source, trace_id=event.trace_id, alert=event.payload,
    )
    return body.model_dump_json().encode("utf-8")


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for a body: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """For receivers: whether ``header`` (the X-Llmops-Signature value) signs exactly these body bytes."""
    if not header or not header.startswith("sha256="):
        return False
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.compare_digest(sign(key, body), header.strip())


class Outcome(StrEnum):
    DELIVERED = "delivered"
    """A 2xx answer."""
    REJECTED = "rejected"
    """A status that is not retried (most 4xx, 3xx): failed permanently at the first answer."""
    EXHAUSTED = "exhausted"
    """Every attempt failed with a retryable error: failed permanently."""
    INTERRUPTED = "interrupted"
    """The notifier is stopping and a retry was due: not finished, so the event is not committed."""

    @property
    def finished(self) -> bool:
        return self is not Outcome.INTERRUPTED


@dataclass(frozen=True)
class DeliveryResult:
    webhook: str
    dedup_key: str
    outcome: Outcome
    attempts: int
    status: int | None
    """The last HTTP status, if any answer came."""
    error: str
    """Why the last attempt failed; empty when delivered."""


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None if absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class WebhookSender:
    """Posts bodies to webhooks with one shared HTTP client. Use as an async context manager."""

    def __init__(self, policy: RetryPolicy, *, client: httpx.AsyncClient | None = None,
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(policy.request_timeout_s), follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._rng = rng or random.Random()

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def _delay(self, retry: int, server_wait: float | None) -> float:
        # "Equal jitter": between half and all of the exponential delay, so retries spread but still grow.
        base = self.policy.backoff_s(retry)
        delay = base / 2 + self._rng.uniform(0, base / 2)
        if server_wait is not None:
            delay = max(delay, min(server_wait, self.policy.max_retry_after_s))
        return delay

    async def deliver(
        self, webhook: WebhookConfig, body: bytes, key: str, *, alert_id: str = "",
        stopping: asyncio.Event | None = None,
    ) -> DeliveryResult:
        """POST until accepted, permanently failed, or (when ``stopping`` is set) interrupted before a retry."""
        signature = sign(webhook.secret_bytes, body)
        url = str(webhook.url)
        status: int | None = None
        error = ""
        for attempt in range(1, self.policy.max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature,
                TIMESTAMP_HEADER: str(int(time.time())),
                DEDUP_HEADER: key,
                ALERT_ID_HEADER: alert_id,
                ATTEMPT_HEADER: str(attempt),
            }
            server_wait: float | None = None
            try:
                async with asyncio.timeout(self.policy.request_timeout_s):
                    response = await self._client.post(url, content=body, headers=headers)
            except (httpx.TransportError, TimeoutError) as exc:
                status = None
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return DeliveryResult(webhook.name, key, Outcome.DELIVERED, attempt, status, "")
                error = f"HTTP {status}: {response.text[:200]}"
                if status not in RETRYABLE_STATUSES and status < 500:
                    log.error("webhook %s rejected alert %s (dedup key %s) with %s; not retried",
                              webhook.name, alert_id, key, error)
                    return DeliveryResult(webhook.name, key, Outcome.REJECTED, attempt, status, error)
                server_wait = retry_after_s(response.headers.get("Retry-After"))
            if attempt == self.policy.max_attempts:
                break
            delay = self._delay(attempt, server_wait)
            log.warning("webhook %s attempt %d for alert %s failed (%s); retrying in %.2fs",
                        webhook.name, attempt, alert_id, error, delay)
            if stopping is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                except TimeoutError:
                    pass
                else:
                    return DeliveryResult(webhook.name, key, Outcome.INTERRUPTED, attempt, status, error)
        log.error("webhook %s failed permanently for alert %s (dedup key %s) after %d attempts: %s",
                  webhook.name, alert_id, key, self.policy.max_attempts, error)
        return DeliveryResult(webhook.name, key, Outcome.EXHAUSTED, self.policy.max_attempts, status, error)

