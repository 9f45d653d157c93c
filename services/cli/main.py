"""`llmops`: the command line of llmops-stream. Each subcommand is a thin layer over a service module."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.settings import Settings

if TYPE_CHECKING:
    from services.infra.stack import ServerStatus


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]  # type: ignore[no-any-return]


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


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
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    ctx.ensure_object(dict)["settings"] = Settings(**overrides)


# --- infra -------------------------------------------------------------------------------------------


@cli.group()
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
        statuses = LocalStack(_settings(ctx)).up()
    except InfraError as exc:
        _fail(str(exc))
    _print_status(statuses)


@infra.command("down")
@click.pass_context
def infra_down(ctx: click.Context) -> None:
    """Stop the local servers that `infra up` started (nothing else)."""
    from services.infra.stack import LocalStack

    stopped = LocalStack(_settings(ctx)).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@infra.command("status")
@click.pass_context
def infra_status(ctx: click.Context) -> None:
    """Show each server: running or not, where, PID, memory and log file. Exit 1 if any is down."""
    from services.infra.stack import LocalStack

    statuses = LocalStack(_settings(ctx)).status()
    _print_status(statuses)
    if not all(st.running for st in statuses):
        sys.exit(1)


# --- topics ------------------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Kafka topics of the catalog (schemas/topics.py)."""


@topics.command("create")
@click.option("--deployment", "deployments", multiple=True, help="Also create llm.dispatch.<DEPLOYMENT>. Repeatable.")
@click.pass_context
def topics_create(ctx: click.Context, deployments: tuple[str, ...]) -> None:
    """Create every catalog topic that does not exist yet (idempotent)."""
    from schemas.topics import TOPICS, dispatch_topic
    from services.kafka.admin import KafkaUnavailable, ensure_topics

    try:
        specs = [*TOPICS.values(), *(dispatch_topic(d) for d in deployments)]
        results = ensure_topics(_settings(ctx), specs)
    except (ValueError, KafkaUnavailable) as exc:
        _fail(str(exc))
    for res in results:
        click.echo(f"{res.name:<32} {'created' if res.created else 'exists':<8} partitions={res.partitions}")


@topics.command("list")
@click.pass_context
def topics_list(ctx: click.Context) -> None:
    """List the topics on the cluster with their partition counts, and catalog topics still missing."""
    from schemas.topics import TOPICS
    from services.kafka.admin import KafkaUnavailable, existing_topics

    try:
        existing = existing_topics(_settings(ctx))
    except KafkaUnavailable as exc:
        _fail(str(exc))
    for name, parts in sorted(existing.items()):
        click.echo(f"{name:<32} partitions={parts}")
    for name in sorted(set(TOPICS) - set(existing)):
        click.echo(f"{name:<32} MISSING (run `llmops topics create`)")


# --- migrations --------------------------------------------------------------------------------------


@cli.command()
@click.option("--status", "show_status", is_flag=True, help="Only show which migrations are applied.")
@click.pass_context
def migrate(ctx: click.Context, show_status: bool) -> None:
    """Apply the ClickHouse migrations in deploy/clickhouse/ that are not applied yet, in order.

    Each file is recorded in <database>.schema_migrations; running again does nothing. A failing
    migration stops the run with the file name and the server's message.
    """
    from services.clickhouse import migrations

    settings = _settings(ctx)
    try:
        if show_status:
            for st in migrations.status(settings):
                click.echo(f"{st.migration.path.name:<40} {'applied' if st.applied else 'pending'}")
            return
        applied = migrations.migrate(settings)
    except migrations.MigrationError as exc:
        _fail(str(exc))
    for m in applied:
        click.echo(f"applied {m.path.name}")
    if not applied:
        click.echo("up to date")


# --- schemas -----------------------------------------------------------------------------------------


@cli.group("schemas")
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


# --- services ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("spec_path", metavar="DEPLOYMENT_SPEC", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--address", default=None, help="Ray cluster address (e.g. ray://head:10001). Default: start Ray locally.")
@click.pass_context
def serve(ctx: click.Context, spec_path: Path, address: str | None) -> None:
    """Run one deployment (one model version) as Ray Serve replicas consuming llm.dispatch.<deployment>.

    DEPLOYMENT_SPEC is a YAML file (see deploy/inference/). Each replica joins the consumer group
    inference.<deployment>, generates with continuous batching, streams llm.completion-chunks and
    publishes one Completion per request to llm.completions. Runs until Ctrl-C, then finishes or
    releases in-flight work.
    """
    from pydantic import ValidationError

    from schemas.topics import dispatch_topic
    from services.inference.serve_app import serve_deployment
    from services.inference.spec import DeploymentSpec
    from services.kafka.admin import KafkaUnavailable, ensure_topics

    settings = _settings(ctx)
    try:
        spec = DeploymentSpec.from_yaml(spec_path)
        ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    except (ValidationError, ValueError, KafkaUnavailable) as exc:
        _fail(f"{spec_path}: {exc}")
    click.echo(f"serving {spec.deployment_id} ({spec.num_replicas} replica(s)) from {spec.dispatch_topic}; Ctrl-C stops")
    serve_deployment(spec, address, settings=settings, blocking=True)  # returns after a graceful stop


@cli.command()
@click.option("--route", "routes", multiple=True, metavar="ALIAS=DEPLOYMENT", required=True,
              help="Static route used until a rollout for the alias exists. Repeatable.")
@click.pass_context
def router(ctx: click.Context, routes: tuple[str, ...]) -> None:
    """Route llm.requests to llm.dispatch.<deployment> by each alias's rollout weights.

    Weights come from the compacted llm.rollouts topic (read from the beginning, so every router
    agrees); users stay on one deployment (sticky by user, session or request id). Requests for an
    unknown alias get an error completion; malformed ones go to llm.deadletter.
    """
    import asyncio
    import signal

    from services.router.router import Router

    static: dict[str, str] = {}
    for route in routes:
        alias, sep, deployment = route.partition("=")
        if not sep or not alias or not deployment:
            _fail(f"--route {route!r}: expected ALIAS=DEPLOYMENT")
        static[alias] = deployment

    async def run() -> None:
        service = Router(_settings(ctx), static)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        click.echo(f"routing {', '.join(f'{a} -> {d}' for a, d in static.items())}; Ctrl-C stops")
        await service.run()

    asyncio.run(run())


@cli.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="StreamsConfig as JSON (topics, batch size/interval, price/budget/policy files, drift settings).")
@click.option("--log-level", default="INFO", show_default=True, help="Python log level of the worker.")
@click.pass_context
def streams(ctx: click.Context, config_path: Path | None, log_level: str) -> None:
    """Run the stream worker: raw sink, dead letters, safety, cost, latency, feedback and drift into ClickHouse.

    Reads llm.requests, llm.completions and llm.feedback in the consumer group llmops-streams, writes the
    raw tables (redacted per tenant policy) and per-minute aggregates, publishes safety findings, alerts
    and dead letters, and commits offsets only after ClickHouse and the broker acknowledged a batch.
    Runs until Ctrl-C or SIGTERM.
    """
    import logging

    from pydantic import ValidationError

    from streams.config import StreamsConfig
    from streams.worker import run_worker

    try:
        config = StreamsConfig.load(config_path) if config_path else None
    except (ValidationError, ValueError, OSError) as exc:
        _fail(f"{config_path}: {exc}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(_settings(ctx), config)


@cli.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("deploy/notifier.yaml"), show_default=True, help="Webhooks, filters, retry policy, console.")
@click.pass_context
def notify(ctx: click.Context, config_path: Path) -> None:
    """Deliver llm.alerts to webhooks (JSON, HMAC-SHA256 signed, retried with backoff) and/or the console.

    At-least-once: offsets are committed after each alert was delivered or failed for good; every POST
    carries X-Llmops-Dedup-Key (the alert event's id) so receivers can drop redeliveries, and
    X-Llmops-Signature (sha256=HMAC of the body). Runs until Ctrl-C or SIGTERM.
    """
    import asyncio

    from services.notifier.config import ConfigError, load_notifier_config
    from services.notifier.service import run_notifier

    try:
        config = load_notifier_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    stats = asyncio.run(run_notifier(_settings(ctx), config))
    click.echo(f"stopped: {stats}")


@cli.group()
def rollout() -> None:
    """Canary rollouts of a model alias, judged on live aggregates, rolled back automatically.

    A rollout spec (YAML, see deploy/rollouts/) names the alias, the stable and canary deployments,
    the traffic steps, the analysis interval, the minimum samples, the failure threshold and the gates.
    The judge (`llmops rollout judge`) decides every interval: step up, hold, promote or roll back.
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
        event = asyncio.run(start_rollout(_settings(ctx), load_spec(spec_path)))
    except (SpecError, RolloutError) as exc:
        _fail(str(exc))
    weights = ", ".join(f"{d} {w:.0%}" for d, w in sorted(event.weights.items()))
    click.echo(f"started {event.rollout_id}: {weights}")


@rollout.command("status")
@click.argument("alias", required=False)
@click.pass_context
def rollout_status_cmd(ctx: click.Context, alias: str | None) -> None:
    """Show each rollout (or ALIAS's): step, weights, and every gate's observed value vs threshold."""
    import asyncio

    from services.rollout.commands import format_status, rollout_status

    click.echo(format_status(asyncio.run(rollout_status(_settings(ctx), alias))))


@rollout.command("abort")
@click.argument("alias")
@click.option("--reason", default="aborted by operator", show_default=True, help="Recorded with the abort event.")
@click.pass_context
def rollout_abort(ctx: click.Context, alias: str, reason: str) -> None:
    """Send all of ALIAS's traffic back to its stable deployment and end the rollout."""
    import asyncio

    from services.rollout.commands import RolloutError, abort_rollout

    try:
        event = asyncio.run(abort_rollout(_settings(ctx), alias, reason=reason))
    except RolloutError as exc:
        _fail(str(exc))
    click.echo(f"aborted {event.rollout_id}: all traffic on {event.stable_deployment}")


@rollout.command("judge")
@click.pass_context
def rollout_judge(ctx: click.Context) -> None:
    """Run the canary judge: consume llm.deployment-windows, decide every interval, publish to llm.rollouts.

    Run one judge at a time. Decisions also land in the ClickHouse table rollout_decisions, and rollbacks
    and promotions raise an Alert on llm.alerts. Runs until Ctrl-C.
    """
    import asyncio

    from services.rollout.judge import run_judge

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_judge(_settings(ctx)))


# --- the main job ------------------------------------------------------------------------------------


@cli.command()
@click.option("--healthy", is_flag=True, help="Roll out a canary that behaves like stable: it should be promoted.")
@click.option("--rate", "rate_per_s", default=2.0, show_default=True, help="Requests per second from the synthetic users.")
@click.option("--interval", "interval_s", default=20.0, show_default=True, help="The judge's analysis interval (seconds).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Give up after this many seconds.")
@click.option("--keep-running/--stop", default=True, show_default=True, help="Leave the local stack running at the end.")
@click.pass_context
def demo(ctx: click.Context, healthy: bool, rate_per_s: float, interval_s: float, timeout_s: float, keep_running: bool) -> None:
    """The main job: a canary rollout of the small model that rolls itself back, end to end.

    Starts the local stack (or uses external Kafka/ClickHouse from the settings), two Ray Serve deployments
    of SmolLM2 (stable chat-v1; canary chat-v2, whose generation config rambles: slower, costlier, graded
    lower), the stream worker, the router, the judge and a console notifier; drives synthetic users and a
    grader while showing traffic, weights and decisions; ends when the canary is rolled back (or promoted
    with --healthy) and prints a summary read from ClickHouse. Exit 1 if the verdict is not the expected one.
    """
    from services.demo.run import DemoOptions, run_demo

    opts = DemoOptions(healthy=healthy, rate_per_s=rate_per_s, interval_s=interval_s, timeout_s=timeout_s,
                       keep_running=keep_running)
    if not run_demo(_settings(ctx), opts, echo=click.echo):
        sys.exit(1)


@cli.command()
@click.option("--events", default=20, show_default=True, help="How many requests (and completions) to publish.")
@click.option("--keep-running/--stop", default=True, show_default=True, help="Leave the local stack running at the end.")
@click.pass_context
def smoke(ctx: click.Context, events: int, keep_running: bool) -> None:
    """Check the stack end to end without a model (fast).

    Starts the local stack (if local), creates the topics, applies the migrations, publishes sample
    requests, completions and feedback, reads them back through a consumer group into the ClickHouse raw
    tables, and prints what landed and where everything is.
    """
    from services.smoke import run_smoke

    run_smoke(_settings(ctx), events=events, keep_running=keep_running, echo=click.echo)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
