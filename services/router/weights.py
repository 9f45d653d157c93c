"""Sticky weighted choice: the same user (or session) of an alias lands on the same deployment.

The choice hashes (alias, sticky key) to a point in [0, 1) and walks the weights in a fixed order
(deployment ids sorted), so every router instance picks the same deployment for the same key and
weights, and moving weight from one deployment to another moves only the users in between.
"""

from __future__ import annotations

import hashlib


def unit_hash(alias: str, key: str) -> float:
    """A stable point in [0, 1) for (alias, key), equal on every machine and Python version."""
    digest = hashlib.blake2b(f"{alias}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(weights: dict[str, float], alias: str, key: str) -> str:
    """The deployment for ``key`` under ``weights`` (deployment -> share, summing to 1)."""
    live = sorted((d, w) for d, w in weights.items() if w > 0)
    if not live:
        raise ValueError(f"alias {alias!r} has no deployment with a positive weight")
    point = unit_hash(alias, key) * sum(w for _, w in live)
    acc = 0.0
    for deployment, weight in live:
        acc += weight
        if point < acc:
            return deployment
    return live[-1][0]
