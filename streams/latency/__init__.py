"""Latency aggregates: a mergeable quantile sketch and per-minute, per-deployment rollups."""

from streams.latency.aggregate import LatencyAggregate, LatencySummary, minute_of
from streams.latency.sketch import DDSketch, SketchState

__all__ = ["DDSketch", "LatencyAggregate", "LatencySummary", "SketchState", "minute_of"]
