"""The demo's scenario: the bad canary really is configured worse, the healthy one is not, the specs are valid."""

from __future__ import annotations

import random

from services.demo.run import CANARY, STABLE, EngineOptions, deployment_specs, rollout_spec, streams_config
from services.demo.traffic import grade


def test_bad_canary_rambles_and_healthy_canary_matches_stable() -> None:
    stable, bad = deployment_specs(healthy=False)
    assert (stable.deployment_id, bad.deployment_id) == (STABLE, CANARY)
    assert stable.generation.max_tokens is not None
    assert bad.generation.max_tokens == 4 * stable.generation.max_tokens
    assert stable.model_name == bad.model_name == "SmolLM2-135M-Instruct"  # priced by the shipped price table
    assert stable.prefix_caching and bad.prefix_caching  # the users share a system prompt
    _, healthy = deployment_specs(healthy=True)
    assert healthy.generation == stable.generation and healthy.model_version != stable.model_version


def test_engine_options_reach_both_specs() -> None:
    options = EngineOptions(quantization="int8", speculative_tokens=3, prefix_caching=False)
    for spec in deployment_specs(healthy=False, engine=options):
        assert (spec.quantization, spec.speculative_tokens, spec.prefix_caching) == ("int8", 3, False)


def test_rollout_and_stream_settings_fit_together() -> None:
    spec = rollout_spec()
    assert spec.steps[0] < 100 and spec.stable == STABLE and spec.canary == CANARY
    # the judge decides after every window: one-second windows make the loop fast
    assert streams_config().window_seconds == 1
    assert spec.gates.slow_request_rate is not None  # the rambling canary is slow before it is anything else


def test_grader_prefers_concise_answers_and_zeroes_errors() -> None:
    rng = random.Random(0)
    short, long = grade(20, False, rng), grade(96, False, rng)
    assert short >= 0.9 and long <= 0.2 + 0.05
    assert grade(0, True, rng) == 0.0
