"""`llmops review`: the human review queue: list pending items (redacted), record a label as feedback."""

from __future__ import annotations

import click

from services.cli.common import fail, settings_of


@click.group()
def review() -> None:
    """Human review of low-confidence completions.

    The stream worker queues a completion (topic llm.review, table review_items) when a safety score falls
    in the gray band, when its feedback is low, or when a rollout flagged its deployment. `list` shows what
    waits for a label, `label` records one: it is published as feedback with source "human", so it counts in
    the quality aggregates and the judge like any feedback, and the item leaves the queue once stored.
    """


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@review.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="At most this many items.")
@click.option("--tenant", default=None, help="Only this tenant's items.")
@click.option("--width", type=click.IntRange(20, 10000), default=160, show_default=True,
              help="Clip texts to this many characters.")
@click.pass_context
def review_list(ctx: click.Context, limit: int, tenant: str | None, width: int) -> None:
    """Pending items, oldest first: request, reasons, scores and the texts with every PII span redacted."""
    from services.review.queue import pending
    from streams.concerns.review import review_text

    items = pending(settings_of(ctx), limit=limit, tenant=tenant)
    if not items:
        click.echo("no pending review items")
        return
    for it in items:
        click.echo(
            f"{it.request_id}  tenant={it.tenant_id} deployment={it.deployment_id or '-'} at={it.occurred_at:%Y-%m-%d %H:%M:%S}\n"
            f"  reasons: {', '.join(it.reasons)}  injection={_fmt(it.injection_score)} "
            f"toxicity={_fmt(it.toxicity_score)} feedback={_fmt(it.feedback_score)}"
            + (f"\n  detail: {_clip(it.detail, width)}" if it.detail else "")
            + f"\n  prompt: {_clip(review_text(it.prompt_text), width)}"
            + f"\n  answer: {_clip(review_text(it.text), width)}"
        )
    click.echo(f"{len(items)} pending item(s); label one with: llmops review label REQUEST_ID --safe|--unsafe")


@review.command("label")
@click.argument("request_id")
@click.option("--safe/--unsafe", "safe", required=True, help="The verdict (published as the feedback label).")
@click.option("--score", type=click.FloatRange(0.0, 1.0), default=None,
              help="Feedback score, higher is better [default: 1.0 if --safe, 0.0 if --unsafe].")
@click.option("--comment", default=None, help="Free text, stored redacted per the tenant's policy.")
@click.option("--tenant", default=None, help="The request's tenant (default: looked up in the review queue).")
@click.pass_context
def review_label(ctx: click.Context, request_id: str, safe: bool, score: float | None, comment: str | None,
                 tenant: str | None) -> None:
    """Record a human label for REQUEST_ID: a Feedback event with source "human" on llm.feedback."""
    from services.review.queue import ReviewError, label

    try:
        event = label(settings_of(ctx), request_id, "safe" if safe else "unsafe", score=score, comment=comment, tenant=tenant)
    except ReviewError as exc:
        fail(str(exc))
    f = event.payload
    click.echo(f"labelled {request_id} {f.label} (score {f.score:.2f}, tenant {event.tenant_id}); event {event.event_id}")
