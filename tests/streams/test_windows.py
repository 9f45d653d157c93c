"""The arithmetic of one window fragment: what a DeploymentWindow says about the completions and feedback added."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.aggregates import latency_bucket
from streams.concerns.windows import CompletionFacts, FeedbackFacts, Fragment, Side, error_kind

START = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
SIDE = Side("chat", "chat-v2", "summarize", "7")


def _completion(i: int, **fields: object) -> CompletionFacts:
    data: dict[str, object] = dict(
        request_id=f"r{i}", tenant="t", occurred_at=START, side=SIDE, total_ms=100.0 + i, ttft_ms=10.0,
        error_kind="", prompt_tokens=10, completion_tokens=5, routing_weight=0.1, cost=0.002, findings=0,
    )
    data.update(fields)
    return CompletionFacts(**data)  # type: ignore[arg-type]  # mixed-type fields in a dict[str, object]


def test_a_fragment_counts_each_completion_and_feedback_once() -> None:
    frag = Fragment()
    for i in range(10):
        assert frag.add_completion(_completion(i, error_kind="internal" if i < 2 else "", findings=3 if i == 5 else 0,
                                               cost=None if i == 9 else 0.002, routing_weight=0.1 if i < 5 else 0.3))
    assert not frag.add_completion(_completion(3))  # a replay
    for i, score in enumerate([0.2, 0.9, 1.0]):
        assert frag.add_feedback(FeedbackFacts(f"e{i}", f"r{i}", "t", START, score))
    assert not frag.add_feedback(FeedbackFacts("e1", "r1", "t", START, 0.9))

    w = frag.window(SIDE, START, 1, partition=4, drift_share=0.25)
    assert (w.requests, w.errors, w.errors_by_kind) == (10, 2, {"internal": 2})
    assert (w.prompt_tokens, w.completion_tokens) == (100, 50)
    assert (w.safety_findings, w.safety_flagged_requests) == (3, 1)
    assert w.priced_requests == 9
    assert w.cost_total == pytest.approx(0.018) and w.cost_sumsq == pytest.approx(9 * 0.002**2)
    assert (w.feedback_count, w.feedback_negative) == (3, 1)
    assert w.feedback_score_sum == pytest.approx(2.1) and w.feedback_score_sumsq == pytest.approx(0.04 + 0.81 + 1.0)
    assert w.routing_weight == pytest.approx(0.2)
    assert (w.source_partition, w.prompt_id, w.prompt_version, w.model_alias, w.drift_share) == (4, "summarize", "7", "chat",
                                                                                                0.25)
    assert w.latency_histogram == {b: sum(1 for i in range(10) if latency_bucket(100.0 + i) == b)
                                   for b in {latency_bucket(100.0 + i) for i in range(10)}}
    assert sorted(w.latency_sample_ms) == [100.0 + i for i in range(10)]
    assert w.total_ms.p50 == pytest.approx(104.5) and w.ttft_ms.p99 == pytest.approx(10.0)
    assert w.slower_than(latency_bucket(104.0)) == sum(1 for i in range(10) if latency_bucket(100.0 + i) >
                                                       latency_bucket(104.0))


def test_the_latency_sample_is_bounded_and_the_same_whatever_the_order() -> None:
    forward, backward = Fragment(), Fragment()
    for i in range(2500):
        forward.add_completion(_completion(i))
    for i in reversed(range(2500)):
        backward.add_completion(_completion(i))
    a = forward.window(SIDE, START, 1, 0, None)
    b = backward.window(SIDE, START, 1, 0, None)
    assert len(a.latency_sample_ms) == 1000 and a.latency_sample_ms == b.latency_sample_ms
    assert a.model_dump() == b.model_dump()


def test_error_kinds_follow_the_aggregates_rule() -> None:
    assert error_kind("stop", None) == ""
    assert error_kind("error", None) == "internal"
    assert error_kind("deadline", None) == "deadline_exceeded"
    assert error_kind("error", "overloaded") == "overloaded"
