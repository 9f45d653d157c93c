"""The dashboards' queries, read from deploy/grafana/dashboards/, with Grafana's macros substituted as Grafana would.

ClickHouse macros follow grafana-clickhouse-datasource (v4): ``$__timeFilter(col)``, ``$__timeInterval(col)``,
``$__fromTime``, ``$__toTime``, ``$__interval_s``; Prometheus ranges ``$__rate_interval``/``$__interval``. An
unknown macro fails, so a dashboard cannot use one that the tests do not execute.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
CLICKHOUSE = "grafana-clickhouse-datasource"
PROMETHEUS = "prometheus"


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    datasource: str
    text: str


def queries() -> list[Query]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                kind = (target.get("datasource") or panel["datasource"])["type"]
                text = target["rawSql"] if kind == CLICKHOUSE else target["expr"]
                found.append(Query(board["title"], panel["title"], target["refId"], kind, text))
    return found


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out += _panels(panel.get("panels", []))
    return out


def clickhouse_sql(sql: str, start: datetime, end: datetime, interval_s: int = 60) -> str:
    """The SQL the ClickHouse plugin sends for this time range."""
    t0, t1 = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 >= toDateTime({t0}) AND \1 <= toDateTime({t1})", sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({t0})").replace("$__toTime", f"toDateTime({t1})")
    sql = sql.replace("$__interval_s", str(interval_s))
    leftover = re.findall(r"\$\w+", sql)
    assert not leftover, f"unsupported Grafana macro(s) {leftover} in: {sql}"
    return sql


def promql(expr: str, interval: str = "1m") -> str:
    """The PromQL Grafana sends, with its range variables."""
    expr = expr.replace("$__rate_interval", interval).replace("$__interval", interval)
    leftover = re.findall(r"\$\w+", expr)
    assert not leftover, f"unsupported Grafana variable(s) {leftover} in: {expr}"
    return expr
