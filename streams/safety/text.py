"""The per-text work every scanner layer shares: case folding and word splitting, done once per text.

``TextView(text)`` holds ``lower`` (the text folded the way the injection gates compare words, see
``injection.fold``), ``words`` (its ``\\w+`` runs, in order) and ``word_set``. The injection gates, the
toxicity classifier and the learned injection layer all read the same view, so a text is split once
however many layers look at it. Offsets are not kept here (most texts produce no finding); a layer that
reports spans finds its words' offsets again in the original text.
"""

from __future__ import annotations

import re
import string
from functools import cached_property
from typing import Final

from streams.safety.injection import fold

__all__ = ["TextView", "split_words"]

_WORD: Final[re.Pattern[str]] = re.compile(r"\w+")
_KEEP: Final[str] = string.ascii_letters + string.digits + "_"
# ASCII fast path: every non-word byte becomes a space (bytes.translate, a table lookup per byte in C), then
# split gives exactly the \w+ runs
_ASCII_NON_WORD: Final[bytes] = bytes(i if chr(i) in _KEEP else 32 for i in range(256))


def split_words(lower: str) -> list[str]:
    """The ``\\w+`` runs of ``lower``, in order (the same as ``re.findall(r"\\w+", lower)``)."""
    if lower.isascii():
        return lower.encode("ascii").translate(_ASCII_NON_WORD).decode("ascii").split()
    return _WORD.findall(lower)


class TextView:
    """One text, folded and split once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = fold(text)
        self.words = split_words(self.lower)

    @cached_property
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)
