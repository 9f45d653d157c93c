"""The demo's closing report, read back from ClickHouse: what the loop decided and what it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from services.core.clickhouse.client import connect
from services.core.settings import Settings

Echo = Callable[[str], None]


def wait_stored(settings: Settings, prefix: str, expected: int, timeout_s: float = 30.0) -> int:
    """Wait until ClickHouse holds ``expected`` completions of this run (or ``timeout_s`` passed); how many it holds."""
    client = connect(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        stored = int(client.query("SELECT count() FROM raw_completions FINAL WHERE request_id LIKE %(p)s",
                                  parameters={"p": prefix + "%"}).result_rows[0][0])
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def seconds_to_verdict(settings: Settings, prefix: str, canary: str, verdict_at: datetime | None) -> float | None:
    """Seconds from the canary's first request of this run (as the gateway stamped it) to ``verdict_at``."""
    if verdict_at is None:
        return None
    first = connect(settings).query(
        "SELECT min(r.occurred_at) FROM raw_requests AS r FINAL WHERE r.request_id IN "
        "(SELECT request_id FROM raw_completions WHERE deployment_id = %(c)s AND request_id LIKE %(p)s)",
        parameters={"c": canary, "p": prefix + "%"},
    ).result_rows[0][0]
    if first is None or first.year < 2000:  # min() of nothing is the epoch
        return None
    first = first.replace(tzinfo=UTC) if first.tzinfo is None else first
    return float((verdict_at - first).total_seconds())


def print_summary(
    settings: Settings, *, rollout_id: str, deployments: list[str], prefix: str, since: datetime, echo: Echo,
) -> None:
    client = connect(settings)
    params = {"rid": rollout_id, "deps": deployments, "p": prefix + "%", "since": since}

    echo("== rollout timeline (rollout_decisions; holds are published every report_seconds, the last one shown)")
    rows = client.query(
        "SELECT interval_index, action, step, weights, canary_requests, stable_requests, reason "
        "FROM rollout_decisions FINAL WHERE rollout_id = %(rid)s ORDER BY interval_end, written_at",
        parameters=params,
    ).result_rows
    if not rows:
        echo("   (no decision recorded)")
    holds = 0
    for i, (idx, action, step, weights, n_c, n_s, reason) in enumerate(rows):
        next_is_hold = i + 1 < len(rows) and rows[i + 1][1] == "hold"
        if action == "hold" and next_is_hold:
            holds += 1
            continue
        w = ", ".join(f"{d} {v:.0%}" for d, v in sorted(weights.items()))
        when = "start" if idx < 0 else f"t+{idx / 1000:.1f}s"
        skipped = f" (after {holds} earlier holds)" if action == "hold" and holds else ""
        holds = 0 if action != "hold" else holds
        echo(f"   {when:<9} {action:<8} step {step}  [{w}]  canary n={n_c} stable n={n_s}{skipped}")
        if action != "step_up":
            echo(f"        {reason}")

    echo("== latency and errors per deployment (raw_completions, this run)")
    echo(f"   {'deployment':<12} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'tokens/req':>10}")
    for dep, n, errors, p50, p95, p99, tok in client.query(
        "SELECT deployment_id, count(), countIf(error_kind != ''), quantile(0.5)(total_ms), quantile(0.95)(total_ms), "
        "quantile(0.99)(total_ms), avg(completion_tokens) FROM raw_completions FINAL "
        "WHERE request_id LIKE %(p)s GROUP BY deployment_id ORDER BY deployment_id", parameters=params,
    ).result_rows:
        echo(f"   {dep:<12} {n:>8} {errors:>6} {p50:>8.0f} {p95:>8.0f} {p99:>8.0f} {tok:>10.1f}")

    echo("== cost per deployment (cost_completions, this run)")
    for dep, n, priced, cost in client.query(
        "SELECT deployment_id, count(), countIf(cost IS NOT NULL), sumOrNull(cost) FROM cost_completions FINAL "
        "WHERE request_id LIKE %(p)s GROUP BY deployment_id ORDER BY deployment_id", parameters=params,
    ).result_rows:
        if not priced:
            echo(f"   {dep:<12} {n:>6} completions, none priced (model not in the price table)")
            continue
        echo(f"   {dep:<12} {priced:>6} priced  total ${float(cost):.6f}  per request ${float(cost) / priced:.8f}"
             + (f"  ({n - priced} unpriced)" if n > priced else ""))

    echo("== safety findings (safety_findings, this run)")
    findings = client.query(
        "SELECT deployment_id, scanned, category, action, count() FROM safety_findings FINAL "
        "WHERE request_id LIKE %(p)s GROUP BY deployment_id, scanned, category, action ORDER BY deployment_id, count() DESC",
        parameters=params,
    ).result_rows
    if not findings:
        echo("   none")
    for dep, scanned, category, action, n in findings:
        echo(f"   {dep:<12} {scanned:<10} {category:<17} {action:<7} {n}")
    leaked = client.query(
        "SELECT count() FROM raw_requests FINAL WHERE request_id LIKE %(p)s AND "
        "(position(messages, 'jane.doe@example.com') > 0 OR position(messages, '415 555 0132') > 0)",
        parameters=params,
    ).result_rows[0][0]
    echo(f"   raw requests still holding the planted email/phone: {leaked}")

    echo("== drift (drift_checks of this run, latest per deployment)")
    drift = client.query(
        "SELECT deployment_id, argMax(drift_share, checked_at), argMax(dataset_drifted, checked_at), "
        "argMax(drifted_features, checked_at), count() FROM drift_checks "
        "WHERE deployment_id IN %(deps)s AND checked_at >= %(since)s "
        "GROUP BY deployment_id ORDER BY deployment_id", parameters=params,
    ).result_rows
    if not drift:
        echo("   no drift check ran yet (a reference window fills first)")
    for dep, share, drifted, features, checks in drift:
        echo(f"   {dep:<12} drift share {share:.2f} {'DRIFTED' if drifted else 'stable'} after {checks} check(s)"
             + (f": {', '.join(features)}" if features else ""))
