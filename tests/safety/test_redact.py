"""Redaction with overlapping, adjacent, out-of-order, out-of-range spans and unicode."""

from __future__ import annotations

import random

from schemas.safety import SafetySpan
from streams.safety.redact import merge_spans, redact


def S(start: int, end: int, kind: str = "x") -> SafetySpan:
    return SafetySpan(start=start, end=end, kind=kind)


def test_no_spans_returns_text() -> None:
    assert redact("hello", []) == "hello"


def test_single_and_order_independent() -> None:
    text = "mail a@b.io or c@d.io"
    spans = [S(15, 21, "email"), S(5, 11, "email")]
    assert redact(text, spans) == "mail [REDACTED:email] or [REDACTED:email]"
    assert redact(text, list(reversed(spans))) == redact(text, spans)


def test_overlapping_spans_merge_and_name_all_kinds() -> None:
    text = "0123456789"
    assert redact(text, [S(2, 6, "a"), S(4, 8, "b")]) == "01[REDACTED:a+b]89"
    assert redact(text, [S(2, 8, "a"), S(3, 4, "a")]) == "01[REDACTED:a]89"  # contained, same kind


def test_adjacent_spans_stay_separate() -> None:
    assert redact("abcdef", [S(0, 3, "a"), S(3, 6, "b")]) == "[REDACTED:a][REDACTED:b]"


def test_unicode_offsets_are_code_points() -> None:
    text = "héllo 😀 wörld"
    start = text.index("wörld")
    assert redact(text, [S(start, start + 5, "w"), S(6, 7, "emoji")]) == "héllo [REDACTED:emoji] [REDACTED:w]"


def test_spans_clamped_and_empty_ignored() -> None:
    assert redact("abc", [S(1, 99, "t"), S(2, 2, "e")]) == "a[REDACTED:t]"
    assert merge_spans([S(5, 9)], 3) == []


def test_property_every_covered_char_removed_uncovered_kept() -> None:
    rng = random.Random(7)
    alphabet = "abcdé😀 "
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        spans = []
        for _ in range(rng.randint(0, 5)):
            a = rng.randint(0, len(text))
            b = rng.randint(a, min(len(text), a + 10))
            spans.append(S(a, b, "k"))
        out = redact(text, spans)
        covered = {i for s in spans for i in range(s.start, s.end)}
        kept = "".join(ch for i, ch in enumerate(text) if i not in covered)
        merged = merge_spans(spans, len(text))
        assert out.replace("[REDACTED:k]", "") == kept
        assert out.count("[REDACTED:k]") == len(merged)
