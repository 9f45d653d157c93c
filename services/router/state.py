"""Rollout state per alias, rebuilt from the compacted ``llm.rollouts`` topic.

The latest ``RolloutEvent`` of an alias is its state (the topic is keyed by alias and compacted), so a
router that reads the topic from the beginning converges on the same weights as every other router.
Aliases with no rollout yet fall back to the static routes (alias -> stable deployment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.rollouts import RolloutEvent


@dataclass
class RolloutState:
    static_routes: dict[str, str] = field(default_factory=dict)
    rollouts: dict[str, RolloutEvent] = field(default_factory=dict)

    def apply(self, event: RolloutEvent) -> None:
        self.rollouts[event.alias] = event

    def weights(self, alias: str) -> dict[str, float] | None:
        """Deployment -> share for an alias, or None when the alias is unknown."""
        if alias in self.rollouts:
            return dict(self.rollouts[alias].weights)
        if alias in self.static_routes:
            return {self.static_routes[alias]: 1.0}
        return None

    def aliases(self) -> list[str]:
        return sorted(set(self.static_routes) | set(self.rollouts))
