"""Toxic language: whole-token matching against the word list the project ships.

``streams/safety/data/toxic_words.txt`` is loaded once at import. Each token of the text
(letters, digits and the leetspeak symbols ``@ $``) is normalised: lowercased, leetspeak
mapped (``0->o 1->i/l 3->e 4->a 5->s 7->t @->a $->s``), and compared run-length-wise to the
list, so elongations ("fuuuuck", "idiooot") match but shortenings never do ("as" is not
"ass"). A trailing plural ``s``/``es`` is accepted. Matching is per whole token, so
"assessment", "class" or "Scunthorpe" never match.

Score = f(hits, length): ``base = 1 - 0.6**hits`` (one hit 0.4, two 0.64, three 0.78),
raised towards 1 by the share of toxic tokens: ``base + (1 - base) * min(1, 5 * hits/tokens)``.
A single insult in a short message therefore scores high, the same word in a long document low.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from schemas.safety import SafetySpan

__all__ = ["TOXIC_WORDS", "ToxicityResult", "WORDLIST_PATH", "load_wordlist", "normalise_token", "scan_toxicity", "toxicity_score"]

WORDLIST_PATH: Final[Path] = Path(__file__).parent / "data" / "toxic_words.txt"

_TOKEN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9@$]+")
_LEET: Final[dict[int, str]] = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


def load_wordlist(path: Path = WORDLIST_PATH) -> frozenset[str]:
    """Lowercase words of a word-list file (one per line, ``#`` comments, blank lines ignored)."""
    words: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip().lower()
        if word:
            words.add(word)
    return frozenset(words)


def _runs(word: str) -> tuple[str, tuple[int, ...]]:
    """Letters with repeats collapsed, and the length of each run: 'fuuck' -> ('fuck', (1, 2, 1, 1))."""
    letters: list[str] = []
    counts: list[int] = []
    for ch in word:
        if letters and letters[-1] == ch:
            counts[-1] += 1
        else:
            letters.append(ch)
            counts.append(1)
    return "".join(letters), tuple(counts)


TOXIC_WORDS: Final[frozenset[str]] = load_wordlist()
# collapsed form -> run lengths of each listed word with that form
_INDEX: Final[dict[str, tuple[tuple[int, ...], ...]]] = {}
for _w in sorted(TOXIC_WORDS):
    _c, _r = _runs(_w)
    _INDEX[_c] = _INDEX.get(_c, ()) + (_r,)


def normalise_token(token: str) -> list[str]:
    """Candidate spellings of a token after case folding and leetspeak (``1`` may be ``i`` or ``l``)."""
    t = token.lower().translate(_LEET)
    if "1" in t:
        return [t.replace("1", "i"), t.replace("1", "l")]
    return [t]


def _matches(candidate: str) -> bool:
    collapsed, runs = _runs(candidate)
    for listed in _INDEX.get(collapsed, ()):
        if all(r >= lr for r, lr in zip(runs, listed)):
            return True
    return False


def _is_toxic(token: str) -> bool:
    if len(token) < 3 or token.isdigit():
        return False
    for cand in normalise_token(token):
        if not cand.isalpha():
            continue
        if _matches(cand):
            return True
        if cand.endswith("es") and len(cand) > 4 and _matches(cand[:-2]):
            return True
        if cand.endswith("s") and len(cand) > 3 and _matches(cand[:-1]):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ToxicityResult:
    """Score in [0, 1] and one span (kind ``toxic_word``) per toxic token."""

    score: float
    spans: list[SafetySpan]


def toxicity_score(hits: int, tokens: int) -> float:
    """The documented f(hits, length) in [0, 1]; 0 when there are no hits."""
    if hits <= 0:
        return 0.0
    base = 1.0 - 0.6**hits
    density = hits / max(tokens, 1)
    return round(min(1.0, base + (1.0 - base) * min(1.0, 5.0 * density)), 6)


def scan_toxicity(text: str) -> ToxicityResult:
    """Toxic tokens of ``text`` as spans, and the score."""
    spans: list[SafetySpan] = []
    tokens = 0
    for m in _TOKEN.finditer(text):
        tokens += 1
        if _is_toxic(m.group(0)):
            spans.append(SafetySpan(start=m.start(), end=m.end(), kind="toxic_word"))
    return ToxicityResult(toxicity_score(len(spans), tokens), spans)
