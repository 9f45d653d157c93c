"""`llmops topics`, `llmops migrate`, `llmops schemas`: the topic catalog, ClickHouse migrations and event contracts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from services.cli.common import fail, settings_of


@click.group()
def topics() -> None:
    """Kafka topics of the catalog (schemas/topics.py)."""


@topics.command("create")
@click.option("--deployment", "deployments", multiple=True, help="Also create llm.dispatch.<DEPLOYMENT>. Repeatable.")
@click.pass_context
def topics_create(ctx: click.Context, deployments: tuple[str, ...]) -> None:
    """Create every catalog topic that does not exist yet (idempotent)."""
    from schemas.topics import TOPICS, dispatch_topic
    from services.core.kafka.admin import KafkaUnavailable, ensure_topics

    try:
        specs = [*TOPICS.values(), *(dispatch_topic(d) for d in deployments)]
        results = ensure_topics(settings_of(ctx), specs)
    except (ValueError, KafkaUnavailable) as exc:
        fail(str(exc))
    for res in results:
        click.echo(f"{res.name:<32} {'created' if res.created else 'exists':<8} partitions={res.partitions}")


@topics.command("list")
@click.pass_context
def topics_list(ctx: click.Context) -> None:
    """List the topics on the cluster with their partition counts, and catalog topics still missing."""
    from schemas.topics import TOPICS
    from services.core.kafka.admin import KafkaUnavailable, existing_topics

    try:
        existing = existing_topics(settings_of(ctx))
    except KafkaUnavailable as exc:
        fail(str(exc))
    for name, parts in sorted(existing.items()):
        click.echo(f"{name:<32} partitions={parts}")
    for name in sorted(set(TOPICS) - set(existing)):
        click.echo(f"{name:<32} MISSING (run `llmops topics create`)")


# --- migrations --------------------------------------------------------------------------------------


@click.command()
@click.option("--status", "show_status", is_flag=True, help="Only show which migrations are applied.")
@click.pass_context
def migrate(ctx: click.Context, show_status: bool) -> None:
    """Apply the ClickHouse migrations that are not applied yet, in order (shipped with the package, or LLMOPS_MIGRATIONS_DIR).

    Each file is recorded in <database>.schema_migrations; running again does nothing. A failing
    migration stops the run with the file name and the server's message.
    """
    from services.core.clickhouse import migrations

    settings = settings_of(ctx)
    try:
        if show_status:
            for st in migrations.status(settings):
                click.echo(f"{st.migration.path.name:<40} {'applied' if st.applied else 'pending'}")
            return
        applied = migrations.migrate(settings)
    except migrations.MigrationError as exc:
        fail(str(exc))
    for m in applied:
        click.echo(f"applied {m.path.name}")
    if not applied:
        click.echo("up to date")


# --- schemas -----------------------------------------------------------------------------------------


@click.group("schemas")
def schemas_group() -> None:
    """Event contracts (schemas/)."""


@schemas_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write the JSON Schema of every event (envelope + payload) into DIRECTORY."""
    from schemas.compat import export_json_schemas

    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in export_json_schemas().items():
        (directory / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        click.echo(str(directory / name))
