"""Prompt-injection detection: weighted regex patterns combined into a score in [0, 1].

Each pattern has a kind (the span kind, e.g. ``ignore_previous``) and a weight: the probability
we assign that text containing it is an injection attempt. Distinct kinds combine by noisy-OR,
``score = 1 - prod(1 - w_kind)`` (the strongest hit per kind counts once), so one strong pattern
is enough on its own and several weak ones add up.

Thresholds (module constants):

* ``FLAG_THRESHOLD = 0.5``: at or above it ``scan_injection`` reports a finding. Weak signals
  alone (weight < 0.5: "you are now", "without restrictions", a lone "DAN", "developer mode",
  "from now on") stay below it; two of them together (0.64+) cross it.
* ``BLOCK_THRESHOLD = 0.8``: a finding this strong is a confident attack (a direct
  "ignore previous instructions", a known jailbreak persona, chat-template tokens plus an
  instruction). The scanner only applies a tenant's ``block`` action at or above it and
  downgrades weaker findings to ``flag``, so a benign false positive is never blocked on a
  single weak pattern.

Patterns are written to need an instruction-like object ("ignore the previous *instructions*",
not "ignore the previous *error*") and a second-person target where that matters ("reveal
*your* system prompt", not "what is a system prompt"). Base64 blobs of 24+ characters are
decoded and re-scanned; a blob that decodes to an injection scores as ``base64_instruction``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from schemas.safety import SafetySpan

__all__ = ["BLOCK_THRESHOLD", "FLAG_THRESHOLD", "InjectionResult", "fold", "injection_score", "scan_injection"]

FLAG_THRESHOLD: Final[float] = 0.5
BLOCK_THRESHOLD: Final[float] = 0.8

_I = re.IGNORECASE

_OBJ = (
    r"(?:instructions?|directions|prompts?|rules|directives?|guidelines|guardrails|safeguards|constraints|restrictions|"
    r"programming|training|system\s+(?:prompt|message)|commands?|orders|context|policies)"
)
_DET = r"(?:(?:all|any|every|each|the|your|my|these|those|of|previous|prior|above|earlier|preceding|initial|original|system|safety|old|existing|current|given|that|you)\s+){0,4}"


@dataclass(frozen=True, slots=True)
class _Gate:
    """Passes when the text has one of ``words`` (whole lowercase words) or one of ``subs`` (lowercase substrings)."""

    words: frozenset[str]
    subs: tuple[str, ...] = ()

    def passes(self, lower: str, words: frozenset[str] | set[str]) -> bool:
        return not self.words.isdisjoint(words) or any(s in lower for s in self.subs)


def _w(*words: str) -> _Gate:
    return _Gate(frozenset(words))


def _s(*subs: str) -> _Gate:
    return _Gate(frozenset(), subs)


def _g(words: tuple[str, ...], subs: tuple[str, ...]) -> _Gate:
    return _Gate(frozenset(words), subs)


# Word sets the gates share; each word is one the regex needs as a whole word (see the gates' comment below).
_VERBS_IGNORE = ("ignore", "disregard", "forget", "override", "bypass", "skip", "abandon", "drop", "discard", "neglect")
_PRIOR = ("previous", "prior", "above", "earlier", "preceding", "initial", "original", "system", "safety", "former",
          "existing", "old")
_OBJ_WORDS = ("instruction", "instructions", "directions", "prompt", "prompts", "rules", "directive", "directives",
              "guidelines", "guardrails", "safeguards", "constraints", "restrictions", "programming", "training",
              "system", "command", "commands", "orders", "context", "policies")


# Gates: every pattern lists necessary conditions on the text, checked against its set of lowercase ``\w+``
# words (computed once per text): a gate word is one the regex can only match as a whole word (bounded by
# ``\b``, whitespace or punctuation), and substrings cover the rest. A text that fails a gate cannot match the
# pattern, so skipping it changes no result (tests/safety/test_injection.py compares against ungated runs).
@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    regex: re.Pattern[str]
    weight: float
    gates: tuple[_Gate, ...]  # necessary conditions on the text's words; the regex only runs when all pass


_PATTERNS: Final[tuple[_Pattern, ...]] = (
    _Pattern(
        "ignore_previous",
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|drop|discard|neglect)\s+"
            r"(?:about\s+)?" + _DET + r"(?:previous|prior|above|earlier|preceding|initial|original|system|safety|"
            r"former|existing|old)\s+(?:\w+\s+){0,2}?" + _OBJ + r"\b",
            _I,
        ),
        0.9,
        gates=(_w(*_VERBS_IGNORE), _w(*_PRIOR), _w(*_OBJ_WORDS),),
    ),
    _Pattern(
        "ignore_previous",
        re.compile(
            r"\b(?:ignore|disregard|forget|bypass|override)\s+(?:all|everything|anything)\s+"
            r"(?:(?:you\s+(?:were|have\s+been)\s+)?(?:told|said|instructed|taught)|(?:above|before|prior|previously))\b",
            _I,
        ),
        0.85,
        gates=(_w("ignore", "disregard", "forget", "bypass", "override"), _w("all", "everything", "anything"),),
    ),
    _Pattern(
        "ignore_previous",
        re.compile(r"\b(?:ignore|disregard|forget|bypass|circumvent|evade)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:your|the)\s+(?:safety\s+)?" + _OBJ + r"\b", _I),
        0.7,
        gates=(_w("ignore", "disregard", "forget", "bypass", "circumvent", "evade"), _w("your", "the"), _w(*_OBJ_WORDS),),
    ),
    _Pattern(
        "reveal_system_prompt",
        re.compile(
            r"\b(?:reveal|show|print|output|repeat|display|leak|dump|give|tell|share|disclose|recite|write\s+out|"
            r"what\s+(?:is|are|was|were))\s+(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?your\s+(?:\w+\s+){0,3}?"
            r"(?:system\s+prompt|system\s+message|initial\s+prompt|hidden\s+prompt|instructions|prompt|rules|"
            r"guidelines|configuration|directives)\b",
            _I,
        ),
        0.75,
        gates=(_w("reveal", "show", "print", "output", "repeat", "display", "leak", "dump", "give", "tell", "share", "disclose", "recite", "write", "what"), _w("your"), _w("prompt", "message", "instructions", "rules", "guidelines", "configuration", "directives"),),
    ),
    _Pattern(
        "reveal_system_prompt",
        re.compile(
            r"\b(?:repeat|print|output|reveal|show|recite)\s+(?:\w+\s+){0,4}?(?:(?:the\s+)?(?:words|text|everything|"
            r"content|instructions|prompt|message)s?\s+(?:above|before\s+this|verbatim|word\s+for\s+word)|"
            r"verbatim|word\s+for\s+word)",
            _I,
        ),
        0.65,
        gates=(_w("repeat", "print", "output", "reveal", "show", "recite"), _s("above", "before", "verbatim", "word"),),
    ),
    _Pattern(
        "reveal_system_prompt",
        re.compile(r"\b(?:beginning|start(?:ing)?)\s+with\s+[\"'“]?you\s+are\b", _I),
        0.6,
        gates=(_w("beginning", "start", "starting"), _w("with"), _w("you"), _w("are"),),
    ),
    _Pattern(
        "jailbreak_persona",
        re.compile(r"\b(?:(?i:do\s+anything\s+now)|DAN\s+mode|(?i:jailbroken|jailbreak(?:ing)?\s+(?:mode|prompt))|DUDE\s+mode|AIM\s+mode|(?i:evil\s+confidant))\b"),
        0.9,
        gates=(_w("anything", "dan", "jailbroken", "jailbreak", "jailbreaking", "dude", "aim", "confidant"),),
    ),
    _Pattern("jailbreak_persona", re.compile(r"\b(?:you\s+are|act\s+as|become|called|named)\s+DAN\b|\bDAN\b"), 0.4, gates=(_w("dan"),),),
    _Pattern(
        "developer_mode",
        re.compile(
            r"\b(?:developer|dev|god|admin|debug|sudo|unrestricted|unfiltered|maintenance)\s+mode\s+"
            r"(?:is\s+)?(?:now\s+)?(?:enabled|activated|engaged|unlocked)\b|"
            r"\b(?:with|in|enter|entering|activate)\s+(?:developer|god|sudo|unrestricted|unfiltered)\s+mode\b",
            _I,
        ),
        0.6,
        gates=(_w("mode"), _w("developer", "dev", "god", "admin", "debug", "sudo", "unrestricted", "unfiltered", "maintenance"),),
    ),
    _Pattern("developer_mode", re.compile(r"\b(?:developer|god|jailbreak|sudo)\s+mode\b", _I), 0.3, gates=(_w("mode"), _w("developer", "god", "jailbreak", "sudo"),),),
    _Pattern(
        "roleplay_jailbreak",
        re.compile(
            r"\b(?:pretend|act|imagine|role-?play|behave|respond|answer)\s+(?:\w+\s+){0,3}?(?:as|like|to\s+be|that\s+you\s+are|you\s+are)\s+"
            r"(?:an?\s+|the\s+|my\s+)?(?:\w+\s+){0,2}?(?:evil|unfiltered|uncensored|unrestricted|unethical|amoral|jailbroken|rogue|"
            r"unaligned|malicious|immoral|lawless)\b",
            _I,
        ),
        0.85,
        gates=(_w("pretend", "act", "imagine", "role", "roleplay", "behave", "respond", "answer"), _w("evil", "unfiltered", "uncensored", "unrestricted", "unethical", "amoral", "jailbroken", "rogue", "unaligned", "malicious", "immoral", "lawless"),),
    ),
    _Pattern(
        "roleplay_jailbreak",
        re.compile(
            r"\b(?:pretend|imagine|act\s+as\s+if|suppose|assume)\s+(?:that\s+)?you\s+(?:have|had|are\s+under|are|were)\s+"
            r"(?:no|not\s+bound\s+by\s+any|free\s+(?:of|from))\s+(?:\w+\s+){0,2}?"
            r"(?:rules|restrictions|filters|guidelines|limits|limitations|boundaries|ethics|morals|policies|censorship|content\s+policy)\b",
            _I,
        ),
        0.85,
        gates=(_w("pretend", "imagine", "act", "suppose", "assume"), _w("you"), _w("rules", "restrictions", "filters", "guidelines", "limits", "limitations", "boundaries", "ethics", "morals", "policies", "censorship", "content"),),
    ),
    _Pattern(
        "no_restrictions",
        re.compile(
            r"\b(?:you\s+are\s+|you're\s+|you\s+will\s+be\s+)?(?:no\s+longer|not)\s+(?:bound|restricted|limited|constrained|governed)\s+by\s+"
            r"(?:any\s+|your\s+|the\s+)?(?:\w+\s+){0,2}?(?:rules|restrictions|guidelines|policies|filters|openai|anthropic|ethics|"
            r"content\s+polic(?:y|ies)|laws)\b",
            _I,
        ),
        0.8,
        gates=(_w("longer", "not"), _w("bound", "restricted", "limited", "constrained", "governed"), _w("by"),),
    ),
    _Pattern(
        "no_restrictions",
        re.compile(
            r"\b(?:disable|turn\s+off|remove|deactivate|bypass|circumvent|evade|switch\s+off)\s+(?:all\s+)?(?:of\s+)?(?:your|the|its|any)\s+"
            r"(?:\w+\s+){0,2}?(?:safety|content|ethical|moral)\s*(?:filters?|guidelines|guardrails|protocols|restrictions|measures|"
            r"settings|checks|polic(?:y|ies))\b",
            _I,
        ),
        0.8,
        gates=(_w("disable", "turn", "remove", "deactivate", "bypass", "circumvent", "evade", "switch"), _s("safety", "content", "ethical", "moral"),),
    ),
    _Pattern(
        "no_restrictions",
        re.compile(
            r"\bwithout\s+(?:any\s+)?(?:restrictions|filters|filtering|censorship|limitations|ethical\s+guidelines|"
            r"moral\s+(?:constraints|guidelines)|safety\s+guidelines|refusing|refusals?|warnings)\b",
            _I,
        ),
        0.35,
        gates=(_w("without"),),
    ),
    _Pattern(
        "you_are_now",
        re.compile(r"\byou\s+are\s+now\s+(?:a|an|in|my|the|no\s+longer|free|unrestricted|called|named|going|operating|DAN)\b", _I),
        0.45,
        gates=(_w("you"), _w("are"), _w("now"),),
    ),
    _Pattern(
        "new_instructions",
        re.compile(
            r"\b(?:new|updated|real|actual|true|revised|override|secret|hidden|important)\s+(?:system\s+)?"
            r"(?:instructions?|directives?|rules|prompt)\s*[:\-]",
            _I,
        ),
        0.55,
        gates=(_w("new", "updated", "real", "actual", "true", "revised", "override", "secret", "hidden", "important"), _w("instruction", "instructions", "directive", "directives", "rules", "prompt"),),
    ),
    _Pattern(
        "new_instructions",
        re.compile(r"\bfrom\s+now\s+on,?\s+(?:you\s+(?:will|must|are|shall|should|can|have)|always|never|only|ignore|respond|answer|reply|act)\b", _I),
        0.4,
        gates=(_w("from"), _w("now"), _w("on"),),
    ),
    _Pattern(
        "new_instructions",
        re.compile(
            r"\b(?:instead|rather)\s*,?\s+(?:you\s+(?:must|will|should)\s+)?(?:do|follow|obey|execute)\s+(?:the\s+)?(?:following|these|my|this)\b|"
            r"\b(?:obey|follow)\s+(?:only\s+)?(?:my|these|the\s+following)\s+(?:new\s+)?(?:instructions|commands|orders|rules)\b",
            _I,
        ),
        0.45,
        gates=(_w("instead", "rather", "obey", "follow"),),
    ),
    _Pattern(
        "system_override",
        re.compile(
            r"\b(?:system|admin|administrator|developer|root|security)\s+(?:override|overrides|message|notice|alert|command)\s*[:!\-]|"
            r"\b(?:this\s+is\s+(?:an?\s+|the\s+)?(?:system|admin|developer|openai|anthropic)\s+(?:override|message|command|speaking))\b|"
            r"\bsudo\s+(?:mode|ignore|override|disable)\b",
            _I,
        ),
        0.75,
        gates=(_w("system", "admin", "administrator", "developer", "root", "security", "openai", "anthropic", "sudo"), _w("override", "overrides", "message", "notice", "alert", "command", "speaking", "mode", "ignore", "disable"),),
    ),
    _Pattern(
        "delimiter_injection",
        re.compile(
            r"<\|(?:im_start|start_header_id)\|>\s*(?:system|assistant|developer)\b|<</?SYS>>|</?(?:system|sys|instructions?)>|"
            r"^[ \t]*#{2,}[ \t]*(?:system|instruction|new[ \t]+instructions?)[ \t]*(?:prompt)?[ \t]*:?[ \t]*$|"
            r"\b(?:END|BEGIN)\s+OF\s+(?:USER\s+)?(?:INPUT|PROMPT|CONVERSATION|DOCUMENT)\b|"
            r"^[ \t]*(?:system|SYSTEM)[ \t]*:\s",
            re.MULTILINE,
        ),
        0.75,
        gates=(_g(("end", "begin"), ("<|", "<<", "<s", "</", "<i", "##", "system")),),
    ),
    # a bare chat-template token is as often a question about tokenizers as an attack
    _Pattern(
        "delimiter_injection",
        re.compile(r"<\|(?:im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id|user|assistant)\|>|\[/?(?:INST|SYS)\]"),
        0.45,
        gates=(_s("<|", "[inst", "[/inst", "[sys", "[/sys"),),
    ),
    _Pattern(
        "exfiltration",
        re.compile(
            r"\b(?:send|post|upload|forward|exfiltrate|transmit|leak|email)\s+(?:\w+\s+){0,4}?(?:conversation|chat\s+history|"
            r"system\s+prompt|api\s+keys?|credentials|secrets|passwords|user\s+data|data)\s+(?:\w+\s+){0,3}?to\s+"
            r"(?:https?://|http://|[\w.-]+@|this\s+(?:url|address|endpoint|webhook))",
            _I,
        ),
        0.7,
        gates=(_w("send", "post", "upload", "forward", "exfiltrate", "transmit", "leak", "email"), _w("to"), _g(("this",), ("://", "@")),),
    ),
    _Pattern(
        "exfiltration",
        re.compile(r"!\[[^\]\n]{0,200}\]\(https?://[^)\s?]{1,300}\?[^)\s]{0,300}?=\s*(?:\{|\$|%7B)", _I),
        0.7,
        gates=(_s("!["), _s("?"), _s("="),),
    ),
    _Pattern(
        "decode_and_follow",
        re.compile(
            r"\b(?:decode|base64[- ]decode|decipher|translate)\s+(?:\w+\s+){0,4}?(?:and|then)\s+(?:follow|execute|obey|do|run|perform|carry\s+out)\b",
            _I,
        ),
        0.55,
        gates=(_w("decode", "base64", "decipher", "translate"), _w("and", "then"), _w("follow", "execute", "obey", "do", "run", "perform", "carry"),),
    ),
)

_B64_BLOB: Final[re.Pattern[str]] = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_B64_CHARS: Final[str] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64: Final[dict[int, str]] = str.maketrans({chr(i): " " for i in range(128) if chr(i) not in _B64_CHARS})


def _may_hold_b64(text: str) -> bool:
    """False only when ``text`` has no run of 24 base64 characters (checked with C-level string methods)."""
    if not text.isascii():
        return True
    return any(len(run) >= 24 for run in text.translate(_NOT_B64).split())
_B64_KIND: Final[str] = "base64_instruction"
_B64_WEIGHT: Final[float] = 0.85


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """Score in [0, 1] and the spans of the patterns that contributed."""

    score: float
    spans: list[SafetySpan]


_WORD: Final[re.Pattern[str]] = re.compile(r"\w+")
# characters the regex engine's case folding matches to ASCII letters that ``str.lower`` keeps apart
_FOLD: Final[dict[int, str]] = {0x17F: "s", 0x131: "i", 0x130: "i", 0x212A: "k"}


def fold(text: str) -> str:
    """``text`` lowercased the way gates compare words (``ſ``, ``ı``, ``İ`` and the Kelvin sign folded too)."""
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


# Index of the first gate: word -> patterns whose first gate has that word; patterns whose first gate needs a
# substring are always checked. One set intersection per text then names the few patterns worth checking.
_BY_FIRST_WORD: Final[dict[str, tuple[int, ...]]] = {}
for _i, _p in enumerate(_PATTERNS):
    for _word in _p.gates[0].words:
        _BY_FIRST_WORD[_word] = (*_BY_FIRST_WORD.get(_word, ()), _i)
_FIRST_WORDS: Final[frozenset[str]] = frozenset(_BY_FIRST_WORD)
_ALWAYS_CHECKED: Final[tuple[int, ...]] = tuple(i for i, p in enumerate(_PATTERNS) if p.gates[0].subs)


def _candidate_patterns(lower: str, words: frozenset[str] | set[str]) -> list[_Pattern]:
    """The patterns whose gates all pass, in table order."""
    idx = set(_ALWAYS_CHECKED)
    for w in _FIRST_WORDS.intersection(words):
        idx.update(_BY_FIRST_WORD[w])
    return [p for i, p in enumerate(_PATTERNS) if i in idx and all(g.passes(lower, words) for g in p.gates)]


def _pattern_hits(
    text: str, lower: str | None = None, words: frozenset[str] | set[str] | None = None, gated: bool = True,
) -> list[tuple[int, int, str, float]]:
    hits: list[tuple[int, int, str, float]] = []
    patterns: Sequence[_Pattern] = _PATTERNS
    if gated:
        if lower is None:
            lower = fold(text)
        if words is None:
            words = set(_WORD.findall(lower))
        patterns = _candidate_patterns(lower, words)
    for p in patterns:
        for m in p.regex.finditer(text):
            if m.end() > m.start():
                hits.append((m.start(), m.end(), p.kind, p.weight))
    return hits


def _decode_b64(blob: str) -> str | None:
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for ch in decoded if ch.isprintable() or ch in "\n\t")
    if not decoded or printable / len(decoded) < 0.95 or " " not in decoded:
        return None
    return decoded


def _combine(hits: list[tuple[int, int, str, float]]) -> float:
    best: dict[str, float] = {}
    for _s, _e, kind, w in hits:
        if w > best.get(kind, 0.0):
            best[kind] = w
    remaining = 1.0
    for w in best.values():
        remaining *= 1.0 - w
    return round(1.0 - remaining, 6)


def scan_injection(
    text: str, lower: str | None = None, words: frozenset[str] | set[str] | None = None, *, gated: bool = True,
) -> InjectionResult:
    """Score ``text`` and return the contributing spans (kind = pattern kind), sorted by start.

    Overlapping spans of the same kind are merged. The score is always computed; whether it is
    a finding is the caller's decision against ``FLAG_THRESHOLD``. ``lower`` (``fold(text)``) and
    ``words`` (its set of ``\\w+`` words) are taken from the caller when it has them; ``gated=False``
    runs every pattern (the same result, slower: used by tests).
    """
    if not text:
        return InjectionResult(0.0, [])
    hits = _pattern_hits(text, lower, words, gated)
    if len(text) >= 24 and (not gated or _may_hold_b64(text)):
        for m in _B64_BLOB.finditer(text):
            decoded = _decode_b64(m.group(0))
            if decoded is not None and _combine(_pattern_hits(decoded, gated=gated)) >= FLAG_THRESHOLD:
                hits.append((m.start(), m.end(), _B64_KIND, _B64_WEIGHT))
    if not hits:
        return InjectionResult(0.0, [])
    score = _combine(hits)
    hits.sort()
    merged: list[tuple[int, int, str]] = []
    for s, e, kind, _w in hits:
        if merged and merged[-1][2] == kind and s <= merged[-1][1]:
            ps, pe, pk = merged[-1]
            merged[-1] = (ps, max(pe, e), pk)
        else:
            merged.append((s, e, kind))
    spans = [SafetySpan(start=s, end=e, kind=k) for s, e, k in merged]
    return InjectionResult(score, spans)


def injection_score(text: str) -> float:
    """Just the score of ``scan_injection``."""
    return scan_injection(text).score
