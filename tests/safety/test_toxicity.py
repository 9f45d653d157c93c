"""Toxicity: the alt-profanity-check classifier evaluated per word (same probabilities), obfuscation, spans."""

from __future__ import annotations

import pytest
from profanity_check import predict_prob

from streams.safety.toxicity import TOXICITY_THRESHOLD, model, scan_toxicity

PLAIN = [
    "You are a stupid useless bot", "Go to hell", "what an idiot", "I hate mondays", "the black cat",
    "The assessment of the class in Scunthorpe was classic.", "Pass the bass, cocktail hour at the Dickens pub",
    "kys loser", "Please review my pull request when you have time.", "This movie was sexy and fun",
    "I will kill the process and then restart the daemon", "idiots! idiots everywhere, what a stupid stupid day",
]


def words(text: str) -> list[str]:
    return [text[s.start:s.end] for s in scan_toxicity(text).spans]


def test_same_probability_as_the_packaged_classifier() -> None:
    expected = predict_prob(PLAIN)
    for text, p in zip(PLAIN, expected, strict=True):
        got = scan_toxicity(text).score
        if got == 0.0:  # no word any SVM leans toxic on: the classifier gives at most the empty text's value
            assert p <= model().empty_probability + 1e-9, text
        else:
            assert got == pytest.approx(p, abs=1e-5), text


@pytest.mark.parametrize("text,expected", [
    ("You IDIOT", ["IDIOT"]),
    ("what an 1d10t", ["1d10t"]),
    ("sh1t happens", ["sh1t"]),
    ("@ss and a$$hole", ["@ss", "a$$hole"]),
    ("fuuuuuck this", ["fuuuuuck"]),
    ("m0r0ns everywhere", ["m0r0ns"]),
    ("idiots!", ["idiots"]),
])
def test_obfuscations_are_undone(text: str, expected: list[str]) -> None:
    result = scan_toxicity(text)
    assert result.score >= TOXICITY_THRESHOLD
    assert words(text) == expected


@pytest.mark.parametrize("text", [
    "The assessment of the class in Scunthorpe was classic.",
    "as far as I know",
    "Pass the bass, cocktail hour at the Dickens pub",
    "shitake mushrooms? no: shiitake",
    "email me at john@example.com about job 12345",
    "x86 and 11 and 0x10 are numbers",
    "",
])
def test_benign_text_is_below_the_boundary(text: str) -> None:
    result = scan_toxicity(text)
    assert result.score < TOXICITY_THRESHOLD and result.spans == []


def test_a_long_document_dilutes_one_word() -> None:
    short = scan_toxicity("you idiot").score
    long = scan_toxicity("you idiot. " + "The quarterly report covers revenue, hiring and the new office. " * 30).score
    assert short > 0.9 > long
