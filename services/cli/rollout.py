"""`llmops rollout`: start, inspect and abort canary rollouts, and run the judge."""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.common import fail, settings_of


@click.group()
def rollout() -> None:
    """Canary rollouts of a model alias, judged on live per-second windows, rolled back automatically.

    A rollout spec (YAML, see deploy/rollouts/) names the alias, the stable and canary deployments, the traffic
    steps, alpha, the minimum samples and time per step, the longest a step may take, and the gates with their
    tolerances (roll back beyond) and margins (promote within). The judge (`llmops rollout judge`) decides after
    every window: roll back, step up, promote, or hold and say why.
    """


@rollout.command("start")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def rollout_start(ctx: click.Context, spec_path: Path) -> None:
    """Start the rollout described by SPEC: the canary gets the first step's share of traffic at once."""
    import asyncio

    from services.rollout.commands import RolloutError, start_rollout
    from services.rollout.spec import SpecError, load_spec

    try:
        event = asyncio.run(start_rollout(settings_of(ctx), load_spec(spec_path)))
    except (SpecError, RolloutError) as exc:
        fail(str(exc))
    weights = ", ".join(f"{d} {w:.0%}" for d, w in sorted(event.weights.items()))
    click.echo(f"started {event.rollout_id}: {weights}")


@rollout.command("status")
@click.argument("alias", required=False)
@click.pass_context
def rollout_status_cmd(ctx: click.Context, alias: str | None) -> None:
    """Show each rollout (or ALIAS's): step, weights, and every gate's values, e-value or confidence bounds."""
    import asyncio

    from services.rollout.commands import format_status, rollout_status

    click.echo(format_status(asyncio.run(rollout_status(settings_of(ctx), alias))))


@rollout.command("abort")
@click.argument("alias")
@click.option("--reason", default="aborted by operator", show_default=True, help="Recorded with the abort event.")
@click.pass_context
def rollout_abort(ctx: click.Context, alias: str, reason: str) -> None:
    """Send all of ALIAS's traffic back to its stable deployment and end the rollout."""
    import asyncio

    from services.rollout.commands import RolloutError, abort_rollout

    try:
        event = asyncio.run(abort_rollout(settings_of(ctx), alias, reason=reason))
    except RolloutError as exc:
        fail(str(exc))
    click.echo(f"aborted {event.rollout_id}: all traffic on {event.stable_deployment}")


@rollout.command("judge")
@click.option("--log-level", default="INFO", show_default=True, help="Log level of the judge and of Faust.")
@click.pass_context
def rollout_judge(ctx: click.Context, log_level: str) -> None:
    """Run the canary judge: consume llm.deployment-windows, decide after every window, publish to llm.rollouts.

    A Faust app (consumer group llmops.judge). It first reads every rollout's spec and progress from the compacted
    llm.rollout-specs and llm.rollouts, logs "judge ready", then judges each window as it comes: roll back as soon
    as a gate's sequential test shows the canary worse than its tolerance, step up or promote once every gate's
    confidence sequence shows it within its margin (after min_step_seconds and min_samples), and publish a hold
    with the reasons every report_seconds otherwise. Decisions also land in the ClickHouse table
    rollout_decisions (the windows it read in rollout_windows, so a restarted judge resumes where it was), and
    rollbacks and promotions raise an Alert on llm.alerts. Runs until Ctrl-C or SIGTERM (a clean stop).
    """
    from services.rollout.judge_app import run_judge

    run_judge(settings_of(ctx), log_level=log_level)
