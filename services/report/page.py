"""The rollout report as one self-contained HTML page: inline SVG charts and CSS, no script, nothing fetched.

Sections: the outcome; traffic weights over time; per gate, canary vs stable (or the compared statistic) over time
with the threshold and every decision marked (hover for its reason); the latency distributions of both sides;
drift (share over time, the latest check per feature, and Evidently's HTML report embedded when given); the
decision log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from services.report.history import Decision, RolloutHistory
from services.report.svg import HLine, Marker, Series, histogram, line_chart

STABLE, CANARY = "#1f6fb4", "#d0452f"
ACTION_COLORS = {
    "start": "#333333", "hold": "#9a9a9a", "step_up": "#2f9e44", "promote": "#2b8a3e", "rollback": "#c92a2a",
    "abort": "#e67700",
}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:980px;color:#222}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666}.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:12.5px}td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;
vertical-align:top}th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{display:block;margin:6px 0 2px;background:#fcfcfc;border:1px solid #eee}
.chart .t{font-weight:600;font-size:13px}.chart .g{stroke:#e6e6e6}.chart .yl{font-size:10.5px;text-anchor:end;fill:#666}
.chart .xl{font-size:10.5px;text-anchor:middle;fill:#666}.chart .ax,.chart .lg{font-size:11px;fill:#444}
.chart .ml,.chart .hl{font-size:10px}.note{color:#666;font-size:12.5px}
iframe{width:100%;height:900px;border:1px solid #ddd}
"""


def _seconds(history: RolloutHistory, at: datetime) -> float:
    return (at - history.started).total_seconds()


def _ticks(total_s: float) -> list[tuple[float, str]]:
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if total_s / s <= 8), 7200)
    return [(t, f"+{int(t) // 60}:{int(t) % 60:02d}") for t in range(0, int(total_s) + 1, step)]


def _markers(history: RolloutHistory) -> list[Marker]:
    out = []
    for d in history.decisions:
        if d.action == "hold":
            continue  # holds are many; they are in the log, and their gate values are the points of each line
        out.append(Marker(_seconds(history, d.at), ACTION_COLORS.get(d.action, "#555"), d.action,
                          f"{d.action} at {d.at:%H:%M:%S} (step {d.step}): {d.reason}"))
    return out


def _weights_chart(history: RolloutHistory) -> str:
    deployments = [history.stable_deployment, history.canary_deployment]
    series = [
        Series(f"{dep} ({'stable' if dep == history.stable_deployment else 'canary'})",
               [(_seconds(history, d.at), d.weights.get(dep, 0.0)) for d in history.decisions],
               STABLE if dep == history.stable_deployment else CANARY, step=True)
        for dep in deployments if dep
    ]
    total = max(_seconds(history, history.ended), 1.0)
    return line_chart("Traffic weights", series, x_max=total, y_label="share of traffic", markers=_markers(history),
                      x_ticks=_ticks(total), y_min=0.0, y_max=1.0)


def gate_names(decisions: Sequence[Decision]) -> list[str]:
    names: list[str] = []
    for d in decisions:
        names += [g.gate for g in d.gates if g.gate not in names]
    return names


def _gate_chart(history: RolloutHistory, gate: str) -> str:
    """Canary and stable over time (when the judge recorded both sides), and the compared statistic with its threshold."""
    points = [(d, g) for d in history.decisions for g in d.gates if g.gate == gate]
    total = max(_seconds(history, history.ended), 1.0)
    failed = sum(1 for _, g in points if not g.passed)
    title = f"Gate {gate}: {failed} of {len(points)} decisions not passed"
    charts = []
    if any(g.canary is not None and g.stable is not None for _, g in points):
        sides = [
            Series("canary", [(_seconds(history, d.at), g.canary) for d, g in points if g.canary is not None], CANARY),
            Series("stable", [(_seconds(history, d.at), g.stable) for d, g in points if g.stable is not None], STABLE),
        ]
        charts.append(line_chart(title, sides, x_max=total, y_label="value per side", markers=_markers(history),
                                 x_ticks=_ticks(total)))
        title = f"Gate {gate}: the compared statistic and its threshold"
    statistic = [(_seconds(history, d.at), g.observed) for d, g in points if g.observed is not None]
    if statistic or not charts:
        thresholds = sorted({g.threshold for _, g in points if g.threshold is not None})
        charts.append(line_chart(
            title, [Series("canary vs stable (statistic)", statistic, "#7048e8")], x_max=total, y_label="statistic",
            markers=_markers(history), hlines=[HLine(t, "#c92a2a", f"threshold {t:g}") for t in thresholds],
            x_ticks=_ticks(total),
        ))
    return "".join(charts)


def _gate_table(history: RolloutHistory, gate: str) -> str:
    rows = []
    for d in history.decisions:
        for g in d.gates:
            if g.gate == gate and (d.action != "hold" or not g.passed):
                rows.append(
                    f"<tr><td>+{_seconds(history, d.at):.0f}s</td><td>{escape(d.action)}</td>"
                    f"<td>{'pass' if g.passed else escape(g.status or 'fail')}</td>"
                    f"<td class=num>{_num(g.canary)}</td><td class=num>{_num(g.stable)}</td>"
                    f"<td class=num>{_num(g.observed)}</td><td class=num>{_num(g.threshold)}</td>"
                    f"<td>{escape(g.detail)}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>when</th><th>decision</th><th>gate</th><th>canary</th><th>stable</th><th>statistic</th>"
            "<th>threshold</th><th>detail</th></tr>" + "".join(rows[-12:]) + "</table>")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def _drift_section(history: RolloutHistory, evidently_html: str | None) -> str:
    checks = history.drift_checks
    parts = ["<h2>Drift</h2>"]
    if not checks:
        parts.append("<p class=note>No drift check of either deployment during the rollout.</p>")
    else:
        total = max(_seconds(history, history.ended), 1.0)
        series = []
        for dep, color in ((history.stable_deployment, STABLE), (history.canary_deployment, CANARY)):
            pts = [(max(0.0, _seconds(history, c.checked_at)), c.drift_share) for c in checks if c.deployment_id == dep]
            if pts:
                series.append(Series(dep, pts, color))
        threshold = checks[-1].share_threshold
        parts.append(line_chart("Drift share per check (Evidently, each deployment against its reference window)", series,
                                x_max=total, y_label="share of drifted features", markers=_markers(history),
                                hlines=[HLine(threshold, "#c92a2a", f"alert at {threshold:g}")], x_ticks=_ticks(total),
                                y_min=0.0, y_max=1.0))
        latest = checks[-1]
        feats = latest.per_feature
        rows = "".join(
            f"<tr><td>{escape(str(name))}</td><td>{escape(str(f.get('method', '')))}</td>"
            f"<td class=num>{_num(f.get('score'))}</td><td class=num>{_num(f.get('threshold'))}</td>"
            f"<td>{'drifted' if f.get('drifted') else ''}</td></tr>"
            for name, f in sorted(feats.items()) if isinstance(f, dict)
        )
        parts.append(f"<p>Latest check: <b>{escape(latest.deployment_id)}</b> at {latest.checked_at:%H:%M:%S}, drift share "
                     f"{latest.drift_share:.2f} (threshold {latest.share_threshold:g}), "
                     f"{'dataset drifted' if latest.dataset_drifted else 'no dataset drift'}.</p>")
        if rows:
            parts.append("<table><tr><th>feature</th><th>method</th><th>score</th><th>threshold</th><th></th></tr>"
                         f"{rows}</table>")
    if evidently_html:
        parts.append("<h3>Evidently data drift report</h3><p class=note>Canary completions against stable completions "
                     "during the rollout (length, tokens, latency, finish reason), computed from ClickHouse when the "
                     "report was written. Evidently's own page, embedded.</p>")
        parts.append(f'<iframe title="Evidently data drift report" sandbox="allow-scripts" srcdoc="{escape(evidently_html)}">'
                     "</iframe>")
    return "".join(parts)


def _log(history: RolloutHistory) -> str:
    rows = "".join(
        f"<tr><td>{d.at:%H:%M:%S}</td><td class=num>+{_seconds(history, d.at):.0f}s</td>"
        f"<td><span style='color:{ACTION_COLORS.get(d.action, '#555')}'>{escape(d.action)}</span></td>"
        f"<td class=num>{d.step}</td><td>{escape(', '.join(f'{k} {v:.0%}' for k, v in sorted(d.weights.items())))}</td>"
        f"<td class=num>{d.canary_requests}</td><td class=num>{d.stable_requests}</td><td>{escape(d.reason)}</td></tr>"
        for d in history.decisions
    )
    return ("<h2>Decision log</h2><table><tr><th>time (UTC)</th><th></th><th>decision</th><th>step</th><th>weights</th>"
            f"<th>canary req.</th><th>stable req.</th><th>reason</th></tr>{rows}</table>")


def render(history: RolloutHistory, *, evidently_html: str | None = None, now: datetime | None = None) -> str:
    """The whole page."""
    outcome = history.outcome
    color = ACTION_COLORS.get(outcome, "#555")
    label = {"rollback": "rolled back", "promote": "promoted", "abort": "aborted"}.get(outcome, f"in progress ({outcome})")
    duration = (history.ended - history.started).total_seconds()
    last = history.decisions[-1]
    latency = {f"{history.stable_deployment} (stable)": history.latency_ms.get(history.stable_deployment, []),
               f"{history.canary_deployment} (canary)": history.latency_ms.get(history.canary_deployment, [])}
    ttft = {f"{history.stable_deployment} (stable)": history.ttft_ms.get(history.stable_deployment, []),
            f"{history.canary_deployment} (canary)": history.ttft_ms.get(history.canary_deployment, [])}
    colors = {k: (STABLE if "(stable)" in k else CANARY) for k in latency}
    gates = gate_names(history.decisions)
    body = [
        f"<h1>Rollout report: {escape(history.alias)}</h1>",
        f"<p class=sub>Canary <b style='color:{CANARY}'>{escape(history.canary_deployment)}</b> against stable "
        f"<b style='color:{STABLE}'>{escape(history.stable_deployment)}</b> · rollout {escape(history.rollout_id)} · "
        f"{history.started:%Y-%m-%d %H:%M:%S} to {history.ended:%H:%M:%S} UTC ({duration:.0f} s, "
        f"{len(history.decisions)} decisions)</p>",
        f"<p><span class=badge style='background:{color}'>{escape(label)}</span> {escape(last.reason)}</p>",
        "<h2>Traffic weights</h2>", _weights_chart(history),
        "<p class=note>Vertical lines are the judge's decisions (holds omitted; hover a line for its reason).</p>",
        "<h2>Gates</h2>",
    ]
    if not gates:
        body.append("<p class=note>No gate results recorded.</p>")
    for gate in gates:
        body += [_gate_chart(history, gate), _gate_table(history, gate)]
    body += [
        "<h2>Latency of both sides</h2>",
        histogram("Total latency per request", latency, colors, x_label="ms"),
        histogram("Time to first token", ttft, colors, x_label="ms"),
        "<p class=note>Completions without error during the rollout; dashed lines are p50 and p95.</p>",
        _drift_section(history, evidently_html),
        _log(history),
        f"<p class=note>Written {(now or datetime.now(UTC)):%Y-%m-%d %H:%M:%S} UTC by <code>llmops rollout report</code> "
        "from ClickHouse (rollout_decisions, raw_completions, drift_checks).</p>",
    ]
    title = f"Rollout report: {history.alias} ({label})"
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>")
