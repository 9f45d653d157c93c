"""The console output of the notifier: one readable line per alert."""

from __future__ import annotations

from typing import TextIO

from schemas.alerts import Alert
from schemas.envelope import Envelope


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def format_alert(event: Envelope[Alert]) -> str:
    """``2026-11-24T20:21:48Z CRITICAL budget [tenant acme, deployment d1] title  spend_usd=12.5 limit_usd=10``."""
    alert = event.payload
    when = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    where = f"tenant {event.tenant_id}" + (f", deployment {alert.deployment_id}" if alert.deployment_id else "")
    observed = " ".join(f"{k}={_number(v)}" for k, v in sorted(alert.observed.items()))
    title = " ".join(alert.title.split())  # one line, whatever the title holds
    line = f"{when} {alert.severity.upper():<8} {alert.kind:<19} [{where}] {title}"
    return f"{line}  {observed}" if observed else line


def print_alert(event: Envelope[Alert], out: TextIO) -> None:
    out.write(format_alert(event) + "\n")
    out.flush()
