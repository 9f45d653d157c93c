"""The rollout spec: the example YAML loads, and bad specs fail with messages that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.rollout.spec import SpecError, load_spec, parse_spec
from services.settings import REPO_ROOT

GOOD = {"alias": "chat", "stable": "chat-v1", "canary": "chat-v2", "gates": {"error_rate": {"threshold": 0.02}}}


def test_example_spec_loads_with_every_gate() -> None:
    spec = load_spec(REPO_ROOT / "deploy" / "rollouts" / "chat-canary.yaml")
    assert spec.steps == [5, 25, 50, 100] and spec.failure_threshold == 2 and spec.analysis_interval_seconds == 60
    assert len(spec.gates.configured()) == 6
    assert spec.weights(1) == {"chat-v1": pytest.approx(0.95), "chat-v2": pytest.approx(0.05)}
    assert spec.weights(4) == {"chat-v1": 0.0, "chat-v2": 1.0}
    assert spec.lateness == 60


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
])
def test_invalid_specs_name_the_field(change: dict, message: str) -> None:
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
