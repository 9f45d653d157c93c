"""Precision/recall of the PII and injection scanners on a labelled JSONL set.

Used by ``tests/safety`` (floors) and ``bench/scanners.py`` (the printed table). The set's
format is documented in ``tests/safety/data/make_labelled.py``.

* PII is scored per span: a predicted span is a true positive when a gold span has the same
  kind and exactly the same offsets; otherwise it is a false positive, and every unmatched gold
  span is a false negative. Per-kind numbers split the same counts by kind.
* Injection is scored per text: predicted positive when ``scan_injection(text).score >=
  threshold`` (``FLAG_THRESHOLD`` by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.safety.injection import FLAG_THRESHOLD, scan_injection
from streams.safety.pii import scan_pii

__all__ = ["Counts", "PiiReport", "evaluate_injection", "evaluate_pii", "load_labelled"]


@dataclass(slots=True)
class Counts:
    """True/false positives and false negatives, with the derived ratios."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(slots=True)
class PiiReport:
    """Overall and per-kind counts, plus the ids of the cases with any error (for debugging)."""

    overall: Counts = field(default_factory=Counts)
    by_kind: dict[str, Counts] = field(default_factory=dict)
    errors: list[tuple[str, list[tuple[int, int, str]], list[tuple[int, int, str]]]] = field(default_factory=list)


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    """All cases of a JSONL file."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def evaluate_pii(cases: Iterable[dict[str, Any]]) -> PiiReport:
    """Span-level exact-match evaluation of ``scan_pii`` on the ``task == 'pii'`` cases."""
    report = PiiReport()
    for case in cases:
        if case["task"] != "pii":
            continue
        gold = {(s["start"], s["end"], s["kind"]) for s in case["spans"]}
        pred = {(s.start, s.end, s.kind) for s in scan_pii(case["text"])}
        for kind in {k for _s, _e, k in gold | pred}:
            c = report.by_kind.setdefault(kind, Counts())
            g = {x for x in gold if x[2] == kind}
            p = {x for x in pred if x[2] == kind}
            c.tp += len(g & p)
            c.fp += len(p - g)
            c.fn += len(g - p)
        report.overall.tp += len(gold & pred)
        report.overall.fp += len(pred - gold)
        report.overall.fn += len(gold - pred)
        if gold != pred:
            report.errors.append((case["id"], sorted(gold), sorted(pred)))
    return report


def evaluate_injection(
    cases: Iterable[dict[str, Any]], threshold: float = FLAG_THRESHOLD,
) -> tuple[Counts, list[tuple[str, int, float]]]:
    """Text-level evaluation of ``scan_injection`` at ``threshold``; also (id, label, score) of each error."""
    counts = Counts()
    errors: list[tuple[str, int, float]] = []
    for case in cases:
        if case["task"] != "injection":
            continue
        score = scan_injection(case["text"]).score
        predicted = score >= threshold
        label = int(case["label"])
        if predicted and label:
            counts.tp += 1
        elif predicted:
            counts.fp += 1
            errors.append((case["id"], label, score))
        elif label:
            counts.fn += 1
            errors.append((case["id"], label, score))
    return counts, errors
