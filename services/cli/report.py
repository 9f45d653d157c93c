"""`llmops rollout report`: one rollout's story as a self-contained HTML page (services/report/)."""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.common import fail, settings_of


@click.command("report")
@click.argument("alias")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page. Default: LLMOPS_DATA_DIR/reports/rollout-ALIAS-ROLLOUT.html.")
@click.option("--rollout-id", default=None, help="A past rollout of the alias. Default: its latest.")
@click.option("--no-evidently", is_flag=True, help="Leave out Evidently's drift page (it adds ~4 MB).")
@click.pass_context
def report(ctx: click.Context, alias: str, html_path: Path | None, rollout_id: str | None, no_evidently: bool) -> None:
    """Write the rollout report of ALIAS: one HTML file that needs no network to view.

    Per gate, canary against stable over time with the threshold and each decision (its reason on hover);
    traffic weights over time; the latency distributions of both sides; drift (share per check, the latest
    check per feature, and Evidently's report of canary against stable embedded); the decision log. Read from
    ClickHouse (rollout_decisions, raw_completions, drift_checks). Prints the file's path.
    """
    from services.report.history import NoRollout
    from services.report.write import write_report

    try:
        path = write_report(settings_of(ctx), alias, rollout_id, path=html_path, with_evidently=not no_evidently)
    except NoRollout as exc:
        fail(str(exc))
    click.echo(str(path))
