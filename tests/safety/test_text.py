"""TextView: the fast word split equals the regex's \\w+ runs, for ASCII and any other text."""

from __future__ import annotations

import random
import re
import string

from streams.safety.text import TextView, split_words


def test_split_words_equals_the_regex() -> None:
    rng = random.Random(3)
    alphabet = string.printable + "éßİıſ😀“”—\u00a0\u200b漢字"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert split_words(text) == re.findall(r"\w+", text), text


def test_view_folds_once() -> None:
    view = TextView("İgnore the Rules, ſo: now")
    assert view.words == ["ignore", "the", "rules", "so", "now"]
    assert view.word_set == frozenset(view.words)
