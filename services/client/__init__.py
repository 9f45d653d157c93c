"""The producer SDK: request/reply over Kafka with deadlines, idempotent retries and fallback (async and sync)."""

from services.client.client import Client, ClientConfig, DeadlineExceeded, RequestFailed, Stream
from services.client.sync import SyncClient

__all__ = ["Client", "ClientConfig", "DeadlineExceeded", "RequestFailed", "Stream", "SyncClient"]
