"""`llmops`: the command line of llmops-stream. Each subcommand is a thin layer over a service module.

The root group builds the settings; each command group lives in its own module of this package.
"""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.admin import migrate, schemas_group, topics
from services.cli.demo import demo, smoke
from services.cli.gateway import gateway
from services.cli.infra import infra
from services.cli.k8s import k8s
from services.cli.keys import keys
from services.cli.notify import notify
from services.cli.prompts import prompts
from services.cli.report import report
from services.cli.review import review
from services.cli.rollout import rollout
from services.cli.router import router
from services.cli.serve import serve
from services.cli.streams import streams
from services.core.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Where the local stack keeps data, logs and PIDs (env LLMOPS_DATA_DIR, default .llmops/).",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """llmops-stream: LLM traffic as Kafka events, measured into ClickHouse, with canaries that roll back.

    Configuration comes from environment variables prefixed LLMOPS_ (see README, "Settings").
    By default every command uses the embedded local stack (`llmops infra up`); set
    LLMOPS_KAFKA_BOOTSTRAP and LLMOPS_CLICKHOUSE_URL to use real Kafka and ClickHouse instead.
    """
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    ctx.ensure_object(dict)["settings"] = settings


for command in (infra, topics, migrate, schemas_group, serve, router, streams, notify, rollout, review, demo, smoke,
                prompts, gateway, keys):
    cli.add_command(command)
cli.add_command(k8s)
rollout.add_command(report)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
