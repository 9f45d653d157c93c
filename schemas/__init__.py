"""Event contracts of llmops-stream.

Every message on every topic is an :class:`~schemas.envelope.Envelope` around one payload model
defined here. This package imports nothing else of the project: services and stream agents
depend on it, never the reverse.
"""

from schemas.aggregates import DeploymentWindow, Quantiles
from schemas.alerts import Alert, AlertSeverity
from schemas.codec import DecodeError, DecodeErrorKind, decode, encode, make_event
from schemas.completions import Completion, CompletionChunk, CompletionError, FinishReason
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.feedback import Feedback
from schemas.registry import EVENT_TYPES, EventType, event_type_for, payload_model_for
from schemas.requests import GenerationParams, InferenceRequest, Message, PromptRef
from schemas.review import ReviewItem, ReviewReason
from schemas.rollout_specs import RolloutSpec, RolloutSpecRecord
from schemas.rollouts import GateResult, RolloutAction, RolloutEvent
from schemas.safety import SafetyCategory, SafetyFinding, SafetySpan
from schemas.topics import TOPICS, TopicSpec, dispatch_topic, topic_spec

__all__ = [
    "EVENT_TYPES",
    "TOPICS",
    "Alert",
    "AlertSeverity",
    "Completion",
    "CompletionChunk",
    "CompletionError",
    "DeadLetter",
    "DecodeError",
    "DecodeErrorKind",
    "DeploymentWindow",
    "Envelope",
    "EventType",
    "Feedback",
    "FinishReason",
    "GateResult",
    "GenerationParams",
    "InferenceRequest",
    "Message",
    "PromptRef",
    "Quantiles",
    "ReviewItem",
    "ReviewReason",
    "RolloutAction",
    "RolloutEvent",
    "RolloutSpec",
    "RolloutSpecRecord",
    "SafetyCategory",
    "SafetyFinding",
    "SafetySpan",
    "TopicSpec",
    "decode",
    "dispatch_topic",
    "encode",
    "event_type_for",
    "make_event",
    "payload_model_for",
    "topic_spec",
]
