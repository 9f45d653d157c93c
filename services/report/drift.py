"""Evidently's data drift report of a rollout: the canary's completions against stable's during the rollout.

Features per completion, read from ClickHouse: prompt and completion tokens, total latency, time to first token,
answer length and finish reason. Evidently picks the tests by window size (K-S / chi-squared on small windows).
"""

from __future__ import annotations

import pandas as pd
from clickhouse_connect.driver.client import Client
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from services.report.history import RolloutHistory

NUMERICAL = ["prompt_tokens", "completion_tokens", "total_ms", "ttft_ms", "text_length"]
CATEGORICAL = ["finish_reason"]
MIN_ROWS = 30


def _frame(client: Client, deployment: str, history: RolloutHistory) -> pd.DataFrame:
    result = client.query(
        "SELECT prompt_tokens, completion_tokens, total_ms, ifNull(ttft_ms, nan) AS ttft_ms, lengthUTF8(text) AS text_length, "
        "finish_reason FROM raw_completions FINAL WHERE deployment_id = {dep:String} "
        "AND occurred_at >= {t0:DateTime64(3)} - INTERVAL 1 MINUTE AND occurred_at <= {t1:DateTime64(3)}",
        parameters={"dep": deployment, "t0": history.started, "t1": history.ended},
    )
    return pd.DataFrame(result.result_rows, columns=[*NUMERICAL, *CATEGORICAL])


def evidently_html(client: Client, history: RolloutHistory) -> str | None:
    """Evidently's self-contained HTML page, or None when either side has fewer than MIN_ROWS completions."""
    stable = _frame(client, history.stable_deployment, history)
    canary = _frame(client, history.canary_deployment, history)
    if len(stable) < MIN_ROWS or len(canary) < MIN_ROWS:
        return None
    definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(canary, data_definition=definition), Dataset.from_pandas(stable, data_definition=definition),
    )
    return str(snapshot.get_html_str(as_iframe=False))
