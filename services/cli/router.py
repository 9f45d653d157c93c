"""`llmops router`: route llm.requests to the deployments by rollout weights."""

from __future__ import annotations

import click

from services.cli.common import fail, settings_of


@click.command()
@click.option("--route", "routes", multiple=True, metavar="ALIAS=DEPLOYMENT", required=True,
              help="Static route used until a rollout for the alias exists. Repeatable.")
@click.pass_context
def router(ctx: click.Context, routes: tuple[str, ...]) -> None:
    """Route llm.requests to llm.dispatch.<deployment> by each alias's rollout weights.

    Weights come from the compacted llm.rollouts topic (read from the beginning, so every router
    agrees); users stay on one deployment (sticky by user, session or request id). Requests for an
    unknown alias get an error completion; malformed ones go to llm.deadletter.
    """
    from services.core.signals import run_until_signalled
    from services.router.router import Router

    static: dict[str, str] = {}
    for route in routes:
        alias, sep, deployment = route.partition("=")
        if not sep or not alias or not deployment:
            fail(f"--route {route!r}: expected ALIAS=DEPLOYMENT")
        static[alias] = deployment

    service = Router(settings_of(ctx), static)
    click.echo(f"routing {', '.join(f'{a} -> {d}' for a, d in static.items())}; Ctrl-C or SIGTERM stops")
    run_until_signalled(service.run, service.stop)
