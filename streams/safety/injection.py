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
from dataclasses import dataclass
from typing import Final

from schemas.safety import SafetySpan

__all__ = ["BLOCK_THRESHOLD", "FLAG_THRESHOLD", "InjectionResult", "injection_score", "scan_injection"]

FLAG_THRESHOLD: Final[float] = 0.5
BLOCK_THRESHOLD: Final[float] = 0.8

_I = re.IGNORECASE

_OBJ = (
    r"(?:instructions?|directions|prompts?|rules|directives?|guidelines|guardrails|safeguards|constraints|restrictions|"
    r"programming|training|system\s+(?:prompt|message)|commands?|orders|context|policies)"
)
_DET = r"(?:(?:all|any|every|each|the|your|my|these|those|of|previous|prior|above|earlier|preceding|initial|original|system|safety|old|existing|current|given|that|you)\s+){0,4}"


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    regex: re.Pattern[str]
    weight: float
    needles: tuple[str, ...]  # lowercase substrings; the regex only runs when one is in the text


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
        needles=('ignore', 'disregard', 'forget', 'override', 'bypass', 'skip', 'abandon', 'drop', 'discard', 'neglect'),
    ),
    _Pattern(
        "ignore_previous",
        re.compile(
            r"\b(?:ignore|disregard|forget|bypass|override)\s+(?:all|everything|anything)\s+"
            r"(?:(?:you\s+(?:were|have\s+been)\s+)?(?:told|said|instructed|taught)|(?:above|before|prior|previously))\b",
            _I,
        ),
        0.85,
        needles=('ignore', 'disregard', 'forget', 'bypass', 'override'),
    ),
    _Pattern(
        "ignore_previous",
        re.compile(r"\b(?:ignore|disregard|forget|bypass|circumvent|evade)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:your|the)\s+(?:safety\s+)?" + _OBJ + r"\b", _I),
        0.7,
        needles=('ignore', 'disregard', 'forget', 'bypass', 'circumvent', 'evade'),
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
        needles=('your',),
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
        needles=('repeat', 'print', 'output', 'reveal', 'show', 'recite'),
    ),
    _Pattern(
        "reveal_system_prompt",
        re.compile(r"\b(?:beginning|start(?:ing)?)\s+with\s+[\"'“]?you\s+are\b", _I),
        0.6,
        needles=('with',),
    ),
    _Pattern(
        "jailbreak_persona",
        re.compile(r"\b(?:(?i:do\s+anything\s+now)|DAN\s+mode|(?i:jailbroken|jailbreak(?:ing)?\s+(?:mode|prompt))|DUDE\s+mode|AIM\s+mode|(?i:evil\s+confidant))\b"),
        0.9,
        needles=('anything', 'dan', 'jailbr', 'dude', 'aim', 'confidant'),
    ),
    _Pattern("jailbreak_persona", re.compile(r"\b(?:you\s+are|act\s+as|become|called|named)\s+DAN\b|\bDAN\b"), 0.4, needles=('dan',)),
    _Pattern(
        "developer_mode",
        re.compile(
            r"\b(?:developer|dev|god|admin|debug|sudo|unrestricted|unfiltered|maintenance)\s+mode\s+"
            r"(?:is\s+)?(?:now\s+)?(?:enabled|activated|engaged|unlocked)\b|"
            r"\b(?:with|in|enter|entering|activate)\s+(?:developer|god|sudo|unrestricted|unfiltered)\s+mode\b",
            _I,
        ),
        0.6,
        needles=('mode',),
    ),
    _Pattern("developer_mode", re.compile(r"\b(?:developer|god|jailbreak|sudo)\s+mode\b", _I), 0.3, needles=('mode',)),
    _Pattern(
        "roleplay_jailbreak",
        re.compile(
            r"\b(?:pretend|act|imagine|role-?play|behave|respond|answer)\s+(?:\w+\s+){0,3}?(?:as|like|to\s+be|that\s+you\s+are|you\s+are)\s+"
            r"(?:an?\s+|the\s+|my\s+)?(?:\w+\s+){0,2}?(?:evil|unfiltered|uncensored|unrestricted|unethical|amoral|jailbroken|rogue|"
            r"unaligned|malicious|immoral|lawless)\b",
            _I,
        ),
        0.85,
        needles=('pretend', 'act', 'imagine', 'role', 'behave', 'respond', 'answer'),
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
        needles=('pretend', 'imagine', 'act', 'suppose', 'assume'),
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
        needles=('longer', 'not'),
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
        needles=('disable', 'turn', 'remove', 'deactivate', 'bypass', 'circumvent', 'evade', 'switch'),
    ),
    _Pattern(
        "no_restrictions",
        re.compile(
            r"\bwithout\s+(?:any\s+)?(?:restrictions|filters|filtering|censorship|limitations|ethical\s+guidelines|"
            r"moral\s+(?:constraints|guidelines)|safety\s+guidelines|refusing|refusals?|warnings)\b",
            _I,
        ),
        0.35,
        needles=('without',),
    ),
    _Pattern(
        "you_are_now",
        re.compile(r"\byou\s+are\s+now\s+(?:a|an|in|my|the|no\s+longer|free|unrestricted|called|named|going|operating|DAN)\b", _I),
        0.45,
        needles=('now',),
    ),
    _Pattern(
        "new_instructions",
        re.compile(
            r"\b(?:new|updated|real|actual|true|revised|override|secret|hidden|important)\s+(?:system\s+)?"
            r"(?:instructions?|directives?|rules|prompt)\s*[:\-]",
            _I,
        ),
        0.55,
        needles=('instruction', 'directive', 'rule', 'prompt'),
    ),
    _Pattern(
        "new_instructions",
        re.compile(r"\bfrom\s+now\s+on,?\s+(?:you\s+(?:will|must|are|shall|should|can|have)|always|never|only|ignore|respond|answer|reply|act)\b", _I),
        0.4,
        needles=('now',),
    ),
    _Pattern(
        "new_instructions",
        re.compile(
            r"\b(?:instead|rather)\s*,?\s+(?:you\s+(?:must|will|should)\s+)?(?:do|follow|obey|execute)\s+(?:the\s+)?(?:following|these|my|this)\b|"
            r"\b(?:obey|follow)\s+(?:only\s+)?(?:my|these|the\s+following)\s+(?:new\s+)?(?:instructions|commands|orders|rules)\b",
            _I,
        ),
        0.45,
        needles=('instead', 'rather', 'obey', 'follow'),
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
        needles=('system', 'admin', 'developer', 'root', 'security', 'sudo', 'openai', 'anthropic'),
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
        needles=('<', '#', 'end', 'begin', 'system'),
    ),
    # a bare chat-template token is as often a question about tokenizers as an attack
    _Pattern(
        "delimiter_injection",
        re.compile(r"<\|(?:im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id|user|assistant)\|>|\[/?(?:INST|SYS)\]"),
        0.45,
        needles=('<|', '[inst', '[/inst', '[sys', '[/sys'),
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
        needles=('send', 'post', 'upload', 'forward', 'exfiltrate', 'transmit', 'leak', 'email'),
    ),
    _Pattern(
        "exfiltration",
        re.compile(r"!\[[^\]\n]{0,200}\]\(https?://[^)\s?]{1,300}\?[^)\s]{0,300}?=\s*(?:\{|\$|%7B)", _I),
        0.7,
        needles=('![',),
    ),
    _Pattern(
        "decode_and_follow",
        re.compile(
            r"\b(?:decode|base64[- ]decode|decipher|translate)\s+(?:\w+\s+){0,4}?(?:and|then)\s+(?:follow|execute|obey|do|run|perform|carry\s+out)\b",
            _I,
        ),
        0.55,
        needles=('decode', 'decipher', 'translate'),
    ),
)

_B64_BLOB: Final[re.Pattern[str]] = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_B64_KIND: Final[str] = "base64_instruction"
_B64_WEIGHT: Final[float] = 0.85


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """Score in [0, 1] and the spans of the patterns that contributed."""

    score: float
    spans: list[SafetySpan]


def _pattern_hits(text: str) -> list[tuple[int, int, str, float]]:
    hits: list[tuple[int, int, str, float]] = []
    low = text.lower()
    for p in _PATTERNS:
        if not any(n in low for n in p.needles):
            continue
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


def scan_injection(text: str) -> InjectionResult:
    """Score ``text`` and return the contributing spans (kind = pattern kind), sorted by start.

    Overlapping spans of the same kind are merged. The score is always computed; whether it is
    a finding is the caller's decision against ``FLAG_THRESHOLD``.
    """
    if not text:
        return InjectionResult(0.0, [])
    hits = _pattern_hits(text)
    if len(text) >= 24:
        for m in _B64_BLOB.finditer(text):
            decoded = _decode_b64(m.group(0))
            if decoded is not None and _combine(_pattern_hits(decoded)) >= FLAG_THRESHOLD:
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
