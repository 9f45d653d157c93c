"""`llmops keys`: API keys of the gateway (create, list, revoke); only a hash of each secret is stored."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import click

from services.cli.common import fail, settings_of


@click.group()
def keys() -> None:
    """API keys for `llmops gateway`: one tenant per key, with per-key limits and a daily budget."""


@keys.command()
@click.option("--tenant", required=True, help="The tenant whose traffic the key sends and sees.")
@click.option("--name", default="", help="A label for people (also the default application of its requests).")
@click.option("--rpm", type=click.IntRange(min=0), default=0, help="Requests per minute (0: unlimited).")
@click.option("--tpm", type=click.IntRange(min=0), default=0, help="Tokens per minute (0: unlimited).")
@click.option("--daily-budget", default=None, help="Cost per UTC day, in the price table's currency (default: unlimited).")
@click.option("--model", "models", multiple=True, help="An alias this key may use (repeatable; default: all).")
@click.pass_context
def create(ctx: click.Context, tenant: str, name: str, rpm: int, tpm: int, daily_budget: str | None,
           models: tuple[str, ...]) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    from services.gateway.keys import create_key

    budget = None
    if daily_budget is not None:
        try:
            budget = Decimal(daily_budget)
        except InvalidOperation:
            fail(f"--daily-budget {daily_budget!r} is not a number")
        if budget < 0:
            fail("--daily-budget must not be negative")
    key, secret = create_key(settings_of(ctx), tenant, name=name, requests_per_minute=rpm, tokens_per_minute=tpm,
                             daily_budget=budget, models=models)
    click.echo(f"created key {key.key_id} for tenant {tenant}; store it now, it is not shown again:")
    click.echo(secret)


@keys.command(name="list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.pass_context
def list_keys(ctx: click.Context, tenant: str | None) -> None:
    """Every key: id, tenant, name, limits, status (never the secret)."""
    from services.gateway.keys import load_keys

    rows = sorted(load_keys(settings_of(ctx)).values(), key=lambda k: (k.tenant, k.created_at))
    rows = [k for k in rows if tenant is None or k.tenant == tenant]
    if not rows:
        click.echo("no keys (llmops keys create --tenant T)")
        return
    click.echo(f"{'key_id':<13} {'tenant':<16} {'name':<16} {'rpm':>6} {'tpm':>8} {'budget/day':>11}  models  status")
    for k in rows:
        status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        budget = str(k.daily_budget.normalize()) if k.daily_budget is not None else "-"
        click.echo(f"{k.key_id:<13} {k.tenant:<16} {k.name:<16} {k.requests_per_minute or '-':>6} "
                   f"{k.tokens_per_minute or '-':>8} {budget:>11}  {','.join(k.models) or 'all'}  {status}")


@keys.command()
@click.argument("key_id")
@click.pass_context
def revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke KEY_ID: every gateway refuses it from its next reload (a few seconds)."""
    from services.gateway.keys import revoke_key

    try:
        key = revoke_key(settings_of(ctx), key_id)
    except KeyError as exc:
        fail(str(exc.args[0]))
    click.echo(f"revoked {key.key_id} (tenant {key.tenant})")
