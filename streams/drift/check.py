"""One drift check: reference vs current features frames through Evidently (0.7.x API) -> DriftReport.

Per column an Evidently ``ValueDrift`` metric with an explicit method chosen by window size, plus a
``DriftedColumnsCount`` over the same columns for the dataset-level share:

* large windows (both > ``large_window``, default 1000 rows): Wasserstein distance (normed) for
  numerical columns, Jensen-Shannon distance for categorical ones; drifted when score >= threshold
  (Evidently's default 0.1);
* small windows: two-sample Kolmogorov-Smirnov for numerical, chi-squared for categorical; the score
  is a p-value, drifted when p < threshold (default 0.05).

``drifted`` per column is read from Evidently's own test outcome, not recomputed. A column with no
values in a window (e.g. ttft_ms when nothing streamed) is skipped and listed in ``skipped``.
This is CPU work (0.1-1 s); the agent runs it off the event loop.
"""

from __future__ import annotations

import time
from typing import Literal

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import DriftedColumnsCount, ValueDrift
from pydantic import BaseModel, ConfigDict, Field

LARGE_WINDOW = 1000
SMALL_METHODS = ("ks", "chisquare")
LARGE_METHODS = ("wasserstein", "jensenshannon")
Regime = Literal["small", "large"]


class FeatureDrift(BaseModel):
    """Drift of one feature: method, its score (p-value for ks/chisquare, distance otherwise), verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["numerical", "categorical"]
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftReport(BaseModel):
    """The outcome of one drift check for one deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_feature: dict[str, FeatureDrift]
    drift_share: float = Field(ge=0.0, le=1.0, description="Share of checked features that drifted.")
    drift_share_threshold: float
    dataset_drifted: bool
    reference_size: int
    current_size: int
    regime: Regime
    encoder: str = ""
    skipped: list[str] = Field(default_factory=list)
    duration_s: float = Field(ge=0.0, description="Wall time of the Evidently run.")


class InsufficientData(ValueError):
    """A window is too small to check."""


def choose_methods(reference_size: int, current_size: int, large_window: int = LARGE_WINDOW) -> tuple[Regime, str, str]:
    """(regime, numerical method, categorical method) for these window sizes."""
    if min(reference_size, current_size) > large_window:
        return "large", *LARGE_METHODS
    return "small", *SMALL_METHODS


def run_drift_check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    drift_share_threshold: float = 0.3,
    large_window: int = LARGE_WINDOW,
    encoder: str = "",
    min_rows: int = 30,
) -> DriftReport:
    """Compare ``current`` to ``reference`` on the given columns with Evidently."""
    if len(reference) < min_rows or len(current) < min_rows:
        raise InsufficientData(f"need >= {min_rows} rows per window, got {len(reference)} and {len(current)}")
    regime, num_method, cat_method = choose_methods(len(reference), len(current), large_window)

    skipped = [c for c in [*numerical, *categorical] if reference[c].notna().sum() < 2 or current[c].notna().sum() < 2]
    num_cols = [c for c in numerical if c not in skipped]
    cat_cols = [c for c in categorical if c not in skipped]
    columns = [*num_cols, *cat_cols]
    if not columns:
        raise InsufficientData("no feature has values in both windows")
    methods = {**{c: num_method for c in num_cols}, **{c: cat_method for c in cat_cols}}

    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=cat_cols)
    ref = reference[columns].copy()
    cur = current[columns].copy()
    for c in cat_cols:
        ref[c] = ref[c].astype(str)
        cur[c] = cur[c].astype(str)
    metrics = [ValueDrift(column=c, method=methods[c]) for c in columns]
    metrics.append(
        DriftedColumnsCount(columns=columns, drift_share=drift_share_threshold, per_column_method=methods)
    )
    started = time.perf_counter()
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    duration = time.perf_counter() - started
    result = snapshot.dict()

    scores: dict[str, tuple[float, float]] = {}
    share: float | None = None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = (float(metric["value"]), float(config["threshold"]))
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    verdicts: dict[str, bool] = {}
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift"):
            verdicts[params["column"]] = test["status"] == "FAIL"
    missing = [c for c in columns if c not in scores or c not in verdicts]
    if missing or share is None:
        raise RuntimeError(f"Evidently returned no drift result for {missing or 'the drifted-columns share'}")

    per_feature = {
        c: FeatureDrift(
            kind="numerical" if c in num_cols else "categorical",
            method=methods[c],
            score=scores[c][0],
            threshold=scores[c][1],
            drifted=verdicts[c],
        )
        for c in columns
    }
    return DriftReport(
        per_feature=per_feature,
        drift_share=share,
        drift_share_threshold=drift_share_threshold,
        dataset_drifted=share >= drift_share_threshold,
        reference_size=len(reference),
        current_size=len(current),
        regime=regime,
        encoder=encoder,
        skipped=skipped,
        duration_s=duration,
    )
