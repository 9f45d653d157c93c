"""Reading rollout specs (YAML) for `llmops rollout start SPEC`, with errors that name the field.

The spec models live in :mod:`schemas.rollout_specs` (they travel on ``llm.rollout-specs``).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from schemas.rollout_specs import (
    AbsoluteGate,
    DeltaGate,
    GateName,
    Gates,
    RateGate,
    RatioGate,
    RolloutSpec,
    RolloutSpecRecord,
)

__all__ = [
    "AbsoluteGate", "DeltaGate", "GateName", "Gates", "RateGate", "RatioGate", "RolloutSpec", "RolloutSpecRecord",
    "SpecError", "load_spec", "parse_spec",
]


class SpecError(ValueError):
    """A spec file that cannot be used; the message says which field and why."""


def parse_spec(data: object, *, source: str = "spec") -> RolloutSpec:
    """A validated spec from parsed YAML/JSON, or :class:`SpecError` listing every problem by field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with alias, stable, canary, steps, gates; got {type(data).__name__}")
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{source}: invalid rollout spec: {problems}") from None


def load_spec(path: Path | str) -> RolloutSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None
    return parse_spec(data, source=str(path))
