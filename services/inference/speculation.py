"""Prompt-lookup (n-gram) speculative decoding for the builtin engine: propose draft tokens, decide which to keep.

Drafts come from the sequence itself: if its last ``n`` tokens (``n`` from :data:`MAX_NGRAM` down to
:data:`MIN_NGRAM`) occurred earlier in the prompt or the generated text, the tokens that followed that occurrence
are proposed. The engine runs the model once over ``[pending token, draft...]`` for every row and keeps the
draft prefix the model agrees with (:func:`verify`), plus one token of its own, so each verified step commits
1 to ``k + 1`` tokens. Greedy rows keep a draft token iff it is the argmax (so the output is exactly greedy
decoding); sampled rows use speculative sampling with a point-mass draft (keep ``d`` with probability ``p(d)``,
else sample from ``p`` without ``d``), which leaves the output distribution unchanged.
"""

from __future__ import annotations

import torch

MAX_NGRAM = 3
MIN_NGRAM = 2


class PromptLookup:
    """An index of a sequence's n-grams to where each last occurred, updated as tokens are appended."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens: list[int] = []
        self._next_after: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            p = len(self.tokens)  # index of the token being appended: every n-gram ending just before it
            for n in range(MIN_NGRAM, MAX_NGRAM + 1):
                if p >= n:
                    self._next_after[tuple(self.tokens[p - n:p])] = p
            self.tokens.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the longest matching suffix."""
        if k <= 0:
            return []
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(self.tokens) < n:
                continue
            start = self._next_after.get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start:start + k]
        return []


def verify(
    probs_or_logits: torch.Tensor, drafts: list[int], *, greedy: bool, generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """Given the model's distributions at ``[pending, d_1, ..., d_k]`` (``k + 1`` rows: logits when greedy,
    probabilities otherwise), return (number of drafts kept, the token the model adds after them)."""
    if greedy:
        choice = probs_or_logits.argmax(-1).tolist()
        kept = 0
        while kept < len(drafts) and drafts[kept] == choice[kept]:
            kept += 1
        return kept, int(choice[kept])
    for j, d in enumerate(drafts):
        p = probs_or_logits[j]
        if torch.rand((), generator=generator, device=p.device) < p[d]:
            continue
        residual = p.clone()
        residual[d] = 0.0
        total = residual.sum()
        if total <= 0:  # d was the only possible token (rounding kept p(d) just below 1)
            continue
        return j, int(torch.multinomial(residual / total, 1, generator=generator).item())
    k = len(drafts)
    return k, int(torch.multinomial(probs_or_logits[k], 1, generator=generator).item())
