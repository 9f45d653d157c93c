"""Identifier rules shared by the contracts: what a deployment id may look like (it names a topic)."""

from __future__ import annotations

import re

_DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,190}$")


def validate_deployment_id(deployment_id: str) -> str:
    """The id itself, or ValueError: letters, digits, '.', '_' or '-', at most 191 characters."""
    if not _DEPLOYMENT_ID.match(deployment_id):
        raise ValueError(
            f"invalid deployment id {deployment_id!r}: use letters, digits, '.', '_' or '-' (at most 191 characters)"
        )
    return deployment_id
