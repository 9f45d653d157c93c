"""Drift features of one completion, and the fixed projection that turns a text embedding into columns.

The drift agent (through :class:`streams.drift.monitor.DriftMonitor`) extracts, per completion:
prompt_tokens, completion_tokens, total_ms, ttft_ms (NaN when absent), finish_reason (categorical),
output_chars, non_ascii_share, and ``emb_0..emb_{k-1}``: the output text's embedding projected onto
a fixed random Gaussian basis (seeded, so the columns mean the same thing in every process and
across restarts; no fitting on the reference, so a pinned reference stays comparable).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from schemas.completions import Completion
from streams.drift.encoders import TextEncoder

NUMERICAL_BASE: tuple[str, ...] = (
    "prompt_tokens",
    "completion_tokens",
    "total_ms",
    "ttft_ms",
    "output_chars",
    "non_ascii_share",
)
CATEGORICAL: tuple[str, ...] = ("finish_reason",)
DEFAULT_EMBEDDING_COLUMNS = 4
PROJECTION_SEED = 20_261_124


def embedding_columns(k: int) -> list[str]:
    """Names of the projected embedding columns."""
    return [f"emb_{i}" for i in range(k)]


def non_ascii_share(text: str) -> float:
    """Share of characters outside ASCII (0.0 for the empty text)."""
    if not text:
        return 0.0
    return sum(1 for ch in text if ord(ch) > 127) / len(text)


def scalar_features(completion: Completion) -> dict[str, float | str]:
    """The non-embedding features of one completion."""
    return {
        "prompt_tokens": float(completion.prompt_tokens),
        "completion_tokens": float(completion.completion_tokens),
        "total_ms": float(completion.total_ms),
        "ttft_ms": math.nan if completion.ttft_ms is None else float(completion.ttft_ms),
        "output_chars": float(len(completion.text)),
        "non_ascii_share": non_ascii_share(completion.text),
        "finish_reason": completion.finish_reason,
    }


class EmbeddingProjection:
    """Projects ``dim``-d embeddings onto ``k`` fixed random directions (unit-norm, seeded)."""

    def __init__(self, dim: int, k: int = DEFAULT_EMBEDDING_COLUMNS, seed: int = PROJECTION_SEED) -> None:
        if dim < 1 or k < 1:
            raise ValueError("dim and k must be positive")
        basis = np.random.default_rng(seed).standard_normal((dim, k))
        self.basis = (basis / np.linalg.norm(basis, axis=0, keepdims=True)).astype(np.float32)
        self.dim = dim
        self.k = k
        self.columns = embedding_columns(k)

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, dim) -> (n, k)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {embeddings.shape}")
        projected: np.ndarray = embeddings.astype(np.float32) @ self.basis
        return projected


def feature_columns(k: int = DEFAULT_EMBEDDING_COLUMNS) -> tuple[list[str], list[str]]:
    """(numerical, categorical) column names of a features frame."""
    return [*NUMERICAL_BASE, *embedding_columns(k)], list(CATEGORICAL)


def features_frame(
    completions: Iterable[Completion],
    encoder: TextEncoder,
    projection: EmbeddingProjection | None = None,
) -> pd.DataFrame:
    """A features DataFrame (one row per completion), e.g. to pin a reference window."""
    items = list(completions)
    projection = projection or EmbeddingProjection(encoder.dim)
    frame = pd.DataFrame([scalar_features(c) for c in items], columns=[*NUMERICAL_BASE, *CATEGORICAL])
    projected = projection.project(encoder.encode([c.text for c in items]))
    for i, column in enumerate(projection.columns):
        frame[column] = projected[:, i].astype(np.float64) if len(items) else pd.Series(dtype=np.float64)
    return frame
