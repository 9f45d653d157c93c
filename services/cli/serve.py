"""`llmops serve`: one deployment as Ray Serve replicas consuming its dispatch topic."""

from __future__ import annotations

import click

from services.cli.common import fail, settings_of


@click.command()
@click.argument("spec_ref", metavar="DEPLOYMENT_SPEC")
@click.option("--address", default=None, help="Ray cluster address (e.g. ray://head:10001). Default: start Ray locally.")
@click.pass_context
def serve(ctx: click.Context, spec_ref: str, address: str | None) -> None:
    """Run one deployment (one model version) as Ray Serve replicas consuming llm.dispatch.<deployment>.

    DEPLOYMENT_SPEC is a YAML file, or the name of a spec shipped with the package (smollm2-cpu,
    smollm2-vllm-cpu, llama-1b-gpu, llama-1b-vllm-gpu; see services/inference/specs/). Each replica joins the consumer group
    inference.<deployment>, generates with continuous batching, streams llm.completion-chunks and
    publishes one Completion per request to llm.completions. Runs until Ctrl-C, then finishes or
    releases in-flight work.
    """
    from pydantic import ValidationError

    from schemas.topics import dispatch_topic
    from services.core.kafka.admin import KafkaUnavailable, ensure_topics
    from services.inference.backends import EngineConfigError
    from services.inference.serve_app import serve_deployment
    from services.inference.spec import DeploymentSpec, resolve_spec_path

    settings = settings_of(ctx)
    try:
        spec = DeploymentSpec.from_yaml(resolve_spec_path(spec_ref))
        ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    except (ValidationError, ValueError, OSError, KafkaUnavailable) as exc:
        fail(f"{spec_ref}: {exc}")
    click.echo(f"serving {spec.deployment_id} ({spec.num_replicas} replica(s)) from {spec.dispatch_topic}; Ctrl-C stops")
    try:
        serve_deployment(spec, address, settings=settings, blocking=True)  # returns after a graceful stop
    except EngineConfigError as exc:  # checked once Ray says which device the cluster has, before any replica starts
        fail(str(exc))
