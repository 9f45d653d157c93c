"""Topic administration: create the catalog's topics (idempotently) and describe what exists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.topics import TOPICS, TopicSpec
from services.core.kafka.config import confluent_admin_config
from services.core.settings import Settings


@dataclass(frozen=True)
class TopicResult:
    name: str
    created: bool
    """False when it already existed."""
    partitions: int


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(confluent_admin_config(settings))


class KafkaUnavailable(RuntimeError):
    """The cluster did not answer; the message says where we looked and what to do."""


def existing_topics(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, as the cluster reports it."""
    try:
        meta = _admin(settings).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        hint = "is the local stack up? run `llmops infra up`" if settings.uses_local_broker else "check LLMOPS_KAFKA_BOOTSTRAP"
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.bootstrap_servers} ({exc.args[0].str()}); {hint}") from None
    return {name: len(t.partitions) for name, t in meta.topics.items() if not name.startswith("__")}


def ensure_topics(
    settings: Settings,
    specs: Iterable[TopicSpec] | None = None,
    *,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> list[TopicResult]:
    """Create each topic that does not exist yet (the whole catalog by default). Idempotent.

    An existing topic is left as it is, even if its partition count differs from the spec (changing
    partitions re-keys data, which is a decision for a human); the result reports what exists.
    """
    specs = list(TOPICS.values() if specs is None else specs)
    admin = _admin(settings)
    before = existing_topics(settings, timeout_s)
    missing = [s for s in specs if s.name not in before]
    results: dict[str, TopicResult] = {
        s.name: TopicResult(s.name, False, before[s.name]) for s in specs if s.name in before
    }
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, replication_factor, config=s.config()) for s in missing],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for spec in missing:
            try:
                futures[spec.name].result(timeout=timeout_s)
                results[spec.name] = TopicResult(spec.name, True, spec.partitions)
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    results[spec.name] = TopicResult(spec.name, False, spec.partitions)
                else:
                    raise
    return [results[s.name] for s in specs]
