"""The registry of event types: name -> payload model and the schema versions it accepts."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.completions import Completion, CompletionChunk
from schemas.deadletter import DeadLetter
from schemas.feedback import Feedback
from schemas.prompts import PromptLabel, PromptVersion
from schemas.requests import InferenceRequest
from schemas.review import ReviewItem
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from schemas.safety import SafetyFinding


@dataclass(frozen=True)
class EventType:
    """One registered event type."""

    name: str
    model: type[BaseModel]
    version: int
    """The version producers write now."""
    accepts: frozenset[int]
    """Versions consumers can read (the current one and any still-compatible older ones)."""


def _current(name: str, model: type[BaseModel], version: int = 1) -> EventType:
    return EventType(name=name, model=model, version=version, accepts=frozenset({version}))


EVENT_TYPES: dict[str, EventType] = {
    et.name: et
    for et in (
        _current("inference.request", InferenceRequest),
        _current("inference.completion_chunk", CompletionChunk),
        _current("inference.completion", Completion),
        _current("feedback", Feedback),
        _current("safety.finding", SafetyFinding),
        _current("alert", Alert),
        _current("rollout", RolloutEvent),
        _current("rollout.spec", RolloutSpecRecord),
        _current("deadletter", DeadLetter),
        _current("deployment.window", DeploymentWindow),
        _current("prompt.version", PromptVersion),
        _current("prompt.label", PromptLabel),
        _current("review.item", ReviewItem),
    )
}

_BY_MODEL: dict[type[BaseModel], EventType] = {et.model: et for et in EVENT_TYPES.values()}


def event_type_for(model: type[BaseModel]) -> EventType:
    """The registered event type of a payload model."""
    try:
        return _BY_MODEL[model]
    except KeyError:
        raise KeyError(f"{model.__name__} is not a registered event payload") from None


def payload_model_for(name: str) -> type[BaseModel]:
    return EVENT_TYPES[name].model
