"""Sticky weighted choice: stable, proportional, and monotone when weight shifts to the canary."""

from __future__ import annotations

import pytest

from services.router.weights import choose, unit_hash


def test_same_key_same_deployment() -> None:
    weights = {"v1": 0.5, "v2": 0.5}
    assert all(choose(weights, "chat", f"user-{i}") == choose(dict(weights), "chat", f"user-{i}") for i in range(200))
    assert unit_hash("chat", "u") == unit_hash("chat", "u") != unit_hash("other", "u")


@pytest.mark.parametrize("canary_share", [0.05, 0.25, 0.5])
def test_shares_follow_the_weights(canary_share: float) -> None:
    weights = {"stable": 1 - canary_share, "canary": canary_share}
    n = 20_000
    hits = sum(choose(weights, "chat", f"user-{i}") == "canary" for i in range(n))
    assert abs(hits / n - canary_share) < 0.015


@pytest.mark.parametrize(("stable", "canary"), [("chat-v1", "chat-v2"), ("chat-v2", "chat-v1")])
def test_stepping_up_never_moves_a_canary_user_back(stable: str, canary: str) -> None:
    users = [f"user-{i}" for i in range(5000)]
    previous: set[str] = set()
    for share in (0.05, 0.25, 0.5, 1.0):
        on_canary = {u for u in users if choose({stable: 1 - share, canary: share}, "chat", u) == canary}
        assert previous <= on_canary
        previous = on_canary
    assert previous == set(users)


def test_zero_weights_are_skipped_and_all_zero_is_an_error() -> None:
    assert {choose({"a": 0.0, "b": 1.0}, "x", f"k{i}") for i in range(100)} == {"b"}
    with pytest.raises(ValueError, match="no deployment with a positive weight"):
        choose({"a": 0.0}, "x", "k")
