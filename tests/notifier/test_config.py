"""Notifier configuration: YAML loading, secrets from the environment only through the loader, filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.alerts import Alert
from services.core.resources import package_path
from services.notifier.config import ConfigError, NotifierConfig, WebhookConfig, load_notifier_config, parse_notifier_config

YAML = """
console: false
webhooks:
  - name: pager
    url: http://127.0.0.1:9/hook
    secret_env: PAGER_SECRET
    min_severity: critical
  - name: chat
    url: http://127.0.0.1:9/chat
    secret: inline-secret
    kinds: [drift, rollout]
retry: {max_attempts: 3, base_backoff_s: 0.1}
group_id: g1
"""


def _alert(kind: str, severity: str) -> Alert:
    return Alert(alert_id="a", kind=kind, severity=severity, title="t")


def test_secret_env_is_resolved_by_the_loader_from_the_given_environment() -> None:
    cfg = parse_notifier_config(YAML, environ={"PAGER_SECRET": "from-env"})
    pager, chat = cfg.webhooks
    assert pager.secret_bytes == b"from-env" and pager.secret_env == "PAGER_SECRET"
    assert chat.secret_bytes == b"inline-secret"
    assert cfg.retry.max_attempts == 3 and cfg.retry.base_backoff_s == 0.1 and cfg.group_id == "g1"
    assert "from-env" not in repr(cfg)  # secrets do not leak into logs of the config


def test_missing_or_ambiguous_secrets_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="PAGER_SECRET"):
        parse_notifier_config(YAML, environ={})
    with pytest.raises(ConfigError, match="not both"):
        parse_notifier_config(YAML.replace("secret_env: PAGER_SECRET", "secret_env: PAGER_SECRET\n    secret: x"),
                              environ={"PAGER_SECRET": "y"})
    with pytest.raises(ValueError, match="secret"):
        WebhookConfig(name="w", url="http://127.0.0.1:9/", secret_env="NOT_RESOLVED")
    with pytest.raises(ConfigError, match="unknown alert kind"):
        parse_notifier_config(YAML.replace("[drift, rollout]", "[drift, nope]"), environ={"PAGER_SECRET": "y"})
    with pytest.raises(ConfigError, match="nothing to notify"):
        parse_notifier_config("console: false\n", environ={})


def test_filters_by_kind_and_minimum_severity() -> None:
    pager, chat = parse_notifier_config(YAML, environ={"PAGER_SECRET": "s"}).webhooks
    assert pager.matches(_alert("budget", "critical"))
    assert not pager.matches(_alert("budget", "warning"))
    assert chat.matches(_alert("drift", "info")) and chat.matches(_alert("rollout", "critical"))
    assert not chat.matches(_alert("budget", "critical"))


def test_example_config_loads(tmp_path: Path) -> None:
    env = {"LLMOPS_PAGER_WEBHOOK_SECRET": "p", "LLMOPS_CHAT_WEBHOOK_SECRET": "c"}
    cfg = load_notifier_config(package_path("services.notifier", "notifier.yaml"), environ=env)
    assert [w.name for w in cfg.webhooks] == ["oncall-pager", "ml-team-chat"] and cfg.console
    # The consumer's poll interval leaves room for a whole batch of worst-case deliveries.
    assert cfg.max_poll_interval_ms() >= 1000 * cfg.retry.worst_case_s()
    with pytest.raises(ConfigError, match="cannot read"):
        load_notifier_config(tmp_path / "missing.yaml", environ=env)
    assert isinstance(NotifierConfig(console=True), NotifierConfig)
