"""The demo's closing report, read back from ClickHouse: what the loop decided and what it measured."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.clickhouse.client import connect
from services.settings import Settings

Echo = Callable[[str], None]


def print_summary(
    settings: Settings, *, rollout_id: str, deployments: list[str], prefix: str, since: datetime, echo: Echo,
) -> None:
    client = connect(settings)
    params = {"rid": rollout_id, "deps": deployments, "p": prefix + "%", "since": since}

    echo("== rollout timeline (rollout_decisions)")
    rows = client.query(
        "SELECT interval_index, action, step, weights, canary_requests, stable_requests, reason "
        "FROM rollout_decisions FINAL WHERE rollout_id = %(rid)s ORDER BY interval_index, written_at",
        parameters=params,
    ).result_rows
    if not rows:
        echo("   (no decision recorded)")
    for idx, action, step, weights, n_c, n_s, reason in rows:
        w = ", ".join(f"{d} {v:.0%}" for d, v in sorted(weights.items()))
        echo(f"   #{idx:<3} {action:<8} step {step}  [{w}]  canary n={n_c} stable n={n_s}")
        if action not in ("step_up",):
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
            echo(f"   {dep:<12} {n:>6} completions, none priced (model not in deploy/prices.yaml)")
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
