"""Notifier configuration: which webhooks get which alerts, the retry policy and the consumer group.

Loaded from YAML by :func:`load_notifier_config` (annotated example shipped as
``services/notifier/notifier.yaml``). A webhook's HMAC secret is given either inline (``secret``) or by
naming an environment variable (``secret_env``); the loader is the only place that reads that variable,
so secrets need not live in the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

from schemas.alerts import Alert, AlertSeverity

# Taken from the Alert model, so the two never disagree.
ALERT_KINDS: tuple[str, ...] = get_args(Alert.model_fields["kind"].annotation)
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(get_args(AlertSeverity))}


class ConfigError(ValueError):
    """The notifier configuration file is missing, unreadable or invalid."""


class WebhookConfig(BaseModel):
    """One receiver: where to POST, how to sign, and which alerts it wants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: HttpUrl
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key. Or use secret_env.")
    secret_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the secret; resolved by load_notifier_config only.",
    )
    kinds: list[str] | None = Field(default=None, description="Alert kinds to send; unset or empty: all kinds.")
    min_severity: AlertSeverity = Field(default="info", description="Send alerts at or above this severity.")

    @model_validator(mode="after")
    def _check(self) -> WebhookConfig:
        if self.secret is None or not self.secret.get_secret_value():
            hint = f" (environment variable {self.secret_env} not resolved)" if self.secret_env else ""
            raise ValueError(f"webhook {self.name!r} needs a non-empty `secret` or `secret_env`{hint}")
        unknown = sorted(set(self.kinds or ()) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"webhook {self.name!r}: unknown alert kind(s) {unknown}; known: {list(ALERT_KINDS)}")
        return self

    @property
    def secret_bytes(self) -> bytes:
        assert self.secret is not None  # guaranteed by validation
        return self.secret.get_secret_value().encode("utf-8")

    def matches(self, alert: Alert) -> bool:
        """Whether this webhook wants the alert (kind filter and minimum severity)."""
        if self.kinds and alert.kind not in self.kinds:
            return False
        return SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[self.min_severity]


class RetryPolicy(BaseModel):
    """Retries for connection errors, timeouts, 408, 429 and 5xx; other 4xx fail at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=6, ge=1, le=50, description="Attempts in all, the first included.")
    base_backoff_s: float = Field(default=0.5, gt=0, description="Delay before the 2nd attempt; doubles each time.")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Cap on one exponential delay.")
    max_retry_after_s: float = Field(default=60.0, ge=0, description="Cap on a server's Retry-After.")
    request_timeout_s: float = Field(default=10.0, gt=0, description="Whole-request deadline for one attempt.")

    def backoff_s(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (1 = the second attempt)."""
        return min(self.max_backoff_s, self.base_backoff_s * 2.0 ** (retry - 1))

    def worst_case_s(self) -> float:
        """The longest one delivery can take: every attempt times out and every wait is at its cap."""
        wait = max(self.max_backoff_s, self.max_retry_after_s)
        return self.max_attempts * self.request_timeout_s + (self.max_attempts - 1) * wait


class NotifierConfig(BaseModel):
    """The whole notifier: outputs, retries and how it consumes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[WebhookConfig] = Field(default_factory=list)
    console: bool = Field(default=False, description="Print one line per alert to the console.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    group_id: str = Field(default="llmops.notifier", min_length=1, max_length=200)
    batch_size: int = Field(default=50, ge=1, le=1000, description="Most alerts being handled at once.")
    max_in_flight: int = Field(default=16, ge=1, le=1000, description="Most webhook deliveries running at once.")
    dedup_cache_size: int = Field(default=10_000, ge=1, description="Recently delivered (webhook, key) pairs kept.")
    max_age_s: float | None = Field(
        default=None, gt=0,
        description="Skip (and count) alerts that occurred longer ago than this; unset: deliver every alert. "
        "Useful for a new group on a topic that keeps 30 days of alerts.",
    )

    @model_validator(mode="after")
    def _check(self) -> NotifierConfig:
        names = [w.name for w in self.webhooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"webhook names must be unique; repeated: {dupes}")
        if not self.webhooks and not self.console:
            raise ValueError("nothing to notify: configure at least one webhook or set `console: true`")
        return self

    def max_poll_interval_ms(self) -> int:
        """A poll interval the slowest batch fits in (every delivery at its worst), at least Kafka's 5 min default."""
        deliveries = self.batch_size * max(1, len(self.webhooks))
        waves = math.ceil(deliveries / self.max_in_flight)
        return int(max(300.0, waves * self.retry.worst_case_s() + 60.0) * 1000)


def resolve_secrets(raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """A copy of the raw config with each webhook's ``secret_env`` looked up into ``secret``."""
    data = dict(raw)
    hooks = data.get("webhooks")
    if not isinstance(hooks, list):
        return data
    resolved: list[Any] = []
    for hook in hooks:
        if isinstance(hook, Mapping) and hook.get("secret_env") is not None:
            hook = dict(hook)
            name = str(hook["secret_env"])
            if hook.get("secret") is not None:
                raise ConfigError(f"webhook {hook.get('name')!r}: give `secret` or `secret_env`, not both")
            if not environ.get(name):
                raise ConfigError(f"webhook {hook.get('name')!r}: environment variable {name} (secret_env) is not set")
            hook["secret"] = environ[name]
        resolved.append(hook)
    data["webhooks"] = resolved
    return data


def parse_notifier_config(text: str, environ: Mapping[str, str] | None = None) -> NotifierConfig:
    """YAML text to a validated config; ``secret_env`` names are looked up in ``environ`` (default: os.environ)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping at the top level, got {type(raw).__name__}")
    data = resolve_secrets(raw, os.environ if environ is None else environ)
    try:
        return NotifierConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_notifier_config(path: Path, environ: Mapping[str, str] | None = None) -> NotifierConfig:
    """Read and validate a notifier YAML file (see ``services/notifier/notifier.yaml``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse_notifier_config(text, environ)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
