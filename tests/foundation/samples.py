"""One valid sample payload per registered event type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from schemas import (
    Alert,
    Completion,
    CompletionChunk,
    CompletionError,
    DeadLetter,
    DeploymentWindow,
    Feedback,
    GateResult,
    InferenceRequest,
    Message,
    PromptRef,
    ReviewItem,
    RolloutEvent,
    RolloutSpecRecord,
    SafetyFinding,
    SafetySpan,
)
from schemas.prompts import PromptLabel, PromptVersion


def sample_payloads() -> list[BaseModel]:
    return [
        InferenceRequest(
            request_id="r-1", tenant="acme", application="support", model_alias="chat",
            messages=[Message(role="system", content="be brief"), Message(role="user", content="héllo ✓")],
            deadline=datetime(2030, 1, 1, tzinfo=UTC), user_id="u-1", priority=5,
        ),
        InferenceRequest(
            request_id="r-2", tenant="acme", application="support", model_alias="chat", deployment_id="chat-v2",
            prompt=PromptRef(prompt_id="greet", version="3", variables={"name": "Ada"}),
        ),
        CompletionChunk(request_id="r-1", deployment_id="chat-v1", index=0, text="Hel"),
        Completion(
            request_id="r-1", tenant="acme", deployment_id="chat-v1", text="Hello", finish_reason="stop",
            prompt_tokens=12, completion_tokens=3, ttft_ms=40.5, total_ms=120.0,
        ),
        Completion(
            request_id="r-3", tenant="acme", deployment_id="chat-v1", finish_reason="deadline",
            error=CompletionError(kind="deadline_exceeded", message="deadline passed 2 s before start"),
        ),
        Feedback(request_id="r-1", score=0.9, label="helpful", source="grader"),
        SafetyFinding(
            request_id="r-1", deployment_id="chat-v1", scanned="completion", category="pii", score=1.0,
            spans=[SafetySpan(start=3, end=20, kind="email")], action="redact",
        ),
        Alert(alert_id="budget:acme:2026-11-24", kind="budget", title="acme crossed its daily budget",
              observed={"cost_usd": 101.5, "budget_usd": 100.0}),
        RolloutEvent(
            alias="chat", rollout_id="ro-1", stable_deployment="chat-v1", canary_deployment="chat-v2",
            action="rollback", step=1, weights={"chat-v1": 1.0, "chat-v2": 0.0}, reason="error rate",
            gates=[GateResult(gate="error_rate", passed=False, observed=0.12, threshold=0.05,
                              canary_samples=100, stable_samples=900)],
        ),
        RolloutSpecRecord(
            rollout_id="chat-20261124T100000Z-abc123", started_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
            spec={"alias": "chat", "stable": "chat-v1", "canary": "chat-v2", "steps": [5, 50, 100],
                  "gates": {"error_rate": {"threshold": 0.02}, "p95_latency_ratio": {"threshold": 1.5}}},
        ),
        DeploymentWindow(
            deployment_id="chat-v2", model_alias="chat", window_start=datetime(2026, 11, 24, 10, 1, tzinfo=UTC),
            window_seconds=60, requests=120, errors=3, errors_by_kind={"internal": 3},
            total_ms={"p50": 300.0, "p95": 900.0, "p99": 1500.0}, latency_sample_ms=[250.0, 310.5, 990.0],
            feedback_count=10, feedback_score_sum=7.5, feedback_negative=2, cost_total=0.0123, priced_requests=117,
        ),
        DeadLetter.from_bytes(topic="llm.requests", partition=2, offset=7, error_kind="not_json",
                              error="bad", value=b"\xff\x00", key=b"k"),
        PromptVersion(
            name="greet", version=3, messages=[{"role": "user", "content": "Hello {{ name }}"}],
            variables=[{"name": "name"}], params={"temperature": 0.0}, content_hash="abc", push_id="p-1",
            created_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        ),
        PromptLabel(name="greet", label="production", version=3, moved_at=datetime(2026, 11, 24, 10, 5, tzinfo=UTC)),
        ReviewItem(request_id="r-1", deployment_id="chat-v2", reasons=["injection_gray_band", "rollout_flag"],
                   injection_score=0.42, toxicity_score=0.01, detail="rollout ro-1: hold", prompt_text="[REDACTED:email] hi",
                   text="hello"),
    ]


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=1)
