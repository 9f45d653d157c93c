"""The rollout commands' functions, for the CLI: start, status (and its table), abort.

``start_rollout`` publishes the spec (with the rollout id and start time) to ``llm.rollout-specs``, then the
'start' event to ``llm.rollouts``: the router shifts the first step's traffic at once and the judge takes it
from there. State is always read from the compacted topics (latest event per alias), never from a local file.
All functions are async (use ``asyncio.run`` from the CLI).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from schemas.codec import DecodeError, decode, encode, make_event
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import GateResult, RolloutEvent
from services.core.kafka.config import aiokafka_producer_kwargs
from services.core.settings import Settings
from services.rollout.decision import abort_event, fmt, start_event
from services.rollout.spec import RolloutSpec
from services.rollout.topics import RolloutTopics, ensure_rollout_topics, read_to_end

SOURCE = "llmops.cli"
ACTIVE = ("start", "step_up", "hold")


class RolloutError(RuntimeError):
    """A rollout command that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class RolloutStatus:
    """One alias's rollout: its latest event, and the latest decision that evaluated gates."""

    alias: str
    rollout_id: str
    action: str
    active: bool
    step: int
    steps: list[float] | None
    weights: dict[str, float]
    stable: str
    canary: str | None
    reason: str
    updated_at: datetime
    decision: RolloutEvent | None
    decided_at: datetime | None


class _Latest(BaseModel):
    event: RolloutEvent
    at: datetime
    decision: RolloutEvent | None = None
    decided_at: datetime | None = None


async def _state(settings: Settings, topics: RolloutTopics) -> tuple[dict[str, _Latest], dict[str, RolloutSpecRecord]]:
    await ensure_rollout_topics(settings, topics)
    latest: dict[str, _Latest] = {}
    records: dict[str, RolloutSpecRecord] = {}
    for rec in await read_to_end(settings, [topics.rollouts, topics.specs]):
        if rec.topic == topics.specs:
            try:
                record = decode(rec.value, rec.headers, expect=RolloutSpecRecord).payload
            except DecodeError:
                continue
            records[record.rollout_id] = record
            continue
        try:
            env = decode(rec.value, rec.headers, expect=RolloutEvent)
        except DecodeError:
            continue
        ev: RolloutEvent = env.payload
        prev = latest.get(ev.alias)
        keep = prev if prev is not None and prev.event.rollout_id == ev.rollout_id else None
        cur = _Latest(event=ev, at=env.occurred_at, decision=keep.decision if keep else None,
                      decided_at=keep.decided_at if keep else None)
        if ev.gates:
            cur.decision, cur.decided_at = ev, env.occurred_at
        latest[ev.alias] = cur
    return latest, records


async def _publish(settings: Settings, items: list[tuple[str, bytes, list[tuple[str, bytes]], str]]) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        for topic, value, headers, key in items:  # one after another: the spec is on the broker before the start
            await (await producer.send(topic, value, key=key.encode(), headers=headers))
    finally:
        await producer.stop()


async def start_rollout(
    settings: Settings, spec: RolloutSpec, *, topics: RolloutTopics | None = None, started_at: datetime | None = None,
) -> RolloutEvent:
    """Start a rollout: publish its spec and the 'start' event.

    Refuses (:class:`RolloutError`) while the alias has an active rollout, and when the alias's traffic is
    served by another deployment than the spec's stable (e.g. after a promotion).

    ``started_at`` (default now), in window event time: windows that start earlier are not judged.
    """
    topics = topics or RolloutTopics()
    latest, _ = await _state(settings, topics)
    current = latest.get(spec.alias)
    if current is not None and current.event.action in ACTIVE:
        ev = current.event
        raise RolloutError(
            f"alias {spec.alias!r} already has an active rollout {ev.rollout_id} ({ev.action}, step {ev.step}, "
            f"canary {ev.canary_deployment}); abort it first: llmops rollout abort {spec.alias}"
        )
    if current is not None:
        serving = max(current.event.weights.items(), key=lambda kv: kv[1])[0]
        if serving != spec.stable:
            raise RolloutError(
                f"alias {spec.alias!r} now serves {serving} (last rollout {current.event.rollout_id}: "
                f"{current.event.action}), but the spec's stable is {spec.stable}; set stable: {serving}"
            )
    started_at = (started_at or datetime.now(UTC)).astimezone(UTC)
    rollout_id = f"{spec.alias}-{started_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    event = start_event(spec, rollout_id)
    record = RolloutSpecRecord(rollout_id=rollout_id, started_at=started_at, spec=spec)
    spec_value, spec_headers = encode(make_event(record, source=SOURCE, tenant_id="_system", occurred_at=started_at))
    value, headers = encode(make_event(event, source=SOURCE, tenant_id="_system", occurred_at=started_at))
    await _publish(settings, [(topics.specs, spec_value, spec_headers, spec.alias),
                              (topics.rollouts, value, headers, spec.alias)])
    return event


async def abort_rollout(
    settings: Settings, alias: str, *, reason: str = "aborted by operator", topics: RolloutTopics | None = None,
    ended_too: bool = False,
) -> RolloutEvent:
    """Send the alias's traffic back to stable (action 'abort'). Refuses when no rollout of the alias is active,
    unless ``ended_too``: then the latest rollout's stable takes all traffic whatever its outcome (a promoted canary
    goes back; for a scenario that starts again from the same stable, such as the demo)."""
    topics = topics or RolloutTopics()
    latest, _ = await _state(settings, topics)
    current = latest.get(alias)
    if current is None:
        known = ", ".join(sorted(latest)) or "none"
        raise RolloutError(f"no rollout for alias {alias!r} (aliases with rollouts: {known})")
    if current.event.action not in ACTIVE and not ended_too:
        raise RolloutError(f"rollout {current.event.rollout_id} of {alias!r} is not active (last action: {current.event.action})")
    event = abort_event(current.event, f"abort: {reason}")
    value, headers = encode(make_event(event, source=SOURCE, tenant_id="_system"))
    await _publish(settings, [(topics.rollouts, value, headers, alias)])
    return event


async def rollout_status(
    settings: Settings, alias: str | None = None, *, topics: RolloutTopics | None = None,
) -> list[RolloutStatus]:
    """The latest state of each alias's rollout (or of one alias), sorted by alias."""
    latest, records = await _state(settings, topics or RolloutTopics())
    out = []
    for name in sorted(latest):
        if alias is not None and name != alias:
            continue
        cur = latest[name]
        ev = cur.event
        record = records.get(ev.rollout_id)
        out.append(RolloutStatus(
            alias=name, rollout_id=ev.rollout_id, action=ev.action, active=ev.action in ACTIVE, step=ev.step,
            steps=list(record.spec.steps) if record else None, weights=dict(ev.weights), stable=ev.stable_deployment,
            canary=ev.canary_deployment, reason=ev.reason, updated_at=cur.at, decision=cur.decision, decided_at=cur.decided_at,
        ))
    return out


def _gate_verdict(g: GateResult) -> str:
    if g.status is not None:
        return {"rollback": "ROLLBACK", "within_margin": "within margin", "pending": "pending",
                "no_data": "no data"}[g.status]
    return "pass" if g.passed else "FAIL"  # an event of the interval-based judge


def _evidence(g: GateResult) -> str:
    """The e-value against its boundary (count gates), or the bounds of how much worse the canary is."""
    if g.e_value is not None and g.e_threshold is not None:
        return f"e={fmt(g.e_value)} / {fmt(g.e_threshold)}"
    if g.worse_low is not None or g.worse_high is not None:
        return f"[{fmt(g.worse_low)}, {fmt(g.worse_high)}]"
    return "-"


def format_status(statuses: list[RolloutStatus]) -> str:
    """A readable table per alias: state, step, weights, and each gate's values, e-value or bounds, and margin."""
    if not statuses:
        return "no rollouts"
    blocks = []
    for st in statuses:
        step = f"{st.step}/{len(st.steps)}" if st.steps else str(st.step)
        weights = ", ".join(f"{d} {w * 100:.4g}%" for d, w in sorted(st.weights.items()))
        lines = [
            f"{st.alias}  rollout {st.rollout_id}  {'ACTIVE' if st.active else 'done'}",
            f"  action    {st.action} at {st.updated_at:%Y-%m-%d %H:%M:%S} UTC",
            f"  step      {step}" + (f" (steps {', '.join(fmt(s) for s in st.steps)}%)" if st.steps else ""),
            f"  weights   {weights}",
            f"  reason    {st.reason}",
        ]
        d = st.decision
        if d is not None and d.gates:
            when = f"{st.decided_at:%Y-%m-%d %H:%M:%S}" if st.decided_at else "?"
            into = f", {d.step_seconds:.0f}s into the step" if d.step_seconds is not None else ""
            sides = (f", canary n={d.canary_requests}, stable n={d.stable_requests}"
                     if d.canary_requests is not None and d.stable_requests is not None else "")
            lines.append(f"  gates (decision '{d.action}' at {when} UTC{into}{sides}):")
            lines.append("    e = the rollback test's e-value / the value that rolls back; [low, high] = how much worse the "
                         "canary is (rollback above 'rolls back', promotion needs high <= margin)")
            rows = [("gate", "canary", "stable", "e-value or bounds", "rolls back", "margin", "n canary", "n stable",
                     "status")]
            rows += [(g.gate, fmt(g.canary_value) if g.status else fmt(g.observed), fmt(g.stable_value),
                      _evidence(g), fmt(g.threshold), fmt(g.margin), str(g.canary_samples), str(g.stable_samples),
                      _gate_verdict(g)) for g in d.gates]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                cells = [c.ljust(w) if i in (0, 8) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
                lines.append(("    " + "  ".join(cells)).rstrip())
        else:
            lines.append("  gates     no decision yet")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
