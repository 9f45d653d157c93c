"""`llmops gateway`: the OpenAI-compatible HTTP front door."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.cli.common import fail, settings_of

if TYPE_CHECKING:
    from services.gateway.pricing import Pricer
    from services.gateway.safety import Scanner


def price_table_pricer(prices_path: Path | None = None) -> Pricer:
    """The gateway's pricer: the stream worker's price table (default: the shipped one)."""
    from decimal import Decimal

    from schemas.completions import Completion
    from schemas.envelope import utc_now
    from services.core.resources import package_path
    from streams.cost.prices import PriceTable, UnknownModelPrice

    table = PriceTable.load(prices_path or package_path("streams.cost", "prices.yaml"))

    def pricer(completion: Completion) -> tuple[Decimal, str] | None:
        try:
            cost = table.price(completion.model_name, utc_now(), completion.prompt_tokens, completion.completion_tokens,
                               min(completion.cached_tokens, completion.prompt_tokens))
        except UnknownModelPrice:
            return None
        return cost.total, cost.currency

    return pricer


def safety_scanner(policies_path: Path | None = None) -> Scanner:
    """The gateway's scanner: the stream worker's scanners under per-tenant policies (default: the shipped ones).

    Built here because the command line may import the stream worker's package and services may not.
    """
    from services.core.resources import package_path
    from services.gateway.safety import Scanned, Verdict
    from streams.safety.policy import load_policies
    from streams.safety.scanner import scan

    policies = load_policies(policies_path or package_path("streams.safety", "policies.yaml"))

    def scanner(text: str, scanned: Scanned, tenant: str) -> Verdict:
        result = scan("gateway", None, scanned, text, policies.for_tenant(tenant))
        acted = [f for f in result.findings if f.action != "flag"]
        return Verdict(
            redact=[(s.start, s.end, s.kind) for f in acted for s in f.spans],
            blocked=result.blocked,
            reasons=[f"{f.category}" + (f" ({f.score:.2f})" if f.category != "pii" else f": {f.spans[0].kind}")
                     for f in acted if f.action == "block"],
        )

    return scanner


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML gateway config (models, cache, limits); options below override it.")
@click.option("--model", "models", multiple=True, metavar="ALIAS[=FALLBACK]",
              help="A model alias to serve, optionally with the deployment that gets one retry on error/timeout. Repeatable.")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--instance", "instance_id", default=None,
              help="Instance id: names this gateway's reply topic llm.replies.<id> (default gw-<hostname>). "
                   "Give each running instance its own.")
@click.option("--no-auth", is_flag=True, help="Accept requests without an API key (tenant 'default'); for local trials.")
@click.option("--safety-policies", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Per-tenant safety policies (YAML, as the stream worker's); default: the shipped policies.")
@click.option("--no-safety", is_flag=True, help="Do not scan prompts and answers at the gateway.")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Price table for the x-llmops-cost header (YAML, as the stream worker's); default: the shipped one.")
@click.pass_context
def gateway(ctx: click.Context, config_path: Path | None, models: tuple[str, ...], host: str | None, port: int | None,
            instance_id: str | None, no_auth: bool, safety_policies: Path | None, no_safety: bool,
            prices: Path | None) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) over the Kafka pipeline.

    Each call becomes an InferenceRequest on llm.requests; the answer comes back on this instance's
    reply topic. API keys (`llmops keys create`) pick the tenant and carry rate limits and budgets.
    SIGTERM stops accepting, lets in-flight requests finish, then exits.

    \b
    Try it:
      llmops gateway --model chat --no-auth
      python -c "from openai import OpenAI; c = OpenAI(base_url='http://127.0.0.1:8080/v1', api_key='x'); \\
        print(c.chat.completions.create(model='chat', messages=[{'role': 'user', 'content': 'Hi'}]).choices[0].message.content)"
    """
    import logging

    from pydantic import ValidationError

    from services.core.signals import run_until_signalled
    from services.gateway.config import GatewayConfig, ModelEntry
    from services.gateway.server import GatewayServer

    try:
        config = GatewayConfig.load(config_path) if config_path else GatewayConfig()
        updates: dict[str, object] = {}
        if models:
            entries = dict(config.models)
            for spec in models:
                alias, _, fallback = spec.partition("=")
                if not alias:
                    fail(f"--model {spec!r}: expected ALIAS or ALIAS=FALLBACK")
                entries[alias] = ModelEntry(fallback=fallback or None)
            updates["models"] = entries
        for name, value in (("host", host), ("port", port), ("instance_id", instance_id)):
            if value is not None:
                updates[name] = value
        if no_auth:
            updates["require_auth"] = False
        config = GatewayConfig.model_validate({**config.model_dump(), **updates})
    except (ValidationError, ValueError) as exc:
        fail(f"gateway config: {exc}")
    if not config.models:
        fail("no models to serve: pass --model ALIAS (repeatable) or a --config file with 'models'")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scanner = None if no_safety else safety_scanner(safety_policies)
    server = GatewayServer(settings_of(ctx), config, scanner=scanner, pricer=price_table_pricer(prices))
    click.echo(f"gateway {config.instance_id} on http://{config.host}:{config.port}/v1 serving "
               f"{', '.join(config.models)}; auth {'on' if config.require_auth else 'OFF'}, "
               f"safety {'OFF' if no_safety else 'on'}; Ctrl-C or SIGTERM stops")
    run_until_signalled(server.serve, server.stop)
