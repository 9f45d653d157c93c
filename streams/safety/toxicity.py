"""Toxic language: the alt-profanity-check classifier, evaluated word by word so that it is fast and gives spans.

The model ships in the ``alt-profanity-check`` wheel (MIT): ``TfidfVectorizer(stop_words="english",
token_pattern=r"\\b\\w\\w+\\b")`` over lowercased text, then ``CalibratedClassifierCV(LinearSVC)`` with five
folds, each a linear SVM followed by a sigmoid. At import, its vocabulary, idf and the five SVMs' weights are
read once into a dict ``word -> (idf, w_1..w_5)``. ``scan_toxicity`` then computes what the classifier's
``predict_proba`` computes (tf-idf of the in-vocabulary words, l2-normalised, five decision values, five
sigmoids, their mean) directly from the text's words, with no sparse matrices: a test checks the result
against ``profanity_check.predict_prob``. A text none of whose words any SVM weighs towards toxic cannot
score above the empty text's probability (0.036) and is reported as 0.

Obfuscation is undone before lookup, for words that are not in the vocabulary themselves: leetspeak
(``0->o 1->i/l 3->e 4->a 5->s 7->t @->a $->s``, so "1d10t", "sh1t", "a$$hole") and elongation
(three or more repeats collapsed, so "fuuuuck"). Whole words only, as the vectorizer does: "Scunthorpe",
"assessment" or "class" never match.

Spans (kind ``toxic_word``): the words that are toxic on their own (a text made of that word alone would
score at least ``TOXICITY_THRESHOLD``). A finding is reported at ``score >= TOXICITY_THRESHOLD`` (0.5, the
classifier's own decision boundary).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Final

from schemas.safety import SafetySpan
from streams.safety.text import TextView

__all__ = ["TOXICITY_THRESHOLD", "ToxicityModel", "ToxicityResult", "scan_toxicity"]

TOXICITY_THRESHOLD: Final[float] = 0.5

_LEET: Final[dict[int, str]] = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_REPEAT3: Final[re.Pattern[str]] = re.compile(r"(.)\1\1+")
_OBFUSCATED_TOKEN: Final[re.Pattern[str]] = re.compile(r"[\w@$]+")
_HAS_LETTER: Final[re.Pattern[str]] = re.compile(r"[a-z]")
_FORM_CACHE_SIZE: Final[int] = 200_000


@dataclass(frozen=True, slots=True)
class ToxicityResult:
    """Classifier probability in [0, 1] and one span per word that is toxic on its own."""

    score: float
    spans: list[SafetySpan]


class ToxicityModel:
    """The alt-profanity-check classifier as per-word weights."""

    def __init__(self) -> None:
        import joblib  # comes with scikit-learn, which alt-profanity-check pins

        data = resources.files("profanity_check") / "data"
        with (data / "vectorizer.joblib").open("rb") as fh:
            vectorizer = joblib.load(fh)
        with (data / "model.joblib").open("rb") as fh:
            model = joblib.load(fh)
        folds = model.calibrated_classifiers_
        self.bias = tuple(float(f.estimator.intercept_[0]) for f in folds)
        self.sig_a = tuple(float(f.calibrators[0].a_) for f in folds)
        self.sig_b = tuple(float(f.calibrators[0].b_) for f in folds)
        coef = [f.estimator.coef_[0] for f in folds]
        idf = vectorizer.idf_
        self.weights: dict[str, tuple[float, tuple[float, ...]]] = {}
        self.toxic_alone: frozenset[str]
        toxic: set[str] = set()
        for word, j in vectorizer.vocabulary_.items():
            ws = tuple(float(c[j]) for c in coef)
            self.weights[word] = (float(idf[j]), ws)
            if self._probability(ws) >= TOXICITY_THRESHOLD:
                toxic.add(word)
        self.toxic_alone = frozenset(toxic)
        self.leaning = frozenset(w for w, (_i, ws) in self.weights.items() if max(ws) > 0)
        self.empty_probability = self._probability((0.0,) * len(folds))
        self._forms: dict[str, str | None] = {}
        self._plain: set[str] = set()  # words known to be neither in the vocabulary nor an obfuscated form of one

    def _probability(self, decision_sums: tuple[float, ...] | list[float]) -> float:
        """Mean over folds of the calibrated sigmoid of ``sum + bias`` (sums already normalised)."""
        total = 0.0
        for s, b, a, c in zip(decision_sums, self.bias, self.sig_a, self.sig_b, strict=True):
            total += 1.0 / (1.0 + math.exp(a * (s + b) + c))
        return total / len(self.bias)

    def vocabulary_form(self, word: str) -> str | None:
        """``word`` (lowercase) as it is in the vocabulary, after undoing leetspeak and elongation; None if absent.

        Cached per word (the cache is cleared when it reaches 200,000 words).
        """
        try:
            return self._forms[word]
        except KeyError:
            pass
        if len(self._forms) >= _FORM_CACHE_SIZE:
            self._forms.clear()
        form = self._forms[word] = self._find_form(word)
        return form

    def _find_form(self, word: str) -> str | None:
        if word in self.weights:
            return word
        if not _HAS_LETTER.search(word):  # numbers stay numbers ("11" is not "ll")
            return None
        candidates = [word.translate(_LEET)]
        if "1" in candidates[0]:
            candidates = [candidates[0].replace("1", "i"), candidates[0].replace("1", "l")]
        for cand in candidates:
            if cand in self.weights:
                return cand
            if _REPEAT3.search(cand):
                for shorter in (_REPEAT3.sub(r"\1\1", cand), _REPEAT3.sub(r"\1", cand)):
                    if shorter in self.weights:
                        return shorter
        return None

    def probability(self, words: list[str]) -> float:
        """The classifier's probability for a text of these lowercase words (obfuscation undone)."""
        counts = Counter(words)
        weights = self.weights
        present: dict[str, int] = {}
        unknown: list[str] = []
        for w, n in counts.items():
            if w in weights:
                present[w] = n
            else:
                unknown.append(w)
        # words outside the vocabulary that may be obfuscated vocabulary words (cached per word)
        for w in [u for u in unknown if u not in self._plain]:
            form = self.vocabulary_form(w) if len(w) >= 2 else None
            if form is None:
                if len(self._plain) >= _FORM_CACHE_SIZE:
                    self._plain.clear()
                self._plain.add(w)
            else:
                present[form] = present.get(form, 0) + counts[w]
        if self.leaning.isdisjoint(present):
            return 0.0
        n_folds = len(self.bias)
        sums = [0.0] * n_folds
        norm_sq = 0.0
        for form, tf in present.items():
            idf, ws = self.weights[form]
            x = tf * idf
            norm_sq += x * x
            for i in range(n_folds):
                sums[i] += x * ws[i]
        norm = math.sqrt(norm_sq)
        return round(self._probability([s / norm for s in sums]), 6)


_MODEL: ToxicityModel | None = None


def model() -> ToxicityModel:
    """The classifier, loaded on first use (about 0.3 s)."""
    global _MODEL
    if _MODEL is None:
        _MODEL = ToxicityModel()
    return _MODEL


def _words(view: TextView) -> list[str]:
    if "@" in view.text or "$" in view.text:  # "@ss", "a$$hole": keep the symbols inside words
        return _OBFUSCATED_TOKEN.findall(view.lower)
    return view.words


def scan_toxicity(text: str | TextView) -> ToxicityResult:
    """Score ``text`` with the classifier; spans of its words that are toxic on their own when it is a finding."""
    view = text if isinstance(text, TextView) else TextView(text)
    m = model()
    score = m.probability(_words(view))
    if score < TOXICITY_THRESHOLD:
        return ToxicityResult(score, [])
    spans: list[SafetySpan] = []
    for match in _OBFUSCATED_TOKEN.finditer(view.text):
        word = match.group(0).lower()
        form = m.vocabulary_form(word) if len(word) >= 2 else None
        if form is not None and form in m.toxic_alone:
            spans.append(SafetySpan(start=match.start(), end=match.end(), kind="toxic_word"))
    if not spans:  # toxic as a whole but no single toxic word: the whole text is the span
        spans.append(SafetySpan(start=0, end=len(view.text), kind="toxic_text"))
    return ToxicityResult(score, spans)
