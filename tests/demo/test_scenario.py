"""The demo's scenario: the bad canary really is configured worse, the healthy one is not, the specs are valid."""

from __future__ import annotations

from services.demo.run import CANARY, STABLE, deployment_specs, rollout_spec, streams_config


def test_bad_canary_rambles_and_healthy_canary_matches_stable() -> None:
    stable, bad = deployment_specs(healthy=False)
    assert (stable.deployment_id, bad.deployment_id) == (STABLE, CANARY)
    assert bad.generation.max_tokens == 4 * stable.generation.max_tokens
    assert stable.model_name == bad.model_name == "SmolLM2-135M-Instruct"  # priced by deploy/prices.yaml
    _, healthy = deployment_specs(healthy=True)
    assert healthy.generation == stable.generation and healthy.model_version != stable.model_version


def test_rollout_and_stream_settings_fit_together() -> None:
    spec = rollout_spec(20.0)
    assert spec.steps[0] < 100 and spec.stable == STABLE and spec.canary == CANARY
    # at least two deployment windows per analysis interval, so each interval sees fresh data per side
    assert streams_config(20.0).window_seconds * 2 <= spec.analysis_interval_seconds


def test_grader_prefers_concise_answers_and_zeroes_errors() -> None:
    import random

    from schemas import Completion, CompletionError
    from services.demo.traffic import grade

    rng = random.Random(0)

    def c(tokens: int, **kw: object) -> Completion:
        fields: dict[str, object] = {"finish_reason": "stop", **kw}
        return Completion(request_id="r", tenant="t", deployment_id="d", completion_tokens=tokens, **fields)

    short, long = grade(c(20), rng), grade(c(96), rng)
    assert short >= 0.9 and long <= 0.2 + 0.05
    err = c(0, finish_reason="error", error=CompletionError(kind="internal", message="boom"))
    assert grade(err, rng) == 0.0
