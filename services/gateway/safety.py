"""Safety before the user sees output: block flagged prompts, redact or block PII in answers, streamed text included.

The scanners themselves are the stream worker's (one implementation); this module only applies their verdicts
at the gateway. They are handed in as a :class:`Scanner` (``llmops gateway`` builds it from the safety package,
so ``services`` never imports ``streams``).

* Prompts: a prompt whose scan says ``blocked`` (e.g. an injection at or above the tenant's block threshold,
  when the tenant's policy blocks injections) is refused with 400 and the reason.
* Answers: spans the policy redacts are replaced with ``[REDACTED:<kind>]``; a ``block`` finding ends the answer
  with a content-filter error instead.
* Streams: :class:`StreamGuard` scans the whole text so far on every chunk and releases text only up to a cut at
  whitespace at least ``holdback`` characters before the end (and never inside a finding), so a secret or a
  phone number is complete, and redacted, before any of it leaves. A single unbroken token longer than the
  hold-back (a key block) can be released in part before it is recognised: block such kinds at the prompt,
  or raise ``holdback``. Time to first byte grows by the time ``holdback`` characters take to generate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Scanned = Literal["prompt", "completion"]


@dataclass(frozen=True)
class Verdict:
    """What the scanners say about a text under a tenant's policy."""

    redact: list[tuple[int, int, str]]
    """(start, end, kind) spans to replace before the text is shown."""
    blocked: bool
    reasons: list[str]
    """Human-readable, e.g. 'prompt_injection (score 0.93)'; values never appear."""


Scanner = Callable[[str, Scanned, str], Verdict]
"""(text, what it is, tenant) -> verdict."""


def marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def redact_segment(text: str, spans: list[tuple[int, int, str]], start: int, end: int) -> str:
    """``text[start:end]`` with every span overlapping it replaced by its marker (once, where the span begins)."""
    out: list[str] = []
    pos = start
    for s, e, kind in sorted(spans):
        if e <= start or s >= end or e <= pos:
            continue
        s_clip = max(s, pos)
        out.append(text[pos:s_clip])
        if s >= start:  # the marker goes where the span begins; a span begun earlier was marked then
            out.append(marker(kind))
        pos = min(e, end)
    out.append(text[pos:end])
    return "".join(out)


class Blocked(Exception):
    """A block finding: the text must not be shown."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons) or "blocked by the tenant's safety policy")
        self.reasons = reasons


class StreamGuard:
    """Releases streamed text only once it is scanned and redacted; call ``feed`` per chunk and ``finish`` at the end."""

    def __init__(self, scanner: Scanner, tenant: str, *, holdback: int = 48) -> None:
        self.scanner = scanner
        self.tenant = tenant
        self.holdback = holdback
        self.text = ""
        self.released = 0
        """Characters of the original text already released (redacted)."""

    def _release(self, final: bool) -> str:
        verdict = self.scanner(self.text, "completion", self.tenant)
        if verdict.blocked:
            raise Blocked(verdict.reasons)
        if final:
            cut = len(self.text)
        else:
            limit = len(self.text) - self.holdback
            cut = max(self.text.rfind(" ", 0, limit + 1), self.text.rfind("\n", 0, limit + 1))
            for s, e, _ in verdict.redact:  # never cut inside a finding
                if s < cut < e:
                    cut = s
        if cut <= self.released:
            return ""
        piece = redact_segment(self.text, verdict.redact, self.released, cut)
        self.released = cut
        return piece

    def feed(self, chunk: str) -> str:
        """Text that may be shown now (possibly empty). Raises Blocked."""
        self.text += chunk
        return self._release(final=False)

    def finish(self, full_text: str | None = None) -> str:
        """The rest, once the answer is complete (``full_text``: the completion's text, if it differs). Raises Blocked."""
        if full_text is not None and full_text.startswith(self.text):
            self.text = full_text
        return self._release(final=True)


def check_answer(scanner: Scanner, tenant: str, text: str) -> str:
    """The answer as it may be shown (redacted); raises Blocked."""
    guard = StreamGuard(scanner, tenant)
    guard.text = text
    return guard.finish()
