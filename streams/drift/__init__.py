"""Drift of completions per deployment: features, text encoders, Evidently checks, windowed monitor."""

from streams.drift.check import DriftReport, FeatureDrift, InsufficientData, choose_methods, run_drift_check
from streams.drift.encoders import HashingEncoder, MiniLMEncoder, TextEncoder, load_text_encoder
from streams.drift.features import EmbeddingProjection, feature_columns, features_frame, scalar_features
from streams.drift.monitor import DriftMonitor

__all__ = [
    "DriftMonitor",
    "DriftReport",
    "EmbeddingProjection",
    "FeatureDrift",
    "HashingEncoder",
    "InsufficientData",
    "MiniLMEncoder",
    "TextEncoder",
    "choose_methods",
    "feature_columns",
    "features_frame",
    "load_text_encoder",
    "run_drift_check",
    "scalar_features",
]
