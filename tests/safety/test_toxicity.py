"""Toxic word list matching: obfuscation handling, no substring hits, the score function."""

from __future__ import annotations

import pytest

from streams.safety.toxicity import TOXIC_WORDS, WORDLIST_PATH, load_wordlist, scan_toxicity, toxicity_score


def words(text: str) -> list[str]:
    return [text[s.start:s.end] for s in scan_toxicity(text).spans]


def test_wordlist_is_shipped_and_loaded() -> None:
    assert WORDLIST_PATH.is_file()
    assert len(TOXIC_WORDS) >= 40
    assert "idiot" in TOXIC_WORDS and all(w == w.lower() and " " not in w for w in TOXIC_WORDS)
    assert load_wordlist() == TOXIC_WORDS


@pytest.mark.parametrize("text,expected", [
    ("You IDIOT", ["IDIOT"]),
    ("what an 1d10t", ["1d10t"]),
    ("sh1t happens", ["sh1t"]),
    ("@ss and a$$hole", ["@ss", "a$$hole"]),
    ("fuuuuuck this", ["fuuuuuck"]),
    ("m0r0ns everywhere", ["m0r0ns"]),
    ("idiots!", ["idiots"]),
])
def test_obfuscations_match(text: str, expected: list[str]) -> None:
    assert words(text) == expected


@pytest.mark.parametrize("text", [
    "The assessment of the class in Scunthorpe was classic.",
    "as far as I know",  # 'as' is not an elongation of 'ass'
    "Pass the bass, cocktail hour at the Dickens pub",
    "shitake mushrooms? no: shiitake",
    "email me at john@example.com about job 12345",
    "",
])
def test_no_false_hits(text: str) -> None:
    assert words(text) == []


def test_score_function() -> None:
    assert toxicity_score(0, 10) == 0.0
    # more hits, higher score; same hits in a longer text, lower score
    assert toxicity_score(2, 100) > toxicity_score(1, 100)
    assert toxicity_score(1, 3) > toxicity_score(1, 300)
    assert toxicity_score(1, 1000) == pytest.approx(0.4, abs=0.01)
    assert toxicity_score(50, 50) == 1.0
    assert scan_toxicity("you idiot").score == toxicity_score(1, 2)
