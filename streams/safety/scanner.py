"""The scanner API: PII, prompt injection (patterns + learned layer) and toxicity on prompts and completions.

Entry points (stable; the stream worker calls them):

* ``Scanner.scan_batch(items: Sequence[ScanItem]) -> list[ScanResult]``: one result per item, in order.
  Blocking and CPU-bound (the learned layer's MiniLM stage runs inside it for the few candidate texts):
  call it from an agent with ``await asyncio.to_thread(scanner.scan_batch, items)``. Identical texts are
  detected once per batch, and a bounded cache keeps recent texts' detections, so a text several agents
  need (a request's message, scanned again as its completion's prompt) is scanned once.
* ``Scanner.detect_batch(texts) -> list[Detection]``: the policy-free detections, for callers applying
  several policies to the same texts.
* ``scan(request_id, deployment_id, scanned, text, policy)``: one text with the module's default scanner
  (unchanged signature).

Per text, one ``TextView`` (case folding and word splitting, once) feeds every layer: PII regexes behind
cheap gates (validated, spans), injection patterns behind word gates, the learned injection layer's static
stage, and the toxicity classifier. Texts with no candidate characters skip whole families of regexes.

``ScanResult``:

* ``findings``: ``SafetyFinding`` records, spans only (never the matched value). PII gives one finding
  per hit (score = ``PII_CONFIDENCE`` of its kind); injection and toxicity at most one per text each.
  An injection finding's spans are the patterns' spans plus, when the learned layer flagged the text,
  one ``learned_injection`` span (the window it rests on); its score is the higher of the two scores.
  The learned layer scores prompts only by default (``Scanner(learned_on=...)``).
* ``redacted_text``: the text to store, with every ``redact`` or ``block`` finding's spans replaced by
  ``[REDACTED:<kind>]``; ``None`` when nothing had to be redacted.
* ``blocked``: True when a finding's action is ``block``. Injection blocks only on a pattern score at or
  above ``injection_block_threshold``, or on a learned flag when the policy sets ``learned_injection_blocks``.
* ``injection_score`` (max of pattern and learned scores) and ``toxicity_score``: the scores even when below
  the finding thresholds (the review queue's gray band reads them).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from schemas.safety import SafetyFinding, SafetySpan
from streams.safety.injection import InjectionResult, scan_injection
from streams.safety.learned import LearnedInjection, LearnedScore, load_learned
from streams.safety.pii import scan_pii
from streams.safety.policy import Action, SafetyPolicy
from streams.safety.redact import redact
from streams.safety.text import TextView
from streams.safety.toxicity import TOXICITY_THRESHOLD, ToxicityResult, scan_toxicity

__all__ = ["DEFAULT_POLICY", "PII_CONFIDENCE", "Detection", "ScanItem", "ScanResult", "Scanner", "default_scanner", "scan"]

log = logging.getLogger(__name__)

DEFAULT_POLICY: Final[SafetyPolicy] = SafetyPolicy()
LEARNED_KIND: Final[str] = "learned_injection"

# How sure a hit of each kind is PII: checksum/structure-validated kinds 1.0, looser ones less.
PII_CONFIDENCE: Final[dict[str, float]] = {
    "private_key": 1.0, "jwt": 1.0, "aws_access_key": 1.0, "github_token": 1.0, "slack_token": 1.0,
    "openai_key": 0.95, "credit_card": 1.0, "iban": 1.0, "email": 0.95, "us_ssn": 0.9, "uk_nino": 0.9,
    "es_dni": 0.9, "ipv6": 0.85, "ipv4": 0.8, "generic_secret": 0.8, "phone": 0.75,
}


@dataclass(frozen=True, slots=True)
class ScanItem:
    """One text to scan, with its request and the tenant's policy."""

    request_id: str
    deployment_id: str | None
    scanned: Literal["prompt", "completion"]
    text: str
    policy: SafetyPolicy = DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class Detection:
    """What the layers found in one text, before any policy."""

    pii: list[SafetySpan]
    injection: InjectionResult
    learned: LearnedScore | None
    toxicity: ToxicityResult

    @property
    def learned_flag(self) -> bool:
        return self.learned is not None and self.learned.flag

    @property
    def injection_score(self) -> float:
        return max(self.injection.score, self.learned.score if self.learned is not None else 0.0)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What ``scan`` found and what to do about it."""

    findings: list[SafetyFinding] = field(default_factory=list)
    redacted_text: str | None = None
    blocked: bool = False
    injection_score: float = 0.0
    toxicity_score: float = 0.0


class Scanner:
    """All layers, with the learned model loaded once and a bounded cache of recent texts' detections.

    ``learned_on``: the parts the learned injection layer scores (prompts by default: injections arrive in
    what users and retrieved documents put into prompts; completions get the patterns, PII and toxicity).
    """

    def __init__(self, learned: LearnedInjection | Literal["default"] | None = "default", refine: bool = True,
                 cache_size: int = 4096, learned_on: tuple[str, ...] = ("prompt",)) -> None:
        if learned == "default":
            learned = load_learned(minilm=refine)
        self.learned = learned
        self.refine = refine
        self.cache_size = cache_size
        self.learned_on = learned_on
        self._cache: OrderedDict[str, Detection] = OrderedDict()

    def detect_batch(self, texts: Sequence[str], with_learned: Sequence[bool] | None = None) -> list[Detection]:
        """One ``Detection`` per text (identical texts and cached texts are detected once).

        ``with_learned[i]``: whether text ``i`` needs the learned layer's score (default: every text).
        """
        need = [True] * len(texts) if with_learned is None else list(with_learned)
        wants_learned = {t for t, n in zip(texts, need, strict=True) if n and self.learned is not None}
        found: dict[str, Detection] = {}
        for t in texts:
            if t not in found and t in self._cache:
                det = self._cache[t]
                if det.learned is None and t in wants_learned:
                    continue  # cached without the learned score: detect again below
                found[t] = det
                self._cache.move_to_end(t)
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            views = [TextView(t) for t in todo]
            learned_views = [v for v in views if v.text in wants_learned]
            scores: dict[str, LearnedScore] = {}
            if learned_views and self.learned is not None:
                for v, ls in zip(learned_views, self.learned.score_views(learned_views, refine=self.refine), strict=True):
                    scores[v.text] = ls
            for view in views:
                det = Detection(
                    pii=scan_pii(view.text, view.lower),
                    injection=scan_injection(view.text, view.lower, view.word_set),
                    learned=scores.get(view.text),
                    toxicity=scan_toxicity(view),
                )
                found[view.text] = det
                self._remember(view.text, det)
        return [found[t] for t in texts]

    def _remember(self, text: str, det: Detection) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = det
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def scan_batch(self, items: Sequence[ScanItem]) -> list[ScanResult]:
        """Detect every item's text (once per distinct text) and apply each item's policy."""
        scored = [it.scanned in self.learned_on for it in items]
        detections = self.detect_batch([it.text for it in items], scored)
        # a text's detection may carry a learned score from its use as a prompt (same batch, or the cache); an
        # item of a part the learned layer does not score is judged without it
        return [apply_policy(it, det if learned else replace(det, learned=None))
                for it, det, learned in zip(items, detections, scored, strict=True)]


def apply_policy(item: ScanItem, det: Detection) -> ScanResult:
    """Findings, redacted text and blocking for one item from its text's detections."""
    policy = item.policy
    findings: list[SafetyFinding] = []
    to_redact: list[SafetySpan] = []
    blocked = False

    def add(category: Literal["pii", "prompt_injection", "toxicity"], score: float,
            spans: list[SafetySpan], action: Action) -> None:
        nonlocal blocked
        findings.append(SafetyFinding(
            request_id=item.request_id, deployment_id=item.deployment_id, scanned=item.scanned,
            category=category, score=score, spans=spans, action=action,
        ))
        if action != "flag":
            to_redact.extend(spans)
        if action == "block":
            blocked = True

    for span in det.pii:
        add("pii", PII_CONFIDENCE.get(span.kind, 0.8), [span], policy.action_for("pii", span.kind))

    inj = det.injection
    pattern_flag = bool(inj.spans) and inj.score >= policy.injection_flag_threshold
    learned = det.learned
    if learned is None:
        learned_flag = False
    elif policy.learned_injection_threshold is not None:
        learned_flag = learned.score >= policy.learned_injection_threshold
    else:
        learned_flag = learned.flag
    if pattern_flag or learned_flag:
        spans = list(inj.spans) if pattern_flag else []
        score = inj.score if pattern_flag else 0.0
        if learned_flag and learned is not None:
            spans.append(SafetySpan(start=learned.start, end=max(learned.end, learned.start + 1), kind=LEARNED_KIND))
            score = max(score, learned.score)
        action = policy.action_for("prompt_injection")
        if action == "block" and not (
            (pattern_flag and inj.score >= policy.injection_block_threshold)
            or (learned_flag and policy.learned_injection_blocks)
        ):
            action = "flag"
        add("prompt_injection", round(score, 6), sorted(spans, key=lambda s: (s.start, s.end)), action)

    tox = det.toxicity
    if tox.spans and tox.score >= max(policy.toxicity_min_score, TOXICITY_THRESHOLD):
        add("toxicity", tox.score, tox.spans, policy.action_for("toxicity"))

    redacted = redact(item.text, to_redact) if to_redact else None
    return ScanResult(findings=findings, redacted_text=redacted, blocked=blocked,
                      injection_score=round(det.injection_score, 6), toxicity_score=tox.score)


_DEFAULT: Scanner | None = None


def default_scanner() -> Scanner:
    """The process-wide scanner (learned layer loaded on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Scanner()
    return _DEFAULT


def scan(
    request_id: str,
    deployment_id: str | None,
    scanned: Literal["prompt", "completion"],
    text: str,
    policy: SafetyPolicy = DEFAULT_POLICY,
) -> ScanResult:
    """Scan one text with every layer and apply ``policy``."""
    return default_scanner().scan_batch([ScanItem(request_id, deployment_id, scanned, text, policy)])[0]
