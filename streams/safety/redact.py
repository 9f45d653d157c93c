"""Redaction: replace spans of a text with ``[REDACTED:<kind>]`` markers.

Spans are ``str`` offsets (code points, end exclusive), so any unicode text is handled
without byte arithmetic. Overlapping spans are merged first (the marker names every kind
involved, joined by ``+`` in order of appearance); adjacent spans (one ends where the next
starts) stay separate markers. Spans are clamped to the text, empty ones ignored, and the
input order does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.safety import SafetySpan

__all__ = ["marker", "merge_spans", "redact"]


def marker(kind: str) -> str:
    """The replacement for one (merged) span."""
    return f"[REDACTED:{kind}]"


def merge_spans(spans: Iterable[SafetySpan], length: int) -> list[tuple[int, int, str]]:
    """Clamp to ``[0, length]``, drop empty spans, merge overlaps; sorted ``(start, end, kinds)``."""
    items = sorted(
        (min(max(s.start, 0), length), min(max(s.end, 0), length), s.kind) for s in spans
    )
    merged: list[tuple[int, int, list[str]]] = []
    for start, end, kind in items:
        if end <= start:
            continue
        if merged and start < merged[-1][1]:
            ps, pe, kinds = merged[-1]
            if kind not in kinds:
                kinds.append(kind)
            merged[-1] = (ps, max(pe, end), kinds)
        else:
            merged.append((start, end, [kind]))
    return [(s, e, "+".join(k)) for s, e, k in merged]


def redact(text: str, spans: Iterable[SafetySpan]) -> str:
    """``text`` with every span replaced by ``[REDACTED:<kind>]``; ``text`` itself if no span."""
    merged = merge_spans(spans, len(text))
    if not merged:
        return text
    parts: list[str] = []
    pos = 0
    for start, end, kind in merged:
        parts.append(text[pos:start])
        parts.append(marker(kind))
        pos = end
    parts.append(text[pos:])
    return "".join(parts)
