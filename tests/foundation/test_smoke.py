"""`llmops smoke` on the session stack: traffic lands in the raw tables and the report says so."""

from __future__ import annotations

import pytest

from services.core.settings import Settings
from services.smoke import run_smoke


def test_smoke_round_trip_reports_what_landed(local_stack: Settings) -> None:
    lines: list[str] = []
    run_smoke(local_stack, events=6, keep_running=True, echo=lines.append)
    report = "\n".join(lines)
    assert "consumed 18 events of this run" in report
    for table in ("raw_requests", "raw_completions", "raw_feedback"):
        assert any(line.split()[:3] == [table, "6", "rows"] for line in lines), report
    assert f"Kafka bootstrap : {local_stack.bootstrap_servers}" in report


def test_settings_round_trip_through_the_environment(local_stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in local_stack.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == local_stack
