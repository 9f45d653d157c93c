"""`llmops infra`: start, stop and inspect the embedded local stack (broker and ClickHouse)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from services.cli.common import fail, settings_of

if TYPE_CHECKING:
    from services.infra.stack import ServerStatus


@click.group()
def infra() -> None:
    """Run the embedded local stack: a Kafka-protocol broker (Tansu) and a ClickHouse server (chdb).

    Both bind to 127.0.0.1 only. Ports: LLMOPS_BROKER_PORT (19092), LLMOPS_CLICKHOUSE_HTTP_PORT (18123),
    LLMOPS_CLICKHOUSE_TCP_PORT (19000). External servers configured through LLMOPS_KAFKA_BOOTSTRAP or
    LLMOPS_CLICKHOUSE_URL are never started or stopped, only checked.
    """


def _print_status(statuses: list[ServerStatus]) -> None:
    for st in statuses:
        state = click.style("up", fg="green") if st.running else click.style("down", fg="red")
        kind = "local" if st.managed else "external"
        extra = []
        if st.pid:
            extra.append(f"pid {st.pid}")
        if st.rss_bytes:
            extra.append(f"rss {st.rss_bytes / 2**20:.0f} MiB")
        if st.started_in_s is not None:
            extra.append(f"ready in {st.started_in_s:.2f}s")
        if st.log and st.managed:
            extra.append(f"log {st.log}")
        click.echo(f"{st.name:<11} {state:<4}  {kind:<8} {st.location:<28} {', '.join(extra)}")


@infra.command("up")
@click.pass_context
def infra_up(ctx: click.Context) -> None:
    """Start the local broker and ClickHouse (those not running yet) and wait until healthy."""
    from services.infra.process import InfraError
    from services.infra.stack import LocalStack

    try:
        statuses = LocalStack(settings_of(ctx)).up()
    except InfraError as exc:
        fail(str(exc))
    _print_status(statuses)


@infra.command("down")
@click.pass_context
def infra_down(ctx: click.Context) -> None:
    """Stop the local servers that `infra up` started (nothing else)."""
    from services.infra.stack import LocalStack

    stopped = LocalStack(settings_of(ctx)).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@infra.command("status")
@click.pass_context
def infra_status(ctx: click.Context) -> None:
    """Show each server: running or not, where, PID, memory and log file. Exit 1 if any is down."""
    from services.infra.stack import LocalStack

    statuses = LocalStack(settings_of(ctx)).status()
    _print_status(statuses)
    if not all(st.running for st in statuses):
        sys.exit(1)
