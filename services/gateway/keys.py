"""API keys: one tenant each, stored as a hash, with per-key limits; created, listed and revoked in ClickHouse.

A key reads ``llmops-<key_id>-<secret>``. ``key_id`` is public (it names the key in lists, logs and the
``gateway_requests`` rows); only ``sha256(secret)`` is stored, and the secret is shown once, at creation.
Secrets are 32 random bytes, so a fast hash is enough (nothing to brute-force). A change (revocation, new
limits) is a new row with a later ``updated_at``. Gateways keep every key in memory (:class:`KeyStore`) and
reload the table every few seconds, so a revoked key is refused within one reload.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from datetime import datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client
from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import utc_now
from services.core.clickhouse.client import connect
from services.core.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "llmops-"
_KEY = re.compile(r"^llmops-([0-9a-f]{12})-([A-Za-z0-9_-]{20,100})$")
COLUMNS = [
    "key_id", "tenant_id", "name", "key_hash", "requests_per_minute", "tokens_per_minute", "daily_budget", "models",
    "created_at", "revoked_at", "updated_at",
]


class ApiKey(BaseModel):
    """One key's record (never the secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str
    tenant: str = Field(min_length=1, max_length=200)
    name: str = ""
    key_hash: str
    requests_per_minute: int = Field(default=0, ge=0, description="0 = unlimited.")
    tokens_per_minute: int = Field(default=0, ge=0, description="0 = unlimited.")
    daily_budget: Decimal | None = Field(default=None, ge=0, description="Cost per UTC day; None = unlimited.")
    models: tuple[str, ...] = Field(default=(), description="Aliases the key may use; empty = all.")
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def row(self, updated_at: datetime) -> list[object]:
        return [
            self.key_id, self.tenant, self.name, self.key_hash, self.requests_per_minute, self.tokens_per_minute,
            self.daily_budget, list(self.models), self.created_at, self.revoked_at, updated_at,
        ]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def create_key(
    settings: Settings, tenant: str, *, name: str = "", requests_per_minute: int = 0, tokens_per_minute: int = 0,
    daily_budget: Decimal | None = None, models: tuple[str, ...] = (),
) -> tuple[ApiKey, str]:
    """Store a new key; returns its record and the full key (shown once: only its hash is kept)."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = utc_now()
    key = ApiKey(
        key_id=key_id, tenant=tenant, name=name, key_hash=hash_secret(secret), requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute, daily_budget=daily_budget, models=models, created_at=now,
    )
    connect(settings).insert("gateway_api_keys", [key.row(now)], column_names=COLUMNS)
    return key, f"{PREFIX}{key_id}-{secret}"


def load_keys(settings: Settings, client: Client | None = None) -> dict[str, ApiKey]:
    """Every key (revoked ones included), by key_id."""
    result = (client or connect(settings)).query(f"SELECT {', '.join(COLUMNS[:-1])} FROM gateway_api_keys FINAL")
    keys = {}
    for row in result.result_rows:
        data = dict(zip(COLUMNS[:-1], row, strict=True))
        data["tenant"] = data.pop("tenant_id")
        data["models"] = tuple(data["models"])
        keys[data["key_id"]] = ApiKey.model_validate(data)
    return keys


def revoke_key(settings: Settings, key_id: str) -> ApiKey:
    """Mark a key revoked (KeyError when there is no such key); gateways refuse it from their next reload."""
    keys = load_keys(settings)
    if key_id not in keys:
        raise KeyError(f"no API key {key_id!r}")
    key = keys[key_id]
    if key.revoked:
        return key
    now = utc_now()
    revoked = key.model_copy(update={"revoked_at": now})
    connect(settings).insert("gateway_api_keys", [revoked.row(now)], column_names=COLUMNS)
    return revoked


class KeyStore:
    """The gateway's in-memory copy of the keys, reloaded every ``reload_s`` off the event loop."""

    def __init__(self, settings: Settings, *, reload_s: float = 2.0) -> None:
        self.settings = settings
        self.reload_s = reload_s
        self.keys: dict[str, ApiKey] = {}
        self.loaded = asyncio.Event()
        self._client: Client | None = None

    def _load(self) -> dict[str, ApiKey]:
        if self._client is None:
            self._client = connect(self.settings)
        try:
            return load_keys(self.settings, self._client)
        except Exception:
            self._client = None  # reconnect next time
            raise

    def authenticate(self, presented: str) -> ApiKey | None:
        """The key's record when the key is known, its secret matches and it is not revoked."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key = self.keys.get(parsed[0])
        if key is None or key.revoked or not hmac.compare_digest(key.key_hash, hash_secret(parsed[1])):
            return None
        return key

    async def reload(self) -> None:
        self.keys = await asyncio.to_thread(self._load)
        self.loaded.set()

    async def run(self) -> None:
        while True:
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - keep serving with the last known keys
                log.warning("reloading API keys failed (%s); keeping the %d known keys", exc, len(self.keys))
            await asyncio.sleep(self.reload_s)
