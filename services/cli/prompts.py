"""`llmops prompts`: the prompt registry (push, list, show, label, diff) on the llm.prompts topic."""

from __future__ import annotations

import asyncio
import difflib
import getpass

import click
import yaml

from services.cli.common import fail, settings_of


def _split_ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition("@")
    return name, version or "latest"


def _as_yaml(version: object) -> str:
    from schemas.prompts import PromptVersion
    from services.prompts.definition import definition_of

    assert isinstance(version, PromptVersion)
    return yaml.safe_dump(definition_of(version).model_dump(mode="json", exclude_defaults=True), sort_keys=False,
                          allow_unicode=True)


@click.group()
def prompts() -> None:
    """Versioned prompt templates: immutable numbered versions, movable labels, typed variables.

    Prompts live on the compacted llm.prompts topic (mirrored into ClickHouse by the gateway). A request
    names one with a PromptRef (prompt_id, version: a number, a label such as 'production', or 'latest');
    the router renders it before dispatch.
    """


@prompts.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", "labels", multiple=True, help="Also point this label at the pushed version. Repeatable.")
@click.pass_context
def push(ctx: click.Context, file: str, labels: tuple[str, ...]) -> None:
    """Push FILE (YAML: name, messages, variables, params) as the prompt's next version.

    Pushing content equal to the latest version creates nothing and reports that version.
    """
    from services.prompts.definition import PromptDefinition
    from services.prompts.render import TemplateProblem
    from services.prompts.store import move_label
    from services.prompts.store import push as push_version

    settings = settings_of(ctx)
    try:
        definition = PromptDefinition.load(file)
    except (ValueError, TemplateProblem) as exc:
        fail(f"{file}: {exc}")
    result = asyncio.run(push_version(settings, definition, created_by=getpass.getuser()))
    version = result.version
    state = "pushed" if result.created else "unchanged, already"
    click.echo(f"{state} {version.name}@{version.version}")
    for label in labels:
        asyncio.run(move_label(settings, version.name, label, version.version, moved_by=getpass.getuser()))
        click.echo(f"label {label} -> {version.name}@{version.version}")


@prompts.command(name="list")
@click.pass_context
def list_prompts(ctx: click.Context) -> None:
    """Every prompt with its latest version and labels."""
    from services.prompts.store import read_registry

    registry = asyncio.run(read_registry(settings_of(ctx)))
    if not registry.names():
        click.echo("no prompts yet (llmops prompts push FILE)")
        return
    click.echo(f"{'name':<32} {'latest':>6}  labels")
    for name in registry.names():
        latest = registry.latest(name)
        assert latest is not None
        labels = ", ".join(f"{label}={registry.labels[name][label]}" for label in registry.labels_of(name)) or "-"
        click.echo(f"{name:<32} {latest.version:>6}  {labels}")


@prompts.command()
@click.argument("ref", metavar="NAME[@VERSION|@LABEL]")
@click.pass_context
def show(ctx: click.Context, ref: str) -> None:
    """Print one version (default: the latest) as YAML, with its number, labels and author."""
    from services.prompts.registry import UnknownPrompt
    from services.prompts.store import read_registry

    registry = asyncio.run(read_registry(settings_of(ctx)))
    name, version_ref = _split_ref(ref)
    try:
        version = registry.get(name, version_ref)
    except UnknownPrompt as exc:
        fail(str(exc))
    labels = ", ".join(registry.labels_of(name, version.version)) or "-"
    click.echo(f"# {version.name}@{version.version}  labels: {labels}  by {version.created_by or '?'} "
               f"at {version.created_at:%Y-%m-%d %H:%M:%S} UTC")
    click.echo(_as_yaml(version), nl=False)


@prompts.command()
@click.argument("name")
@click.argument("version", type=int)
@click.argument("label")
@click.pass_context
def label(ctx: click.Context, name: str, version: int, label: str) -> None:
    """Point LABEL (production, staging or your own) of prompt NAME at VERSION."""
    from services.prompts.registry import UnknownPrompt
    from services.prompts.store import move_label

    try:
        asyncio.run(move_label(settings_of(ctx), name, label, version, moved_by=getpass.getuser()))
    except (UnknownPrompt, ValueError) as exc:
        fail(str(exc))
    click.echo(f"label {label} -> {name}@{version}")


@prompts.command()
@click.argument("old", metavar="NAME@A")
@click.argument("new", metavar="[NAME@]B", required=False)
@click.pass_context
def diff(ctx: click.Context, old: str, new: str | None) -> None:
    """Unified diff between two versions (labels work too). With one argument: against the latest version."""
    from services.prompts.registry import UnknownPrompt
    from services.prompts.store import read_registry

    registry = asyncio.run(read_registry(settings_of(ctx)))
    old_name, old_ref = _split_ref(old)
    if new is None:
        new_name, new_ref = old_name, "latest"
    elif "@" in new:
        new_name, new_ref = _split_ref(new)
    else:
        new_name, new_ref = old_name, new
    try:
        a, b = registry.get(old_name, old_ref), registry.get(new_name, new_ref)
    except UnknownPrompt as exc:
        fail(str(exc))
    lines = difflib.unified_diff(
        _as_yaml(a).splitlines(keepends=True), _as_yaml(b).splitlines(keepends=True),
        fromfile=f"{a.name}@{a.version}", tofile=f"{b.name}@{b.version}",
    )
    out = "".join(lines)
    click.echo(out if out else f"{a.name}@{a.version} and {b.name}@{b.version} have the same content", nl=not out)
