"""`llmops k8s`: Kubernetes resources generated from the project's catalogs."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from services.cli.common import fail


@click.group()
def k8s() -> None:
    """Kubernetes resources generated from the project's catalogs (see deploy/k8s/)."""


@k8s.command("topics")
@click.option("--deployment", "deployments", multiple=True, help="Also the dispatch topic llm.dispatch.<DEPLOYMENT>. Repeatable.")
@click.option("--dispatch-only", is_flag=True, help="Only the dispatch topics of --deployment (for an overlay).")
@click.option("--cluster", default="llmops", show_default=True, help="The Strimzi Kafka cluster (label strimzi.io/cluster).")
@click.option("--replicas", type=click.IntRange(1, 16), default=3, show_default=True, help="Replicas of each topic.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
def k8s_topics(
    deployments: tuple[str, ...], dispatch_only: bool, cluster: str, replicas: int, output: Path | None
) -> None:
    """Strimzi KafkaTopic resources for every topic of the catalog (schemas/topics.py), with its partitions and
    retention or compaction, so the cluster's topics cannot drift from the code.

    deploy/k8s/base/topics.yaml is this command's output; regenerate it after changing the catalog:

        llmops k8s topics --deployment smollm2-135m-v1 -o deploy/k8s/base/topics.yaml
    """
    from services.k8s.topics import kafka_topics_yaml

    if dispatch_only and not deployments:
        fail("--dispatch-only needs at least one --deployment")
    args = [a for d in deployments for a in ("--deployment", d)]
    args += ["--dispatch-only"] if dispatch_only else []
    args += [] if cluster == "llmops" else ["--cluster", cluster]
    args += [] if replicas == 3 else ["--replicas", str(replicas)]
    try:
        text = kafka_topics_yaml(
            deployments, cluster=cluster, replicas=replicas, catalog=not dispatch_only,
            command_args="".join(" " + shlex.quote(a) for a in args),
        )
    except ValueError as exc:
        fail(str(exc))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")
