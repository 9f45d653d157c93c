"""The rollout spec: the example YAML loads, and bad specs fail with messages that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.rollout.spec import SpecError, load_spec, parse_spec

GOOD = {"alias": "chat", "stable": "chat-v1", "canary": "chat-v2", "gates": {"error_rate": {"threshold": 0.02}}}


def test_example_spec_loads_with_every_gate() -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "deploy" / "rollouts" / "chat-canary.yaml")
    assert spec.steps == [10, 25, 50, 100] and spec.alpha == 0.01 and spec.min_step_seconds == 30
    assert spec.max_step_seconds == 1800 and spec.report_seconds == 10
    assert len(spec.gates.configured()) == 6
    assert spec.gates.error_rate is not None and spec.gates.error_rate.resolved_max_ratio() == 1.0
    assert spec.gates.slow_request_rate is not None and spec.gates.slow_request_rate.stable_quantile == 0.99
    assert spec.weights(1) == {"chat-v1": pytest.approx(0.9), "chat-v2": pytest.approx(0.1)}
    assert spec.weights(4) == {"chat-v1": 0.0, "chat-v2": 1.0}


def test_a_spec_of_the_interval_judge_still_loads() -> None:
    old = {**GOOD, "analysis_interval_seconds": 30, "failure_threshold": 2, "lateness_seconds": 10, "alpha": 0.05,
           "gates": {"error_rate": {"comparison": "difference", "threshold": 0.02, "severe_threshold": 0.2},
                     "p95_latency_ratio": {"threshold": 1.5, "severe_threshold": 3.0},
                     "cost_per_request_ratio": {"threshold": 1.3}}}
    spec = parse_spec(old)
    assert spec.gates.error_rate is not None
    assert (spec.gates.error_rate.resolved_max_ratio(), spec.gates.error_rate.resolved_margin()) == (1.5, 0.02)
    assert spec.min_step_seconds == 30 and spec.max_step_seconds == 1800  # the new fields' defaults


@pytest.mark.parametrize(("change", "message"), [
    ({"steps": [25, 5]}, "steps: Value error, steps must be strictly increasing"),
    ({"steps": [0, 50]}, "each step is a percent in (0, 100]"),
    ({"steps": [50, 150]}, "each step is a percent in (0, 100]"),
    ({"canary": "chat-v1"}, "stable and canary must differ"),
    ({"canary": "bad name!"}, "canary: Value error, invalid deployment id"),
    ({"gates": {}}, "at least one gate is required"),
    ({"gates": {"p95_latency_ratio": {"threshold": 0.9}}}, "gates.p95_latency_ratio.threshold"),
    ({"gates": {"error_rate": {"threshold": 0.1, "severe_threshold": 0.05}}}, "severe_threshold 0.05 must be >= threshold"),
    ({"gates": {"latency": {"threshold": 2}}}, "gates.latency: Extra inputs are not permitted"),
    ({"failure_threshold": 0}, "failure_threshold"),
    ({"min_samples": 0}, "min_samples"),
    ({"min_step_seconds": 60, "max_step_seconds": 30}, "max_step_seconds 30.0 must be >= min_step_seconds 60.0"),
    ({"gates": {"error_rate": {"max_ratio": 0.5, "margin": 0.1}}}, "gates.error_rate.max_ratio"),
    ({"gates": {"slow_request_rate": {"stable_quantile": 0.3}}}, "gates.slow_request_rate.stable_quantile"),
])
def test_invalid_specs_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**GOOD, **change}, source="x.yaml")
    assert message in str(err.value) and str(err.value).startswith("x.yaml: invalid rollout spec")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("alias: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(bad)


def test_rollout_topics_are_created_as_the_catalog_says() -> None:
    from dataclasses import replace

    from schemas.topics import TOPICS
    from services.rollout.topics import RolloutTopics

    for spec in RolloutTopics().specs_for_creation():
        # same layout as the catalog's topic of that name (alerts and dead letters: 30 days, not 7)
        assert spec == TOPICS[spec.name], spec.name
    renamed = RolloutTopics(alerts="t.alerts", deadletter="t.deadletter").specs_for_creation()
    by_name = {s.name: s for s in renamed}
    assert by_name["t.alerts"] == replace(TOPICS["llm.alerts"], name="t.alerts")
    assert by_name["t.deadletter"].retention_ms == TOPICS["llm.deadletter"].retention_ms == 30 * 24 * 3600 * 1000
