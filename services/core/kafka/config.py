"""Client configurations for confluent-kafka and aiokafka, derived from the settings.

These are correct on real Kafka and on the local Tansu broker alike. Tansu's gaps
(see README, "The local stack"): consumer group joins take half the session timeout, so the session
timeout is short (6 s by default); ListOffsets 'latest' is wrong, so consumers start from 'earliest'
and rely on committed offsets, never on 'latest'; there are no transactions, so producers are
plain at-least-once (acks=all) and sinks are idempotent.
"""

from __future__ import annotations

from typing import Any

from services.core.settings import Settings


def confluent_producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.kafka_client_id,
        "acks": "all",
        "enable.idempotence": False,  # not supported by the local broker; sinks dedup instead
        "linger.ms": 5,
        "compression.type": "none",
        # The Java client's partitioner, as aiokafka and Faust use: a key lands on the same partition whichever
        # client produced it, so topics keyed by request_id stay co-partitioned (the stream worker relies on it).
        "partitioner": "murmur2_random",
    }
    cfg.update(overrides)
    return cfg


def confluent_consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.kafka_client_id,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 3),
        "partition.assignment.strategy": "range",
    }
    cfg.update(overrides)
    return cfg


def confluent_admin_config(settings: Settings) -> dict[str, Any]:
    # Admin calls raise their own errors with a message; librdkafka's connection log lines would only repeat them.
    return {"bootstrap.servers": settings.bootstrap_servers, "client.id": settings.kafka_client_id, "log_level": 0}


def aiokafka_producer_kwargs(settings: Settings, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "acks": "all",
        "enable_idempotence": False,  # fails with UnknownError on the local broker
        "linger_ms": 5,
    }
    kwargs.update(overrides)
    return kwargs


def aiokafka_consumer_kwargs(settings: Settings, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(500, settings.kafka_session_timeout_ms // 3),
        "isolation_level": "read_uncommitted",
    }
    kwargs.update(overrides)
    return kwargs
