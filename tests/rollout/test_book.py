"""A rollout's windows in the judge (no broker): fragments replaced, windows sealed before the e-processes see them,
slow thresholds, steps, and the judge state's decisions, holds and restart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas.rollout_specs import RolloutSpecRecord, SlowGate
from services.rollout.book import RolloutBook
from services.rollout.decision import abort_event, start_event
from services.rollout.judge import SOURCE, JudgeState
from services.rollout.spec import RolloutSpec
from tests.rollout.windows import window

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _spec(**kw: object) -> RolloutSpec:
    base: dict[str, object] = dict(
        alias="chat", stable="v1", canary="v2", steps=[10, 50, 100], alpha=0.01, min_samples=50, min_step_seconds=5,
        max_step_seconds=120, report_seconds=10,
        gates={"error_rate": {"max_ratio": 1.0, "margin": 0.05},
               "slow_request_rate": {"max_ratio": 1.25, "margin": 0.05, "stable_quantile": 0.95}},
    )
    base.update(kw)
    return RolloutSpec.model_validate(base)


def _record(spec: RolloutSpec) -> RolloutSpecRecord:
    return RolloutSpecRecord(rollout_id="r1", started_at=T0, spec=spec)


def _second(k: int) -> datetime:
    return T0 + timedelta(seconds=k)


def _lr(book: RolloutBook, gate: str = "error_rate") -> np.ndarray:
    return book.evidence.log_lr[gate].copy()


def test_a_fragment_published_again_replaces_the_earlier_copy() -> None:
    book = RolloutBook(_record(_spec()), 1, T0)
    stable = window("v1", _second(0), seed=1, source_partition=2)
    book.add(window("v2", _second(0), error_rate=0.1, seed=2, source_partition=2, requests=50))
    book.add(stable)
    once = (_lr(book), float(book.evidence.requests["canary"]), float(book.evidence.rates[("error_rate", "canary")].s1))
    book.add(window("v2", _second(0), error_rate=0.1, seed=2, source_partition=2, requests=50))  # the same again
    assert np.allclose(_lr(book), once[0]) and float(book.evidence.requests["canary"]) == once[1]
    book.add(window("v2", _second(0), error_rate=0.2, seed=2, source_partition=2, requests=60))  # a late event more
    fresh = RolloutBook(_record(_spec()), 1, T0)
    fresh.add(window("v2", _second(0), error_rate=0.2, seed=2, source_partition=2, requests=60))
    fresh.add(stable)
    assert np.allclose(_lr(book), _lr(fresh))
    assert float(book.evidence.requests["canary"]) == 60 == float(fresh.evidence.requests["canary"])
    assert float(book.evidence.rates[("error_rate", "canary")].s1) == 12


def test_the_e_processes_see_a_window_only_once_both_sides_are_in() -> None:
    book = RolloutBook(_record(_spec()), 1, T0)
    book.add(window("v2", _second(0), error_rate=0.2, requests=50, source_partition=0))
    assert np.allclose(_lr(book), 0.0) and book.clock is None  # a canary fragment alone would over-state them
    assert float(book.evidence.requests["canary"]) == 50  # the one-sample sequences count it at once
    book.add(window("v1", _second(0), requests=450, source_partition=0))
    assert not np.allclose(_lr(book), 0.0) and book.clock == _second(1)
    # a canary-only cell seals when the next window of its partition arrives
    book.add(window("v2", _second(1), error_rate=0.2, requests=50, source_partition=0))
    before = _lr(book)
    book.add(window("v2", _second(2), requests=50, source_partition=0))
    assert not np.allclose(_lr(book), before) and book.clock == _second(2)
    # another partition's later window does not seal partition 0's open cell
    book.add(window("v1", _second(5), requests=10, source_partition=1))
    assert book.clock == _second(2)


def test_windows_before_the_start_do_not_count() -> None:
    book = RolloutBook(_record(_spec()), 1, T0)
    assert not book.add(window("v2", T0 - timedelta(seconds=5), error_rate=0.5))
    assert not book.add(window("other", _second(0)))
    assert float(book.evidence.requests["canary"]) == 0


def test_slow_threshold_from_the_minute_before_or_from_stables_first_requests() -> None:
    prior = [window("v1", T0 - timedelta(seconds=s), seed=s, requests=100) for s in range(1, 5)]
    book = RolloutBook(_record(_spec()), 1, T0, prior=prior)
    ms = book.slow_thresholds_ms()["slow_request_rate"]
    assert ms is not None and 200 < ms < 500  # p95 of lognormal(200 ms, 0.3) is ~330 ms, at a bucket bound
    assert book.slow["slow_request_rate"].counts_from == T0

    calibration = SlowGate().calibration_requests  # 200 by default
    fresh = RolloutBook(_record(_spec()), 1, T0)
    assert fresh.slow_thresholds_ms()["slow_request_rate"] is None
    fresh.add(window("v1", _second(0), requests=calibration // 2, latency_scale=1.0))
    fresh.add(window("v2", _second(0), requests=20, latency_scale=3.0))
    fresh.add(window("v1", _second(1), requests=calibration, seed=3))
    assert fresh.slow["slow_request_rate"].counts_from == _second(2)
    # the calibration windows count nothing for the slow gate, the later ones do
    assert float(fresh.evidence.rates[("slow_request_rate", "canary")].n) == 0
    fresh.add(window("v2", _second(2), requests=20, latency_scale=3.0))
    assert float(fresh.evidence.rates[("slow_request_rate", "canary")].n) == 20
    assert float(fresh.evidence.rates[("slow_request_rate", "canary")].s1) >= 15
    fixed = RolloutBook(_record(_spec(gates={"slow_request_rate": {"latency_ms": 1000.0}})), 1, T0)
    assert 1000 <= (fixed.slow_thresholds_ms()["slow_request_rate"] or 0) < 1100


def test_fewer_calibration_requests_fix_the_threshold_from_a_short_warm_up() -> None:
    prior = [window("v1", T0 - timedelta(seconds=s), seed=s, requests=10) for s in range(1, 5)]  # 40 requests
    default = RolloutBook(_record(_spec()), 1, T0, prior=prior)
    assert default.slow_thresholds_ms()["slow_request_rate"] is None  # 40 < 200: learnt during the rollout
    short = RolloutBook(_record(_spec(gates={"slow_request_rate": {"calibration_requests": 40}})), 1, T0, prior=prior)
    assert short.slow_thresholds_ms()["slow_request_rate"] is not None
    assert short.slow["slow_request_rate"].counts_from == T0


def test_a_new_step_restarts_the_confidence_sequences_not_the_e_processes() -> None:
    book = RolloutBook(_record(_spec()), 1, T0)
    for k in range(3):
        book.add(window("v2", _second(k), error_rate=0.04, requests=50, seed=k))
        book.add(window("v1", _second(k), requests=450, seed=10 + k))
    lr = _lr(book)
    book.new_step(2, _second(3))
    assert float(book.evidence.requests["canary"]) == 0 and np.allclose(_lr(book), lr)
    book.add(window("v2", _second(3), requests=50))
    assert float(book.evidence.requests["canary"]) == 50 and book.elapsed() == 0.0


def _state_with_rollout(spec: RolloutSpec) -> JudgeState:
    state = JudgeState()
    state.on_spec(_record(spec))
    state.on_event(start_event(spec, "r1"), T0, uuid.uuid4(), "llmops.cli")
    run = state.runs["chat"]
    assert state.wants_history([window("v2", _second(0))]) == [run]
    state.load(run, [])
    return state


def test_judge_state_rolls_back_a_bad_canary_with_a_reason_that_names_everything() -> None:
    spec = _spec()
    state = _state_with_rollout(spec)
    verdicts = []
    for k in range(30):
        verdicts += state.on_window(window("v2", _second(k), requests=50, error_rate=0.1, seed=k))
        verdicts += state.on_window(window("v1", _second(k), requests=450, error_rate=0.01, seed=100 + k))
        if verdicts and verdicts[-1].event.action == "rollback":
            break
    actions = [v.event.action for v in verdicts]
    assert set(actions[:-1]) <= {"hold"} and actions[-1] == "rollback" and k < 20
    rb = verdicts[-1].event
    assert rb.weights == {"v1": 1.0, "v2": 0.0} and not state.runs["chat"].active
    assert rb.reason.startswith("rollback: error_rate: rate canary 10% (n=")
    assert "vs stable 0.889% (n=" in rb.reason and "e-value " in rb.reason and "(rollback at 400, H0 canary <= 1x" in rb.reason
    assert "s into step 1 (10%), canary n=" in rb.reason
    gate = next(g for g in rb.gates if g.gate == "error_rate")
    assert gate.status == "rollback" and gate.e_value is not None and gate.e_value >= 400 and gate.e_threshold == 400
    assert rb.step_seconds == (verdicts[-1].at - T0).total_seconds() and rb.canary_requests == 50 * (k + 1)
    assert state.on_window(window("v2", _second(40))) == []  # a rolled back rollout is not judged


def test_judge_state_holds_says_why_every_report_seconds_then_times_out() -> None:
    spec = _spec()
    state = _state_with_rollout(spec)
    verdicts = []
    for k in range(125):  # the canary is silent
        verdicts += state.on_window(window("v1", _second(k), requests=450, seed=k))
    holds = [v for v in verdicts if v.event.action == "hold"]
    assert [int((v.at - T0).total_seconds()) for v in holds[:3]] == [1, 11, 21]
    assert holds[0].event.reason.startswith("hold: no canary traffic in this step (nothing to judge: every e-value is 1)")
    assert all(g.status == "no_data" for g in holds[0].event.gates)
    last = verdicts[-1].event
    assert last.action == "rollback" and "not passed within max_step_seconds=120" in last.reason
    assert int((verdicts[-1].at - T0).total_seconds()) == 120


def test_judge_state_promotes_through_the_steps_once_within_margins() -> None:
    spec = _spec()
    state = _state_with_rollout(spec)
    verdicts = []
    for k in range(200):  # 1000 req/s, split as the current step says
        share = spec.canary_share(state.runs["chat"].progress.step)
        verdicts += state.on_window(window("v2", _second(k), requests=round(1000 * share), seed=k))
        verdicts += state.on_window(window("v1", _second(k), requests=round(1000 * (1 - share)), seed=1000 + k))
        if verdicts and verdicts[-1].event.action == "promote":
            break
    passed = [v for v in verdicts if v.event.action != "hold"]
    assert [v.event.action for v in passed] == ["step_up", "promote"]
    step_up, promote = passed
    assert step_up.event.weights["v2"] == pytest.approx(0.5) and (step_up.at - T0).total_seconds() >= 5
    assert promote.step_started_at == step_up.at and promote.event.weights == {"v2": 1.0}
    assert all(g.status == "within_margin" for g in promote.event.gates)
    assert "promote: every gate within margin at 50%" in promote.event.reason


def test_judge_state_after_a_restart_publishes_no_hold_twice_and_re_aborts_a_late_decision() -> None:
    spec = _spec(gates={"error_rate": {"max_ratio": 1.0, "margin": 0.05}, "drift_share": {"threshold": 0.5}})
    state = JudgeState()
    state.on_spec(_record(spec))
    start = start_event(spec, "r1")
    state.on_event(start, T0, uuid.uuid4(), "llmops.cli")
    hold = start.model_copy(update={"action": "hold", "step_seconds": 20.0})
    state.on_event(hold, _second(20), uuid.uuid4(), SOURCE)
    run = state.runs["chat"]
    assert run.reported_at == _second(20) and run.progress.step_started_at == T0
    stored = [w for k in range(25) for w in (window("v1", _second(k), seed=k), window("v2", _second(k), requests=50))]
    state.load(run, stored)
    assert state.on_window(window("v1", _second(20), seed=20)) == []  # replayed: no hold for an event time seen
    verdicts = state.on_window(window("v1", _second(31), seed=31)) + state.on_window(window("v1", _second(32), seed=32))
    assert [v.event.action for v in verdicts] == ["hold"] and verdicts[0].at == _second(32)  # 31 sealed by 32

    # the operator aborts; a decision this judge published lands on the topic after the abort
    own = uuid.uuid4()
    state.own.add(own)
    abort = abort_event(start, "abort: by hand")
    state.on_event(abort, _second(32), uuid.uuid4(), "llmops.cli")
    again = state.on_event(start.model_copy(update={"action": "step_up", "step": 2}), _second(33), own, SOURCE)
    assert again is not None and again.action == "abort" and again.weights == {"v1": 1.0, "v2": 0.0}


def test_a_prompt_canary_compares_two_prompt_versions_on_one_deployment() -> None:
    spec = _spec(stable="chat-v1/summarize@3", canary="chat-v1/summarize@4")
    book = RolloutBook(_record(spec), 1, T0)
    assert book.add(window("chat-v1", _second(0), requests=50).model_copy(update={"prompt_version": "4"}))
    assert book.add(window("chat-v1", _second(0), requests=450).model_copy(update={"prompt_version": "3"}))
    assert not book.add(window("chat-v1", _second(0), requests=70).model_copy(update={"prompt_version": "5"}))
    assert not book.add(window("chat-v2", _second(0), requests=70).model_copy(update={"prompt_version": "4"}))
    assert (float(book.evidence.requests["canary"]), float(book.evidence.requests["stable"])) == (50, 450)
    # Another prompt with the same version number on that deployment is neither side; a window carrying the rollout's
    # prompt id counts, and is a fragment of its own next to the one without (an older stream worker's).
    assert not book.add(window("chat-v1", _second(0), requests=90).model_copy(
        update={"prompt_version": "4", "prompt_id": "translate"}))
    assert book.add(window("chat-v1", _second(0), requests=8, seed=1).model_copy(
        update={"prompt_version": "4", "prompt_id": "summarize"}))
    assert (float(book.evidence.requests["canary"]), float(book.evidence.requests["stable"])) == (58, 450)
    with pytest.raises(ValueError, match="expected <deployment>/<prompt_id>@<version number>"):
        _spec(canary="chat-v1/summarize@latest")
