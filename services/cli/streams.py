"""`llmops streams`: the stream worker (the Faust app ``streams.app:app``)."""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.common import fail, settings_of


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="StreamsConfig as JSON (topics, batching, windows, price/budget/policy files, drift). "
                   "Default: LLMOPS_STREAMS_* environment variables, then the built-in defaults.")
@click.option("--log-level", default="INFO", show_default=True, help="Log level of the worker.")
@click.pass_context
def streams(ctx: click.Context, config_path: Path | None, log_level: str) -> None:
    """Run the stream worker, a faust-streaming app, until Ctrl-C or SIGTERM.

    One agent per input topic (llm.requests, llm.completions, llm.feedback) stores the raw events (redacted per
    tenant policy), scans them for safety (findings to llm.safety), prices them (budgets and alerts), feeds drift,
    and builds the per-second deployment windows it publishes to llm.deployment-windows for the canary judge;
    per-minute aggregates are recomputed in ClickHouse. Further agents store every service's dead letters
    (redacted) and every alert (once). Offsets are committed only after ClickHouse and the broker acknowledged a
    batch. Run more workers with the same configuration to share the partitions (consumer group llmops-streams).
    """
    from pydantic import ValidationError

    from streams.config import StreamsConfig
    from streams.worker import run_worker

    try:
        config = StreamsConfig.load(config_path) if config_path else StreamsConfig()
    except (ValidationError, ValueError, OSError) as exc:
        fail(f"{config_path or 'LLMOPS_STREAMS_*'}: {exc}")
    run_worker(settings_of(ctx), config, log_level)
