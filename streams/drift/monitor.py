"""DriftMonitor: per-deployment reference and sliding current windows of drift features.

The drift agent keeps one monitor per deployment, calls :meth:`DriftMonitor.add` for every
Completion (cheap: scalar features only), and every K events or T seconds runs
:meth:`DriftMonitor.check` in an executor thread. The reference window is the first N completions
after start, or a pinned features frame from the caller; the current window is the last M
completions seen after the reference was complete. Texts are embedded lazily, in batches, inside
``check`` (never on the event loop) and only for rows still in a window. ``add`` and ``check`` may run
on different threads.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
import pandas as pd

from schemas.completions import Completion
from streams.drift.check import LARGE_WINDOW, DriftReport, InsufficientData, run_drift_check
from streams.drift.encoders import TextEncoder
from streams.drift.features import (
    CATEGORICAL,
    DEFAULT_EMBEDDING_COLUMNS,
    EmbeddingProjection,
    feature_columns,
    scalar_features,
)

_TEXT = "__text"


class DriftMonitor:
    """Reference window + sliding current window for one deployment, checked with Evidently."""

    def __init__(
        self,
        encoder: TextEncoder,
        reference_size: int = 1000,
        current_size: int = 1000,
        reference: pd.DataFrame | None = None,
        embedding_columns: int = DEFAULT_EMBEDDING_COLUMNS,
        drift_share_threshold: float = 0.3,
        large_window: int = LARGE_WINDOW,
        min_rows: int = 30,
    ) -> None:
        if reference_size < 1 or current_size < 1:
            raise ValueError("window sizes must be positive")
        self.encoder = encoder
        self.projection = EmbeddingProjection(encoder.dim, embedding_columns)
        self.numerical, self.categorical = feature_columns(embedding_columns)
        self.reference_size = reference_size
        self.current_size = current_size
        self.drift_share_threshold = drift_share_threshold
        self.large_window = large_window
        self.min_rows = min_rows
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._reference_rows: list[dict[str, Any]] = []
        self._pinned: pd.DataFrame | None = None
        self._current: deque[dict[str, Any]] = deque(maxlen=current_size)
        self.seen = 0
        if reference is not None:
            self.pin_reference(reference)

    @property
    def columns(self) -> list[str]:
        """All feature columns, numerical then categorical."""
        return [*self.numerical, *self.categorical]

    def pin_reference(self, reference: pd.DataFrame) -> None:
        """Use a caller-supplied features frame (see ``features_frame``) as the reference."""
        missing = [c for c in self.columns if c not in reference.columns]
        if missing:
            raise ValueError(f"pinned reference lacks feature columns {missing}")
        with self._lock:
            self._pinned = reference[self.columns].reset_index(drop=True).copy()
            self._reference_rows = []

    @property
    def reference_ready(self) -> bool:
        """Whether the reference window is complete."""
        return self._pinned is not None or len(self._reference_rows) >= self.reference_size

    def add(self, completion: Completion) -> None:
        """Record one completion: into the reference until it is full, then into the current window."""
        row: dict[str, Any] = {**scalar_features(completion), _TEXT: completion.text}
        with self._lock:
            self.seen += 1
            if self._pinned is None and len(self._reference_rows) < self.reference_size:
                self._reference_rows.append(row)
            else:
                self._current.append(row)

    def sizes(self) -> tuple[int, int]:
        """(reference rows, current rows) right now."""
        with self._lock:
            ref = len(self._pinned) if self._pinned is not None else len(self._reference_rows)
            return ref, len(self._current)

    def _embed(self, rows: list[dict[str, Any]]) -> None:
        todo = [row for row in rows if _TEXT in row]
        if not todo:
            return
        projected = self.projection.project(self.encoder.encode([row[_TEXT] for row in todo]))
        for row, values in zip(todo, projected, strict=True):
            for column, value in zip(self.projection.columns, values, strict=True):
                row[column] = float(value)
            del row[_TEXT]  # embedded: the text is no longer needed

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=self.columns)
        for column in self.numerical:
            frame[column] = frame[column].astype(np.float64)
        for column in CATEGORICAL:
            frame[column] = frame[column].astype(str)
        return frame

    def snapshot(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(reference, current) features frames, embedding any rows not yet embedded."""
        with self._check_lock:
            with self._lock:
                pinned = self._pinned
                ref_rows = list(self._reference_rows)
                cur_rows = list(self._current)
            self._embed(ref_rows if pinned is None else [])
            self._embed(cur_rows)
            reference = pinned if pinned is not None else self._frame(ref_rows)
            return reference, self._frame(cur_rows)

    def check_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``run_drift_check`` for the current windows (embeds what is not yet embedded).

        Plain data (frames, names, numbers): the check itself may run in another process.
        """
        if not self.reference_ready:
            raise InsufficientData(f"reference window has {len(self._reference_rows)}/{self.reference_size} rows")
        reference, current = self.snapshot()
        return {
            "reference": reference, "current": current, "numerical": self.numerical, "categorical": self.categorical,
            "drift_share_threshold": self.drift_share_threshold, "large_window": self.large_window,
            "encoder": self.encoder.name, "min_rows": self.min_rows,
        }

    def check(self) -> DriftReport:
        """Evidently drift check of the current window against the reference."""
        return run_drift_check(**self.check_arguments())
