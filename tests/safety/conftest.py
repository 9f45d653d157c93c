"""Shared fixtures for the safety scanner tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.safety.evaluate import load_labelled

LABELLED = Path(__file__).parent / "data" / "labelled.jsonl"


@pytest.fixture(scope="session")
def labelled() -> list[dict[str, Any]]:
    return load_labelled(LABELLED)
