"""The webhook sender against a real HTTP server on 127.0.0.1: signatures, retries, Retry-After, 4xx, a dead port."""

from __future__ import annotations

import json

from services.infra.process import free_port
from services.notifier.config import RetryPolicy, WebhookConfig
from services.notifier.webhook import (
    ATTEMPT_HEADER,
    Outcome,
    WebhookSender,
    build_body,
    dedup_key,
    retry_after_s,
    sign,
    verify_signature,
)
from tests.notifier.helpers import SECRET, Reply, alert_event, receiver

FAST = RetryPolicy(max_attempts=4, base_backoff_s=0.05, max_backoff_s=0.2, request_timeout_s=0.5)


def _hook(url: str) -> WebhookConfig:
    return WebhookConfig(name="w", url=url, secret=SECRET)


def test_signature_verification_rejects_a_tampered_body_or_wrong_secret() -> None:
    body = build_body(alert_event("a1"))
    header = sign(SECRET.encode(), body)
    assert verify_signature(SECRET, body, header)
    tampered = body.replace(b'"severity":"warning"', b'"severity":"info"')
    assert tampered != body
    assert not verify_signature(SECRET, tampered, header)
    assert not verify_signature("other-secret", body, header)
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, header.removeprefix("sha256="))


def test_body_carries_the_alert_and_envelope_metadata_and_is_stable() -> None:
    event = alert_event("a1", "drift", "critical", tenant="t9")
    body = json.loads(build_body(event))
    assert body["event_id"] == str(event.event_id) == body["dedup_key"] == dedup_key(event)
    assert body["tenant_id"] == "t9" and body["source"] == "test"
    assert body["occurred_at"].startswith(event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["alert"]["alert_id"] == "a1" and body["alert"]["severity"] == "critical"
    assert build_body(event) == build_body(event)


async def test_5xx_is_retried_with_the_same_dedup_key_and_body_until_accepted() -> None:
    with receiver(lambda path, key, nth: Reply(500 if nth == 1 else 200)) as rx:
        event = alert_event("a1")
        async with WebhookSender(FAST) as sender:
            result = await sender.deliver(_hook(rx.url("/h")), build_body(event), dedup_key(event), alert_id="a1")
        assert result.outcome is Outcome.DELIVERED and result.attempts == 2 and result.status == 200
        posts = rx.posts_to("/h")
        assert [p.status for p in posts] == [500, 200]
        assert all(p.signature_ok for p in posts)
        assert {p.key for p in posts} == {str(event.event_id)} and posts[0].body == posts[1].body
        assert [p.headers[ATTEMPT_HEADER] for p in posts] == ["1", "2"]


async def test_4xx_is_not_retried() -> None:
    with receiver(lambda path, key, nth: Reply(422)) as rx:
        event = alert_event("a1")
        async with WebhookSender(FAST) as sender:
            result = await sender.deliver(_hook(rx.url("/h")), build_body(event), dedup_key(event))
        assert result.outcome is Outcome.REJECTED and result.attempts == 1 and result.status == 422
        assert len(rx.posts_to("/h")) == 1


async def test_429_retry_after_is_honoured() -> None:
    with receiver(lambda path, key, nth: Reply(429, {"Retry-After": "1"}) if nth == 1 else Reply(204)) as rx:
        event = alert_event("a1")
        async with WebhookSender(FAST) as sender:
            result = await sender.deliver(_hook(rx.url("/h")), build_body(event), dedup_key(event))
        assert result.outcome is Outcome.DELIVERED and result.attempts == 2
        first, second = rx.posts_to("/h")
        assert second.at - first.at >= 0.95  # the server's 1 s, not the 0.05 s backoff
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    assert retry_after_s("soon") is None


async def test_a_timeout_is_retried_and_a_dead_webhook_is_given_up_after_bounded_attempts() -> None:
    with receiver(lambda path, key, nth: Reply(200, delay_s=1.0) if nth == 1 else Reply(200)) as rx:
        event = alert_event("a1")
        async with WebhookSender(FAST) as sender:
            result = await sender.deliver(_hook(rx.url("/slow")), build_body(event), dedup_key(event))
        assert result.outcome is Outcome.DELIVERED and result.attempts == 2
        assert len({p.key for p in rx.posts_to("/slow")}) == 1

    dead = _hook(f"http://127.0.0.1:{free_port()}/nobody-listens")
    async with WebhookSender(FAST) as sender:
        result = await sender.deliver(dead, b"{}", "k")
    assert result.outcome is Outcome.EXHAUSTED and result.attempts == FAST.max_attempts and result.status is None
    assert "Connect" in result.error
