"""`llmops notify`: deliver alerts to webhooks and the console."""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.common import fail, settings_of


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Notifier YAML: webhooks, filters, retry policy, console (an annotated example ships as "
                   "services/notifier/notifier.yaml). Default: print every alert to the console.")
@click.pass_context
def notify(ctx: click.Context, config_path: Path | None) -> None:
    """Deliver llm.alerts to webhooks (JSON, HMAC-SHA256 signed, retried with backoff) and/or the console.

    At-least-once: offsets are committed after each alert was delivered or failed for good; every POST
    carries X-Llmops-Dedup-Key (the alert event's id) so receivers can drop redeliveries, and
    X-Llmops-Signature (sha256=HMAC of the body). Runs until Ctrl-C or SIGTERM.
    """
    from services.core.signals import run_until_signalled
    from services.notifier.config import ConfigError, NotifierConfig, load_notifier_config
    from services.notifier.service import Notifier

    try:
        config = load_notifier_config(config_path) if config_path else NotifierConfig(console=True)
    except ConfigError as exc:
        fail(str(exc))
    notifier = Notifier(settings_of(ctx), config)
    run_until_signalled(notifier.run, notifier.stop)
    click.echo(f"stopped: {notifier.stats}")
